//! The Kafka layer, a leaf: the idempotent producer, readers assigned to partitions and
//! offsets (see [`reader`]), metadata (topic ids through librdkafka's DescribeTopics, on
//! the same secured connection as everything else) and watermarks. It knows nothing of
//! subscribers or sessions; rdkafka's types do not leave it.

pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod reader;
mod shared_index;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::Error;
use crate::protocol::{Code, OutgoingRecord, Receipt, Status};

use config::KafkaConfig;
use context::{GatewayContext, KafkaHealth};
pub(crate) use reader::{ReadEvent, Reader};

/// The header that carries a publish's idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "kafkasocks-idempotency-key";

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check of whether Kafka accepts the gateway again may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Every client's starting point: bootstrap, security (secrets read at start), options.
    base: ClientConfig,
    context: GatewayContext,
    group: String,
    publish_timeout: Duration,
    producer: FutureProducer<GatewayContext>,
    admin: Arc<BaseConsumer<GatewayContext>>,
    descriptions: Fresh<TopicInfo>,
    marks: Fresh<Vec<(i64, i64)>>,
    /// Said once: the cluster gives no topic ids.
    warned_no_ids: std::sync::atomic::AtomicBool,
    /// Topics whose record keys are Confluent-framed key messages, and the field of the
    /// key in them (set once, when the gateway binds).
    framed_keys: std::sync::OnceLock<std::collections::HashMap<String, u32>>,
    /// Exactly-once across the nodes of a cluster, when configured (set once, at bind).
    cluster: std::sync::OnceLock<cluster::Cluster>,
    /// The topic key index blocks are shared through, when configured (set once, at bind).
    key_index_topic: std::sync::OnceLock<String>,
}

/// What a peer is told about a Kafka error: the code it maps to and why. An error that only
/// says Kafka did not answer (a time-out, brokers down) carries the last connection-level
/// error librdkafka reported, such as a refused password or a failed TLS handshake.
fn kafka_status(what: &str, e: &KafkaError, health: &KafkaHealth) -> Status {
    let code = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => Code::NotFound,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => Code::InvalidArgument,
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed,
        ) => Code::PermissionDenied,
        _ => Code::Unavailable,
    };
    match (code, health.last_error()) {
        (Code::Unavailable, Some(why)) => Status::new(code, format!("{what}: {e} (Kafka reported: {why})")),
        _ => Status::new(code, format!("{what}: {e}")),
    }
}

impl Kafka {
    /// Creates the clients (Kafka need not be reachable yet). Publishes time out after
    /// `publish_timeout`.
    pub(crate) fn new(config: KafkaConfig, publish_timeout: Duration, server_id: &str) -> Result<Arc<Kafka>, Error> {
        let base = config.client_config()?;
        let context = GatewayContext { health: Arc::default() };
        let group = format!("kafkasocks-{server_id}");
        let producer: FutureProducer<GatewayContext> = base
            .clone()
            .set("client.id", format!("kafkasocks-{server_id}-producer"))
            .set("partitioner", config.partitioner_name())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", publish_timeout.as_millis().to_string())
            .create_with_context(context.clone())
            .map_err(|e| Error::kafka("creating the producer", e))?;
        let admin: BaseConsumer<GatewayContext> = Self::consumer_config(&base, &group)
            .set("client.id", format!("kafkasocks-{server_id}-metadata"))
            .create_with_context(context.clone())
            .map_err(|e| Error::kafka("creating the metadata client", e))?;
        tracing::info!(
            bootstrap = %config.bootstrap(),
            security = config.security_protocol(),
            partitioner = config.partitioner_name(),
            "Kafka clients created"
        );
        Ok(Arc::new(Kafka {
            base,
            context,
            group,
            publish_timeout,
            producer,
            admin: Arc::new(admin),
            descriptions: Fresh::new(),
            marks: Fresh::new(),
            warned_no_ids: std::sync::atomic::AtomicBool::new(false),
            framed_keys: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            key_index_topic: std::sync::OnceLock::new(),
        }))
    }

    fn consumer_config(base: &ClientConfig, group: &str) -> ClientConfig {
        let mut c = base.clone();
        // Readers are assigned partitions and offsets explicitly and never commit: all
        // positions live in clients' cursors.
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error");
        // When its (bounded) queue is full, librdkafka waits this long before fetching
        // again: the default 1 s throttled catch-up readers 3-16x (bench/).
        Self::default_to(&mut c, "fetch.queue.backoff.ms", "10");
        c
    }

