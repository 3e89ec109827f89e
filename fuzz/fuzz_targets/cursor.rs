//! Resume cursors come back from clients, who store them as bytes (`Cursor::to_bytes`) or as
//! base64 in gRPC metadata (`kafkasocks-start: cursor:<base64>`). Any bytes through
//! `Cursor::from_bytes` never panic; a cursor that decodes round-trips through `to_bytes`;
//! any text through the metadata parser never panics, and a cursor's own metadata text parses
//! back to it in all four base64 flavours.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use kafkasocks::codegen::start_from_metadata;
use kafkasocks::{Cursor, StartAt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cursor) = Cursor::from_bytes(data) {
        let bytes = cursor.to_bytes();
        let again = Cursor::from_bytes(&bytes).expect("to_bytes output decodes");
        assert_eq!(again, cursor, "from_bytes(to_bytes(c)) differs");
        assert_eq!(again.to_bytes(), bytes, "to_bytes is not stable");
        for &(partition, _) in &cursor.positions {
            assert!(cursor.next_offset(partition).is_some(), "next_offset misses partition {partition}");
        }
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            let text = format!("cursor:{}", engine.encode(&bytes));
            assert_eq!(start_from_metadata(Some(&text)).ok(), Some(StartAt::Cursor(cursor.clone())), "{text}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = start_from_metadata(Some(text));
    }
});
