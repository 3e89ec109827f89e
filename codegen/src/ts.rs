//! TypeScript emitter: one module per `.proto` file with an interface, a binary codec and a
//! proto3 JSON codec (`<Message>Json`, see `ts/json.rs`; separate, so that pages without JSON
//! do not bundle it) per message, a const object per enum, and a service descriptor (plus
//! `<Service>Json`) per stream service. Generated modules import the runtime
//! (`@kafkasocks/runtime` and `@kafkasocks/runtime/json`, the npm package built from
//! `ts-templates/`) and each other; with [`TsRuntime::Vendor`] the runtime is copied into
//! `kafkasocks-runtime/` instead and imported relatively. With
//! [`TsMessageModel::ProtobufEs`] only the service descriptors are generated, over
//! protoc-gen-es's message types (`ts/protobuf_es.rs`).
//!
//! Conventions (see the README's type table): 64-bit integers are `bigint`; enums are
//! open (unknown numbers are kept); maps are `Map`s; a oneof is one optional property
//! holding `{ case, value }`; fields this schema does not know are kept in `$unknown`
//! and written back on encode. Encoding follows prost's byte order (fields by number, a
//! oneof at its lowest number, defaults of implicit-presence fields and of map entries
//! left out), so prost and the generated code produce the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

mod json;
mod protobuf_es;

use crate::model::{
    Comments, Enum, Field, FieldType, Label, Message, Method, Model, ProtoFile, RpcKind, Scalar, Service, Syntax,
};

/// The TS runtime sources (`ts-templates/src`, through the `codegen/ts-runtime` symlink),
/// embedded at build time: (file name, contents).
const RUNTIME: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/ts_runtime.rs"));

/// The folder the runtime is copied to, inside the output directory, with [`TsRuntime::Vendor`].
pub const RUNTIME_DIR: &str = "kafkasocks-runtime";

/// The npm package of the runtime, what generated code imports with [`TsRuntime::Package`].
pub const RUNTIME_PACKAGE: &str = "@kafkasocks/runtime";

/// Where generated TypeScript gets the KafkaSocks runtime from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsRuntime {
    /// Import the npm package `@kafkasocks/runtime` (and `@kafkasocks/runtime/json`) by name:
    /// the project depends on it (`npm install @kafkasocks/runtime@^<version>`). The default.
    #[default]
    Package,
    /// Copy the runtime's sources into `kafkasocks-runtime/` of the output directory and import
    /// them relatively, for projects without npm dependencies.
    Vendor,
}

/// How generated TypeScript represents messages ([`crate::Builder::ts_message_model`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TsMessageModel {
    /// kafkasocks-gen's own: per message an interface, a binary codec (`$ks.MessageCodec`)
    /// and a proto3 JSON codec, per enum a const object, and the service descriptors over
    /// them. Needs nothing but the KafkaSocks runtime. The default.
    #[default]
    KafkaSocks,
    /// protobuf-es v2 (`@bufbuild/protobuf`): the message types and their `<Message>Schema`s
    /// come from what protoc-gen-es generates (`<name>_pb.ts`, in the same output directory;
    /// well-known types from `@bufbuild/protobuf/wkt`), and only the service descriptors
    /// and client types are generated, in `<name>_kafkasocks.ts` for each input file with
    /// stream services. Requests take a message or an init object (`create(Schema, init)`),
    /// records are protobuf-es messages (`fromBinary(Schema, bytes)`), the bytes are those
    /// of [`TsMessageModel::KafkaSocks`]. No JSON descriptors (`<Service>Json`): protobuf-es
    /// has its own JSON (`toJson(Schema, message)`).
    ProtobufEs,
}

/// The extension of the relative imports of protoc-gen-es output, as its `import_extension`
/// option sets it ([`crate::Builder::ts_import_extension`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsImportExtension {
    /// `./chat_pb`: protoc-gen-es v2's default (bundlers, `moduleResolution: "bundler"`).
    #[default]
    None,
    /// `./chat_pb.js`: for Node's ES modules (`moduleResolution: "nodenext"`).
    Js,
    /// `./chat_pb.ts`: for `allowImportingTsExtensions`, Deno, Bun.
    Ts,
}

impl TsImportExtension {
    /// The suffix added to an import path: "", ".js" or ".ts".
    fn suffix(self) -> &'static str {
        match self {
            TsImportExtension::None => "",
            TsImportExtension::Js => ".js",
            TsImportExtension::Ts => ".ts",
        }
    }
}

/// The TypeScript settings of the builder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TsOptions {
    pub(crate) runtime: TsRuntime,
    pub(crate) messages: TsMessageModel,
    pub(crate) import_extension: TsImportExtension,
}

/// A constant of the embedded runtime's `version.ts` (`export const NAME = value;`).
fn runtime_constant(name: &str) -> &'static str {
    let version = RUNTIME.iter().find(|(n, _)| *n == "version.ts").map(|(_, t)| *t).unwrap_or("");
    let prefix = format!("export const {name} = ");
    version
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_end_matches(';').trim_matches('"'))
        .unwrap_or("")
}

/// The runtime version generated code is written for (`RUNTIME_VERSION` of the embedded runtime).
pub fn runtime_version() -> &'static str {
    runtime_constant("RUNTIME_VERSION")
}

/// The code generation interface generated code is written for (`CODEGEN_INTERFACE` of the
/// embedded runtime); every generated file checks it at type-check time.
pub fn codegen_interface() -> &'static str {
    runtime_constant("CODEGEN_INTERFACE")
}

/// The npm range of runtimes generated code works with: `^<RUNTIME_VERSION>`.
pub fn runtime_range() -> String {
    format!("^{}", runtime_version())
}

/// Generates every output file: relative path -> contents.
pub(crate) fn generate(model: &Model, options: &TsOptions) -> BTreeMap<String, String> {
    let runtime = options.runtime;
    let mut out = match options.messages {
        TsMessageModel::KafkaSocks => {
            let mut out = BTreeMap::new();
            let files = needed_files(model);
            for f in model.files.iter().filter(|f| files.contains(&f.name)) {
                out.insert(output_path(&f.name), FileEmitter::new(model, f, &files, runtime).emit());
            }
            out
        }
        TsMessageModel::ProtobufEs => protobuf_es::generate(model, options),
    };
    if runtime == TsRuntime::Vendor {
        for (name, text) in RUNTIME {
            let body = format!(
                "// @generated by kafkasocks-gen v{}: a copy of {RUNTIME_PACKAGE} {} ({name}). DO NOT EDIT.\n/* eslint-disable */\n{text}",
                crate::VERSION,
                runtime_version()
            );
            out.insert(format!("{RUNTIME_DIR}/{name}"), body);
        }
    }
    out
}

