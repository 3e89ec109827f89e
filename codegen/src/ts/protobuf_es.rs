//! The protobuf-es message model ([`TsMessageModel::ProtobufEs`](super::TsMessageModel)):
//! for each input file with stream services, `<name>_kafkasocks.ts` holds the service
//! descriptors and client types only, over the message types and `<Message>Schema`s that
//! protoc-gen-es (v2) generates into `<name>_pb.ts`. The runtime sees protobuf-es through its
//! `Codec` interface (`encode`/`decode`), built by two small generic functions in each file:
//!
//! * requests: `$request(Schema)`, a `Codec<MessageInitShape<Schema>>` — a message or an
//!   init object in, `toBinary(Schema, create(Schema, init))` out;
//! * records (and the receipt of a publish, which the runtime does not decode):
//!   `$record(Schema)`, a `Codec<MessageShape<Schema>>` — `fromBinary(Schema, bytes)`.
//!
//! Names follow protoc-gen-es: `<Message>Schema` after its own clash resolution (see
//! [`schema_names`]); imports of its output use its file layout (`chat/v1/chat_pb`, with the
//! extension its `import_extension` option sets), and well-known types come from
//! `@bufbuild/protobuf/wkt`, as its own generated code imports them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{
    Names, RESERVED, Role, TsOptions, emit_header, emit_runtime_check, emit_service, jsdoc, output_path,
    relative_module, runtime_modules, string_literal,
};
use crate::model::{Model, ProtoFile};

/// The npm package of protobuf-es, and the range of it generated code is written for.
const PROTOBUF_ES: &str = "@bufbuild/protobuf";
const PROTOBUF_ES_RANGE: &str = "^2.0.0";

/// Well-known files that protoc-gen-es imports from the `@bufbuild/protobuf/wkt` barrel; the
/// others from `@bufbuild/protobuf/wkt/google/protobuf/<name>_pb.js` (its
/// `wktPublicImportPaths`).
const WKT_BARREL: &[&str] = &[
    "google/protobuf/any.proto",
    "google/protobuf/compiler/plugin.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/wrappers.proto",
];

/// One `<name>_kafkasocks.ts` per requested file with stream services.
pub(super) fn generate(model: &Model, options: &TsOptions) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for file in model.files.iter().filter(|f| f.requested && !f.services.is_empty()) {
        out.insert(output_path(&file.name), emit_file(model, file, options));
    }
    out
}

fn emit_file(model: &Model, file: &ProtoFile, options: &TsOptions) -> String {
    let here = output_path(&file.name);
    let types = crate::model::type_files(model);
    let requested: BTreeSet<&str> = model.files.iter().filter(|f| f.requested).map(|f| f.name.as_str()).collect();
    let mut names = Names::with_reserved(RESERVED);
    let service_names: Vec<String> = file.services.iter().map(|s| names.take(&s.name)).collect();

    // One namespace import per module of protoc-gen-es output that defines a method's type.
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for m in file.services.iter().flat_map(|s| &s.methods) {
        used.insert(&m.input);
        used.insert(&m.output);
    }
    let mut imports: BTreeMap<String, String> = BTreeMap::new(); // alias -> module
    let mut alias_of_module: BTreeMap<String, String> = BTreeMap::new();
    let mut schema_of: BTreeMap<String, String> = BTreeMap::new(); // type -> TS expression
    let mut schemas_of_file: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for ty in used {
        let Some(defining) = types.get(ty) else { continue };
        let Some(defining_file) = model.file(defining) else { continue };
        let module = es_module(&here, defining, requested.contains(defining.as_str()), options);
        let alias = alias_of_module
            .entry(module.clone())
            .or_insert_with(|| {
                let alias = names.take(&module_alias(defining, &module));
                imports.insert(alias.clone(), module.clone());
                alias
            })
            .clone();
        let schemas = schemas_of_file.entry(defining.as_str()).or_insert_with(|| schema_names(defining_file));
        let schema = schemas.get(ty).cloned().unwrap_or_else(|| "never".to_owned());
        schema_of.insert(ty.to_owned(), format!("{alias}.{schema}"));
    }

    let mut out = String::new();
    let stem = file.name.strip_suffix(".proto").unwrap_or(&file.name);
    emit_header(
        &mut out,
        file,
        options.runtime,
        &[format!(
            "messages: protobuf-es, the types and schemas protoc-gen-es v2 generates ({stem}_pb.ts), with the npm \
             package {PROTOBUF_ES} {PROTOBUF_ES_RANGE}"
        )],
    );
    let (runtime, _) = runtime_modules(&here, options.runtime);
    let _ = writeln!(out, "import * as $ks from {};", string_literal(&runtime));
    let _ = writeln!(out, "import * as $pb from {};", string_literal(PROTOBUF_ES));
    for (alias, module) in &imports {
        let _ = writeln!(out, "import * as {alias} from {};", string_literal(module));
    }
    out.push('\n');
    emit_runtime_check(&mut out);
    out.push('\n');
    emit_codec_helpers(&mut out);
    for (s, name) in file.services.iter().zip(&service_names) {
        out.push('\n');
        emit_service(&mut out, s, name, |ty, role| {
            let schema = schema_of.get(ty).cloned().unwrap_or_else(|| "never".to_owned());
            match role {
                Role::Input => format!("/* @__PURE__ */ $request({schema})"),
                Role::Output => format!("/* @__PURE__ */ $record({schema})"),
            }
        });
    }
    out
}

