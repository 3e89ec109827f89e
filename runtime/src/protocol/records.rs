//! Records as the API sees them: a [`Delivery`] to a subscriber, the [`Receipt`] of a
//! publish, a [`RecordView`] for filter hooks and an [`OutgoingRecord`] to produce.

use bytes::Bytes;

/// A record delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka timestamp, Unix ms.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Bytes,
    /// The value, Schema Registry framing removed.
    pub payload: Bytes,
    /// The schema id of that framing, 0 if none.
    pub schema_id: u32,
    /// The Confluent message indexes of that framing; empty for `[0]` (the first message).
    pub message_indexes: Vec<i32>,
    /// Streams of several record types: the record's full message name (the payload is
    /// then the stream's wrapper message, the record in the member of that type). Empty
    /// otherwise.
    pub type_name: String,
    /// Topics whose keys are Confluent-framed: the key's schema id (the framing is removed
    /// from `key`). 0 otherwise.
    pub key_schema_id: u32,
    /// The headers.
    pub headers: Vec<(String, Bytes)>,
}

/// Where Kafka stored a published record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record timestamp, Unix ms.
    pub timestamp_ms: i64,
    /// True when the gateway answered from its dedup window.
    pub duplicate: bool,
}

/// A Kafka record as a filter hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, empty when the record has none.
    pub key: &'a [u8],
    /// The value (Schema Registry framing removed).
    pub payload: &'a [u8],
}

/// A record a publish hook wants produced.
#[derive(Debug, Clone, Default)]
pub struct OutgoingRecord {
    /// The Kafka key (none: Kafka's partitioner picks a partition).
    pub key: Option<Bytes>,
    /// The value.
    pub payload: Bytes,
    /// Extra record headers.
    pub headers: Vec<(String, Bytes)>,
}
