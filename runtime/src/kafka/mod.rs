//! The Kafka layer, a leaf: the idempotent producer, readers assigned to partitions and
//! offsets (see [`reader`]), metadata and watermarks. It knows nothing of subscribers or
//! sessions; rdkafka's types do not leave it.

pub(crate) mod metadata;
pub(crate) mod reader;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::Error;
use crate::protocol::{Code, OutgoingRecord, Receipt, Status};

pub(crate) use reader::{ReadEvent, Reader};

/// The header that carries a publish's idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "kafkasocks-idempotency-key";

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway knows of a topic: its id (empty when unknown) and partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicInfo {
    pub(crate) id: Bytes,
    pub(crate) partitions: usize,
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<(Instant, Result<T, Status>)>>>;

/// Fresh answers, shared: a caller gets the result of a lookup that *started after it
/// asked*, so it never sees stale data, while concurrent callers (a reconnect storm)
/// share one request instead of sending one each.
struct Fresh<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T: Clone> Fresh<T> {
    fn new() -> Fresh<T> {
        Fresh { slots: Mutex::default() }
    }

    async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<T, Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let asked = Instant::now();
        let slot = self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_owned()).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some((started, result)) = guard.as_ref()
            && *started >= asked
        {
            return result.clone();
        }
        let started = Instant::now();
        let result = fetch().await;
        *guard = Some((started, result.clone()));
        result
    }
}

/// The gateway's Kafka clients: one producer, one metadata client, and the readers it makes.
pub(crate) struct Kafka {
    config: KafkaConfig,
    group: String,
    publish_timeout: Duration,
    producer: FutureProducer,
    admin: Arc<BaseConsumer>,
    descriptions: Fresh<TopicInfo>,
    marks: Fresh<Vec<(i64, i64)>>,
}

fn kafka_status(what: &str, e: &KafkaError) -> Status {
    let code = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => Code::NotFound,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => Code::InvalidArgument,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Code::PermissionDenied,
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => Code::Unavailable,
        _ => Code::Unavailable,
    };
    Status::new(code, format!("{what}: {e}"))
}

impl Kafka {
    /// Creates the clients (Kafka need not be reachable yet). Publishes time out after
    /// `publish_timeout`.
    pub(crate) fn new(config: KafkaConfig, publish_timeout: Duration, server_id: &str) -> Result<Arc<Kafka>, Error> {
        let producer: FutureProducer = Self::client_config(&config)
            .set("client.id", format!("kafkasocks-{server_id}-producer"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", publish_timeout.as_millis().to_string())
            .create()
            .map_err(|e| Error::kafka("creating the producer", e))?;
        let admin: BaseConsumer = Self::consumer_config(&config, &format!("kafkasocks-{server_id}"))
            .set("client.id", format!("kafkasocks-{server_id}-metadata"))
            .create()
            .map_err(|e| Error::kafka("creating the metadata client", e))?;
        Ok(Arc::new(Kafka {
            group: format!("kafkasocks-{server_id}"),
            config,
            publish_timeout,
            producer,
            admin: Arc::new(admin),
            descriptions: Fresh::new(),
            marks: Fresh::new(),
        }))
    }

    fn client_config(config: &KafkaConfig) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.bootstrap);
        for (k, v) in &config.options {
            c.set(k, v);
        }
        c
    }

    fn consumer_config(config: &KafkaConfig, group: &str) -> ClientConfig {
        let mut c = Self::client_config(config);
        // Readers are assigned partitions and offsets explicitly and never commit: all
        // positions live in clients' cursors.
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            // When its (bounded) queue is full, librdkafka waits this long before fetching
            // again: the default 1 s throttled catch-up readers 3-16x (bench/).
            .set("fetch.queue.backoff.ms", "10");
        c
    }

    /// A consumer assigned to `positions` of `topic`. `catch_up` readers report the end of
    /// a partition and buffer less.
    pub(crate) fn reader(&self, topic: &str, positions: &[(i32, i64)], catch_up: bool) -> Result<Reader, Status> {
        let consumer: StreamConsumer = Self::consumer_config(&self.config, &self.group)
            .set("client.id", format!("{}-{}", self.group, if catch_up { "catchup" } else { "live" }))
            .set("enable.partition.eof", if catch_up { "true" } else { "false" })
            // librdkafka prefetches up to 64 MiB per consumer by default: bound it.
            .set("queued.max.messages.kbytes", if catch_up { "2048" } else { "16384" })
            .create()
            .map_err(|e| kafka_status("creating a reader", &e))?;
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in positions {
            tpl.add_partition_offset(topic, p, Offset::Offset(o)).map_err(|e| kafka_status("assigning", &e))?;
        }
        consumer.assign(&tpl).map_err(|e| kafka_status("assigning", &e))?;
        Ok(Reader::new(consumer))
    }

