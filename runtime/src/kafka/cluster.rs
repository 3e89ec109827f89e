//! Exactly-once publishes across every gateway node of one cluster, on Kafka alone
//! (docs/design.md, "Exactly-once publish across nodes", has the failure analysis).
//!
//! A node does not produce a publish itself: it writes a *request* (the finished record,
//! its dedup key, the node's id and a request number) to the cluster's requests topic, in
//! the partition its (topic, record key) hashes to, and waits for the *answer* on the
//! receipts topic. Each requests partition has one *owner* at a time, chosen by a Kafka
//! consumer group of all the nodes; the owner runs the partition's requests in log order
//! through a transactional producer whose `transactional.id` belongs to the partition, so
//! a new owner fences the old one (and aborts its open transaction) before it starts. In
//! one transaction the owner produces the records that are new, and writes to the
//! receipts partition of the same number the answer for every request (the first receipt
//! again for a key it has seen: a duplicate) and a checkpoint (the next request offset).
//! A new owner rebuilds the seen keys and the checkpoint from that partition
//! (read-committed) before it runs anything, so a request is decided once whichever node
//! asked, whichever node dies and when.
//!
//! Order: one connection's requests for one (topic, key) go to one requests partition in
//! the order they were queued (the idempotent producer), and its owner produces them in
//! that order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hasher as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::context::GatewayContext;
use crate::error::Error;
use crate::protocol::{Code, OutgoingRecord, Receipt, Status};

/// Exactly-once publishes across the gateway nodes that share this cluster name
/// ([`GatewayConfig::cluster`](crate::GatewayConfig::cluster)); docs/deploy.md says when
/// to use it and what it costs.
///
/// The nodes share two topics, created at start when missing:
/// `kafkasocks.<name>.requests` (delete policy, kept 1 hour) and
/// `kafkasocks.<name>.receipts` (compacted, kept as long as the dedup window), each with
/// [`ClusterConfig::partitions`] partitions. The gateway's Kafka principal needs Read and
/// Write on both, Read on the consumer group `kafkasocks.<name>.owners`, Write and
/// Describe on the transactional ids `kafkasocks.<name>.owner-*`, and IdempotentWrite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The cluster's name: every node of one deployment uses the same one, and no other
    /// deployment on the same Kafka cluster does.
    pub name: String,
    /// Partitions of the requests and receipts topics: how many owners can run requests
    /// at once. Default 8. Fixed for the life of the topics (the gateway refuses to start
    /// when they have another count).
    pub partitions: u32,
    /// How long a new owner waits for Kafka while it takes a partition over (fencing the
    /// old owner, reading the receipts back). Default 30 s.
    pub takeover_timeout: Duration,
}

impl ClusterConfig {
    /// A cluster of this name, with the defaults.
    pub fn new(name: impl Into<String>) -> ClusterConfig {
        ClusterConfig { name: name.into(), partitions: 8, takeover_timeout: Duration::from_secs(30) }
    }

    /// Sets [`ClusterConfig::partitions`].
    pub fn partitions(mut self, partitions: u32) -> ClusterConfig {
        self.partitions = partitions;
        self
    }

    fn check(&self) -> Result<(), Error> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::Config(format!(
                "cluster name {:?}: 1-100 characters of [A-Za-z0-9_-] (it names topics, a group and transactional ids)",
                self.name
            )));
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(Error::Config(format!("cluster partitions {}: 1 to 1024", self.partitions)));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RequestRecord {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(bytes = "bytes", tag = "3")]
    dedup: Bytes,
    #[prost(string, tag = "4")]
    topic: String,
    #[prost(bytes = "bytes", optional, tag = "5")]
    key: Option<Bytes>,
    #[prost(bytes = "bytes", tag = "6")]
    payload: Bytes,
    #[prost(message, repeated, tag = "7")]
    headers: Vec<HeaderRecord>,
    #[prost(bytes = "bytes", tag = "8")]
    idempotency_key: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderRecord {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// An answer on the receipts topic (key: `r` + the dedup key).
#[derive(Clone, PartialEq, prost::Message)]
struct AnswerRecord {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(string, tag = "3")]
    topic: String,
    #[prost(int32, tag = "4")]
    partition: i32,
    #[prost(int64, tag = "5")]
    offset: i64,
    #[prost(int64, tag = "6")]
    timestamp_ms: i64,
    #[prost(bool, tag = "7")]
    duplicate: bool,
    /// 0: produced (or a duplicate); otherwise the gRPC code of the refusal.
    #[prost(int32, tag = "8")]
    code: i32,
    #[prost(string, tag = "9")]
    message: String,
}