/// The first line every generated file starts with (how `--check` and clean-up recognise
/// files this generator owns).
pub(crate) const STAMP_PREFIX: &str = "// @generated by kafkasocks-gen";

/// "chat/v1/chat.proto" -> "chat/v1/chat_kafkasocks.ts".
pub fn output_path(proto: &str) -> String {
    let stem = proto.strip_suffix(".proto").unwrap_or(proto);
    format!("{stem}_kafkasocks.ts")
}

/// Requested files, plus the files defining every type they use (transitively).
fn needed_files(model: &Model) -> BTreeSet<String> {
    let types = crate::model::type_files(model);
    let mut set: BTreeSet<String> = model.files.iter().filter(|f| f.requested).map(|f| f.name.clone()).collect();
    let mut queue: Vec<String> = set.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        let Some(f) = model.file(&name) else { continue };
        let mut refs: BTreeSet<String> = BTreeSet::new();
        for m in &f.messages {
            refs.extend(crate::model::referenced_types(m));
        }
        for s in &f.services {
            for m in &s.methods {
                refs.insert(m.input.clone());
                refs.insert(m.output.clone());
            }
        }
        for r in refs {
            if let Some(file) = types.get(&r)
                && set.insert(file.clone())
            {
                queue.push(file.clone());
            }
        }
    }
    set
}

/// Words a generated top-level name must not be (TS/JS reserved words, and globals the
/// generated code uses).
const RESERVED: &[&str] = &[
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
    "enum",
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
    "as",
    "implements",
    "interface",
    "let",
    "package",
    "private",
    "protected",
    "public",
    "static",
    "yield",
    "any",
    "boolean",
    "constructor",
    "declare",
    "get",
    "module",
    "require",
    "number",
    "set",
    "string",
    "symbol",
    "type",
    "from",
    "of",
    "await",
    "async",
    "object",
    "never",
    "unknown",
    "bigint",
    "undefined",
    "arguments",
    "eval",
    "Array",
    "ArrayBuffer",
    "BigInt",
    "Boolean",
    "DataView",
    "Date",
    "Error",
    "Function",
    "Infinity",
    "JSON",
    "Map",
    "Math",
    "NaN",
    "Number",
    "Object",
    "Promise",
    "Record",
    "Partial",
    "ReadonlyArray",
    "Set",
    "String",
    "Symbol",
    "TextDecoder",
    "TextEncoder",
    "Uint8Array",
    "globalThis",
    "keyof",
    "readonly",
    "satisfies",
    "infer",
    "is",
    "asserts",
    "accessor",
    "out",
    "override",
    "abstract",
    "namespace",
    "global",
    // Locals and parameters of the generated codec methods.
    "b",
    "e",
    "k",
    "m",
    "o",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
    "_m",
    "_options",
    "bytes",
    "endGroup",
    "into",
    "json",
    "key",
    "options",
    "seen",
    "value",
];

/// Property names that would misbehave on plain objects.
fn safe_property(name: &str) -> String {
    if name == "__proto__" { format!("{name}$") } else { name.to_owned() }
}

/// Allocates unique identifiers: the first taker keeps the name, later ones get `$`s.
#[derive(Default)]
struct Names {
    taken: BTreeSet<String>,
}

impl Names {
    fn with_reserved(reserved: &[&str]) -> Names {
        Names { taken: reserved.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn take(&mut self, want: &str) -> String {
        let mut name = want.to_owned();
        while self.taken.contains(&name) {
            name.push('$');
        }
        self.taken.insert(name.clone());
        name
    }
}

/// protoc's lowerCamelCase of a field name (what JSON names are made of).
fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    let mut chars = out.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => out,
    }
}

/// A JSON-compatible string literal.
fn string_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_64(s: Scalar) -> bool {
    matches!(s, Scalar::Int64 | Scalar::Uint64 | Scalar::Sint64 | Scalar::Fixed64 | Scalar::Sfixed64)
}

fn scalar_ts(s: Scalar) -> &'static str {
    match s {
        Scalar::Bool => "boolean",
        Scalar::String => "string",
        Scalar::Bytes => "Uint8Array",
        s if is_64(s) => "bigint",
        _ => "number",
    }
}

fn scalar_default(s: Scalar) -> &'static str {
    match s {
        Scalar::Bool => "false",
        Scalar::String => "\"\"",
        Scalar::Bytes => "new Uint8Array(0)",
        s if is_64(s) => "0n",
        _ => "0",
    }
}

/// The check that a value differs from the scalar's default (for implicit presence).
fn scalar_non_default(s: Scalar, v: &str) -> String {
    match s {
        Scalar::Bool => v.to_owned(),
        Scalar::String => format!("{v} !== \"\""),
        Scalar::Bytes => format!("{v}.length !== 0"),
        s if is_64(s) => format!("{v} !== 0n"),
        _ => format!("{v} !== 0"),
    }
}

fn wire_type(s: Scalar) -> u32 {
    match s {
        Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => 1,
        Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => 5,
        Scalar::String | Scalar::Bytes => 2,
        _ => 0,
    }
}

fn tag(number: u32, wire: u32) -> u32 {
    (number << 3) | wire
}

/// Doc comment lines as JSDoc at `indent`.
fn jsdoc(out: &mut String, indent: &str, lines: &[String]) {
    let lines: Vec<String> = lines.iter().map(|l| l.replace("*/", "*\\/")).collect();
    if lines.iter().all(|l| l.trim().is_empty()) {
        return;
    }
    if lines.len() == 1 {
        let _ = writeln!(out, "{indent}/** {} */", lines[0].trim());
        return;
    }
    let _ = writeln!(out, "{indent}/**");
    for l in &lines {
        if l.trim().is_empty() {
            let _ = writeln!(out, "{indent} *");
        } else {
            let _ = writeln!(out, "{indent} * {}", l.trim_end());
        }
    }
    let _ = writeln!(out, "{indent} */");
}

