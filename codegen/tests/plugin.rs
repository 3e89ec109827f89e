//! `kafkasocks_build::plugin` on requests built in process (no protoc): the files are those
//! of `generate_typescript` / `generate_rust` for the same protos, with the comments the
//! builder has; errors are responses. The same under a real protoc:
//! `codegen/cli/tests/plugin.rs`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kafkasocks_build::{Builder, Output, TsMessageModel, TsRuntime, plugin};
use prost::Message as _;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn every_proto() -> PathBuf {
    tests_dir().join("protos/every/v1/every.proto")
}

fn builder() -> Builder {
    kafkasocks_build::configure().emit_rerun_if_changed(false).include(tests_dir().join("protos"))
}

/// How a compiler fills a request's source info.
#[derive(Clone, Copy, PartialEq)]
enum SourceInfo {
    /// For every file (protoc 33), well-known types included (here: a made-up comment).
    Everywhere,
    /// Only for the files to generate (what the plugin protocol guarantees no more than).
    OnlyGenerated,
}

/// A `CodeGeneratorRequest` for `every.proto` as protoc sends it: every file in dependency
/// order, encoded with its extension options (prost-reflect keeps them; prost types would not).
fn request(parameter: &str, info: SourceInfo) -> Vec<u8> {
    request_for(&tests_dir().join("protos"), "every/v1/every.proto", parameter, info)
}

/// [`request`] for `proto` under `include`.
fn request_for(include: &Path, proto: &str, parameter: &str, info: SourceInfo) -> Vec<u8> {
    // options.proto from disk (codegen/proto links to the repository's copy), as protoc has it.
    let options_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([include.to_path_buf(), options_dir]).unwrap();
    compiler.include_source_info(true).include_imports(true);
    compiler.open_file(proto).unwrap();
    let mut generate = vec![proto];
    if info == SourceInfo::OnlyGenerated && proto == "every/v1/every.proto" {
        // legacy.proto keeps its JSDoc then only as a file to generate (it has no services, so
        // the output is the same as for every.proto alone).
        generate.push("every/v1/legacy.proto");
    }
    let mut bytes = CodeGeneratorRequest {
        file_to_generate: generate.iter().map(|s| (*s).to_owned()).collect(),
        parameter: Some(parameter.to_owned()),
        ..Default::default()
    }
    .encode_to_vec();
    for file in compiler.descriptor_pool().files() {
        let name = file.name();
        let encoded = if generate.contains(&name) {
            file.encode_to_vec()
        } else if info == SourceInfo::Everywhere {
            let mut encoded = file.encode_to_vec();
            if name.starts_with("google/protobuf/") {
                // A comment on the first message: the plugin drops it, as the CLI has none.
                let info = prost_types::SourceCodeInfo {
                    location: vec![prost_types::source_code_info::Location {
                        path: vec![4, 0],
                        span: vec![0, 0, 1],
                        leading_comments: Some(" From protoc's copy.\n".into()),
                        ..Default::default()
                    }],
                };
                prost::encoding::message::encode(9, &info, &mut encoded);
            }
            encoded
        } else {
            // The imports have no custom options of their own: prost's types keep all of them.
            let mut proto = file.file_descriptor_proto().clone();
            proto.source_code_info = None;
            proto.encode_to_vec()
        };
        prost::encoding::encode_key(15, prost::encoding::WireType::LengthDelimited, &mut bytes);
        prost::encoding::encode_varint(encoded.len() as u64, &mut bytes);
        bytes.extend_from_slice(&encoded);
    }
    bytes
}

fn respond(request: &[u8]) -> CodeGeneratorResponse {
    CodeGeneratorResponse::decode(plugin::run(request).as_slice()).unwrap()
}

fn assert_same(response: &CodeGeneratorResponse, expected: &Output) {
    assert_eq!(response.error, None);
    assert_eq!(response.supported_features, Some(1), "proto3 optional");
    let got: Vec<(&str, &str)> = response.file.iter().map(|f| (f.name(), f.content())).collect();
    let want: Vec<(&str, &str)> = expected.files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    assert_eq!(got.iter().map(|f| f.0).collect::<Vec<_>>(), want.iter().map(|f| f.0).collect::<Vec<_>>());
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs from the builder's");
    }
}

#[test]
fn a_request_gives_the_builders_files() {
    for info in [SourceInfo::Everywhere, SourceInfo::OnlyGenerated] {
        let ts = builder().generate_typescript(&[every_proto()]).unwrap();
        assert_same(&respond(&request("", info)), &ts);
        let options = &ts.files["kafkasocks/options_kafkasocks.ts"];
        assert!(options.contains("The Kafka topic the RPC reads"), "options.proto's comments, also when grafted");
        assert!(!ts.files["google/protobuf/timestamp_kafkasocks.ts"].contains("From protoc's copy"));

        let vendor = builder().ts_runtime(TsRuntime::Vendor).service("every.v1.Sensors");
        let vendor = vendor.generate_typescript(&[every_proto()]).unwrap();
        assert_same(&respond(&request("runtime=vendor,service=every.v1.Sensors", info)), &vendor);

        let es = builder().ts_message_model(TsMessageModel::ProtobufEs).generate_typescript(&[every_proto()]).unwrap();
        assert_same(&respond(&request("model=protobuf-es", info)), &es);
    }
}

/// Rust: every.proto binds a publish to the Schema Registry, which needs the .proto source a
/// request does not carry; without that service the Rust is the builder's.
#[test]
fn rust_from_a_request() {
    let refused = respond(&request("lang=rust", SourceInfo::Everywhere));
    let error = refused.error.unwrap();
    assert!(error.contains("a schema needs the .proto source"), "{error}");
    assert!(error.contains("every/v1/every.proto:"), "names the file and line: {error}");
    assert!(refused.file.is_empty());
    let rust = builder().grpc(true).service("every.v1.Sensors").generate_rust(&[every_proto()]).unwrap();
    let request = request("lang=rust,grpc,service=every.v1.Sensors", SourceInfo::Everywhere);
    assert_same(&respond(&request), &rust);
}

/// A file that imports descriptor.proto but not options.proto: the request holds no
/// options.proto, and the generator adds its own after protoc's files.
#[test]
fn a_request_without_options_proto() {
    let bad = tests_dir().join("protos/bad");
    let response = respond(&request_for(&bad, "clash_other_options.proto", "", SourceInfo::Everywhere));
    let ts = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .include(&bad)
        .generate_typescript(&[bad.join("clash_other_options.proto")])
        .unwrap();
    assert_same(&response, &ts);
}

#[test]
fn bad_requests_are_error_responses() {
    for (parameter, says) in [
        ("lang=cobol", "lang=cobol"),
        ("model=protobuf-es,grpc", "grpc is for lang=rust"),
        ("service=every.v1.Nope", "no service \"every.v1.Nope\""),
    ] {
        let response = respond(&request(parameter, SourceInfo::Everywhere));
        assert!(response.error.as_deref().is_some_and(|e| e.contains(says)), "{parameter}: {:?}", response.error);
        assert!(response.file.is_empty());
    }
    // A request whose files are cut short.
    let mut cut = request("", SourceInfo::Everywhere);
    cut.truncate(cut.len() - 3);
    assert!(respond(&cut).error.is_some());
}
