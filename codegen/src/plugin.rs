//! The generator as a protoc (and buf) plugin: the `protoc-gen-kafkasocks` binary of the
//! kafkasocks-gen crate reads a `google.protobuf.compiler.CodeGeneratorRequest` from stdin,
//! hands it to [`run`] and writes the `CodeGeneratorResponse` it returns to stdout.
//!
//! ```text
//! protoc -I proto --plugin=protoc-gen-kafkasocks=$(command -v protoc-gen-kafkasocks) \
//!     --kafkasocks_out=web/src/gen proto/chat/v1/chat.proto
//! protoc ... --kafkasocks_out=web/src/gen --kafkasocks_opt=runtime=vendor,service=chat.v1.ChatStreams
//! ```
//!
//! The output is what `kafkasocks-gen ts` (or `rust`) writes for the same files, byte for
//! byte: the plugin reads protoc's descriptors as an in-memory FileDescriptorSet
//! ([`Builder::file_descriptor_set_bytes`](crate::Builder::file_descriptor_set_bytes)) and
//! runs the same generator. Comments (JSDoc, `///`) come from the source info protoc sends,
//! adjusted to what the CLI has: the well-known `google/protobuf/*` files (built-in
//! descriptors without comments in the CLI) lose theirs, unless they are files to generate;
//! when a request has none for `kafkasocks/options.proto` (the plugin protocol promises
//! source info for no file; protoc 33 sends it for every file), the embedded copy's are used
//! if its declarations match. Other imported files get JSDoc only when the request carries
//! their source info; if a compiler leaves it out, list them as files to generate too.
//!
//! # Parameters
//!
//! Comma-separated `key=value` pairs (`--kafkasocks_opt=a=b,c=d`, repeatable; buf: `opt:`):
//!
//! | key | values (default first) | CLI equivalent |
//! |---|---|---|
//! | `lang` | `ts`, `rust` | `kafkasocks-gen ts` / `rust` |
//! | `service` | a full service name; repeatable | `--service` |
//! | `runtime` (ts) | `package`, `vendor` | `--runtime` |
//! | `model` (ts) | `kafkasocks`, `protobuf-es` | `--message-model` |
//! | `import_extension` (ts, `model=protobuf-es`) | `none`, `js`, `ts` | `--import-extension` |
//! | `grpc` (rust) | `false`, `true` (`grpc` alone: true) | `--grpc` |
//! | `extern_path` (rust) | `PROTO=RUST`; repeatable | `--extern-path` |
//! | `btree_map` (rust) | a protobuf path; repeatable | `--btree-map` |
//! | `bytes` (rust) | a protobuf path; repeatable | none (builder `.bytes`) |
//!
//! Errors (bad parameters, bad stream options, anything the CLI refuses) come back as the
//! response's `error`, which protoc prints and exits non-zero on; the plugin never panics on
//! its input. Supported features: proto3 `optional`. Protobuf editions are not supported
//! (protoc refuses editions files for the plugin with its own message).

use std::path::Path;

use prost::Message as _;
use prost_types::compiler::code_generator_response::{Feature, File};
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto};

use crate::{Error, Output, TsImportExtension, TsMessageModel, TsRuntime};

/// Answers one plugin request: `request` is an encoded `CodeGeneratorRequest`, the result an
/// encoded `CodeGeneratorResponse` holding either the generated files or the error (also for
/// bytes that are not a request). Never panics on its input: a bug that would panic is
/// reported as an error too.
pub fn run(request: &[u8]) -> Vec<u8> {
    let outcome = std::panic::catch_unwind(|| generate(request))
        .unwrap_or_else(|_| Err(Error::Codegen("kafkasocks-build panicked on this request".into())));
    let mut response =
        CodeGeneratorResponse { supported_features: Some(Feature::Proto3Optional as u64), ..Default::default() };
    match outcome {
        Ok(output) => {
            response.file = output
                .files
                .into_iter()
                .map(|(name, content)| File { name: Some(name), content: Some(content), ..Default::default() })
                .collect();
        }
        Err(e) => response.error = Some(e.to_string()),
    }
    response.encode_to_vec()
}

