//! The proto3 JSON mapping of the generated TypeScript: per message a JSON codec
//! `<Message>Json` with `toJson` and `fromJson` (generic ones, or the special forms of the
//! well-known types), and the type registry `google.protobuf.Any` resolves type URLs with.
//! They are built on `@kafkasocks/runtime/json` (`ts-templates/src/json.ts`: parser,
//! readers/writers, `createJsonSerializer`). The JSON codec is an object of its own, apart
//! from the binary codec, so that a bundle which never uses JSON drops all of it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{FileEmitter, Item, is_64, oneof_var, scalar_non_default, string_literal};
use crate::model::{Field, FieldType, Label, Message, Scalar};

const NULL_VALUE: &str = "google.protobuf.NullValue";
const VALUE: &str = "google.protobuf.Value";

/// Well-known types with a JSON form of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wkt {
    Timestamp,
    Duration,
    FieldMask,
    Struct,
    Value,
    ListValue,
    Any,
    /// `google.protobuf.*Value` wrappers: the JSON of their `value` field.
    Wrapper(Scalar),
}

/// The special JSON form of `m`, when it is a well-known type with the standard fields.
fn wkt(m: &Message) -> Option<Wkt> {
    let name = m.full_name.strip_prefix("google.protobuf.")?;
    let fields: Vec<(&str, &FieldType)> = m.fields.iter().map(|f| (f.name.as_str(), &f.ty)).collect();
    let int64 = FieldType::Scalar(Scalar::Int64);
    let int32 = FieldType::Scalar(Scalar::Int32);
    let kind = match name {
        "Timestamp" | "Duration" if fields == [("seconds", &int64), ("nanos", &int32)] => {
            if name == "Timestamp" {
                Wkt::Timestamp
            } else {
                Wkt::Duration
            }
        }
        "FieldMask" if fields == [("paths", &FieldType::Scalar(Scalar::String))] => Wkt::FieldMask,
        "Struct" if fields.len() == 1 && m.fields[0].name == "fields" => Wkt::Struct,
        "Value" if m.oneofs.len() == 1 && m.fields.len() == 6 => Wkt::Value,
        "ListValue" if fields.len() == 1 && m.fields[0].name == "values" => Wkt::ListValue,
        "Any"
            if fields
                == [("type_url", &FieldType::Scalar(Scalar::String)), ("value", &FieldType::Scalar(Scalar::Bytes))] =>
        {
            Wkt::Any
        }
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value" | "UInt32Value" | "BoolValue"
        | "StringValue" | "BytesValue" => match m.fields.as_slice() {
            [f] if f.name == "value" && f.label == Label::Implicit => match f.ty {
                FieldType::Scalar(s) => Wkt::Wrapper(s),
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    Some(kind)
}

/// True when this file defines `google.protobuf.Any` with its JSON form (and so carries the
/// type registry).
pub(super) fn defines_any(messages: &[Message]) -> bool {
    messages.iter().any(|m| wkt(m) == Some(Wkt::Any))
}

/// The reader of a scalar in the support module.
fn reader(s: Scalar) -> &'static str {
    match s {
        Scalar::Double => "readDouble",
        Scalar::Float => "readFloat",
        Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => "readInt32",
        Scalar::Uint32 | Scalar::Fixed32 => "readUint32",
        Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => "readInt64",
        Scalar::Uint64 | Scalar::Fixed64 => "readUint64",
        Scalar::Bool => "readBool",
        Scalar::String => "readString",
        Scalar::Bytes => "readBytes",
    }
}

/// Values of these types have a meaning for JSON `null` (not "absent").
fn accepts_null(ty: &FieldType) -> bool {
    match ty {
        FieldType::Enum(n) => n == NULL_VALUE,
        FieldType::Message(n) => n == VALUE,
        _ => false,
    }
}

/// Message values: their `toJson` may fail.
fn is_message(ty: &FieldType) -> bool {
    matches!(ty, FieldType::Message(_) | FieldType::Group(_))
}

/// `o["key"] = value;` (safe for the one key that is not a plain property).
fn assign(key: &str, value: &str) -> String {
    if key == "__proto__" {
        format!("$j.setMember(o, {}, {value});", string_literal(key))
    } else {
        format!("o[{}] = {value};", string_literal(key))
    }
}

impl FileEmitter<'_> {
    /// The JSON value of `v`, one element of a field of type `ty`.
    fn write_json_expr(&self, ty: &FieldType, v: &str) -> String {
        match ty {
            FieldType::Scalar(Scalar::Double) => format!("$j.writeDouble({v})"),
            FieldType::Scalar(Scalar::Float) => format!("$j.writeFloat({v})"),
            FieldType::Scalar(Scalar::Bytes) => format!("$j.writeBytes({v})"),
            FieldType::Scalar(s) if is_64(*s) => format!("{v}.toString()"),
            FieldType::Scalar(_) => v.to_owned(),
            FieldType::Enum(n) if n == NULL_VALUE => "null".to_owned(),
            FieldType::Enum(n) => format!("$j.writeEnum({v}, {})", self.type_name(n)),
            FieldType::Message(n) | FieldType::Group(n) => format!("{}.toJson({v})", self.json_name(n)),
        }
    }

    /// The value read from JSON `v`; the flag says it may be `undefined` (an unknown enum
    /// name skipped with `ignoreUnknownFields`).
    fn read_json_expr(&self, ty: &FieldType, v: &str) -> (String, bool) {
        match ty {
            FieldType::Scalar(s) => (format!("$j.{}({v})", reader(*s)), false),
            FieldType::Enum(n) if n == NULL_VALUE => (format!("$j.readNullValue({v})"), false),
            FieldType::Enum(n) => {
                (format!("$j.readEnum({v}, {}, {}, options)", self.type_name(n), string_literal(n)), true)
            }
            FieldType::Message(n) | FieldType::Group(n) => {
                (format!("{}.fromJson({v}, options)", self.json_name(n)), false)
            }
        }
    }

    /// The JSON codec of a message: `typeName`, `binary`, `toJson` and `fromJson`.
    pub(super) fn emit_json(&self, out: &mut String, m: &Message, name: &str) {
        let json = self.json_name(&m.full_name);
        super::jsdoc(out, "", &[format!("The proto3 JSON mapping of `{}` (binary codec: `{name}`).", m.full_name)]);
        let _ = writeln!(out, "export const {json}: $j.JsonCodec<{name}> = {{");
        let _ = writeln!(out, "  typeName: {},", string_literal(&m.full_name));
        let _ = writeln!(out, "  binary: {name},");
        match wkt(m) {
            Some(w) => self.emit_wkt_json(out, m, name, w),
            None => {
                self.emit_to_json(out, m, name);
                self.emit_from_json(out, m, name);
            }
        }
        let _ = writeln!(out, "}};");
    }

    fn emit_to_json(&self, out: &mut String, m: &Message, name: &str) {
        if m.fields.is_empty() {
            let _ = writeln!(out, "  toJson(_m: {name}): $j.JsonValue {{");
            let _ = writeln!(out, "    return {{}};");
            let _ = writeln!(out, "  }},");
            return;
        }
        // Only message values can fail (a Timestamp out of range, ...): track the field for
        // the error's path.
        let nested = m.fields.iter().any(|f| is_message(&f.ty));
        let ind = if nested { "      " } else { "    " };
        let _ = writeln!(out, "  toJson(m: {name}): $j.JsonValue {{");
        let _ = writeln!(out, "    const o: $j.JsonObject = {{}};");
        if nested {
            let _ = writeln!(out, "    let k = \"\";");
            let _ = writeln!(out, "    try {{");
        }
        for item in self.items(m) {
            match item {
                Item::Field(f) => self.field_to_json(out, m, f, ind),
                Item::Oneof(o) => {
                    let var = oneof_var(o);
                    let _ = writeln!(out, "{ind}const {var} = m.{};", self.props(m).1[o]);
                    let _ = writeln!(out, "{ind}switch ({var}?.case) {{");
                    for g in m.fields.iter().filter(|g| g.oneof == Some(o)) {
                        let _ = writeln!(out, "{ind}  case {}:", string_literal(&self.prop(m, g)));
                        let value = self.write_json_expr(&g.ty, &format!("{var}.value"));
                        if is_message(&g.ty) {
                            let _ = writeln!(out, "{ind}    k = {};", string_literal(&g.json_name));
                        }
                        let _ = writeln!(out, "{ind}    {}", assign(&g.json_name, &value));
                        let _ = writeln!(out, "{ind}    break;");
                    }
                    let _ = writeln!(out, "{ind}}}");
                }
            }
        }
        if nested {
            let _ = writeln!(out, "    }} catch (e) {{");
            let _ = writeln!(out, "      throw $j.at(e, k);");
            let _ = writeln!(out, "    }}");
        }
        let _ = writeln!(out, "    return o;");
        let _ = writeln!(out, "  }},");
    }

    fn field_to_json(&self, out: &mut String, m: &Message, f: &Field, ind: &str) {
        let p = format!("m.{}", self.prop(m, f));
        let key = &f.json_name;
        // `o["key"] = value;`, naming the field first when the value can fail.
        let set = |value: &str| {
            if is_message(&f.ty) {
                format!("{{ k = {}; {} }}", string_literal(key), assign(key, value))
            } else {
                assign(key, value)
            }
        };
        match &f.label {
            Label::Implicit => {
                let cond = match &f.ty {
                    FieldType::Scalar(s) => scalar_non_default(*s, &p),
                    FieldType::Enum(_) => format!("{p} !== 0"),
                    _ => format!("{p} !== undefined"),
                };
                let _ = writeln!(out, "{ind}if ({cond}) {}", set(&self.write_json_expr(&f.ty, &p)));
            }
            Label::Optional => {
                let _ = writeln!(out, "{ind}if ({p} !== undefined) {}", set(&self.write_json_expr(&f.ty, &p)));
            }
            Label::Required => {
                let _ = writeln!(out, "{ind}{}", set(&self.write_json_expr(&f.ty, &p)));
            }
            Label::Repeated { .. } => {
                let each = self.write_json_expr(&f.ty, "v");
                let list = if each == "v" {
                    format!("{p}.slice()")
                } else if is_message(&f.ty) {
                    format!("$j.writeList({p}, (v) => {each})")
                } else {
                    format!("{p}.map((v) => {each})")
                };
                let _ = writeln!(out, "{ind}if ({p}.length !== 0) {}", set(&list));
            }
            Label::Map { .. } => {
                let each = self.write_json_expr(&f.ty, "v");
                let _ = writeln!(out, "{ind}if ({p}.size !== 0) {}", set(&format!("$j.writeMap({p}, (v) => {each})")));
            }
        }
    }

    fn emit_from_json(&self, out: &mut String, m: &Message, name: &str) {
        let full = string_literal(&m.full_name);
        if m.fields.is_empty() {
            let _ = writeln!(out, "  fromJson(json: $j.JsonInput, options?: $j.JsonReadOptions): {name} {{");
            let _ = writeln!(out, "    $j.readEmpty(json, {full}, options);");
            let _ = writeln!(out, "    return {name}.create();");
            let _ = writeln!(out, "  }},");
            return;
        }
        let _ = writeln!(out, "  fromJson(json: $j.JsonInput, options?: $j.JsonReadOptions): {name} {{");
        let _ = writeln!(out, "    const m = {name}.create();");
        // Fields with two names could be set twice; one JS object cannot repeat a name.
        if m.fields.iter().any(|f| f.oneof.is_none() && f.json_name != f.name) {
            let _ = writeln!(out, "    const seen = new Set<number>();");
        }
        let _ = writeln!(out, "    let k = \"\";");
        let _ = writeln!(out, "    try {{");
        let _ = writeln!(out, "      for (const [key, v] of Object.entries($j.readObject(json, {full}))) {{");
        let _ = writeln!(out, "        k = key;");
        let _ = writeln!(out, "        switch (key) {{");
        let mut labels: BTreeSet<&str> = BTreeSet::new();
        for f in &m.fields {
            let names: Vec<&str> = [f.json_name.as_str(), f.name.as_str()]
                .into_iter()
                .enumerate()
                .filter(|(i, n)| (*i == 0 || *n != f.json_name) && labels.insert(n))
                .map(|(_, n)| n)
                .collect();
            if names.is_empty() {
                continue;
            }
            for n in &names {
                let _ = writeln!(out, "          case {}:", string_literal(n));
            }
            self.field_from_json(out, m, f);
            let _ = writeln!(out, "            break;");
        }
        let _ = writeln!(out, "          default:");
        let _ = writeln!(out, "            $j.unknownField(key, {full}, options);");
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "    }} catch (e) {{");
        let _ = writeln!(out, "      throw $j.at(e, k);");
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "    return m;");
        let _ = writeln!(out, "  }},");
    }

    fn field_from_json(&self, out: &mut String, m: &Message, f: &Field) {
        const IND: &str = "            ";
        let p = format!("m.{}", self.prop(m, f));
        let nullable = accepts_null(&f.ty);
        if let Some(o) = f.oneof {
            let prop = &self.props(m).1[o];
            let case = string_literal(&self.prop(m, f));
            let (value, maybe) = self.read_json_expr(&f.ty, "v");
            let inner = if nullable { IND.to_owned() } else { format!("{IND}  ") };
            if !nullable {
                let _ = writeln!(out, "{IND}if (v !== null) {{");
            }
            let _ = writeln!(
                out,
                "{inner}if (m.{prop} !== undefined) throw $j.duplicate({});",
                string_literal(&format!("oneof {}", m.oneofs[o].name))
            );
            if maybe {
                let _ = writeln!(out, "{inner}const e = {value};");
                let _ = writeln!(out, "{inner}if (e !== undefined) m.{prop} = {{ case: {case}, value: e }};");
            } else {
                let _ = writeln!(out, "{inner}m.{prop} = {{ case: {case}, value: {value} }};");
            }
            if !nullable {
                let _ = writeln!(out, "{IND}}}");
            }
            return;
        }
        if f.json_name != f.name {
            let _ = writeln!(out, "{IND}$j.once(seen, {}, {});", f.number, string_literal(&f.name));
        }
        let null_check = if nullable { String::new() } else { "if (v !== null) ".to_owned() };
        match &f.label {
            Label::Repeated { .. } => {
                let (each, _) = self.read_json_expr(&f.ty, "x");
                let tail = if nullable { ", true" } else { "" };
                let _ = writeln!(out, "{IND}if (v !== null) {p} = $j.readList(v, (x) => {each}{tail});");
            }
            Label::Map { key } => {
                let (each, _) = self.read_json_expr(&f.ty, "x");
                let key = match key {
                    Scalar::String => "(s) => s".to_owned(),
                    Scalar::Bool => "$j.readBoolKey".to_owned(),
                    s => format!("$j.{}", reader(*s)),
                };
                let tail = if nullable { ", true" } else { "" };
                let _ = writeln!(out, "{IND}if (v !== null) {p} = $j.readMap(v, {key}, (x) => {each}{tail});");
            }
            _ => {
                let (value, maybe) = self.read_json_expr(&f.ty, "v");
                if maybe {
                    let _ = writeln!(out, "{IND}{null_check}{{");
                    let _ = writeln!(out, "{IND}  const e = {value};");
                    let _ = writeln!(out, "{IND}  if (e !== undefined) {p} = e;");
                    let _ = writeln!(out, "{IND}}}");
                } else {
                    let _ = writeln!(out, "{IND}{null_check}{p} = {value};");
                }
            }
        }
    }

    fn emit_wkt_json(&self, out: &mut String, m: &Message, name: &str, w: Wkt) {
        let prop = |field: &str| m.fields.iter().find(|f| f.name == field).map(|f| self.prop(m, f)).unwrap_or_default();
        let mut to = |body: &[String]| {
            let _ = writeln!(out, "  toJson(m: {name}): $j.JsonValue {{");
            for l in body {
                let _ = writeln!(out, "    {l}");
            }
            let _ = writeln!(out, "  }},");
        };
        let value = self.json_name(VALUE);
        match w {
            Wkt::Timestamp => to(&["return $j.timestampToJson(m);".to_owned()]),
            Wkt::Duration => to(&["return $j.durationToJson(m);".to_owned()]),
            Wkt::FieldMask => to(&[format!("return $j.fieldMaskToJson(m.{});", prop("paths"))]),
            Wkt::Struct => to(&[format!("return $j.writeMap(m.{}, (v) => {value}.toJson(v));", prop("fields"))]),
            Wkt::ListValue => to(&[format!("return $j.writeList(m.{}, (v) => {value}.toJson(v));", prop("values"))]),
            Wkt::Any => to(&["return $j.anyToJson(m, $lookupType);".to_owned()]),
            Wkt::Wrapper(s) => to(&[format!(
                "return {};",
                self.write_json_expr(&FieldType::Scalar(s), &format!("m.{}", prop("value")))
            )]),
            Wkt::Value => {
                let kind = self.props(m).1.first().cloned().unwrap_or_default();
                let mut body = vec![format!("const k = m.{kind};"), "switch (k?.case) {".to_owned()];
                for f in &m.fields {
                    let case = self.prop(m, f);
                    let ret = match f.name.as_str() {
                        "null_value" => "null".to_owned(),
                        "number_value" => "$j.writeValueNumber(k.value)".to_owned(),
                        _ => self.write_json_expr(&f.ty, "k.value"),
                    };
                    body.push(format!("  case {}:", string_literal(&case)));
                    body.push(format!("    return {ret};"));
                }
                body.push("}".to_owned());
                body.push("throw new $j.JsonError(\"google.protobuf.Value has no kind set\");".to_owned());
                to(&body);
            }
        }
        let from_head = |out: &mut String, uses_options: bool| {
            let options = if uses_options { "options?: $j.JsonReadOptions" } else { "_options?: $j.JsonReadOptions" };
            let _ = writeln!(out, "  fromJson(json: $j.JsonInput, {options}): {name} {{");
        };
        match w {
            Wkt::Timestamp | Wkt::Duration => {
                from_head(out, false);
                let f = if w == Wkt::Timestamp { "timestampFromJson" } else { "durationFromJson" };
                let _ = writeln!(out, "    return {{ ...{name}.create(), ...$j.{f}(json) }};");
            }
            Wkt::FieldMask => {
                from_head(out, false);
                let _ = writeln!(
                    out,
                    "    return {{ ...{name}.create(), {}: $j.fieldMaskFromJson(json) }};",
                    prop("paths")
                );
            }
            Wkt::Struct => {
                from_head(out, true);
                let _ = writeln!(
                    out,
                    "    return {{ ...{name}.create(), {}: $j.readMap(json, (s) => s, (x) => {value}.fromJson(x, options), true) }};",
                    prop("fields")
                );
            }
            Wkt::ListValue => {
                from_head(out, true);
                let _ = writeln!(
                    out,
                    "    return {{ ...{name}.create(), {}: $j.readList(json, (x) => {value}.fromJson(x, options), true) }};",
                    prop("values")
                );
            }
            Wkt::Any => {
                from_head(out, true);
                let _ = writeln!(
                    out,
                    "    return {{ ...{name}.create(), ...$j.anyFromJson(json, options, $lookupType) }};"
                );
            }
            Wkt::Wrapper(s) => {
                from_head(out, false);
                let (read, _) = self.read_json_expr(&FieldType::Scalar(s), "json");
                let _ = writeln!(out, "    return {{ ...{name}.create(), {}: {read} }};", prop("value"));
            }
            Wkt::Value => {
                from_head(out, true);
                let kind = self.props(m).1.first().cloned().unwrap_or_default();
                let case = |field: &str| string_literal(&prop(field));
                let structure = self.json_name("google.protobuf.Struct");
                let list = self.json_name("google.protobuf.ListValue");
                let lines = [
                    format!("const m = {name}.create();"),
                    "switch (typeof json) {".to_owned(),
                    "  case \"object\":".to_owned(),
                    "    if (json === null) m.KIND = { case: NULL, value: 0 };".to_owned(),
                    format!(
                        "    else if ($j.isArray(json)) m.KIND = {{ case: {}, value: {list}.fromJson(json, options) }};",
                        case("list_value")
                    ),
                    format!(
                        "    else m.KIND = {{ case: {}, value: {structure}.fromJson(json, options) }};",
                        case("struct_value")
                    ),
                    "    break;".to_owned(),
                    "  case \"number\":".to_owned(),
                    "  case \"bigint\":".to_owned(),
                    format!("    m.KIND = {{ case: {}, value: $j.readValueNumber(json) }};", case("number_value")),
                    "    break;".to_owned(),
                    "  case \"string\":".to_owned(),
                    format!("    m.KIND = {{ case: {}, value: $j.readString(json) }};", case("string_value")),
                    "    break;".to_owned(),
                    "  case \"boolean\":".to_owned(),
                    format!("    m.KIND = {{ case: {}, value: json }};", case("bool_value")),
                    "    break;".to_owned(),
                    "  default:".to_owned(),
                    "    throw new $j.JsonError(`expected a JSON value, got ${typeof json}`);".to_owned(),
                    "}".to_owned(),
                    "return m;".to_owned(),
                ];
                for l in lines {
                    let l = l.replace("KIND", &kind).replace("NULL", &case("null_value"));
                    let _ = writeln!(out, "    {l}");
                }
            }
        }
        let _ = writeln!(out, "  }},");
    }

    /// The type registry of the Any module: every message generated with it.
    pub(super) fn emit_type_registry(&self, out: &mut String) {
        super::jsdoc(
            out,
            "",
            &[
                "Every message type generated together with this file (one `kafkasocks-gen` output), by full"
                    .to_owned(),
                "name: how `Any.toJson` / `Any.fromJson` find the codec of a type URL.".to_owned(),
            ],
        );
        let _ = writeln!(out, "export function $lookupType(typeName: string): $j.JsonCodec<unknown> | undefined {{");
        let _ = writeln!(out, "  switch (typeName) {{");
        for (full, ts) in &self.registry {
            let _ = writeln!(out, "    case {}:", string_literal(full));
            let _ = writeln!(out, "      return {ts};");
        }
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "  return undefined;");
        let _ = writeln!(out, "}}");
    }
}