/// The two adapters from protobuf-es schemas to the runtime's `Codec`.
fn emit_codec_helpers(out: &mut String) {
    jsdoc(
        out,
        "",
        &[
            "The request codec of a method: a protobuf-es message or an init object in (`create` fills in".to_owned(),
            "the defaults), its binary encoding out.".to_owned(),
        ],
    );
    let _ = writeln!(
        out,
        "function $request<Desc extends $pb.DescMessage>(schema: Desc): $ks.Codec<$pb.MessageInitShape<Desc>> {{"
    );
    let _ = writeln!(out, "  return {{");
    let _ = writeln!(out, "    encode: (value) => $pb.toBinary(schema, $pb.create(schema, value)),");
    let _ = writeln!(out, "    decode: (bytes) => $pb.fromBinary(schema, bytes),");
    let _ = writeln!(out, "  }};");
    let _ = writeln!(out, "}}");
    out.push('\n');
    jsdoc(out, "", &["The record codec of a method: binary encoding in, protobuf-es message out.".to_owned()]);
    let _ = writeln!(
        out,
        "function $record<Desc extends $pb.DescMessage>(schema: Desc): $ks.Codec<$pb.MessageShape<Desc>> {{"
    );
    let _ = writeln!(out, "  return {{");
    let _ = writeln!(out, "    encode: (value) => $pb.toBinary(schema, value),");
    let _ = writeln!(out, "    decode: (bytes) => $pb.fromBinary(schema, bytes),");
    let _ = writeln!(out, "  }};");
    let _ = writeln!(out, "}}");
}

/// Where protoc-gen-es output for `defining` is imported from, by the file at `here`.
fn es_module(here: &str, defining: &str, requested: bool, options: &TsOptions) -> String {
    let stem = defining.strip_suffix(".proto").unwrap_or(defining);
    if defining.starts_with("google/protobuf/") && !requested {
        return if WKT_BARREL.contains(&defining) {
            format!("{PROTOBUF_ES}/wkt")
        } else {
            format!("{PROTOBUF_ES}/wkt/{stem}_pb.js")
        };
    }
    let module = relative_module(here, &format!("{stem}_pb.ts"));
    let module = module.strip_suffix(".js").unwrap_or(&module);
    format!("{module}{}", options.import_extension.suffix())
}

/// The namespace alias of a module: `chat_v1_chat_pb` for `chat/v1/chat.proto`, `$wkt` for the
/// well-known types' barrel.
fn module_alias(defining: &str, module: &str) -> String {
    if module == format!("{PROTOBUF_ES}/wkt") {
        return "$wkt".to_owned();
    }
    let stem = defining.strip_suffix(".proto").unwrap_or(defining);
    let base: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let base = if base.starts_with(|c: char| c.is_ascii_digit()) { format!("_{base}") } else { base };
    format!("{base}_pb")
}

/// Words protoc-gen-es escapes with a `$` (its `safeIdentifier`).
const ES_RESERVED: &[&str] = &[
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "new",
    "null",
    "return",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "enum",
    "implements",
    "interface",
    "let",
    "package",
    "private",
    "protected",
    "public",
    "static",
    "Object",
    "bigint",
    "number",
    "boolean",
    "string",
    "object",
    "globalThis",
    "Uint8Array",
    "Partial",
];

fn es_safe(name: String) -> String {
    if ES_RESERVED.contains(&name.as_str()) { format!("{name}$") } else { name }
}

/// protoc-gen-es's `$`, `$1`, `$2`, ... for the i-th try of a name.
fn salt(i: usize) -> String {
    match i {
        0 => String::new(),
        1 => "$".to_owned(),
        n => format!("${}", n - 1),
    }
}

/// The first free name of `base` with protoc-gen-es's salts, taken.
fn take_es(taken: &mut BTreeSet<String>, base: &str, suffix: &str) -> String {
    let mut i = 0;
    loop {
        let name = es_safe(format!("{base}{suffix}{}", salt(i)));
        if taken.insert(name.clone()) {
            return name;
        }
        i += 1;
    }
}

/// The names protoc-gen-es gives the schemas of `file`'s messages and enums (full name ->
/// `<Name>Schema`), as its `allNames` does: first every shape (type) name, then the file's
/// descriptor (`file_<path>`), then the schemas, in its depth-first order (a message, then
/// its nested messages with theirs, then its nested enums; top-level enums last). Services
/// and top-level extensions take their names after every schema, so they cannot change them;
/// extensions nested in messages are not in the model and are not counted.
fn schema_names(file: &ProtoFile) -> BTreeMap<String, String> {
    let order = nested_types(file);
    let mut taken = BTreeSet::new();
    for (_, id) in &order {
        take_es(&mut taken, id, "");
    }
    let mut file_id = String::from("file_");
    let stem = file.name.strip_suffix(".proto").unwrap_or(&file.name);
    let mut in_run = false;
    for c in stem.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            file_id.push(c);
            in_run = false;
        } else if !in_run {
            file_id.push('_');
            in_run = true;
        }
    }
    take_es(&mut taken, &file_id, "");
    order.into_iter().map(|(full_name, id)| (full_name, take_es(&mut taken, &id, "Schema"))).collect()
}

