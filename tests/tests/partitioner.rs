//! Keyed publishes land on the partition Kafka's own Java producer picks for the same key
//! (its default partitioner, murmur2), so that a key produced both by a Java service and
//! through KafkaSocks keeps one partition and its order. librdkafka's own default
//! (consistent_random, CRC32) agrees only by chance, about one key in seven here.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig};
use kafkasocks::{GatewayConfig, KafkaConfig, Partitioner};
use kafkasocks_tests::*;

const KEYS: usize = 1000;
const PARTITIONS: i32 = 7;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| match i % 4 {
            0 => format!("room-{i}"),
            1 => format!("ключ-{i}"),
            2 => format!("{}", i * 7919),
            _ => format!("user:{i}:{}", "x".repeat(i % 40)),
        })
        .collect()
}

/// Kafka's Java producer (from the broker's own jars) produces each key; key -> partition.
fn java_partitions(topic: &str, keys: &[String]) -> anyhow::Result<HashMap<String, i32>> {
    let libs = std::env::var("KAFKA_LIBS").unwrap_or_else(|_| {
        let cache = std::env::var("KAFKASOCKS_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/kafkasocks", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/kafka-4.3.1/libs")
    });
    let program = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/KeyPartitions.java");
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg(program)
        .arg(bootstrap())
        .arg(topic)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    child.stdin.take().unwrap().write_all(keys.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the Java producer failed: {:?}", out.status);
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, p)| (k.to_owned(), p.parse().unwrap()))
        .collect())
}

/// The gateway (with `partitioner`) publishes each key; how many land where Java's did.
async fn agreeing(partitioner: Partitioner, topic: &str, java: &HashMap<String, i32>) -> anyhow::Result<usize> {
    let kafka = KafkaConfig::new(bootstrap()).partitioner(partitioner);
    let gw = TestGateway::start_with(GatewayConfig::new(kafka), streams(topic), None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut agree = 0;
    let keys = keys();
    for chunk in keys.chunks(100) {
        let receipts = futures_util::future::join_all(
            chunk.iter().map(|k| client.publish(PUBLISH, message(k, "from kafkasocks"))),
        )
        .await;
        for (k, r) in chunk.iter().zip(receipts) {
            if java[k] == r?.partition {
                agree += 1;
            }
        }
    }
    client.close();
    gw.shutdown.shutdown();
    Ok(agree)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_publishes_land_where_the_java_producer_puts_the_key() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("partitioner");
    create_topic(&topic, PARTITIONS).await?;
    let java = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || java_partitions(&topic, &keys())
    })
    .await??;
    assert_eq!(java.len(), KEYS, "the Java producer reported every key");
    let spread: std::collections::BTreeSet<i32> = java.values().copied().collect();
    assert_eq!(spread.len(), PARTITIONS as usize, "the keys cover every partition");
    let by_default =
        tokio::time::timeout(Duration::from_secs(120), agreeing(Partitioner::default(), &topic, &java)).await??;
    assert_eq!(by_default, KEYS, "every key on Java's partition");
    let librdkafka =
        tokio::time::timeout(Duration::from_secs(120), agreeing(Partitioner::Librdkafka, &topic, &java)).await??;
    assert!(librdkafka < KEYS / 2, "librdkafka's default partitioner agrees only by chance: {librdkafka} of {KEYS}");
    delete_topic(&topic).await?;
    Ok(())
}
