//! A reader: one librdkafka consumer assigned to partitions at offsets (no consumer group,
//! no commits), whose records come out encoded once as [`SharedRecord`]s.

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;

use super::context::GatewayContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};

use crate::protocol::wire::SharedRecord;

/// What a reader saw next.
pub(crate) enum ReadEvent {
    /// A record.
    Record(SharedRecord),
    /// The end of a partition (only readers made for catching up report it).
    PartitionEnd,
    /// The log no longer holds the offset being read (`auto.offset.reset=error` makes
    /// librdkafka say so instead of jumping).
    BelowLogStart,
    /// The gateway's principal may not read the topic.
    Denied(String),
    /// Any other error; the reader goes on.
    Error(String),
}

/// A consumer made by [`Kafka::reader`](super::Kafka::reader).
pub(crate) struct Reader {
    consumer: StreamConsumer<GatewayContext>,
    /// The topic's keys are Confluent-framed key messages, the key in this field.
    key_field: Option<u32>,
}

impl Reader {
    pub(super) fn new(consumer: StreamConsumer<GatewayContext>, key_field: Option<u32>) -> Reader {
        Reader { consumer, key_field }
    }

    /// Waits for the next record or event.
    pub(crate) async fn next(&self) -> ReadEvent {
        self.event(self.consumer.recv().await)
    }

    /// The records and events as a stream, for a reader that takes many in a row: one
    /// registration with the consumer for as long as the stream lives (`next` registers
    /// and unregisters a waker for every record), and what is already queued can be
    /// taken without waiting (`now_or_never`).
    pub(crate) fn events(&self) -> impl futures_util::Stream<Item = ReadEvent> + Unpin + '_ {
        use futures_util::StreamExt;
        self.consumer.stream().map(move |m| self.event(m))
    }

    /// Reads `partition` from `offset` on (asynchronously: records fetched before may
    /// still come out).
    pub(crate) fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
        use rdkafka::consumer::Consumer;
        self.consumer
            .seek(topic, partition, rdkafka::Offset::Offset(offset), std::time::Duration::ZERO)
            .map_err(|e| e.to_string())
    }

    /// The offset after the last record of `partition` it handed out.
    pub(crate) fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        use rdkafka::consumer::Consumer;
        let list = self.consumer.position().ok()?;
        match list.find_partition(topic, partition)?.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    fn event(&self, read: Result<BorrowedMessage<'_>, KafkaError>) -> ReadEvent {
        match read {
            Ok(m) => ReadEvent::Record(to_shared(&m, self.key_field)),
            Err(KafkaError::PartitionEOF(_)) => ReadEvent::PartitionEnd,
            Err(e) if below_log_start(&e) => ReadEvent::BelowLogStart,
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                ReadEvent::Denied(e.to_string())
            }
            Err(e) => ReadEvent::Error(e.to_string()),
        }
    }
}

/// Whether a reader's error means the log no longer holds the offset it reads.
fn below_log_start(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange))
}

fn to_shared(msg: &BorrowedMessage<'_>, key_field: Option<u32>) -> SharedRecord {
    let headers: Vec<(&str, &[u8])> =
        msg.headers().map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect()).unwrap_or_default();
    let (partition, offset) = (msg.partition(), msg.offset());
    let timestamp = msg.timestamp().to_millis().unwrap_or(0);
    let (key, value) = (msg.key().unwrap_or_default(), msg.payload().unwrap_or_default());
    match key_field {
        Some(field) => SharedRecord::with_framed_key(partition, offset, timestamp, key, field, &headers, value),
        None => SharedRecord::new(partition, offset, timestamp, key, &headers, value),
    }
}
