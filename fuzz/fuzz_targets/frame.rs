//! Frames as a client sends them: any bytes through `Frame::decode` (the gateway decodes every
//! binary WebSocket message this way) must never panic, and a frame that decodes must come
//! back unchanged from an encode and a second decode, with a stable encoding.
//!
//! Also `wire::read_varint` (what tools use to walk frames without decoding them) against
//! prost's varint decoder, and, with feature `internals`, the gateway's own scanner for stream
//! keys, `scan_field`, against prost: wherever a `Hello` decodes, scanning its fields finds
//! what prost found.
#![no_main]

use kafkasocks::wire::{self, Frame};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let bytes = frame.encode_to_vec();
        assert_eq!(bytes.len(), frame.encoded_len());
        let again = Frame::decode(bytes.as_slice()).expect("a re-encoded frame decodes");
        assert_eq!(again, frame, "decode(encode(frame)) differs");
        assert_eq!(again.encode_to_vec(), bytes, "the encoding is not stable");
    }

    // read_varint accepts whatever prost accepts, with the same value and length.
    let mut ours = data;
    let mut theirs = data;
    if let Ok(v) = prost::encoding::decode_varint(&mut theirs) {
        assert_eq!(wire::read_varint(&mut ours), Some(v), "read_varint disagrees with prost");
        assert_eq!(ours.len(), theirs.len(), "read_varint consumed a different length");
    }

    #[cfg(feature = "internals")]
    scan_field_agrees_with_prost(data);
});

/// `scan_field` on a message prost decodes finds the same last value of each field. It may
/// refuse what prost skips: groups (wire types 3 and 4, proto2 only).
#[cfg(feature = "internals")]
fn scan_field_agrees_with_prost(data: &[u8]) {
    use kafkasocks::wire::fuzzing::scan_field;

    // Never panics, whatever the bytes and the field number.
    for number in [0, 1, 2, 3, 15, 16, 2047, u32::MAX] {
        let _ = scan_field(data, number);
    }
    let Ok(hello) = wire::Hello::decode(data) else { return };
    let groups = |e: &str| e.contains("wire type 3") || e.contains("wire type 4");
    match scan_field(data, 2) {
        Ok(token) => assert_eq!(token.as_deref().unwrap_or_default(), hello.token.as_bytes(), "token (string)"),
        Err(e) => assert!(groups(&e), "scan_field failed where prost decoded: {e}"),
    }
    match scan_field(data, 1) {
        // Varints come back as their decimal text (as i64); prost keeps the low 32 bits.
        Ok(Some(text)) => {
            let text = std::str::from_utf8(&text).expect("decimal text");
            let v: i64 = text.parse().expect("decimal text");
            assert_eq!(v as u64 as u32, hello.protocol_version, "protocol_version (uint32)");
        }
        Ok(None) => assert_eq!(hello.protocol_version, 0, "protocol_version missed"),
        Err(e) => assert!(groups(&e), "scan_field failed where prost decoded: {e}"),
    }
}