fn comment_lines(c: &Comments, extra: &[String]) -> Vec<String> {
    let mut lines = c.lines.clone();
    if !extra.is_empty() {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.extend(extra.iter().cloned());
    }
    lines
}

/// How a field appears in the TS interface.
struct Prop {
    name: String,
}

struct FileEmitter<'a> {
    model: &'a Model,
    file: &'a ProtoFile,
    /// Full type name -> TS expression naming it (local name or `alias.Name`).
    type_names: BTreeMap<String, String>,
    /// Other generated files this one imports: alias -> relative module path.
    imports: BTreeMap<String, String>,
    /// Message full name -> property name per field number, and per oneof index.
    props: BTreeMap<String, (BTreeMap<u32, Prop>, Vec<String>)>,
    /// Full message name -> TS expression naming its JSON codec (`<Message>Json`).
    json_names: BTreeMap<String, String>,
    /// Local names of services, and of their JSON descriptors.
    service_names: Vec<String>,
    service_json_names: Vec<String>,
    /// In the file defining `google.protobuf.Any`: every generated message (full name, TS
    /// expression of its JSON codec), the registry type URLs are resolved with.
    registry: Vec<(String, String)>,
    runtime: TsRuntime,
}

/// The top-level names of one generated file, allocated in a fixed order (messages, enums,
/// services, JSON codecs of messages, JSON descriptors of services): the first taker keeps
/// a name, so a message called `FooJson` keeps it and `Foo`'s JSON codec becomes `FooJson$`.
struct LocalNames {
    types: BTreeMap<String, String>,
    json: BTreeMap<String, String>,
    services: Vec<String>,
    service_json: Vec<String>,
}

fn local_names(file: &ProtoFile) -> (Names, LocalNames) {
    let mut names = Names::with_reserved(RESERVED);
    let mut types = BTreeMap::new();
    for m in &file.messages {
        types.insert(m.full_name.clone(), names.take(&m.path.join("_")));
    }
    for e in &file.enums {
        types.insert(e.full_name.clone(), names.take(&e.path.join("_")));
    }
    let services: Vec<String> = file.services.iter().map(|s| names.take(&s.name)).collect();
    let mut json = BTreeMap::new();
    for m in &file.messages {
        let base = types.get(&m.full_name).cloned().unwrap_or_default();
        json.insert(m.full_name.clone(), names.take(&format!("{base}Json")));
    }
    let service_json = services.iter().map(|s| names.take(&format!("{s}Json"))).collect();
    (names, LocalNames { types, json, services, service_json })
}

