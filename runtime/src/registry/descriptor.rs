//! The message types of a schema as a registry holds it, by Confluent message indexes: the
//! `.proto` text the gateway (and most clients) register, or the base64
//! `FileDescriptorProto` that confluent-kafka's Python `ProtobufSerializer` (and other
//! serializers working from descriptors) registers.

use base64::Engine as _;
use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorProto};

/// Parses a registered protobuf schema.
pub(crate) fn parse(schema: &str) -> Result<FileDescriptorProto, String> {
    match protox_parse::parse("registered.proto", schema) {
        Ok(file) => Ok(file),
        Err(text) => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(schema.trim()) else {
                return Err(format!("not .proto text ({text}) and not a base64 descriptor"));
            };
            FileDescriptorProto::decode(&bytes[..])
                .map_err(|e| format!("a base64 descriptor that does not decode: {e}"))
        }
    }
}

/// The fully-qualified name of the message at `indexes` (`[]` is `[0]`, as in the framing).
pub(crate) fn type_name(file: &FileDescriptorProto, indexes: &[i32]) -> Option<String> {
    let indexes = if indexes.is_empty() { &[0][..] } else { indexes };
    let mut name = file.package().to_owned();
    let mut level: &[DescriptorProto] = &file.message_type;
    for &i in indexes {
        let m = level.get(usize::try_from(i).ok()?)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(m.name());
        level = &m.nested_type;
    }
    Some(name)
}

/// The message indexes of message `full_name` (`pkg.Outer.Inner`).
pub(crate) fn indexes_of(file: &FileDescriptorProto, full_name: &str) -> Option<Vec<i32>> {
    let rest = match file.package() {
        "" => full_name,
        package => full_name.strip_prefix(package)?.strip_prefix('.')?,
    };
    let mut indexes = Vec::new();
    let mut level: &[DescriptorProto] = &file.message_type;
    for part in rest.split('.') {
        let i = level.iter().position(|m| m.name() == part)?;
        indexes.push(i32::try_from(i).ok()?);
        level = &level[i].nested_type;
    }
    Some(indexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
        syntax = "proto3";
        package interop.v1;
        message Reading { message Sample { string channel = 1; } Sample s = 1; }
        message Command { message Ack {} message Nack { message Why {} } }
    "#;

    #[test]
    fn names_and_indexes_agree_both_ways() {
        let file = parse(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
        for (indexes, name) in [
            (vec![0], "interop.v1.Reading"),
            (vec![0, 0], "interop.v1.Reading.Sample"),
            (vec![1], "interop.v1.Command"),
            (vec![1, 1, 0], "interop.v1.Command.Nack.Why"),
        ] {
            assert_eq!(type_name(&file, &indexes).as_deref(), Some(name));
            assert_eq!(indexes_of(&file, name), Some(indexes));
        }
        assert_eq!(type_name(&file, &[]).as_deref(), Some("interop.v1.Reading"));
        assert_eq!(type_name(&file, &[2]), None);
        assert_eq!(type_name(&file, &[-1]), None);
        assert_eq!(indexes_of(&file, "interop.v1.Missing"), None);
        assert_eq!(indexes_of(&file, "other.Reading"), None);
    }

    #[test]
    fn base64_descriptors_as_confluent_registers_them_are_read_too() {
        let file = parse(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
        let encoded = base64::engine::general_purpose::STANDARD.encode(file.encode_to_vec());
        let back = parse(&encoded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(type_name(&back, &[1, 0]).as_deref(), Some("interop.v1.Command.Ack"));
        assert!(parse("neither proto nor base64 !!").is_err());
    }
}