/// (full name, identifier) of every message and enum of `file` in protoc-gen-es's order; the
/// identifier is the name without the package, `.` as `_`.
fn nested_types(file: &ProtoFile) -> Vec<(String, String)> {
    fn walk(file: &ProtoFile, parent: &[String], out: &mut Vec<(String, String)>) {
        for m in file.messages.iter().filter(|m| m.path.len() == parent.len() + 1 && m.path.starts_with(parent)) {
            out.push((m.full_name.clone(), m.path.join("_")));
            walk(file, &m.path, out);
        }
        if !parent.is_empty() {
            for e in file.enums.iter().filter(|e| e.path.len() == parent.len() + 1 && e.path.starts_with(parent)) {
                out.push((e.full_name.clone(), e.path.join("_")));
            }
        }
    }
    let mut out = Vec::new();
    walk(file, &[], &mut out);
    for e in file.enums.iter().filter(|e| e.path.len() == 1) {
        out.push((e.full_name.clone(), e.path.join("_")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Comments, Enum, Message, Syntax};

    fn message(package: &str, path: &[&str]) -> Message {
        Message {
            full_name: format!("{package}.{}", path.join(".")),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            fields: Vec::new(),
            oneofs: Vec::new(),
            comments: Comments::default(),
        }
    }

    fn enumeration(package: &str, path: &[&str]) -> Enum {
        Enum {
            full_name: format!("{package}.{}", path.join(".")),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            values: Vec::new(),
            comments: Comments::default(),
        }
    }

    /// Clashes resolve as in protoc-gen-es: shapes first, so `FooSchema` (a message) keeps its
    /// name and `Foo`'s schema is `FooSchema$`; `A_B` and `A.B` both want `A_B`; reserved words
    /// get a `$` before `Schema` is added only when the whole name is reserved.
    #[test]
    fn schema_names_follow_protoc_gen_es() {
        let file = ProtoFile {
            name: "x/v1/my-file.proto".to_owned(),
            package: "x.v1".to_owned(),
            syntax: Syntax::Proto3,
            requested: true,
            dependencies: Vec::new(),
            messages: vec![
                message("x.v1", &["Foo"]),
                message("x.v1", &["FooSchema"]),
                message("x.v1", &["A"]),
                message("x.v1", &["A", "B"]),
                message("x.v1", &["A_B"]),
                message("x.v1", &["Object"]),
            ],
            enums: vec![enumeration("x.v1", &["Color"]), enumeration("x.v1", &["A", "Kind"])],
            services: Vec::new(),
            source: None,
        };
        let order: Vec<String> = nested_types(&file).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            order,
            [
                "x.v1.Foo",
                "x.v1.FooSchema",
                "x.v1.A",
                "x.v1.A.B",
                "x.v1.A.Kind",
                "x.v1.A_B",
                "x.v1.Object",
                "x.v1.Color"
            ]
        );
        let names = schema_names(&file);
        assert_eq!(names["x.v1.Foo"], "FooSchema$");
        assert_eq!(names["x.v1.FooSchema"], "FooSchemaSchema");
        assert_eq!(names["x.v1.A.B"], "A_BSchema");
        assert_eq!(names["x.v1.A_B"], "A_BSchema$");
        assert_eq!(names["x.v1.A.Kind"], "A_KindSchema");
        assert_eq!(names["x.v1.Object"], "ObjectSchema");
        assert_eq!(names["x.v1.Color"], "ColorSchema");
    }

    #[test]
    fn modules_follow_protoc_gen_es_layout() {
        let opts = |ext| TsOptions { import_extension: ext, ..TsOptions::default() };
        let here = "chat/v1/chat_kafkasocks.ts";
        let none = opts(super::super::TsImportExtension::None);
        let js = opts(super::super::TsImportExtension::Js);
        assert_eq!(es_module(here, "chat/v1/chat.proto", true, &none), "./chat_pb");
        assert_eq!(es_module(here, "kafkasocks/options.proto", false, &js), "../../kafkasocks/options_pb.js");
        assert_eq!(es_module(here, "google/protobuf/empty.proto", false, &js), "@bufbuild/protobuf/wkt");
        assert_eq!(
            es_module(here, "google/protobuf/type.proto", false, &none),
            "@bufbuild/protobuf/wkt/google/protobuf/type_pb.js"
        );
        assert_eq!(es_module(here, "google/protobuf/empty.proto", true, &none), "../../google/protobuf/empty_pb");
        assert_eq!(module_alias("chat/v1/chat.proto", "./chat_pb"), "chat_v1_chat_pb");
        assert_eq!(module_alias("google/protobuf/empty.proto", "@bufbuild/protobuf/wkt"), "$wkt");
    }
}
