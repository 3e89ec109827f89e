//! The real broker: topics, records, producers.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kafkasocks::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Size of every record value and bare message the benchmark sends.
pub(crate) const RECORD_BYTES: usize = 100;

/// `$KAFKA_BOOTSTRAP`, default what `scripts/services up` starts.
pub(crate) fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A topic name no other run uses.
pub(crate) fn unique_topic(what: &str) -> String {
    format!("bench-{what}-{:012x}", rand::random::<u64>() >> 16)
}

fn admin() -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?)
}

/// Creates a topic with one replica and waits until every partition has a leader.
pub(crate) async fn create_topic(name: &str, partitions: i32) -> Result<()> {
    let results = admin()?
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("creating topic {name} (is Kafka up? `scripts/services up`)"))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?;
        for _ in 0..100 {
            if let Ok(md) = c.fetch_metadata(Some(&name), Duration::from_secs(2))
                && let Some(t) = md.topics().first()
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("topic {name} not ready")
    })
    .await?
}

/// Deletes topics the run made (best effort).
pub(crate) async fn delete_topics(names: &[String]) {
    let Ok(admin) = admin() else { return };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
}

/// A producer with the gateway's own settings: idempotent, `acks=all`, `linger.ms=1`.
pub(crate) fn producer() -> Result<FutureProducer> {
    producer_on(&KafkaConfig::new(bootstrap()))
}

/// An idempotent producer with the gateway's producer settings, on `kafka`'s listener and
/// security.
pub(crate) fn producer_on(kafka: &KafkaConfig) -> Result<FutureProducer> {
    let mut c = ClientConfig::new();
    for (k, v) in kafka.to_librdkafka()? {
        c.set(k, v);
    }
    Ok(c.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "1").create()?)
}

/// A 100-byte record value: a protobuf message whose field 2 carries `n` and padding.
/// (It never starts with 0x00, which would read as Schema Registry framing.)
pub(crate) fn record_value(n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_BYTES);
    v.push(2 << 3 | 2);
    v.push((RECORD_BYTES - 2) as u8);
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(RECORD_BYTES, b'x');
    v
}

/// Produces `count` 100-byte records to partition 0 of `topic` as fast as the producer
/// takes them (bounded in flight), and waits for every acknowledgement.
pub(crate) async fn produce_bulk(topic: &str, count: u64) -> Result<()> {
    produce_bulk_keyed(topic, count, |_| Vec::new()).await
}

/// As [`produce_bulk`], record `n` with key `key(n)` (none when empty).
pub(crate) async fn produce_bulk_keyed(topic: &str, count: u64, key: impl Fn(u64) -> Vec<u8>) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .create()?;
    let mut inflight = FuturesUnordered::new();
    for n in 0..count {
        let producer = producer.clone();
        let topic = topic.to_owned();
        let key = key(n);
        inflight.push(async move {
            let value = record_value(n);
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).partition(0).payload(&value);
            let record = if key.is_empty() { record } else { record.key(&key[..]) };
            producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
        });
        if inflight.len() >= 20_000
            && let Some(r) = inflight.next().await
        {
            r?;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

/// Reads partition 0 of `topic` from offset 0 with one consumer configured like the
/// gateway's history readers (runtime/src/kafka/mod.rs: `consumer_config` + `reader`),
/// until `count` records or `limit`: (records read, seconds).
pub(crate) async fn read_like_catch_up(topic: &str, count: u64, limit: Duration) -> Result<(u64, f64)> {
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::error::KafkaError;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "kafkasocks-bench-diagnostic")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "50")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.max.messages.kbytes", "2048");
    let consumer: StreamConsumer = config.create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(0))?;
    consumer.assign(&tpl)?;
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    let mut read = 0;
    while read < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(_)) => read += 1,
            Ok(Err(KafkaError::PartitionEOF(_))) => {}
            Ok(Err(e)) => bail!("diagnostic consumer: {e}"),
        }
    }
    Ok((read, started.elapsed().as_secs_f64()))
}