    /// Sets `key` unless the gateway's Kafka options (`KafkaConfig::option`) set it.
    fn default_to(c: &mut ClientConfig, key: &str, value: &str) {
        if c.get(key).is_none() {
            c.set(key, value);
        }
    }

    /// Says which topics have Confluent-framed keys (once; later calls are ignored).
    pub(crate) fn set_framed_keys(&self, topics: std::collections::HashMap<String, u32>) {
        let _ = self.framed_keys.set(topics);
    }

    /// Publishes go through the owners of their keys in this cluster from now on
    /// ([`cluster`]). Once; fails when the cluster cannot be joined.
    pub(crate) async fn join_cluster(
        &self,
        config: &cluster::ClusterConfig,
        server_id: &str,
        dedup_window: Duration,
        dedup_capacity: usize,
    ) -> Result<(), Error> {
        let joined = cluster::Cluster::start(cluster::ClusterStart {
            config,
            base: &self.base,
            context: &self.context,
            server_id,
            dedup_window,
            dedup_capacity,
            publish_timeout: self.publish_timeout,
        })
        .await?;
        self.cluster.set(joined).map_err(|_| Error::Config("the gateway joined a cluster twice".into()))
    }

    /// A consumer assigned to `positions` of `topic`. `catch_up` readers report the end of
    /// a partition and buffer less.
    pub(crate) fn reader(&self, topic: &str, positions: &[(i32, i64)], catch_up: bool) -> Result<Reader, Status> {
        let mut config = Self::consumer_config(&self.base, &self.group);
        // How long the broker may hold a fetch that finds nothing new. It answers at once
        // when records arrive, but about 1 % of records arrived while a fetch was held
        // anyway and waited it out: 50 ms put a live reader's p99 at 55 ms, 10 ms at about
        // 11 ms (bench/ `paced`). An idle live reader asks its brokers 100 times a second.
        Self::default_to(&mut config, "fetch.wait.max.ms", if catch_up { "50" } else { "10" });
        let consumer: StreamConsumer<GatewayContext> = config
            .set("client.id", format!("{}-{}", self.group, if catch_up { "catchup" } else { "live" }))
            .set("enable.partition.eof", if catch_up { "true" } else { "false" })
            // librdkafka prefetches up to 64 MiB per consumer by default: bound it.
            .set("queued.max.messages.kbytes", if catch_up { "2048" } else { "16384" })
            .create_with_context(self.context.clone())
            .map_err(|e| self.status("creating a reader", &e))?;
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in positions {
            tpl.add_partition_offset(topic, p, Offset::Offset(o)).map_err(|e| self.status("assigning", &e))?;
        }
        consumer.assign(&tpl).map_err(|e| self.status("assigning", &e))?;
        let key_field = self.framed_keys.get().and_then(|t| t.get(topic).copied());
        Ok(Reader::new(consumer, key_field))
    }

    /// Fresh topic metadata (see [`Fresh`]).
    pub(crate) async fn describe(&self, topic: &str) -> Result<TopicInfo, Status> {
        self.refusal(topic, &format!("describing topic {topic:?}"))?;
        self.descriptions.get(topic, || self.describe_now(topic)).await
    }

