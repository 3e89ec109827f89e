//! The Confluent Schema Registry framing on Kafka record values (`0x00`, a big-endian u32
//! schema id, the protobuf message indexes, then the message), which the gateway strips from
//! every record it reads and adds to every publish with a schema. Needs feature `internals`
//! (`kafkasocks::wire::fuzzing`).
//!
//! * any bytes through `strip_confluent_framing` never panic and leave a suffix of the input;
//! * where a strict reading of the format (below) finds a frame, the gateway finds the same
//!   schema id and message;
//! * `strip(add(id, indexes, message)) == (id, message)` for any id, indexes and message.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kafkasocks::wire::fuzzing::{add_confluent_framing, strip_confluent_framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (id, message) = strip_confluent_framing(data);
    assert!(data.ends_with(message), "the message is not a suffix of the value");
    if let Some((want_id, want_message)) = strict_parse(data) {
        assert_eq!((id, message), (want_id, want_message), "disagrees with the strict reading");
    } else if data.first() != Some(&0) || data.len() < 6 {
        assert_eq!((id, message), (0, data), "an unframed value must be left whole");
    }

    let mut u = Unstructured::new(data);
    let Ok((id, indexes, message)) = <(u32, Vec<i32>, Vec<u8>)>::arbitrary(&mut u) else { return };
    if indexes.is_empty() {
        return; // not a protobuf framing: the message index list names at least one message
    }
    let framed = add_confluent_framing(id, &indexes, &message);
    assert_eq!(strip_confluent_framing(&framed), (id, &message[..]), "{indexes:?}");
});

/// The format read strictly, with prost's varint decoder (overlong varints refused): magic
/// byte 0, schema id, then either the single byte 0 (indexes `[0]`) or a zigzag count and that
/// many zigzag indexes. `None` when the value is not framed that way.
fn strict_parse(value: &[u8]) -> Option<(u32, &[u8])> {
    let (&magic, rest) = value.split_first()?;
    if magic != 0 || rest.len() < 5 {
        return None; // the gateway wants at least one index byte after the id
    }
    let id = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let mut rest = &rest[4..];
    let count = prost::encoding::decode_varint(&mut rest).ok()?;
    let count = (count >> 1) as i64 ^ -((count & 1) as i64);
    for _ in 0..count.max(0) {
        prost::encoding::decode_varint(&mut rest).ok()?;
    }
    Some((id, rest))
}
