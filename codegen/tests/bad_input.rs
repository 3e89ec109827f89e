//! Bad input: every case is an error naming the file and line with what to do, exit code 2
//! from the CLI, no panic and no output written.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kafkasocks_build::Error;

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/protos/bad")
}

/// (file, line, words the message must contain)
const CASES: &[(&str, u32, &str)] = &[
    ("unparsable.proto", 6, "expected ';'"),
    ("missing_import.proto", 3, "not found"),
    ("unknown_type.proto", 3, "'Nope' is not defined"),
    ("missing_field.proto", 7, "key \"nope\" is not a field"),
    ("float_key.proto", 7, "is a floating-point number"),
    ("bool_key.proto", 7, "is a bool"),
    ("message_key.proto", 7, "is a message"),
    ("repeated_key.proto", 7, "is repeated"),
    ("map_key.proto", 7, "is a map"),
    ("oneof_key.proto", 7, "part of a oneof"),
    ("missing_topic.proto", 7, "has no topic"),
    ("bad_topic.proto", 7, "not a valid Kafka topic name"),
    ("client_streaming.proto", 6, "client streaming"),
    ("bidi.proto", 6, "bidirectional streaming"),
    ("unary_not_receipt.proto", 6, "returns (kafkasocks.Receipt)"),
    ("method_without_option.proto", 9, "has no (kafkasocks.stream) option"),
    ("schema_twice.proto", 7, "both schema and schema_subject are set"),
    ("oneof_types_extra_field.proto", 7, "is outside the oneof"),
    ("oneof_types_scalar.proto", 7, "is not a message type"),
    ("schema_on_subscribe.proto", 7, "are for publishes"),
    ("other_types_alone.proto", 7, "without oneof_types"),
    ("key_message_two_fields.proto", 7, "must have exactly one string or bytes field"),
    ("key_message_unknown.proto", 7, "is not a message of these files"),
];

#[test]
fn library_errors_name_file_line_and_fix() {
    for (file, line, words) in CASES {
        let path = bad_dir().join(file);
        let err = kafkasocks_build::configure()
            .emit_rerun_if_changed(false)
            .include(bad_dir())
            .generate_typescript(&[&path])
            .unwrap_err();
        assert!(err.is_input_error(), "{file}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("{file}:{line}:")), "{file}: expected line {line} in: {text}");
        assert!(text.contains(words), "{file}: expected {words:?} in: {text}");
        if let Error::Stream { help, .. } = &err {
            assert!(!help.is_empty());
        }
        // The Rust front end refuses the same input the same way.
        let rust = kafkasocks_build::configure()
            .emit_rerun_if_changed(false)
            .include(bad_dir())
            .generate_rust(&[&path])
            .unwrap_err();
        assert_eq!(rust.to_string(), text);
    }
}

#[test]
fn usage_errors() {
    let err = kafkasocks_build::configure().emit_rerun_if_changed(false).generate_rust(&[] as &[&str]).unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    let every = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/protos/every/v1/every.proto");
    let err = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .include(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/protos"))
        .service("every.v1.Nope")
        .generate_rust(&[every])
        .unwrap_err();
    assert!(err.to_string().contains("every.v1.Nope"), "{err}");
    let err = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set(bad_dir().join("unparsable.proto"))
        .generate_rust(&[] as &[&str])
        .unwrap_err();
    assert!(matches!(err, Error::DescriptorSet { .. }), "{err:?}");
}

/// Descriptor-set input reads the same stream options (they survive in the encoded set).
#[test]
fn descriptor_set_input_keeps_stream_options() {
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/protos");
    let options = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let mut c = protox::Compiler::new([&protos, &options]).unwrap();
    c.include_imports(true);
    c.open_file(protos.join("every/v1/every.proto")).unwrap();
    let set = c.encode_file_descriptor_set();
    let path = std::env::temp_dir().join(format!("kafkasocks-fds-{}.bin", std::process::id()));
    std::fs::write(&path, set).unwrap();
    let model = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set(&path)
        .service("every.v1.Sensors")
        .model(&[] as &[&str])
        .unwrap();
    let every = model.file("every/v1/every.proto").unwrap();
    assert!(every.requested);
    let sensors = &every.services[0];
    assert_eq!(sensors.methods[0].topic, "every.readings");
    assert_eq!(sensors.methods[0].key.as_ref().unwrap().name, "sensor_id");
    // ...but a schema needs the source text, which a descriptor set does not carry.
    let err = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set(&path)
        .service("every.v1.ChatStreams")
        .generate_rust(&[] as &[&str]);
    assert!(err.unwrap_err().to_string().contains("a schema needs the .proto source"));
    // A service without a schema generates fine from the set.
    let ok = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set(&path)
        .service("every.v1.Sensors")
        .generate_rust(&["every/v1/every.proto"])
        .unwrap();
    assert!(ok.files["every.v1.rs"].contains("pub struct SensorsGateway<H>"));
    std::fs::remove_file(&path).unwrap();
}

/// Two `MethodOptions` extensions numbered 51234 (ours and another project's), one of them
/// set: prost-reflect panics while building the descriptors; the generator reports the likely
/// cause instead, as an input error.
#[test]
fn an_extension_number_clash_is_an_error_not_a_panic() {
    let path = bad_dir().join("extension_clash.proto");
    let err = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .include(bad_dir())
        .generate_typescript(&[&path])
        .unwrap_err();
    assert!(err.is_input_error(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("extension_clash.proto: error:"), "{text}");
    assert!(text.contains("numbered 51234"), "{text}");
    assert!(text.contains("help: "), "{text}");
}