/// The next requests offset an owner has not run (key: [`CHECKPOINT_KEY`]).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckpointRecord {
    #[prost(int64, tag = "1")]
    next: i64,
}

const CHECKPOINT_KEY: &[u8] = b"c";
const ANSWER_PREFIX: u8 = b'r';
/// Requests one transaction runs at most.
const BATCH: usize = 512;
/// Requests buffered for one owned partition before the owner's consumer waits.
const OWNER_QUEUE: usize = 4096;
const POLL: Duration = Duration::from_millis(100);

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Result<Receipt, Status>>>>;

/// One node's part of a cluster: it asks (requests and the answers' tail) and owns the
/// requests partitions the group gives it.
pub(crate) struct Cluster {
    requests: String,
    partitions: u32,
    node: String,
    next_id: AtomicU64,
    waiters: Arc<Waiters>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What a started cluster needs from the gateway.
pub(crate) struct ClusterStart<'a> {
    pub(crate) config: &'a ClusterConfig,
    pub(crate) base: &'a ClientConfig,
    pub(crate) context: &'a GatewayContext,
    pub(crate) server_id: &'a str,
    pub(crate) dedup_window: Duration,
    pub(crate) dedup_capacity: usize,
    pub(crate) publish_timeout: Duration,
}

fn kafka_error(what: &str, e: KafkaError) -> Error {
    Error::kafka(what, e)
}

impl Cluster {
    /// Creates the topics when missing, starts the answers' tail and joins the owners'
    /// group. Fails when Kafka does not answer within the takeover timeout.
    pub(crate) async fn start(s: ClusterStart<'_>) -> Result<Cluster, Error> {
        s.config.check()?;
        let name = &s.config.name;
        let requests = format!("kafkasocks.{name}.requests");
        let receipts = format!("kafkasocks.{name}.receipts");
        ensure_topics(s.base, &requests, &receipts, s.config, s.dedup_window).await?;
        let node = format!("{}-{:016x}", s.server_id, rand::random::<u64>());
        let waiters: Arc<Waiters> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tail = answers_tail(&s, &receipts, &node, waiters.clone(), stop.clone()).await?;
        let owners = Owners {
            base: s.base.clone(),
            context: s.context.clone(),
            cluster: name.clone(),
            requests: requests.clone(),
            receipts: receipts.clone(),
            window: s.dedup_window,
            capacity: (s.dedup_capacity / s.config.partitions as usize).max(1024),
            takeover: s.config.takeover_timeout,
            runtime: tokio::runtime::Handle::current(),
        };
        let owner = owners.spawn(stop.clone())?;
        tracing::info!(
            cluster = %name,
            node = %node,
            requests = %requests,
            receipts = %receipts,
            partitions = s.config.partitions,
            "exactly-once publishes across the cluster's nodes: publishes go through the owner of their key"
        );
        Ok(Cluster {
            requests,
            partitions: s.config.partitions,
            node,
            next_id: AtomicU64::new(1),
            waiters,
            stop,
            threads: Mutex::new(vec![tail, owner]),
        })
    }

    /// The requests partition of a record: its (topic, key), so that one key's records
    /// keep their order; a record without a key goes by its dedup key.
    fn partition_of(&self, topic: &str, record: &OutgoingRecord, dedup: &[u8]) -> i32 {
        let mut h = fnv::FnvHasher::default();
        h.write(topic.as_bytes());
        h.write_u8(0);
        match &record.key {
            Some(k) => h.write(k),
            None => {
                h.write_u8(1);
                h.write(dedup)
            }
        }
        (h.finish() % u64::from(self.partitions)) as i32
    }