    /// Fails at once while Kafka refuses the gateway's credentials or TLS handshake
    /// (librdkafka said so last): waiting out a publish or metadata timeout would only
    /// delay the same answer. Meanwhile one check at a time asks Kafka about `topic`, and
    /// the first answer it gets lifts the refusal (the password was changed on the broker,
    /// say).
    fn refusal(&self, topic: &str, what: &str) -> Result<(), Status> {
        let health = &self.context.health;
        let Some(why) = health.refusal() else { return Ok(()) };
        if !health.probing.swap(true, Ordering::AcqRel) {
            let (admin, health, topic) = (self.admin.clone(), self.context.health.clone(), topic.to_owned());
            tokio::task::spawn_blocking(move || {
                if admin.fetch_metadata(Some(&topic), PROBE_TIMEOUT).is_ok() {
                    health.clear();
                }
                health.probing.store(false, Ordering::Release);
            });
        }
        Err(Status::unavailable(format!("{what}: Kafka refuses the gateway's connection: {why}"))
            .with_retry_after(PROBE_TIMEOUT))
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

    /// The topic's id and partition count, from librdkafka's DescribeTopics over the
    /// gateway's own (possibly TLS and SASL) connection.
    async fn describe_now(&self, topic: &str) -> Result<TopicInfo, Status> {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let described = tokio::task::spawn_blocking(move || {
            kafkasocks_topic_ids::describe(admin.client(), &[name.as_str()], METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| Status::new(Code::Internal, format!("metadata task: {e}")))?;
        let found = match described {
            Ok(mut found) => found.pop(),
            // A cluster (or rdkafka's MockCluster) that does not answer DescribeTopics at all:
            // ask plain metadata, which carries no topic id. Re-created topics are then
            // detected only through offsets and partition counts.
            Err(e) => return self.describe_without_id(topic, &e.to_string()).await,
        };
        self.context.health.clear();
        match found {
            Some(d) if d.error.is_none() && d.partitions > 0 => {
                let id = if d.id == [0; 16] { Bytes::new() } else { Bytes::copy_from_slice(&d.id) };
                Ok(TopicInfo { id, partitions: d.partitions })
            }
            Some(d) => match d.error.map(|e| e.code) {
                Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Err(Status::permission_denied(format!(
                    "the gateway's Kafka principal may not describe topic {topic:?}"
                ))),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) | None => {
                    Err(Status::new(Code::NotFound, format!("topic {topic:?} does not exist")))
                }
                Some(code) => Err(Status::unavailable(format!("describing topic {topic:?}: {code:?}"))),
            },
            None => Err(Status::new(Code::NotFound, format!("topic {topic:?} does not exist"))),
        }
    }

    async fn describe_without_id(&self, topic: &str, why: &str) -> Result<TopicInfo, Status> {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let md = admin.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            Ok::<_, KafkaError>(md.topics().first().map(|t| (t.error(), t.partitions().len())))
        })
        .await
        .map_err(|e| Status::new(Code::Internal, format!("metadata task: {e}")))?
        .map_err(|e| self.status(&format!("describing topic {topic:?} ({why})"), &e))?;
        if !self.warned_no_ids.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                topic,
                error = why,
                "Kafka did not answer DescribeTopics: without topic ids, a deleted and re-created topic is \
                 detected only through offsets and partition counts"
            );
        }
        match found {
            Some((None, n)) if n > 0 => Ok(TopicInfo { id: Bytes::new(), partitions: n }),
            Some((Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), _)) => Err(
                Status::permission_denied(format!("the gateway's Kafka principal may not describe topic {topic:?}")),
            ),
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
        .map_err(|e| self.status("fetching watermarks", &e))
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
        .map_err(|e| self.status("looking up offsets by time", &e))?;
        Ok((0..partitions)
            .map(|p| match tpl.find_partition(topic, p as i32).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => marks[p].1,
            })
            .collect())
    }

    /// Queues one record in the producer (waiting, up to the publish timeout, while its
    /// queue is full); [`Produced::receipt`] then waits for Kafka's acknowledgement
    /// (acks=all). Records queued one after the other keep that order in their partition
    /// (the idempotent producer). In a cluster, what is queued is the record's request to
    /// the owner of its key, and the receipt is the owner's answer: `dedup` (the
    /// publish's scope, method and idempotency key) decides whether it is produced.
    pub(crate) async fn enqueue(
        &self,
        topic: &str,
        record: &OutgoingRecord,
        idempotency_key: &[u8],
        dedup: &[u8],
    ) -> Result<Produced, Status> {
        self.refusal(topic, &format!("producing to {topic:?}"))?;
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        if let Some(cluster) = self.cluster.get() {
            return match cluster.request(&self.producer, deadline, (topic, record, idempotency_key), dedup).await {
                Ok(asked) => Ok(Produced { sent: Sent::Asked(asked), topic: topic.to_owned() }),
                Err(e) => Err(self.produce_status(topic, &e)),
            };
        }
        let headers = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_ref()));
        let fr = future_record(topic, record.key.as_deref(), &record.payload, headers, idempotency_key);
        match queue(&self.producer, fr, deadline).await {
            Ok(delivery) => Ok(Produced { sent: Sent::Direct(delivery), topic: topic.to_owned() }),
            Err(e) => Err(self.produce_status(topic, &e)),
        }
    }

    /// A failed produce. The idempotent producer stops for good on a fatal error (the
    /// principal may not write idempotently, for example): say which, and map a missing
    /// authorization to PERMISSION_DENIED rather than a retryable UNAVAILABLE.
    fn produce_status(&self, topic: &str, e: &KafkaError) -> Status {
        let what = format!("producing to {topic:?}");
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::Fatal) {
            return self.status(&what, e);
        }
        match rdkafka::producer::Producer::client(&self.producer).fatal_error() {
            Some((
                RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
                why,
            )) => Status::permission_denied(format!(
                "{what}: the gateway's Kafka principal may not produce (idempotent publishes need Write on the \
                 topic and IdempotentWrite on the cluster): {why}"
            )),
            Some((_, why)) => Status::unavailable(format!("{what}: the producer stopped after a fatal error: {why}")),
            None => self.status(&what, e),
        }
    }

    fn status(&self, what: &str, e: &KafkaError) -> Status {
        kafka_status(what, e, &self.context.health)
    }

    /// Whether Kafka answered a metadata request just now; if not, why (with what librdkafka
    /// last reported about the connection: a refused password, a failed TLS handshake).
    pub(crate) async fn health(&self) -> Result<(), String> {
        let admin = self.admin.clone();
        let answered = tokio::task::spawn_blocking(move || admin.fetch_metadata(None, Duration::from_secs(2)))
            .await
            .map_err(|e| format!("metadata task: {e}"))?;
        match answered {
            Ok(_) => {
                self.context.health.clear();
                Ok(())
            }
            Err(e) => Err(match self.context.health.last_error() {
                Some(why) => format!("Kafka does not answer: {e}; it reported: {why}"),
                None => format!("Kafka does not answer: {e}"),
            }),
        }
    }
}