impl<'a> FileEmitter<'a> {
    fn new(model: &'a Model, file: &'a ProtoFile, generated: &BTreeSet<String>, runtime: TsRuntime) -> FileEmitter<'a> {
        let (mut names, local) = local_names(file);
        let LocalNames { types: mut type_names, json: mut json_names, services: service_names, service_json } = local;
        // Types of other files, through one namespace import per file.
        let types = crate::model::type_files(model);
        let mut used: BTreeSet<String> = BTreeSet::new();
        for m in &file.messages {
            used.extend(crate::model::referenced_types(m));
        }
        for s in &file.services {
            for m in &s.methods {
                used.insert(m.input.clone());
                used.insert(m.output.clone());
            }
        }
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        let mut imports = BTreeMap::new();
        let here = output_path(&file.name);
        let mut alias_of = |other: &String| -> String {
            aliases
                .entry(other.clone())
                .or_insert_with(|| {
                    let stem = other.strip_suffix(".proto").unwrap_or(other);
                    let base: String =
                        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
                    let base = if base.starts_with(|c: char| c.is_ascii_digit()) { format!("_{base}") } else { base };
                    let alias = names.take(&base);
                    imports.insert(alias.clone(), relative_module(&here, &output_path(other)));
                    alias
                })
                .clone()
        };
        for ty in &used {
            let Some(other) = types.get(ty) else { continue };
            if *other == file.name {
                continue;
            }
            let alias = alias_of(other);
            let (local, local_json) = local_name(model, other, ty);
            type_names.insert(ty.clone(), format!("{alias}.{local}"));
            if let Some(j) = local_json {
                json_names.insert(ty.clone(), format!("{alias}.{j}"));
            }
        }
        // The Any module resolves type URLs: it knows every message generated with it.
        let mut registry = Vec::new();
        if json::defines_any(&file.messages) {
            for f in model.files.iter().filter(|f| generated.contains(&f.name)) {
                for m in &f.messages {
                    let ts = if f.name == file.name {
                        json_names.get(&m.full_name).cloned().unwrap_or_else(|| "never".to_owned())
                    } else {
                        let json = local_name(model, &f.name, &m.full_name).1.unwrap_or_else(|| "never".to_owned());
                        format!("{}.{json}", alias_of(&f.name))
                    };
                    registry.push((m.full_name.clone(), ts));
                }
            }
            registry.sort();
        }
        let mut props = BTreeMap::new();
        for m in &file.messages {
            let mut names = Names::with_reserved(&["$unknown"]);
            let mut fields = BTreeMap::new();
            let mut oneofs = Vec::new();
            // Oneof properties take their names at the position of their first member.
            let mut oneof_named: Vec<Option<String>> = vec![None; m.oneofs.len()];
            for f in &m.fields {
                if let Some(o) = f.oneof
                    && oneof_named[o].is_none()
                {
                    oneof_named[o] = Some(names.take(&safe_property(&lower_camel(&m.oneofs[o].name))));
                }
                let name = names.take(&safe_property(&lower_camel(&f.name)));
                fields.insert(f.number, Prop { name });
            }
            for (i, o) in oneof_named.into_iter().enumerate() {
                oneofs.push(o.unwrap_or_else(|| names.take(&lower_camel(&m.oneofs[i].name))));
            }
            props.insert(m.full_name.clone(), (fields, oneofs));
        }
        FileEmitter {
            model,
            file,
            type_names,
            imports,
            props,
            json_names,
            service_names,
            service_json_names: service_json,
            registry,
            runtime,
        }
    }

    fn type_name(&self, full_name: &str) -> String {
        self.type_names.get(full_name).cloned().unwrap_or_else(|| "never".to_owned())
    }

    /// The TS expression naming the JSON codec of a message.
    fn json_name(&self, full_name: &str) -> String {
        self.json_names.get(full_name).cloned().unwrap_or_else(|| "never".to_owned())
    }

    fn emit(&self) -> String {
        let mut out = String::new();
        emit_header(&mut out, self.file, self.runtime, &[]);
        let (runtime, support) = runtime_modules(&output_path(&self.file.name), self.runtime);
        let _ = writeln!(out, "import * as $ks from {};", string_literal(&runtime));
        if !self.file.messages.is_empty() || !self.file.services.is_empty() {
            let _ = writeln!(out, "import * as $j from {};", string_literal(&support));
        }
        for (alias, path) in &self.imports {
            let _ = writeln!(out, "import * as {alias} from {};", string_literal(path));
        }
        out.push('\n');
        emit_runtime_check(&mut out);
        for e in &self.file.enums {
            out.push('\n');
            self.emit_enum(&mut out, e);
        }
        for m in &self.file.messages {
            out.push('\n');
            self.emit_interface(&mut out, m);
            out.push('\n');
            self.emit_codec(&mut out, m);
        }
        for ((s, name), json_name) in self.file.services.iter().zip(&self.service_names).zip(&self.service_json_names) {
            out.push('\n');
            emit_service(&mut out, s, name, |full_name, _| self.type_name(full_name));
            out.push('\n');
            self.emit_service_json(&mut out, s, name, json_name);
        }
        if !self.registry.is_empty() {
            out.push('\n');
            self.emit_type_registry(&mut out);
        }
        out
    }

    fn emit_enum(&self, out: &mut String, e: &Enum) {
        let name = self.type_name(&e.full_name);
        jsdoc(out, "", &comment_lines(&e.comments, &[format!("`{}`", e.full_name)]));
        let _ = writeln!(out, "export const {name} = {{");
        let mut keys = Names::default();
        for v in &e.values {
            jsdoc(out, "  ", &v.comments.lines);
            let _ = writeln!(out, "  {}: {},", keys.take(&safe_property(&v.name)), v.number);
        }
        let _ = writeln!(out, "}} as const;");
        jsdoc(
            out,
            "",
            &[format!(
                "A `{}` value. Open: numbers this schema does not know (from newer writers) are kept as they are.",
                e.full_name
            )],
        );
        let _ = writeln!(out, "export type {name} = (typeof {name})[keyof typeof {name}] | (number & {{}});");
    }

    fn element_ts(&self, ty: &FieldType) -> String {
        match ty {
            FieldType::Scalar(s) => scalar_ts(*s).to_owned(),
            FieldType::Enum(n) | FieldType::Message(n) | FieldType::Group(n) => self.type_name(n),
        }
    }

    fn field_ts(&self, f: &Field) -> String {
        let el = self.element_ts(&f.ty);
        match &f.label {
            Label::Repeated { .. } => format!("{el}[]"),
            Label::Map { key } => format!("Map<{}, {el}>", scalar_ts(*key)),
            _ => el,
        }
    }

    fn props(&self, m: &Message) -> &(BTreeMap<u32, Prop>, Vec<String>) {
        static EMPTY: std::sync::OnceLock<(BTreeMap<u32, Prop>, Vec<String>)> = std::sync::OnceLock::new();
        self.props.get(&m.full_name).unwrap_or_else(|| EMPTY.get_or_init(|| (BTreeMap::new(), Vec::new())))
    }

    fn prop(&self, m: &Message, f: &Field) -> String {
        self.props(m).0.get(&f.number).map(|p| p.name.clone()).unwrap_or_else(|| lower_camel(&f.name))
    }

    fn emit_interface(&self, out: &mut String, m: &Message) {
        let name = self.type_name(&m.full_name);
        jsdoc(out, "", &comment_lines(&m.comments, &[format!("`{}`", m.full_name)]));
        let _ = writeln!(out, "export interface {name} {{");
        let oneof_props = &self.props(m).1;
        let mut done_oneofs = BTreeSet::new();
        for f in &m.fields {
            if let Some(o) = f.oneof {
                if !done_oneofs.insert(o) {
                    continue;
                }
                let members: Vec<&Field> = m.fields.iter().filter(|g| g.oneof == Some(o)).collect();
                let oneof = &m.oneofs[o];
                let mut doc = oneof.comments.lines.clone();
                if !doc.is_empty() {
                    doc.push(String::new());
                }
                doc.push(format!("oneof `{}`: at most one of the cases below; absent when none is set.", oneof.name));
                for g in &members {
                    let c = g.comments.lines.join(" ");
                    doc.push(format!(
                        "- `{}` (field {}){}",
                        self.prop(m, g),
                        g.number,
                        if c.trim().is_empty() { String::new() } else { format!(": {}", c.trim()) }
                    ));
                }
                jsdoc(out, "  ", &doc);
                let cases: Vec<String> = members
                    .iter()
                    .map(|g| {
                        format!("{{ case: {}; value: {} }}", string_literal(&self.prop(m, g)), self.element_ts(&g.ty))
                    })
                    .collect();
                let one_line = format!("  {}?: {} | undefined;", oneof_props[o], cases.join(" | "));
                if one_line.len() <= 110 {
                    let _ = writeln!(out, "{one_line}");
                } else {
                    let _ = writeln!(out, "  {}?:", oneof_props[o]);
                    for c in &cases {
                        let _ = writeln!(out, "    | {c}");
                    }
                    let _ = writeln!(out, "    | undefined;");
                }
                continue;
            }
            let mut extra = Vec::new();
            let ty = &f.ty;
            if let FieldType::Scalar(s) = ty
                && is_64(*s)
            {
                extra.push(format!("{} (64-bit: a bigint).", s.proto_name()));
            }
            if let Some(d) = &f.default {
                extra.push(format!("Default when absent: `{d}`."));
            }
            jsdoc(out, "  ", &comment_lines(&f.comments, &extra));
            let optional = matches!(f.label, Label::Optional);
            let ts = self.field_ts(f);
            if optional {
                let _ = writeln!(out, "  {}?: {ts} | undefined;", self.prop(m, f));
            } else {
                let _ = writeln!(out, "  {}: {ts};", self.prop(m, f));
            }
        }
        let _ = writeln!(
            out,
            "  /** Fields this schema does not know, kept as read (tag included) and written back on encode. */"
        );
        let _ = writeln!(out, "  $unknown?: Uint8Array[] | undefined;");
        let _ = writeln!(out, "}}");
    }

    fn default_value(&self, f: &Field) -> String {
        match &f.label {
            Label::Repeated { .. } => return "[]".to_owned(),
            Label::Map { .. } => return "new Map()".to_owned(),
            _ => {}
        }
        match &f.ty {
            FieldType::Scalar(s) => match &f.default {
                Some(d) if f.label == Label::Required => proto2_default(*s, d),
                _ => scalar_default(*s).to_owned(),
            },
            FieldType::Enum(n) => {
                let first = self.model.enumeration(n).and_then(|(_, e)| e.values.first().map(|v| v.number));
                match (&f.default, self.model.enumeration(n)) {
                    (Some(d), Some((_, e))) => {
                        e.values.iter().find(|v| &v.name == d).map(|v| v.number).unwrap_or(0).to_string()
                    }
                    _ if f.label == Label::Required => first.unwrap_or(0).to_string(),
                    _ => "0".to_owned(),
                }
            }
            FieldType::Message(n) | FieldType::Group(n) => format!("{}.create()", self.type_name(n)),
        }
    }

    fn emit_codec(&self, out: &mut String, m: &Message) {
        let name = self.type_name(&m.full_name);
        jsdoc(
            out,
            "",
            &[format!(
                "Binary codec of `{}` (its proto3 JSON mapping is `{}`).",
                m.full_name,
                self.json_name(&m.full_name)
            )],
        );
        let _ = writeln!(out, "export const {name}: $ks.MessageCodec<{name}> = {{");
        let _ = writeln!(out, "  typeName: {},", string_literal(&m.full_name));
        // create
        let _ = writeln!(out, "  create(): {name} {{");
        let inits: Vec<String> = m
            .fields
            .iter()
            .filter(|f| f.oneof.is_none() && !matches!(f.label, Label::Optional))
            .map(|f| format!("{}: {}", self.prop(m, f), self.default_value(f)))
            .collect();
        let one_line = format!("    return {{ {} }};", inits.join(", "));
        if inits.is_empty() {
            let _ = writeln!(out, "    return {{}};");
        } else if one_line.len() <= 110 {
            let _ = writeln!(out, "{one_line}");
        } else {
            let _ = writeln!(out, "    return {{");
            for i in &inits {
                let _ = writeln!(out, "      {i},");
            }
            let _ = writeln!(out, "    }};");
        }
        let _ = writeln!(out, "  }},");
        // encode / decode
        let _ = writeln!(out, "  encode(value: {name}): Uint8Array<ArrayBuffer> {{");
        let _ = writeln!(out, "    const w = new $ks.Writer();");
        let _ = writeln!(out, "    {name}.write(value, w);");
        let _ = writeln!(out, "    return w.finish();");
        let _ = writeln!(out, "  }},");
        let _ = writeln!(out, "  decode(bytes: Uint8Array): {name} {{");
        let _ = writeln!(out, "    return {name}.read(new $ks.Reader(bytes));");
        let _ = writeln!(out, "  }},");
        self.emit_write(out, m, &name);
        self.emit_read(out, m, &name);
        let _ = writeln!(out, "}};");
        out.push('\n');
        self.emit_json(out, m, &name);
    }

    fn emit_write(&self, out: &mut String, m: &Message, name: &str) {
        let _ = writeln!(out, "  write(m: {name}, w: $ks.Writer): void {{");
        for item in self.items(m) {
            match item {
                Item::Field(f) => self.write_field(out, m, f),
                Item::Oneof(o) => {
                    let prop = &self.props(m).1[o];
                    let _ = writeln!(out, "    const {} = m.{prop};", oneof_var(o));
                    let _ = writeln!(out, "    switch ({}?.case) {{", oneof_var(o));
                    for g in m.fields.iter().filter(|g| g.oneof == Some(o)) {
                        let _ = writeln!(out, "      case {}:", string_literal(&self.prop(m, g)));
                        let mut body = String::new();
                        self.write_value(&mut body, g, &format!("{}.value", oneof_var(o)), "        ");
                        out.push_str(&body);
                        let _ = writeln!(out, "        break;");
                    }
                    let _ = writeln!(out, "    }}");
                }
            }
        }
        let _ = writeln!(out, "    if (m.$unknown !== undefined) for (const u of m.$unknown) w.raw(u);");
        let _ = writeln!(out, "  }},");
    }

    /// Writes one value of field `f` (tag included), always.
    fn write_value(&self, out: &mut String, f: &Field, v: &str, indent: &str) {
        match &f.ty {
            FieldType::Scalar(s) => {
                let _ = writeln!(out, "{indent}w.uint32({}).{}({v});", tag(f.number, wire_type(*s)), s.proto_name());
            }
            FieldType::Enum(_) => {
                let _ = writeln!(out, "{indent}w.uint32({}).int32({v});", tag(f.number, 0));
            }
            FieldType::Message(n) => {
                let _ = writeln!(out, "{indent}w.uint32({}).fork();", tag(f.number, 2));
                let _ = writeln!(out, "{indent}{}.write({v}, w);", self.type_name(n));
                let _ = writeln!(out, "{indent}w.join();");
            }
            FieldType::Group(n) => {
                let _ = writeln!(out, "{indent}w.uint32({});", tag(f.number, 3));
                let _ = writeln!(out, "{indent}{}.write({v}, w);", self.type_name(n));
                let _ = writeln!(out, "{indent}w.uint32({});", tag(f.number, 4));
            }
        }
    }

    /// Fields and oneofs in prost's order: by field number, a oneof at its lowest member's number.
    fn items<'m>(&self, m: &'m Message) -> Vec<Item<'m>> {
        let mut items: Vec<(u32, Item<'m>)> = Vec::new();
        let mut oneof_seen = BTreeSet::new();
        for f in &m.fields {
            match f.oneof {
                Some(o) => {
                    if oneof_seen.insert(o) {
                        let min = m.fields.iter().filter(|g| g.oneof == Some(o)).map(|g| g.number).min().unwrap_or(0);
                        items.push((min, Item::Oneof(o)));
                    }
                }
                None => items.push((f.number, Item::Field(f))),
            }
        }
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, i)| i).collect()
    }

    fn write_field(&self, out: &mut String, m: &Message, f: &Field) {
        let p = format!("m.{}", self.prop(m, f));
        match &f.label {
            Label::Implicit => {
                let cond = match &f.ty {
                    FieldType::Scalar(s) => scalar_non_default(*s, &p),
                    FieldType::Enum(_) => format!("{p} !== 0"),
                    _ => format!("{p} !== undefined"),
                };
                let _ = writeln!(out, "    if ({cond}) {{");
                self.write_value(out, f, &p, "      ");
                let _ = writeln!(out, "    }}");
            }
            Label::Optional => {
                let _ = writeln!(out, "    if ({p} !== undefined) {{");
                self.write_value(out, f, &p, "      ");
                let _ = writeln!(out, "    }}");
            }
            Label::Required => self.write_value(out, f, &p, "    "),
            Label::Repeated { packed } => {
                let packable = match &f.ty {
                    FieldType::Scalar(s) => s.is_packable(),
                    FieldType::Enum(_) => true,
                    _ => false,
                };
                if *packed && packable {
                    let method = match &f.ty {
                        FieldType::Scalar(s) => s.proto_name(),
                        _ => "int32",
                    };
                    let _ = writeln!(out, "    if ({p}.length !== 0) {{");
                    let _ = writeln!(out, "      w.uint32({}).fork();", tag(f.number, 2));
                    let _ = writeln!(out, "      for (const v of {p}) w.{method}(v);");
                    let _ = writeln!(out, "      w.join();");
                    let _ = writeln!(out, "    }}");
                } else {
                    let _ = writeln!(out, "    for (const v of {p}) {{");
                    self.write_value(out, f, "v", "      ");
                    let _ = writeln!(out, "    }}");
                }
            }
            Label::Map { key } => {
                let _ = writeln!(out, "    for (const [k, v] of {p}) {{");
                let _ = writeln!(out, "      w.uint32({}).fork();", tag(f.number, 2));
                let _ = writeln!(
                    out,
                    "      if ({}) w.uint32({}).{}(k);",
                    scalar_non_default(*key, "k"),
                    tag(1, wire_type(*key)),
                    key.proto_name()
                );
                match &f.ty {
                    FieldType::Scalar(s) => {
                        let _ = writeln!(
                            out,
                            "      if ({}) w.uint32({}).{}(v);",
                            scalar_non_default(*s, "v"),
                            tag(2, wire_type(*s)),
                            s.proto_name()
                        );
                    }
                    FieldType::Enum(_) => {
                        let _ = writeln!(out, "      if (v !== 0) w.uint32({}).int32(v);", tag(2, 0));
                    }
                    FieldType::Message(n) | FieldType::Group(n) => {
                        // prost leaves out a value equal to the default (one that encodes to nothing).
                        let _ = writeln!(out, "      const b = {}.encode(v);", self.type_name(n));
                        let _ = writeln!(out, "      if (b.length !== 0) w.uint32({}).bytes(b);", tag(2, 2));
                    }
                }
                let _ = writeln!(out, "      w.join();");
                let _ = writeln!(out, "    }}");
            }
        }
    }

    fn read_scalar(s: Scalar, r: &str) -> String {
        format!("{r}.{}()", s.proto_name())
    }

    fn emit_read(&self, out: &mut String, m: &Message, name: &str) {
        let _ = writeln!(out, "  read(r: $ks.Reader, endGroup = 0, into?: {name}): {name} {{");
        let _ = writeln!(out, "    const m = into ?? {name}.create();");
        let _ = writeln!(out, "    while (!r.eof()) {{");
        let _ = writeln!(out, "      const t = r.tag();");
        let _ = writeln!(out, "      switch (t) {{");
        for f in &m.fields {
            let p = format!("m.{}", self.prop(m, f));
            match (&f.label, f.oneof) {
                (_, Some(o)) => {
                    let prop = &self.props(m).1[o];
                    let case = string_literal(&self.prop(m, f));
                    let (t, value) = match &f.ty {
                        FieldType::Scalar(s) => (tag(f.number, wire_type(*s)), Self::read_scalar(*s, "r")),
                        FieldType::Enum(_) => (tag(f.number, 0), "r.int32()".to_owned()),
                        FieldType::Message(n) => (
                            tag(f.number, 2),
                            format!(
                                "{}.read(r.sub(), 0, m.{prop}?.case === {case} ? m.{prop}.value : undefined)",
                                self.type_name(n)
                            ),
                        ),
                        FieldType::Group(n) => (
                            tag(f.number, 3),
                            format!(
                                "{}.read(r, {}, m.{prop}?.case === {case} ? m.{prop}.value : undefined)",
                                self.type_name(n),
                                tag(f.number, 4)
                            ),
                        ),
                    };
                    let _ = writeln!(out, "        case {t}:");
                    let _ = writeln!(out, "          m.{prop} = {{ case: {case}, value: {value} }};");
                    let _ = writeln!(out, "          break;");
                }
                (Label::Repeated { .. }, None) => match &f.ty {
                    FieldType::Scalar(s) if s.is_packable() => {
                        let _ = writeln!(out, "        case {}:", tag(f.number, wire_type(*s)));
                        let _ = writeln!(out, "          {p}.push({});", Self::read_scalar(*s, "r"));
                        let _ = writeln!(out, "          break;");
                        let _ = writeln!(out, "        case {}: {{", tag(f.number, 2));
                        let _ = writeln!(out, "          const s = r.sub();");
                        let _ = writeln!(out, "          while (!s.eof()) {p}.push({});", Self::read_scalar(*s, "s"));
                        let _ = writeln!(out, "          break;");
                        let _ = writeln!(out, "        }}");
                    }
                    FieldType::Scalar(s) => {
                        let _ = writeln!(out, "        case {}:", tag(f.number, 2));
                        let _ = writeln!(out, "          {p}.push({});", Self::read_scalar(*s, "r"));
                        let _ = writeln!(out, "          break;");
                    }
                    FieldType::Enum(_) => {
                        let _ = writeln!(out, "        case {}:", tag(f.number, 0));
                        let _ = writeln!(out, "          {p}.push(r.int32());");
                        let _ = writeln!(out, "          break;");
                        let _ = writeln!(out, "        case {}: {{", tag(f.number, 2));
                        let _ = writeln!(out, "          const s = r.sub();");
                        let _ = writeln!(out, "          while (!s.eof()) {p}.push(s.int32());");
                        let _ = writeln!(out, "          break;");
                        let _ = writeln!(out, "        }}");
                    }
                    FieldType::Message(n) => {
                        let _ = writeln!(out, "        case {}:", tag(f.number, 2));
                        let _ = writeln!(out, "          {p}.push({}.read(r.sub()));", self.type_name(n));
                        let _ = writeln!(out, "          break;");
                    }
                    FieldType::Group(n) => {
                        let _ = writeln!(out, "        case {}:", tag(f.number, 3));
                        let _ =
                            writeln!(out, "          {p}.push({}.read(r, {}));", self.type_name(n), tag(f.number, 4));
                        let _ = writeln!(out, "          break;");
                    }
                },
                (Label::Map { key }, None) => {
                    let _ = writeln!(out, "        case {}: {{", tag(f.number, 2));
                    let _ = writeln!(out, "          const s = r.sub();");
                    let _ = writeln!(out, "          let k: {} = {};", scalar_ts(*key), scalar_default(*key));
                    let (vty, vinit) = match &f.ty {
                        FieldType::Scalar(s) => (scalar_ts(*s).to_owned(), scalar_default(*s).to_owned()),
                        FieldType::Enum(n) => (self.type_name(n), "0".to_owned()),
                        FieldType::Message(n) | FieldType::Group(n) => {
                            (format!("{} | undefined", self.type_name(n)), "undefined".to_owned())
                        }
                    };
                    let _ = writeln!(out, "          let v: {vty} = {vinit};");
                    let _ = writeln!(out, "          while (!s.eof()) {{");
                    let _ = writeln!(out, "            const u = s.tag();");
                    let _ = writeln!(
                        out,
                        "            if (u === {}) k = {};",
                        tag(1, wire_type(*key)),
                        Self::read_scalar(*key, "s")
                    );
                    let value_read = match &f.ty {
                        FieldType::Scalar(sc) => (tag(2, wire_type(*sc)), Self::read_scalar(*sc, "s")),
                        FieldType::Enum(_) => (tag(2, 0), "s.int32()".to_owned()),
                        FieldType::Message(n) | FieldType::Group(n) => {
                            (tag(2, 2), format!("{}.read(s.sub(), 0, v)", self.type_name(n)))
                        }
                    };
                    let _ = writeln!(out, "            else if (u === {}) v = {};", value_read.0, value_read.1);
                    let _ = writeln!(out, "            else s.skip(u);");
                    let _ = writeln!(out, "          }}");
                    match &f.ty {
                        FieldType::Message(n) | FieldType::Group(n) => {
                            let _ = writeln!(out, "          {p}.set(k, v ?? {}.create());", self.type_name(n));
                        }
                        _ => {
                            let _ = writeln!(out, "          {p}.set(k, v);");
                        }
                    }
                    let _ = writeln!(out, "          break;");
                    let _ = writeln!(out, "        }}");
                }
                (_, None) => {
                    let (t, value) = match &f.ty {
                        FieldType::Scalar(s) => (tag(f.number, wire_type(*s)), Self::read_scalar(*s, "r")),
                        FieldType::Enum(_) => (tag(f.number, 0), "r.int32()".to_owned()),
                        FieldType::Message(n) => {
                            (tag(f.number, 2), format!("{}.read(r.sub(), 0, {p})", self.type_name(n)))
                        }
                        FieldType::Group(n) => {
                            (tag(f.number, 3), format!("{}.read(r, {}, {p})", self.type_name(n), tag(f.number, 4)))
                        }
                    };
                    let _ = writeln!(out, "        case {t}:");
                    let _ = writeln!(out, "          {p} = {value};");
                    let _ = writeln!(out, "          break;");
                }
            }
        }
        let _ = writeln!(out, "        default:");
        let _ = writeln!(out, "          if (t === endGroup) return m;");
        let _ = writeln!(out, "          (m.$unknown ??= []).push(r.skip(t));");
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "    if (endGroup !== 0) throw new $ks.WireError(\"unterminated group\", r.pos);");
        let _ = writeln!(out, "    return m;");
        let _ = writeln!(out, "  }},");
    }

    fn emit_service_json(&self, out: &mut String, s: &Service, name: &str, json_name: &str) {
        jsdoc(
            out,
            "",
            &[
                format!("The proto3 JSON codecs of `{}`'s methods, by full method name:", s.full_name),
                format!("`createClient({name}, connection, {{ serializer: createJsonSerializer({json_name}) }})`."),
            ],
        );
        let _ = writeln!(out, "export const {json_name}: $j.ServiceJson = {{");
        let _ = writeln!(out, "  typeName: {},", string_literal(&s.full_name));
        let _ = writeln!(out, "  methods: {{");
        for m in &s.methods {
            let _ = writeln!(
                out,
                "    {}: {{ input: {}, output: {} }},",
                string_literal(&m.route),
                self.json_name(&m.input),
                self.json_name(&m.output)
            );
        }
        let _ = writeln!(out, "  }},");
        let _ = writeln!(out, "}};");
    }
}

