//! The surface generated code uses (`kafkasocks-build` output). Not for hand-written
//! code: it may change in any release together with the generator.
//!
//! Generated modules import only from here, so the runtime can change inside without
//! breaking checked-in generated files.

pub use crate::client::{Client, Delivery, Receipt, StartAt, Subscription};
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
