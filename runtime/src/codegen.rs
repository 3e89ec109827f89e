//! The surface generated code uses (`kafkasocks-build` output). Not for hand-written
//! code: it may change in any release together with the generator.
//!
//! Generated modules import only from here, so the runtime can change inside without
//! breaking checked-in generated files.

pub use crate::auth::{Handshake, Principal, Transport};
pub use crate::protocol::{Code, Cursor, Delivery, OutgoingRecord, Receipt, RecordView, StartAt, Status};
pub use crate::registry::{KeyMessage, OtherTypes, RecordTypes, RegistrySchema, SchemaReference, SubjectNameStrategy};
pub use crate::session::local::{LocalStreams, RecordStream};
pub use crate::stream::{
    BoxFuture, PublishHook, RecordFilter, RequestContext, Streams, SubscribeHook, SubscriptionPlan,
};
pub use bytes::Bytes;
pub use prost;

/// The version of the interface between generated code and this module. Generated code
/// asserts at compile time that the runtime supports the interface it was generated for
/// (`const _: () = assert!(supports_interface(N), "...")`), so a mismatch of
/// kafkasocks-build and kafkasocks fails the build with a message, not with puzzling type
/// errors. Raised whenever this module changes incompatibly.
pub const CODEGEN_INTERFACE: u32 = 3;

/// Whether this runtime can serve code generated for interface `interface`.
pub const fn supports_interface(interface: u32) -> bool {
    interface == CODEGEN_INTERFACE
}

/// The messages of `proto/kafkasocks/options.proto` (`kafkasocks.Receipt`, the stream
/// options). Generated code maps the `.kafkasocks` package here. (Its doc comments are the
/// .proto's comments, which are not Markdown: `"<topic>-key"` is not an HTML tag.)
#[allow(missing_docs, clippy::all, missing_debug_implementations, unreachable_pub, rustdoc::invalid_html_tags)]
pub mod options {
    include!(concat!(env!("OUT_DIR"), "/kafkasocks.rs"));
}

impl From<Receipt> for options::Receipt {
    fn from(r: Receipt) -> options::Receipt {
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
    code.grpc()
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
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = text.replace('-', "+").replace('_', "/");
    GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT).decode(standard).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_metadata_takes_cursors_in_either_base64_alphabet() {
        let cursor = Cursor { topic_id: Bytes::from_static(&[0xfb; 16]), positions: vec![(0, 62), (1, 63)] };
        let bytes = cursor.to_bytes();
        use base64::Engine as _;
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let text = format!("cursor:{}", engine.encode(&bytes));
            assert_eq!(start_from_metadata(Some(&text)), Ok(StartAt::Cursor(cursor.clone())), "{text}");
        }
        assert_eq!(start_from_metadata(None), Ok(StartAt::Latest));
        assert_eq!(start_from_metadata(Some("earliest")), Ok(StartAt::Earliest));
        assert_eq!(start_from_metadata(Some("ts:17")), Ok(StartAt::Timestamp(17)));
        for bad in ["cursor:%%%", "cursor:AAA*", "ts:soon", "sometime"] {
            let err = start_from_metadata(Some(bad)).expect_err(bad);
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        }
    }
}