/// What a codec expression in a method descriptor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The request (`input`).
    Input,
    /// The record or response (`output`).
    Output,
}

/// The first lines of a generated file: the stamp, the lint allowance, what it was generated
/// from and what it needs; `extra` lines follow as comments.
fn emit_header(out: &mut String, file: &ProtoFile, runtime: TsRuntime, extra: &[String]) {
    let _ = writeln!(out, "// @generated by kafkasocks-gen v{} from {}. DO NOT EDIT.", crate::VERSION, file.name);
    let syntax = match file.syntax {
        Syntax::Proto2 => "proto2",
        Syntax::Proto3 => "proto3",
    };
    let pkg = if file.package.is_empty() { "(none)".to_owned() } else { file.package.clone() };
    let _ = writeln!(out, "/* eslint-disable */");
    let _ = writeln!(out, "// source: {} ({syntax}, package {pkg})", file.name);
    let needs = match runtime {
        TsRuntime::Package => format!("the npm package {RUNTIME_PACKAGE} {}", runtime_range()),
        TsRuntime::Vendor => format!("{RUNTIME_PACKAGE} {}, copied into {RUNTIME_DIR}/", runtime_version()),
    };
    let _ = writeln!(out, "// runtime: {needs} (code generation interface {}); TypeScript >= 5.7", codegen_interface());
    for line in extra {
        let _ = writeln!(out, "// {line}");
    }
    out.push('\n');
}