    /// Queues the request of one publish in `producer` (the node's idempotent producer),
    /// waiting until `deadline` while its queue is full.
    pub(crate) async fn request(
        &self,
        producer: &FutureProducer<GatewayContext>,
        deadline: tokio::time::Instant,
        publish: (&str, &OutgoingRecord, &[u8]),
        dedup: &[u8],
    ) -> Result<Asked, KafkaError> {
        let (topic, record, idempotency_key) = publish;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = RequestRecord {
            node: self.node.clone(),
            id,
            dedup: Bytes::copy_from_slice(dedup),
            topic: topic.to_owned(),
            key: record.key.clone(),
            payload: record.payload.clone(),
            headers: record.headers.iter().map(|(k, v)| HeaderRecord { key: k.clone(), value: v.clone() }).collect(),
            idempotency_key: Bytes::copy_from_slice(idempotency_key),
        }
        .encode_to_vec();
        let partition = self.partition_of(topic, record, dedup);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        // From here the waiter is forgotten however this ends, unless an answer takes it.
        let waiting = Waiting { id, waiters: self.waiters.clone() };
        let fr = FutureRecord::to(&self.requests).partition(partition).key(dedup).payload(&body[..]);
        let delivery = super::queue(producer, fr, deadline).await?;
        Ok(Asked { delivery, answer: rx, _waiting: waiting })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    }
}

/// A request queued in the producer; its answer to come.
pub(crate) struct Asked {
    delivery: rdkafka::producer::DeliveryFuture,
    answer: oneshot::Receiver<Result<Receipt, Status>>,
    _waiting: Waiting,
}

/// Forgets a request's waiter when the publish is answered, fails or is dropped.
struct Waiting {
    id: u64,
    waiters: Arc<Waiters>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Asked {
    /// Waits for the request to be written, then for its owner's answer, within
    /// `timeout` from now. `produce_status` maps a failed write.
    pub(crate) async fn answer(
        self,
        timeout: Duration,
        produce_status: impl FnOnce(&KafkaError) -> Status,
    ) -> Result<Receipt, Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        match self.delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(produce_status(&e)),
            Err(_) => return Err(Status::unavailable("the producer went away")),
        }
        match tokio::time::timeout_at(deadline, self.answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::unavailable("the gateway is stopping")),
            Err(_) => Err(Status::unavailable(format!(
                "no answer within {timeout:?} from the cluster node that owns this key (it may be taking over \
                 from a node that stopped): retry with the same idempotency key, it will not be produced twice"
            ))),
        }
    }
}