/// The files a plugin request asks for, without encoding the response: what [`run`] sends.
pub fn generate(request: &[u8]) -> Result<Output, Error> {
    let bad = |message: String| Error::DescriptorSet { path: "<CodeGeneratorRequest>".into(), message };
    let decoded = CodeGeneratorRequest::decode(request).map_err(|e| bad(e.to_string()))?;
    let params = Parameters::parse(decoded.parameter())?;
    if decoded.file_to_generate.is_empty() {
        return Err(Error::Usage("the request names no file to generate".into()));
    }
    // The files as protoc encoded them: decoding through prost would drop the extension
    // options (ours among them), so the bytes are passed on as they are.
    let raw: Vec<&[u8]> = fields(request)
        .map_err(bad)?
        .into_iter()
        .filter(|f| f.number == PROTO_FILE && f.wire_type == LEN)
        .map(|f| f.payload)
        .collect();
    if raw.len() != decoded.proto_file.len() {
        return Err(bad("proto_file entries that do not decode".into()));
    }
    let mut set = Vec::new();
    for (bytes, file) in raw.into_iter().zip(&decoded.proto_file) {
        let generated = decoded.file_to_generate.iter().any(|f| f == file.name());
        let mut bytes = bytes.to_vec();
        if file.name().starts_with("google/protobuf/") && !generated {
            // The CLI's well-known types are built-in descriptors without comments: the same
            // here, whatever copy (and comments) protoc has.
            bytes = fields(&bytes)
                .map_err(bad)?
                .into_iter()
                .filter(|f| f.number != SOURCE_CODE_INFO)
                .flat_map(|f| f.raw.iter().copied())
                .collect();
        } else if file.source_code_info.is_none() && file.name() == crate::load::OPTIONS_PROTO_NAME {
            // protoc versions that send comments only for the files to generate: those of the
            // built-in options.proto are the embedded copy's, as for the CLI.
            let embedded = crate::load::embedded_options_descriptor()?;
            if let Some(info) = embedded.source_code_info.as_ref().filter(|_| skeleton(&embedded) == skeleton(file)) {
                prost::encoding::message::encode(SOURCE_CODE_INFO, info, &mut bytes);
            }
        }
        prost::encoding::encode_key(SET_FILE, prost::encoding::WireType::LengthDelimited, &mut set);
        prost::encoding::encode_varint(bytes.len() as u64, &mut set);
        set.extend_from_slice(&bytes);
    }
    let mut builder = crate::configure().emit_rerun_if_changed(false).file_descriptor_set_bytes(set);
    for s in &params.services {
        builder = builder.service(s);
    }
    let protos: Vec<&Path> = decoded.file_to_generate.iter().map(Path::new).collect();
    match params.lang {
        Lang::Ts => builder
            .ts_runtime(params.runtime)
            .ts_message_model(params.model)
            .ts_import_extension(params.import_extension.unwrap_or_default())
            .generate_typescript(&protos),
        Lang::Rust => {
            builder = builder.grpc(params.grpc).btree_map(params.btree_map).bytes(params.bytes);
            for (proto, rust) in params.extern_paths {
                builder = builder.extern_path(proto, rust);
            }
            builder.generate_rust(&protos)
        }
    }
}

/// Field numbers: `CodeGeneratorRequest.proto_file`, `FileDescriptorProto.source_code_info`,
/// `FileDescriptorSet.file`; the length-delimited wire type.
const PROTO_FILE: u32 = 15;
const SOURCE_CODE_INFO: u32 = 9;
const SET_FILE: u32 = 1;
const LEN: u8 = 2;

/// The target language of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lang {
    #[default]
    Ts,
    Rust,
}

/// The request's `parameter`, parsed and checked.
#[derive(Debug, Default)]
struct Parameters {
    lang: Lang,
    services: Vec<String>,
    runtime: TsRuntime,
    model: TsMessageModel,
    import_extension: Option<TsImportExtension>,
    grpc: bool,
    extern_paths: Vec<(String, String)>,
    btree_map: Vec<String>,
    bytes: Vec<String>,
}

const KNOWN: &str = "lang, service, runtime, model, import_extension (TypeScript), grpc, extern_path, btree_map, \
                     bytes (Rust)";