/// The import specifiers of the runtime's main and JSON entry points, from output file `here`.
fn runtime_modules(here: &str, runtime: TsRuntime) -> (String, String) {
    match runtime {
        TsRuntime::Package => (RUNTIME_PACKAGE.to_owned(), format!("{RUNTIME_PACKAGE}/json")),
        TsRuntime::Vendor => (
            relative_module(here, &format!("{RUNTIME_DIR}/index.ts")),
            relative_module(here, &format!("{RUNTIME_DIR}/json.ts")),
        ),
    }
}

/// A type that fails to check when the runtime does not implement the code generation
/// interface this file was written for; the error message says what to do.
fn emit_runtime_check(out: &mut String) {
    let n = codegen_interface();
    let message = format!(
        "KafkaSocks: this file was generated for code generation interface {n} of {RUNTIME_PACKAGE} ({}), \
         which the installed runtime does not implement: regenerate it with the kafkasocks-gen that matches \
         your runtime, or upgrade {RUNTIME_PACKAGE}",
        runtime_range()
    );
    let _ = writeln!(out, "type $Require<Ok extends true> = Ok;");
    jsdoc(
        out,
        "",
        &[
            format!("Type-checks only against a runtime that implements code generation interface {n}"),
            format!("(`CODEGEN_INTERFACE` of {RUNTIME_PACKAGE} {}): a mismatch is a type error here.", runtime_range()),
        ],
    );
    let _ = writeln!(
        out,
        "export type $KafkaSocksRuntimeCheck = $Require<{n} extends typeof $ks.CODEGEN_INTERFACE ? true : {}>;",
        string_literal(&message)
    );
}