/// Creates the two topics when missing; refuses to go on when they exist with another
/// partition count.
async fn ensure_topics(
    base: &ClientConfig,
    requests: &str,
    receipts: &str,
    config: &ClusterConfig,
    window: Duration,
) -> Result<(), Error> {
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        base.create().map_err(|e| kafka_error("creating the cluster's admin client", e))?;
    let partitions = config.partitions as i32;
    // Receipts are kept at least as long as the dedup window (and a day at most past it).
    let keep = window.max(Duration::from_secs(60)).as_millis().to_string();
    let new = [
        NewTopic::new(requests, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", "3600000"),
        NewTopic::new(receipts, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact,delete")
            .set("retention.ms", &keep),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(config.takeover_timeout));
    let results =
        admin.create_topics(&new, &opts).await.map_err(|e| kafka_error("creating the cluster's topics", e))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created the cluster topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Config(format!("creating the cluster topic {t:?}: {code:?}")));
            }
        }
    }
    let consumer: BaseConsumer = base.create().map_err(|e| kafka_error("creating the cluster's metadata client", e))?;
    let (requests, receipts, timeout) = (requests.to_owned(), receipts.to_owned(), config.takeover_timeout);
    tokio::task::spawn_blocking(move || {
        for topic in [&requests, &receipts] {
            let deadline = Instant::now() + timeout;
            loop {
                let md = consumer
                    .fetch_metadata(Some(topic), timeout)
                    .map_err(|e| kafka_error("describing the cluster's topics", e))?;
                let topic_md = md.topics().first().filter(|t| t.error().is_none());
                let found = topic_md.map(|t| t.partitions().len());
                // A topic just created has its partitions before their leaders.
                let led =
                    topic_md.is_some_and(|t| t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0));
                match found {
                    Some(n) if n as i32 == partitions && led => break,
                    Some(n) if n as i32 == partitions && Instant::now() < deadline => std::thread::sleep(POLL),
                    Some(n) if n > 0 => {
                        return Err(Error::Config(format!(
                            "cluster topic {topic:?} has {n} partitions, the configuration says {partitions}: \
                             every node must use the topics' count"
                        )));
                    }
                    _ if Instant::now() < deadline => std::thread::sleep(POLL),
                    _ => return Err(Error::Config(format!("cluster topic {topic:?} did not appear"))),
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Config(format!("cluster topics task: {e}")))?
}

/// Reads every answer written from now on and hands this node's to their waiters.
async fn answers_tail(
    s: &ClusterStart<'_>,
    receipts: &str,
    node: &str,
    waiters: Arc<Waiters>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let consumer: BaseConsumer<GatewayContext> = s
        .base
        .clone()
        .set("group.id", format!("kafkasocks.{}.answers", s.config.name))
        .set("client.id", format!("kafkasocks-{}-answers", s.server_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create_with_context(s.context.clone())
        .map_err(|e| kafka_error("creating the cluster's answer reader", e))?;
    let (topic, partitions, timeout) = (receipts.to_owned(), s.config.partitions as i32, s.config.takeover_timeout);
    // From the end as it is now: every request this node writes later is answered later.
    let consumer = tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = settled_watermarks(&consumer, &topic, p, timeout)
                .map_err(|e| kafka_error("reading the receipts' end", e))?;
            tpl.add_partition_offset(&topic, p, Offset::Offset(high))
                .map_err(|e| kafka_error("assigning the receipts", e))?;
        }
        consumer.assign(&tpl).map_err(|e| kafka_error("assigning the receipts", e))?;
        Ok::<_, Error>(consumer)
    })
    .await
    .map_err(|e| Error::Config(format!("answer reader task: {e}")))??;
    let node = node.to_owned();
    let publish_timeout = s.publish_timeout;
    std::thread::Builder::new()
        .name("kafkasocks-answers".into())
        .spawn(move || {
            let mut warned = Instant::now() - publish_timeout;
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(POLL) {
                    Some(Ok(m)) => {
                        let (Some(key), Some(value)) = (m.key(), m.payload()) else { continue };
                        if key.first() != Some(&ANSWER_PREFIX) {
                            continue;
                        }
                        let Ok(a) = AnswerRecord::decode(value) else { continue };
                        if a.node != node {
                            continue;
                        }
                        let Some(tx) = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&a.id) else {
                            continue;
                        };
                        let _ = tx.send(if a.code == 0 {
                            Ok(Receipt {
                                topic: a.topic,
                                partition: a.partition,
                                offset: a.offset,
                                timestamp_ms: a.timestamp_ms,
                                duplicate: a.duplicate,
                            })
                        } else {
                            Err(Status::new(Code::from_grpc(a.code), a.message))
                        });
                    }
                    Some(Err(e)) if warned.elapsed() >= publish_timeout => {
                        warned = Instant::now();
                        tracing::warn!(error = %e, "reading the cluster's answers");
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| Error::Config(format!("starting the answer reader: {e}")))
}

/// What every owner of this node needs.
#[derive(Clone)]
struct Owners {
    base: ClientConfig,
    context: GatewayContext,
    cluster: String,
    requests: String,
    receipts: String,
    window: Duration,
    capacity: usize,
    takeover: Duration,
    runtime: tokio::runtime::Handle,
}

/// One request as the owner's consumer read it.
struct Incoming {
    offset: i64,
    /// When it was written (the record's timestamp, Unix ms).
    written_ms: i64,
    request: RequestRecord,
}

impl Incoming {
    fn request_age_ms(&self) -> i64 {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        now - self.written_ms
    }
}

impl Owners {
    /// Joins the owners' group and runs the partitions it is given, each in its own task,
    /// until `stop`; then leaves the group (another node takes over at once).
    fn spawn(self, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>, Error> {
        let consumer: BaseConsumer<GatewayContext> = self
            .base
            .clone()
            .set("group.id", format!("kafkasocks.{}.owners", self.cluster))
            .set("client.id", format!("kafkasocks-{}-owner", self.cluster))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A node that dies is replaced after this long: the bound on how long its
            // partitions wait (and, when it died inside a transaction, how long the
            // records it was writing stay invisible to read-committed readers).
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "10")
            .create_with_context(self.context.clone())
            .map_err(|e| kafka_error("creating the cluster's owner consumer", e))?;
        consumer.subscribe(&[&self.requests]).map_err(|e| kafka_error("joining the cluster's owners", e))?;
        let consumer = Arc::new(consumer);
        std::thread::Builder::new()
            .name("kafkasocks-owner".into())
            .spawn(move || self.run(&consumer, &stop))
            .map_err(|e| Error::Config(format!("starting the cluster's owner: {e}")))
    }

    fn run(&self, consumer: &Arc<BaseConsumer<GatewayContext>>, stop: &AtomicBool) {
        let mut owned: HashMap<i32, mpsc::Sender<Incoming>> = HashMap::new();
        let mut checked = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let polled = consumer.poll(POLL);
            if checked.elapsed() >= POLL || matches!(&polled, Some(Ok(m)) if !owned.contains_key(&m.partition())) {
                checked = Instant::now();
                self.reconcile(consumer, &mut owned);
            }
            match polled {
                Some(Ok(m)) => {
                    let Some(tx) = owned.get(&m.partition()) else { continue };
                    let Some(request) = m.payload().and_then(|v| RequestRecord::decode(v).ok()) else {
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "an undecodable cluster request, skipped"
                        );
                        continue;
                    };
                    let written_ms = m.timestamp().to_millis().unwrap_or(0);
                    if tx.blocking_send(Incoming { offset: m.offset(), written_ms, request }).is_err() {
                        owned.remove(&m.partition());
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "the cluster's owner consumer"),
                None => {}
            }
        }
        // Dropping the senders ends each owner after its current transaction.
        owned.clear();
        consumer.unsubscribe();
    }

    /// Starts an owner for each newly assigned partition, ends those of revoked ones.
    fn reconcile(
        &self,
        consumer: &Arc<BaseConsumer<GatewayContext>>,
        owned: &mut HashMap<i32, mpsc::Sender<Incoming>>,
    ) {
        let Ok(assignment) = consumer.assignment() else { return };
        let now: HashSet<i32> = assignment.elements().iter().map(|e| e.partition()).collect();
        owned.retain(|p, tx| now.contains(p) && !tx.is_closed());
        for p in now {
            if owned.contains_key(&p) {
                continue;
            }
            let (tx, rx) = mpsc::channel(OWNER_QUEUE);
            owned.insert(p, tx);
            let owner = self.clone();
            let consumer = consumer.clone();
            self.runtime.spawn(async move {
                let mut rx = rx;
                if let Err(e) = owner.own(p, &mut rx, consumer).await {
                    tracing::warn!(partition = p, error = %e, "stopped owning a cluster partition; trying again in 1 s");
                    // The partition is still this node's until `rx` closes: not at once, so
                    // that a lasting failure (a missing ACL) is not retried in a busy loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }

    /// Owns requests partition `p`: fences the previous owner, reads what it decided
    /// back, then runs requests until the partition is taken away or this owner fenced.
    async fn own(
        self,
        p: i32,
        rx: &mut mpsc::Receiver<Incoming>,
        consumer: Arc<BaseConsumer<GatewayContext>>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let producer: FutureProducer<GatewayContext> = self
            .base
            .clone()
            .set("transactional.id", format!("kafkasocks.{}.owner-{p}", self.cluster))
            .set("client.id", format!("kafkasocks-{}-owner-{p}", self.cluster))
            .set("transaction.timeout.ms", "10000")
            .set("linger.ms", "1")
            // A transaction begun just after the last commit may find the coordinator still
            // writing that commit's markers (CONCURRENT_TRANSACTIONS): retried soon.
            .set("retry.backoff.ms", "5")
            .set("retry.backoff.max.ms", "100")
            .create_with_context(self.context.clone())
            .map_err(|e| format!("creating the owner's producer: {e}"))?;
        let producer = Arc::new(producer);
        let p2 = producer.clone();
        let takeover = self.takeover;
        tokio::task::spawn_blocking(move || p2.init_transactions(takeover))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("fencing the previous owner: {e}"))?;
        let this = self.clone();
        let mut state = tokio::task::spawn_blocking(move || this.restore(p)).await.map_err(|e| e.to_string())??;
        tracing::info!(
            partition = p,
            next = state.next,
            keys = state.seen.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "owning a cluster partition"
        );
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(i) => batch.push(i),
                    Err(_) => break,
                }
            }
            batch.retain(|i| i.offset >= state.next);
            if batch.is_empty() {
                continue;
            }
            let mut refused: HashMap<i64, Status> = HashMap::new();
            loop {
                match self.transaction(p, &producer, &batch, &mut state, &refused).await {
                    Ok(()) => break,
                    Err(Failed::Record(offset, status)) => {
                        // A record Kafka refuses (too large, no such topic) aborts the whole
                        // transaction: run the batch again with that one answered as refused.
                        refused.insert(offset, status);
                        self.abort(&producer).await?;
                    }
                    Err(Failed::Retry(why)) => {
                        tracing::warn!(partition = p, error = %why, "a cluster transaction failed; running it again");
                        self.abort(&producer).await?;
                        tokio::time::sleep(POLL).await;
                    }
                    Err(Failed::Fenced(why)) => return Err(format!("another node owns it now: {why}")),
                }
            }
            // A hint of where to start for the next owner; the checkpoint is the truth.
            let mut tpl = TopicPartitionList::new();
            if tpl.add_partition_offset(&self.requests, p, Offset::Offset(state.next)).is_ok() {
                let _ = consumer.commit(&tpl, CommitMode::Async);
            }
        }
        Ok(())
    }

    async fn abort(&self, producer: &Arc<FutureProducer<GatewayContext>>) -> Result<(), String> {
        let p = producer.clone();
        let takeover = self.takeover;
        match tokio::task::spawn_blocking(move || p.abort_transaction(takeover)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("aborting a transaction: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs `batch` in one transaction: new records produced, every request answered, the
    /// checkpoint moved past the batch. `state` changes only when it commits.
    async fn transaction(
        &self,
        p: i32,
        producer: &Arc<FutureProducer<GatewayContext>>,
        batch: &[Incoming],
        state: &mut OwnerState,
        refused: &HashMap<i64, Status>,
    ) -> Result<(), Failed> {
        producer.begin_transaction().map_err(Failed::of)?;
        let now = Instant::now();
        // A producer queue that stays full this long fails the transaction (run again).
        let deadline = tokio::time::Instant::now() + self.takeover;
        let waited_ms = batch.first().map_or(0, |i| i.request_age_ms());
        state.expire(now, self.window);
        // Produce what is new, in log order; a key seen twice in one batch is produced once.
        let mut produced: Vec<(usize, rdkafka::producer::DeliveryFuture)> = Vec::new();
        let mut first_in_batch: HashMap<&Bytes, usize> = HashMap::new();
        let mut answers: Vec<AnswerRecord> = Vec::with_capacity(batch.len());
        let mut source: Vec<Option<usize>> = Vec::with_capacity(batch.len());
        for (i, inc) in batch.iter().enumerate() {
            let r = &inc.request;
            let mut answer =
                AnswerRecord { node: r.node.clone(), id: r.id, topic: r.topic.clone(), ..Default::default() };
            if let Some(status) = refused.get(&inc.offset) {
                answer.code = status.code().grpc();
                answer.message = status.message().to_owned();
                source.push(None);
            } else if let Some(seen) = state.seen.get(&r.dedup).filter(|_| !r.dedup.is_empty()) {
                fill(&mut answer, &seen.0, true);
                source.push(None);
            } else if let Some(&j) = first_in_batch.get(&r.dedup).filter(|_| !r.dedup.is_empty()) {
                source.push(Some(j));
            } else {
                // (A publish without an idempotency key has an empty dedup key: never a
                // duplicate of anything.)
                first_in_batch.insert(&r.dedup, i);
                produced.push((
                    i,
                    send(producer, r, deadline).await.map_err(|e| {
                        if is_record_error(&e) {
                            Failed::Record(inc.offset, record_status(&r.topic, &e))
                        } else {
                            Failed::of(e)
                        }
                    })?,
                ));
                source.push(Some(i));
            }
            answers.push(answer);
        }
        let mut receipts: HashMap<usize, Receipt> = HashMap::new();
        for (i, delivery) in produced {
            match delivery.await {
                Ok(Ok(d)) => {
                    receipts.insert(
                        i,
                        Receipt {
                            topic: batch[i].request.topic.clone(),
                            partition: d.partition,
                            offset: d.offset,
                            timestamp_ms: d.timestamp.to_millis().unwrap_or(0),
                            duplicate: false,
                        },
                    );
                }
                Ok(Err((e, _))) if is_fenced(&e) => return Err(Failed::Fenced(e.to_string())),
                Ok(Err((e, _))) if is_record_error(&e) => {
                    return Err(Failed::Record(batch[i].offset, record_status(&batch[i].request.topic, &e)));
                }
                Ok(Err((e, _))) => return Err(Failed::Retry(e.to_string())),
                Err(_) => return Err(Failed::Retry("the owner's producer went away".into())),
            }
        }
        let produced_at = Instant::now();
        for (i, src) in source.iter().enumerate() {
            if let Some(j) = src {
                let receipt = &receipts[j];
                fill(&mut answers[i], receipt, *j != i);
            }
        }
        let mut acks = Vec::with_capacity(answers.len() + 1);
        for (inc, answer) in batch.iter().zip(&answers) {
            let mut key = Vec::with_capacity(inc.request.dedup.len() + 1);
            key.push(ANSWER_PREFIX);
            key.extend_from_slice(&inc.request.dedup);
            let value = answer.encode_to_vec();
            acks.push(send_raw(producer, (&self.receipts, p), &key, &value, deadline).await.map_err(Failed::of)?);
        }
        let next = batch.last().map_or(state.next, |i| i.offset + 1);
        let checkpoint = CheckpointRecord { next }.encode_to_vec();
        acks.push(
            send_raw(producer, (&self.receipts, p), CHECKPOINT_KEY, &checkpoint, deadline).await.map_err(Failed::of)?,
        );
        // Every answer acknowledged first: rdkafka's commit_transaction flushes, and with
        // anything outstanding its flush waits out a 100 ms poll (the delivery reports
        // are served by the producer's own thread), which was on every transaction.
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Failed::of(e)),
                Err(_) => return Err(Failed::Retry("the owner's producer went away".into())),
            }
        }
        let pr = producer.clone();
        let takeover = self.takeover;
        match tokio::task::spawn_blocking(move || pr.commit_transaction(takeover)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failed::of(e)),
            Err(e) => return Err(Failed::Retry(e.to_string())),
        }
        tracing::trace!(
            partition = p,
            requests = batch.len(),
            queued_ms = waited_ms,
            produced_ms = produced_at.duration_since(now).as_secs_f64() * 1e3,
            committed_ms = now.elapsed().as_secs_f64() * 1e3,
            "cluster transaction"
        );
        for (i, inc) in batch.iter().enumerate() {
            if let Some(r) = receipts.get(&i).filter(|_| !inc.request.dedup.is_empty()) {
                state.insert(inc.request.dedup.clone(), r.clone(), now, self.capacity);
            }
        }
        state.next = next;
        Ok(())
    }

    /// The seen keys (within the dedup window) and the checkpoint of partition `p`, read
    /// committed from the start of its receipts.
    fn restore(&self, p: i32) -> Result<OwnerState, String> {
        let consumer: BaseConsumer<GatewayContext> = self
            .base
            .clone()
            .set("group.id", format!("kafkasocks.{}.restore", self.cluster))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(self.context.clone())
            .map_err(|e| format!("creating the receipts reader: {e}"))?;
        let (low, high) = settled_watermarks(&consumer, &self.receipts, p, self.takeover)
            .map_err(|e| format!("reading the receipts' watermarks: {e}"))?;
        let mut state = OwnerState::default();
        if high <= low {
            return Ok(state);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.receipts, p, Offset::Beginning).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| format!("assigning the receipts: {e}"))?;
        let deadline = Instant::now() + self.takeover;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let window_ms = self.window.as_millis() as i64;
        let now = Instant::now();
        loop {
            if Instant::now() > deadline {
                return Err(format!("reading the receipts back took more than {:?}", self.takeover));
            }
            match consumer.poll(POLL) {
                Some(Ok(m)) => {
                    let (Some(key), Some(value)) = (m.key(), m.payload()) else { continue };
                    if key == CHECKPOINT_KEY {
                        if let Ok(c) = CheckpointRecord::decode(value) {
                            state.next = state.next.max(c.next);
                        }
                    } else if key.first() == Some(&ANSWER_PREFIX)
                        && let Ok(a) = AnswerRecord::decode(value)
                        && a.code == 0
                        && key.len() > 1
                    {
                        // Duplicate answers count too: compaction keeps only a key's last
                        // answer, which names the first record all the same. Its age is that
                        // record's.
                        let produced_ms = if a.timestamp_ms > 0 { a.timestamp_ms } else { now_ms };
                        let age_ms = now_ms - produced_ms;
                        if age_ms < window_ms {
                            let at = now.checked_sub(Duration::from_millis(age_ms.max(0) as u64)).unwrap_or(now);
                            let receipt = Receipt {
                                topic: a.topic,
                                partition: a.partition,
                                offset: a.offset,
                                timestamp_ms: a.timestamp_ms,
                                duplicate: false,
                            };
                            state.insert(Bytes::copy_from_slice(&key[1..]), receipt, at, self.capacity);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(state),
                Some(Err(e)) => return Err(format!("reading the receipts back: {e}")),
                None => {}
            }
        }
    }
}

fn fill(answer: &mut AnswerRecord, receipt: &Receipt, duplicate: bool) {
    answer.partition = receipt.partition;
    answer.offset = receipt.offset;
    answer.timestamp_ms = receipt.timestamp_ms;
    answer.duplicate = duplicate;
}

/// Produces one request's record in the open transaction, waiting while the queue is full
/// (up to `deadline`).
async fn send(
    producer: &FutureProducer<GatewayContext>,
    r: &RequestRecord,
    deadline: tokio::time::Instant,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    let headers = r.headers.iter().map(|h| (h.key.as_str(), h.value.as_ref()));
    let fr = super::future_record(&r.topic, r.key.as_deref(), &r.payload, headers, &r.idempotency_key);
    super::queue(producer, fr, deadline).await
}

/// Produces a record of the receipts partition in the open transaction.
async fn send_raw(
    producer: &FutureProducer<GatewayContext>,
    (topic, partition): (&str, i32),
    key: &[u8],
    value: &[u8],
    deadline: tokio::time::Instant,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    super::queue(producer, FutureRecord::to(topic).partition(partition).key(key).payload(value), deadline).await
}

enum Failed {
    /// Kafka refused this request's record.
    Record(i64, Status),
    /// The transaction failed in a way a new one may not.
    Retry(String),
    /// Another owner took the partition.
    Fenced(String),
}

impl Failed {
    fn of(e: KafkaError) -> Failed {
        if is_fenced(&e) { Failed::Fenced(e.to_string()) } else { Failed::Retry(e.to_string()) }
    }
}

fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::State
        )
    ) || matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

/// A partition's (low, high) watermarks, asked again while the cluster is still settling
/// (a topic just created has its partitions before their leaders), within `timeout`.
fn settled_watermarks(
    consumer: &BaseConsumer<GatewayContext>,
    topic: &str,
    p: i32,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.fetch_watermarks(topic, p, timeout) {
            Err(e) if Instant::now() < deadline && e.rdkafka_error_code().is_some_and(is_transient) => {
                std::thread::sleep(POLL)
            }
            marks => return marks,
        }
    }
}

/// Errors of a cluster that is still settling (leaders being elected, a coordinator
/// loading): worth asking again.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
    )
}