    /// Fresh topic metadata (see [`Fresh`]).
    pub(crate) async fn describe(&self, topic: &str) -> Result<TopicInfo, Status> {
        self.descriptions.get(topic, || self.describe_now(topic)).await
    }

    /// Fresh (low, high) watermarks of every partition (see [`Fresh`]).
    pub(crate) async fn fresh_watermarks(&self, topic: &str, partitions: usize) -> Result<Vec<(i64, i64)>, Status> {
        let marks = self.marks.get(topic, || self.watermarks(topic, partitions)).await?;
        if marks.len() == partitions {
            Ok(marks)
        } else {
            // A concurrent caller asked about another incarnation of the topic.
            self.watermarks(topic, partitions).await
        }
    }

    async fn describe_now(&self, topic: &str) -> Result<TopicInfo, Status> {
        let plaintext =
            !self.config.options.iter().any(|(k, v)| k == "security.protocol" && !v.eq_ignore_ascii_case("plaintext"));
        if plaintext {
            match metadata::fetch_topic(&self.config.bootstrap, topic, METADATA_TIMEOUT).await {
                Ok(m) if m.error_code == metadata::UNKNOWN_TOPIC_OR_PARTITION => {
                    return Err(Status::new(Code::NotFound, format!("topic {topic:?} does not exist")));
                }
                Ok(m) if m.error_code == 0 && !m.partitions.is_empty() => {
                    return Ok(TopicInfo { id: Bytes::copy_from_slice(&m.topic_id), partitions: m.partitions.len() });
                }
                Ok(m) => tracing::debug!(topic, error_code = m.error_code, "metadata error; asking librdkafka"),
                Err(e) => tracing::debug!(topic, error = %e, "topic id lookup failed; asking librdkafka"),
            }
        }
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let partitions = tokio::task::spawn_blocking(move || {
            let md = admin.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            Ok::<_, KafkaError>(md.topics().first().map(|t| (t.error(), t.partitions().len())))
        })
        .await
        .map_err(|e| Status::new(Code::Internal, format!("metadata task: {e}")))?
        .map_err(|e| kafka_status("fetching metadata", &e))?;
        match partitions {
            Some((None, n)) if n > 0 => Ok(TopicInfo { id: Bytes::new(), partitions: n }),
            _ => Err(Status::new(Code::NotFound, format!("topic {topic:?} does not exist"))),
        }
    }

    /// (low, high) watermarks of each partition.
    pub(crate) async fn watermarks(&self, topic: &str, partitions: usize) -> Result<Vec<(i64, i64)>, Status> {
        let admin = self.admin.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions as i32)
                .map(|p| admin.fetch_watermarks(&topic, p, METADATA_TIMEOUT))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Status::new(Code::Internal, format!("watermark task: {e}")))?
        .map_err(|e| kafka_status("fetching watermarks", &e))
    }

    /// Per partition, the first offset with a timestamp >= `ts_ms` (the high watermark
    /// when there is none).
    pub(crate) async fn offsets_for_time(
        &self,
        topic: &str,
        partitions: usize,
        ts_ms: i64,
    ) -> Result<Vec<i64>, Status> {
        let marks = self.watermarks(topic, partitions).await?;
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let tpl = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions as i32 {
                tpl.add_partition_offset(&name, p, Offset::Offset(ts_ms))?;
            }
            admin.offsets_for_times(tpl, METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| Status::new(Code::Internal, format!("offset task: {e}")))?
        .map_err(|e| kafka_status("looking up offsets by time", &e))?;
        Ok((0..partitions)
            .map(|p| match tpl.find_partition(topic, p as i32).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => marks[p].1,
            })
            .collect())
    }

    /// Produces one record and waits for Kafka's acknowledgement (acks=all).
    pub(crate) async fn produce(
        &self,
        topic: &str,
        record: &OutgoingRecord,
        idempotency_key: &[u8],
    ) -> Result<Receipt, Status> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
        for (k, v) in &record.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_ref()) });
        }
        if !idempotency_key.is_empty() {
            headers = headers.insert(Header { key: IDEMPOTENCY_HEADER, value: Some(idempotency_key) });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(record.payload.as_ref()).headers(headers);
        if let Some(k) = &record.key {
            fr = fr.key(k.as_ref());
        }
        match self.producer.send(fr, self.publish_timeout).await {
            Ok(d) => Ok(Receipt {
                topic: topic.to_owned(),
                partition: d.partition,
                offset: d.offset,
                timestamp_ms: d.timestamp.to_millis().unwrap_or(0),
                duplicate: false,
            }),
            Err((e, _)) => Err(kafka_status(&format!("producing to {topic:?}"), &e)),
        }
    }

    /// Whether Kafka answered a metadata request just now.
    pub(crate) async fn healthy(&self) -> bool {
        let admin = self.admin.clone();
        tokio::task::spawn_blocking(move || admin.fetch_metadata(None, Duration::from_secs(2)).is_ok())
            .await
            .unwrap_or(false)
    }
}