impl Parameters {
    fn parse(parameter: &str) -> Result<Parameters, Error> {
        let usage = |m: String| Error::Usage(format!("protoc-gen-kafkasocks: {m}"));
        let mut p = Parameters::default();
        let mut ts_only: Option<&str> = None;
        let mut rust_only: Option<&str> = None;
        for item in parameter.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let need = |what: &str| {
                value.filter(|v| !v.is_empty()).ok_or_else(|| usage(format!("parameter {key} needs a value: {what}")))
            };
            match key {
                "lang" => {
                    p.lang = match need("ts or rust")? {
                        "ts" => Lang::Ts,
                        "rust" => Lang::Rust,
                        other => return Err(usage(format!("lang={other}: use lang=ts or lang=rust"))),
                    }
                }
                "service" => p.services.push(need("a full service name, e.g. chat.v1.ChatStreams")?.to_owned()),
                "runtime" => {
                    ts_only.get_or_insert("runtime");
                    p.runtime = match need("package or vendor")? {
                        "package" => TsRuntime::Package,
                        "vendor" => TsRuntime::Vendor,
                        other => return Err(usage(format!("runtime={other}: use runtime=package or runtime=vendor"))),
                    }
                }
                "model" => {
                    ts_only.get_or_insert("model");
                    p.model = match need("kafkasocks or protobuf-es")? {
                        "kafkasocks" => TsMessageModel::KafkaSocks,
                        "protobuf-es" => TsMessageModel::ProtobufEs,
                        other => {
                            return Err(usage(format!("model={other}: use model=kafkasocks or model=protobuf-es")));
                        }
                    }
                }
                "import_extension" => {
                    ts_only.get_or_insert("import_extension");
                    p.import_extension = Some(match need("none, js or ts")? {
                        "none" => TsImportExtension::None,
                        "js" => TsImportExtension::Js,
                        "ts" => TsImportExtension::Ts,
                        other => {
                            return Err(usage(format!("import_extension={other}: use none, js or ts")));
                        }
                    });
                }
                "grpc" => {
                    rust_only.get_or_insert("grpc");
                    p.grpc = match value {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => return Err(usage(format!("grpc={other}: use grpc=true or grpc=false"))),
                    }
                }
                "extern_path" => {
                    rust_only.get_or_insert("extern_path");
                    let v = need("PROTO=RUST, e.g. .common.v1=::common::v1")?;
                    let Some((proto, rust)) = v.split_once('=') else {
                        return Err(usage(format!("extern_path={v}: use extern_path=PROTO=RUST")));
                    };
                    p.extern_paths.push((proto.to_owned(), rust.to_owned()));
                }
                "btree_map" => {
                    rust_only.get_or_insert("btree_map");
                    p.btree_map.push(need("a protobuf path, \".\" for all")?.to_owned());
                }
                "bytes" => {
                    rust_only.get_or_insert("bytes");
                    p.bytes.push(need("a protobuf path, \".\" for all")?.to_owned());
                }
                other => return Err(usage(format!("unknown parameter {other:?}; known: {KNOWN}"))),
            }
        }
        match (p.lang, ts_only, rust_only) {
            (Lang::Rust, Some(key), _) => Err(usage(format!("{key} is for lang=ts"))),
            (Lang::Ts, _, Some(key)) => Err(usage(format!("{key} is for lang=rust"))),
            _ if p.import_extension.is_some() && p.model != TsMessageModel::ProtobufEs => {
                Err(usage("import_extension is for model=protobuf-es (the imports of protoc-gen-es output)".into()))
            }
            _ => Ok(p),
        }
    }
}

/// One top-level field of an encoded message; `payload` is empty unless length-delimited,
/// `raw` is the whole field (key included).
struct WireField<'a> {
    number: u32,
    wire_type: u8,
    payload: &'a [u8],
    raw: &'a [u8],
}

/// Splits an encoded message into its top-level fields.
fn fields(bytes: &[u8]) -> Result<Vec<WireField<'_>>, String> {
    fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = bytes.get(*pos) else { return Err("truncated varint".into()) };
            *pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let key = varint(bytes, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range".to_owned())?;
        let wire_type = (key & 7) as u8;
        let skip = match wire_type {
            0 => {
                varint(bytes, &mut pos)?;
                0
            }
            1 => 8,
            5 => 4,
            LEN => usize::try_from(varint(bytes, &mut pos)?).map_err(|_| "length out of range".to_owned())?,
            other => return Err(format!("wire type {other} of field {number} is not expected here")),
        };
        let end = pos.checked_add(skip).filter(|&e| e <= bytes.len()).ok_or_else(|| "truncated field".to_owned())?;
        let payload = if wire_type == LEN { &bytes[pos..end] } else { &[] };
        out.push(WireField { number, wire_type, payload, raw: &bytes[start..end] });
        pos = end;
    }
    Ok(out)
}

