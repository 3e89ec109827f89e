//! The surface generated code uses (`kafkasocks-build` output). Not for hand-written
//! code: it may change in any release together with the generator.
//!
//! Generated modules import only from here, so the runtime can change inside without
//! breaking checked-in generated files.

pub use crate::client::{Client, Cursor, Delivery, Receipt, StartAt, Subscription};
pub use crate::stream::{BoxFuture, OutgoingRecord, RecordFilter, RecordView, RequestContext, SubscriptionPlan};
pub use crate::{Code, PublishHook, RegistrySchema, Status, Streams, SubscribeHook};
pub use crate::{LocalStreams, Principal, RecordStream};
pub use bytes::Bytes;
pub use prost;

/// The messages of `proto/kafkasocks/options.proto` (`kafkasocks.Receipt`, the stream
/// options). Generated code maps the `.kafkasocks` package here.
#[allow(missing_docs, clippy::all, missing_debug_implementations, unreachable_pub)]
pub mod options {
    include!(concat!(env!("OUT_DIR"), "/kafkasocks.rs"));
}

impl From<crate::client::Receipt> for options::Receipt {
    fn from(r: crate::client::Receipt) -> options::Receipt {
        options::Receipt {
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            duplicate: r.duplicate,
        }
    }
}

/// The Kafka key bytes of a string field value (empty: no key).
pub fn key_from_str(value: &str) -> Option<Bytes> {
    (!value.is_empty()).then(|| Bytes::copy_from_slice(value.as_bytes()))
}

/// The Kafka key bytes of a bytes field value (empty: no key).
pub fn key_from_bytes(value: &[u8]) -> Option<Bytes> {
    (!value.is_empty()).then(|| Bytes::copy_from_slice(value))
}

/// The Kafka key bytes of an integer field value: decimal text (0 is a key, "0").
pub fn key_from_int(value: impl std::fmt::Display) -> Option<Bytes> {
    Some(Bytes::from(value.to_string()))
}

/// Decodes a request, mapping failures to `INVALID_ARGUMENT`.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| Status::invalid_argument(format!("request does not decode: {e}")))
}

/// The gRPC status code number of `code` (KafkaSocks codes are numbered as gRPC's), for
/// generated tonic services: `tonic::Code::from_i32(grpc_code(status.code()))`.
pub fn grpc_code(code: Code) -> i32 {
    code.to_wire() as i32
}

/// Parses the `kafkasocks-start` request metadata of generated gRPC services: `latest`
/// (also when absent), `earliest`, `ts:<unix ms>` or `cursor:<base64 of Cursor::to_bytes()>`
/// (standard or URL-safe alphabet, padding optional: what the TS client's `encodeCursor` gives).
pub fn start_from_metadata(value: Option<&str>) -> Result<StartAt, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("kafkasocks-start: {why}"));
    match value.map(str::trim) {
        None | Some("") | Some("latest") => Ok(StartAt::Latest),
        Some("earliest") => Ok(StartAt::Earliest),
        Some(v) => {
            if let Some(ms) = v.strip_prefix("ts:") {
                return ms.parse().map(StartAt::Timestamp).map_err(|_| bad("ts:<unix ms> wants an integer"));
            }
            if let Some(text) = v.strip_prefix("cursor:") {
                let bytes = base64_decode(text).ok_or_else(|| bad("cursor:<base64> is not base64"))?;
                return Cursor::from_bytes(&bytes).map(StartAt::Cursor).map_err(|e| bad(&e.to_string()));
            }
            Err(bad("expected latest, earliest, ts:<unix ms> or cursor:<base64>"))
        }
    }
}

/// Base64 with either alphabet, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Includes what `kafkasocks-build` generated for a protobuf package.
///
/// ```ignore
/// pub mod chat {
///     kafkasocks::include_streams!("chat.v1");
/// }
/// ```
#[macro_export]
macro_rules! include_streams {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