/// The descriptor of a stream service (`$ks.defineService`) and its client type; `codec` gives
/// the TS expression of a message's codec (full name, request or record).
fn emit_service(out: &mut String, s: &Service, name: &str, codec: impl Fn(&str, Role) -> String) {
    jsdoc(
        out,
        "",
        &comment_lines(
            &s.comments,
            &[format!(
                "`{}`: pass to `createClient` (from the runtime) with a connection to get a typed client.",
                s.full_name
            )],
        ),
    );
    let _ = writeln!(out, "export const {name} = /* @__PURE__ */ $ks.defineService({{");
    let _ = writeln!(out, "  typeName: {},", string_literal(&s.full_name));
    let _ = writeln!(out, "  methods: {{");
    let mut keys = Names::default();
    for m in &s.methods {
        emit_method(out, m, &mut keys, &codec);
    }
    let _ = writeln!(out, "  }},");
    let _ = writeln!(out, "}});");
    jsdoc(out, "", &[format!("The typed client of `{}`: `createClient({name}, connection)`.", s.full_name)]);
    let _ = writeln!(out, "export type {name}Client = $ks.Client<typeof {name}>;");
}

fn emit_method(out: &mut String, m: &Method, keys: &mut Names, codec: &impl Fn(&str, Role) -> String) {
    let (kind, what) = match m.kind {
        RpcKind::ServerStreaming => ("subscribe", format!("Subscribes to topic `{}`", m.topic)),
        RpcKind::Unary => ("publish", format!("Publishes to topic `{}`; resolves with the Kafka receipt", m.topic)),
    };
    let key = match &m.key {
        Some(k) => format!(" (key: field `{}`)", k.name),
        None => String::new(),
    };
    jsdoc(out, "    ", &comment_lines(&m.comments, &[format!("{what}{key}.")]));
    let _ = writeln!(out, "    {}: {{", keys.take(&safe_property(&lower_camel(&m.name))));
    let _ = writeln!(out, "      name: {},", string_literal(&m.route));
    let _ = writeln!(out, "      kind: \"{kind}\",");
    let _ = writeln!(out, "      input: {},", codec(&m.input, Role::Input));
    let _ = writeln!(out, "      output: {},", codec(&m.output, Role::Output));
    let _ = writeln!(out, "    }},");
}

