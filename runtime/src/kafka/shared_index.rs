//! The topic through which gateway nodes share their key indexes' blocks
//! ([`GatewayConfig::key_index_topic`](crate::GatewayConfig::key_index_topic)): compacted,
//! one record per block, written as blocks are sealed and read when an index is built, so
//! a restarted node, or another node, does not read the partitions again. The records are
//! opaque here (the fan-out layer encodes them).

use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;

use super::{Kafka, ReadEvent};
use crate::error::Error;
use crate::protocol::Status;

/// How long reading the shared blocks may take; what was read by then is used.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

impl Kafka {
    /// Shares key index blocks through `topic` from now on: creates it (compacted, one
    /// partition, the cluster's default replication) when it does not exist. Once.
    pub(crate) async fn share_key_index(&self, topic: &str) -> Result<(), Error> {
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.base.create().map_err(|e| Error::kafka("creating an admin client", e))?;
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created =
            admin.create_topics(&[new], &opts).await.map_err(|e| Error::kafka("creating the key index topic", e))?;
        for r in created {
            match r {
                Ok(t) => tracing::info!(topic = %t, "created the key index topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(Error::Config(format!("creating the key index topic {t:?}: {code:?}")));
                }
            }
        }
        self.key_index_topic
            .set(topic.to_owned())
            .map_err(|_| Error::Config("the key index topic was set twice".into()))
    }

    /// Whether key index blocks are shared.
    pub(crate) fn shares_key_index(&self) -> bool {
        self.key_index_topic.get().is_some()
    }

    /// Writes one block (best effort: a block that is not written only leaves a gap, and
    /// a node that loads blocks uses the run after it).
    pub(crate) fn share_block(&self, key: Vec<u8>, value: Vec<u8>) {
        let Some(topic) = self.key_index_topic.get() else { return };
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(&key[..]).payload(&value[..]);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if let Ok(Err((e, _))) = delivery.await {
                        tracing::warn!(error = %e, "key index: a block was not shared");
                    }
                });
            }
            Err((e, _)) => tracing::warn!(error = %e, "key index: a block was not shared"),
        }
    }

    /// Every record of the shared topic up to its end as of now: (key, value).
    pub(crate) async fn shared_blocks(&self) -> Result<Vec<(Bytes, Bytes)>, Status> {
        use futures_util::StreamExt;
        let Some(topic) = self.key_index_topic.get() else { return Ok(Vec::new()) };
        let info = self.describe(topic).await?;
        let marks = self.watermarks(topic, info.partitions).await?;
        let mut left: Vec<(i32, i64)> = (0..info.partitions as i32).zip(marks.iter().map(|m| m.1)).collect();
        let positions: Vec<(i32, i64)> = (0..info.partitions as i32).zip(marks.iter().map(|m| m.0)).collect();
        left.retain(|&(p, high)| high > positions[p as usize].1);
        let mut out = Vec::new();
        if left.is_empty() {
            return Ok(out);
        }
        let reader = self.reader(topic, &positions, true)?;
        let mut events = reader.events();
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        while !left.is_empty() {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(ReadEvent::Record(rec))) => {
                    left.retain(|&(p, high)| !(p == rec.partition && rec.offset + 1 >= high));
                    out.push((rec.key, rec.payload));
                }
                Ok(Some(ReadEvent::PartitionEnd)) => {
                    // A partition whose last offsets hold no records (markers): at its end.
                    if let Ok(now) = self.watermarks(topic, info.partitions).await {
                        left.retain(|&(p, _)| reader.position(topic, p).is_none_or(|o| o < now[p as usize].1));
                    }
                }
                Ok(Some(ReadEvent::Error(e))) => tracing::warn!(error = %e, "key index: reading shared blocks"),
                Ok(Some(ReadEvent::Denied(why))) => {
                    return Err(Status::permission_denied(format!("reading the key index topic: {why}")));
                }
                Ok(Some(ReadEvent::BelowLogStart) | None) => break,
                Err(_) => {
                    tracing::warn!(topic, "key index: reading shared blocks took too long; using what was read");
                    break;
                }
            }
        }
        Ok(out)
    }
}