fn is_record_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

fn record_status(topic: &str, e: &KafkaError) -> Status {
    let code = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => Code::NotFound,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Code::PermissionDenied,
        _ => Code::InvalidArgument,
    };
    Status::new(code, format!("producing to {topic:?}: {e}"))
}

/// What an owner knows of its partition.
#[derive(Default)]
struct OwnerState {
    /// The next requests offset to run.
    next: i64,
    /// Dedup keys produced within the window, with their receipts.
    seen: HashMap<Bytes, (Receipt, Instant)>,
    order: VecDeque<(Bytes, Instant)>,
}

impl OwnerState {
    fn insert(&mut self, key: Bytes, receipt: Receipt, at: Instant, capacity: usize) {
        while self.seen.len() >= capacity {
            let Some((old, t)) = self.order.pop_front() else { break };
            if self.seen.get(&old).is_some_and(|(_, at)| *at == t) {
                self.seen.remove(&old);
            }
        }
        self.order.push_back((key.clone(), at));
        self.seen.insert(key, (receipt, at));
    }

    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if self.seen.get(key).is_some_and(|(_, t)| t == at) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(offset: i64) -> Receipt {
        Receipt { topic: "t".into(), partition: 0, offset, timestamp_ms: 0, duplicate: false }
    }

    #[test]
    fn owner_state_is_bounded_in_keys_and_time() {
        let mut s = OwnerState::default();
        let t0 = Instant::now();
        for i in 0..5 {
            s.insert(Bytes::from(vec![i]), receipt(i64::from(i)), t0, 3);
        }
        assert_eq!(s.seen.len(), 3, "capacity");
        assert!(s.seen.contains_key(&Bytes::from(vec![4])) && !s.seen.contains_key(&Bytes::from(vec![0])));
        s.expire(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert!(s.seen.is_empty(), "window");
    }

    #[test]
    fn names_are_checked() {
        assert!(ClusterConfig::new("chat-prod_1").check().is_ok());
        assert!(ClusterConfig::new("").check().is_err());
        assert!(ClusterConfig::new("a.b").check().is_err());
        assert!(ClusterConfig::new("a").partitions(0).check().is_err());
    }
}