/// The declarations of a file in order (what source info paths index into): equal skeletons
/// mean that the source info of one describes the other.
fn skeleton(file: &FileDescriptorProto) -> Vec<String> {
    fn fields(out: &mut Vec<String>, scope: &str, fields: &[FieldDescriptorProto]) {
        for f in fields {
            out.push(format!("field {scope}.{} = {}", f.name(), f.number()));
        }
    }
    fn enumeration(out: &mut Vec<String>, scope: &str, e: &EnumDescriptorProto) {
        out.push(format!("enum {scope}.{}", e.name()));
        for v in &e.value {
            out.push(format!("value {scope}.{}.{} = {}", e.name(), v.name(), v.number()));
        }
    }
    fn message(out: &mut Vec<String>, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        out.push(format!("message {name}"));
        fields(out, &name, &m.field);
        fields(out, &name, &m.extension);
        for o in &m.oneof_decl {
            out.push(format!("oneof {name}.{}", o.name()));
        }
        for n in &m.nested_type {
            message(out, &name, n);
        }
        for e in &m.enum_type {
            enumeration(out, &name, e);
        }
    }
    let mut out = vec![format!("package {}", file.package())];
    out.extend(file.dependency.iter().map(|d| format!("import {d}")));
    for m in &file.message_type {
        message(&mut out, "", m);
    }
    for e in &file.enum_type {
        enumeration(&mut out, "", e);
    }
    for s in &file.service {
        out.push(format!("service {}", s.name()));
        out.extend(s.method.iter().map(|m| format!("rpc {}.{}", s.name(), m.name())));
    }
    fields(&mut out, "", &file.extension);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_and_refuse_what_does_not_fit() {
        let p = Parameters::parse("").expect("no parameters");
        assert_eq!((p.lang, p.runtime, p.model), (Lang::Ts, TsRuntime::Package, TsMessageModel::KafkaSocks));
        let p = Parameters::parse(" runtime=vendor , model=protobuf-es,import_extension=js,service=a.B,service=c.D")
            .expect("ts parameters");
        assert_eq!(p.runtime, TsRuntime::Vendor);
        assert_eq!(p.model, TsMessageModel::ProtobufEs);
        assert_eq!(p.import_extension, Some(TsImportExtension::Js));
        assert_eq!(p.services, ["a.B", "c.D"]);
        let p = Parameters::parse("lang=rust,grpc,extern_path=.a.v1=::a::v1,btree_map=.,bytes=.x").expect("rust");
        assert!(p.grpc);
        assert_eq!(p.extern_paths, [(".a.v1".to_owned(), "::a::v1".to_owned())]);
        assert_eq!((p.btree_map.as_slice(), p.bytes.as_slice()), (&[".".to_owned()][..], &[".x".to_owned()][..]));
        for (bad, says) in [
            ("lang=go", "lang=go"),
            ("colour=red", "unknown parameter \"colour\""),
            ("runtime", "runtime needs a value"),
            ("lang=rust,runtime=vendor", "runtime is for lang=ts"),
            ("grpc=true", "grpc is for lang=rust"),
            ("import_extension=js", "import_extension is for model=protobuf-es"),
            ("lang=rust,extern_path=.a", "use extern_path=PROTO=RUST"),
        ] {
            match Parameters::parse(bad) {
                Ok(_) => panic!("{bad} was accepted"),
                Err(e) => assert!(e.to_string().contains(says), "{bad}: {e}"),
            }
        }
    }

    #[test]
    fn wire_fields_are_split_and_bad_bytes_refused() {
        // 1: varint 150; 2: "hi"; 3: fixed64; 4: fixed32.
        let bytes = [0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0];
        let got: Vec<(u32, u8, &[u8])> =
            fields(&bytes).expect("valid").into_iter().map(|f| (f.number, f.wire_type, f.payload)).collect();
        assert_eq!(got, [(1, 0, &[][..]), (2, 2, b"hi"), (3, 1, &[]), (4, 5, &[])]);
        assert!(fields(&[0x12, 5, b'h']).is_err(), "truncated");
        assert!(fields(&[0x08, 0xff]).is_err(), "truncated varint");
        assert!(fields(&[0x0b]).is_err(), "groups are not expected");
    }

    #[test]
    fn garbage_is_an_error_response_not_a_panic() {
        for request in [&b"\xff\xff\xff"[..], b"\x7a\x03abc", b""] {
            let response = CodeGeneratorResponse::decode(run(request).as_slice()).expect("a response");
            assert!(response.error.is_some(), "{request:?}");
            assert!(response.file.is_empty());
            assert_eq!(response.supported_features, Some(1));
        }
    }
}