enum Item<'a> {
    Field(&'a Field),
    Oneof(usize),
}

fn oneof_var(o: usize) -> String {
    format!("o{o}")
}

/// The local TS names of a type in the file that defines it: the type (and binary codec), and
/// for a message its JSON codec.
fn local_name(model: &Model, file: &str, full_name: &str) -> (String, Option<String>) {
    let Some(f) = model.file(file) else { return ("never".to_owned(), None) };
    let (_, local) = local_names(f);
    (local.types.get(full_name).cloned().unwrap_or_else(|| "never".to_owned()), local.json.get(full_name).cloned())
}

/// The import specifier of `to` from `from` (both output-relative paths of .ts files).
fn relative_module(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> =
        from.split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d.to_vec()).unwrap_or_default();
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir.iter().zip(to_parts.iter()).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..from_dir.len() {
        parts.push("..".to_owned());
    }
    parts.extend(to_parts[common..].iter().map(|s| (*s).to_owned()));
    let mut path = parts.join("/");
    if !path.starts_with("..") {
        path = format!("./{path}");
    }
    match path.strip_suffix(".ts") {
        Some(stem) => format!("{stem}.js"),
        None => path,
    }
}

/// A proto2 `[default = ...]` as a TS expression.
fn proto2_default(s: Scalar, d: &str) -> String {
    match s {
        Scalar::Bool => (d == "true").to_string(),
        Scalar::String => string_literal(d),
        Scalar::Bytes => {
            let bytes = unescape_c(d);
            format!("new Uint8Array([{}])", bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(", "))
        }
        Scalar::Double | Scalar::Float => match d {
            "inf" => "Infinity".to_owned(),
            "-inf" => "-Infinity".to_owned(),
            "nan" => "NaN".to_owned(),
            _ => d.parse::<f64>().map(|v| format!("{v:?}")).unwrap_or_else(|_| "0".to_owned()),
        },
        s if is_64(s) => d.parse::<i128>().map(|v| format!("{v}n")).unwrap_or_else(|_| "0n".to_owned()),
        _ => d.parse::<i64>().map(|v| v.to_string()).unwrap_or_else(|_| "0".to_owned()),
    }
}

/// protoc's C escaping of bytes defaults.
fn unescape_c(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
            match b[i] {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'\'' => out.push(b'\''),
                b'"' => out.push(b'"'),
                b'0'..=b'7' => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                        v = v * 8 + u32::from(b[i] - b'0');
                        i += 1;
                        n += 1;
                    }
                    out.push((v & 0xff) as u8);
                    continue;
                }
                c => out.push(c),
            }
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