/// A record of `topic` as librdkafka takes it: `headers`, and the idempotency key's
/// header when there is one.
fn future_record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>,
    idempotency_key: &'a [u8],
) -> FutureRecord<'a, [u8], [u8]> {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len() + 1);
    for (k, v) in headers {
        owned = owned.insert(Header { key: k, value: Some(v) });
    }
    if !idempotency_key.is_empty() {
        owned = owned.insert(Header { key: IDEMPOTENCY_HEADER, value: Some(idempotency_key) });
    }
    let fr = FutureRecord::to(topic).payload(payload).headers(owned);
    match key {
        Some(k) => fr.key(k),
        None => fr,
    }
}

/// Queues `fr` in `producer`, waiting while its queue is full, until `deadline`.
async fn queue<'a>(
    producer: &FutureProducer<GatewayContext>,
    mut fr: FutureRecord<'a, [u8], [u8]>,
    deadline: tokio::time::Instant,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(fr) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if tokio::time::Instant::now() < deadline =>
            {
                fr = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A record queued in the producer, its acknowledgement to come.
pub(crate) struct Produced {
    sent: Sent,
    topic: String,
}

enum Sent {
    /// Produced by this node.
    Direct(rdkafka::producer::DeliveryFuture),
    /// Asked of the owner of its key (a cluster).
    Asked(cluster::Asked),
}

impl Produced {
    /// Waits for Kafka's acknowledgement (bounded by `message.timeout.ms`, the publish
    /// timeout), or in a cluster for the owner's answer (bounded by the publish timeout).
    pub(crate) async fn receipt(self, kafka: &Kafka) -> Result<Receipt, Status> {
        let delivery = match self.sent {
            Sent::Direct(delivery) => delivery,
            Sent::Asked(asked) => {
                let topic = self.topic;
                return asked.answer(kafka.publish_timeout, |e| kafka.produce_status(&topic, e)).await;
            }
        };
        match delivery.await {
            Ok(Ok(d)) => Ok(Receipt {
                topic: self.topic,
                partition: d.partition,
                offset: d.offset,
                timestamp_ms: d.timestamp.to_millis().unwrap_or(0),
                duplicate: false,
            }),
            Ok(Err((e, _))) => Err(kafka.produce_status(&self.topic, &e)),
            Err(_) => Err(Status::unavailable(format!("producing to {:?}: the producer went away", self.topic))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The readers' defaults apply where the gateway's Kafka options say nothing, and give
    /// way where they do (`KafkaConfig::option` is applied to the base config).
    #[test]
    fn reader_defaults_give_way_to_the_user_s_options() {
        let mut base = ClientConfig::new();
        base.set("fetch.queue.backoff.ms", "500");
        let c = Kafka::consumer_config(&base, "g");
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("500"));
        assert_eq!(c.get("auto.offset.reset"), Some("error"), "not the user's to change: positions are cursors");
        let c = Kafka::consumer_config(&ClientConfig::new(), "g");
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
    }
}
