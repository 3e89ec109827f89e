//! Publish: publish-to-receipt latency through the gateway (the Rust client's
//! `Client::publish`) against rdkafka produce-and-await with the gateway's own producer
//! settings, in the same process, interleaved so both see the same conditions.

use std::time::Duration;

use anyhow::{Result, bail};
use kafkasocks::Limits;
use kafkasocks::client::{Client, ClientConfig, ConnectionState};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::gateway::{InProcess, publish_method, streams};
use kafkasocks_tests::Listener;

use crate::kafka::{create_topic, delete_topics, producer, producer_on};
use crate::procfs::{CpuWindow, round};
use crate::stats::summary_ms;

const KEY: &str = "bench";

/// A 100-byte request message: field 1 the key (the stream's key field), field 2 padding.
fn request() -> Vec<u8> {
    let mut v = vec![1 << 3 | 2, KEY.len() as u8];
    v.extend_from_slice(KEY.as_bytes());
    let pad = crate::kafka::RECORD_BYTES - v.len() - 2;
    v.push(2 << 3 | 2);
    v.push(pad as u8);
    v.resize(crate::kafka::RECORD_BYTES, b'x');
    v
}

/// One way of publishing: through a gateway (its Rust client) or straight to Kafka.
enum Path {
    Gateway(Client),
    Direct(rdkafka::producer::FutureProducer),
}

impl Path {
    async fn publish(&self, method: &str, topic: &str, payload: &[u8]) -> Result<()> {
        match self {
            Path::Gateway(client) => {
                client.publish(method, payload.to_vec()).await.map_err(|s| anyhow::anyhow!("publish: {s}"))?;
            }
            Path::Direct(p) => {
                let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(KEY).payload(payload);
                p.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            }
        }
        Ok(())
    }
}

pub(crate) async fn run(quick: bool) -> Result<Value> {
    let (count, warmup) = if quick { (200, 20) } else { (2000, 100) };
    // A topic the SASL_SSL user may use; the plaintext listener is a super user.
    let topic = Listener::SaslSsl.topic("bench-publish");
    create_topic(&topic, 1).await?;
    // Sequential publishes never come near the default rate limit (1000/s); it is raised
    // anyway so that a fast broker cannot make the bucket part of the measurement.
    let limits = Limits::default().with_max_publishes_per_second(1_000_000);
    let plain_gw = InProcess::start(streams(&[("Publish", &topic)]), limits.clone()).await?;
    let tls_gw =
        InProcess::start_on(Listener::SaslSsl.kafka(), streams(&[("Publish", &topic)]), limits.clone()).await?;
    // A node of a cluster: every publish goes through the owner of its key (a request,
    // a transaction, an answer). The cluster's topics stay for the next run.
    let cluster_gw = InProcess::start_in_cluster("bench", streams(&[("Publish", &topic)]), limits).await?;
    // The clients run on the clients' runtime, as they would in another process.
    let connect = |url: String| {
        let _in_client_runtime = crate::net::client_runtime().enter();
        Client::connect(ClientConfig::new(url))
    };
    let (plain_client, tls_client, cluster_client) =
        (connect(plain_gw.url()), connect(tls_gw.url()), connect(cluster_gw.url()));
    for c in [&plain_client, &tls_client, &cluster_client] {
        if c.wait_open().await != ConnectionState::Open {
            bail!("a client did not connect");
        }
    }
    // Gateway and rdkafka on plaintext, then on SASL_SSL (SCRAM-SHA-512, TLS 1.3).
    let paths = [
        Path::Gateway(plain_client.clone()),
        Path::Direct(producer()?),
        Path::Gateway(tls_client.clone()),
        Path::Direct(producer_on(&Listener::SaslSsl.kafka())?),
        Path::Gateway(cluster_client.clone()),
    ];
    let method = publish_method("Publish");
    let payload = request();

    let mut took: Vec<Vec<Duration>> = vec![Vec::with_capacity(count); paths.len()];
    eprintln!("publish: {warmup} warm-up + {count} sequential publishes each of 5 ways, interleaved");
    let cpu = CpuWindow::start();
    for i in 0..warmup + count {
        // Rotate who goes first, so that no path always follows the same one.
        for k in 0..paths.len() {
            let which = (i + k) % paths.len();
            let t = Instant::now();
            paths[which].publish(&method, &topic, &payload).await?;
            if i >= warmup {
                took[which].push(t.elapsed());
            }
        }
    }
    let cpu = cpu.end();
    drop(paths);
    plain_client.close();
    tls_client.close();
    cluster_client.close();
    plain_gw.stop().await;
    tls_gw.stop().await;
    cluster_gw.stop().await;
    delete_topics(&[topic]).await;

    let [gateway, rdkafka, gateway_tls, rdkafka_tls, gateway_cluster] = [0, 1, 2, 3, 4].map(|k| summary_ms(&took[k]));
    let ratio =
        |a: &Value, b: &Value, q: &str| round(a[q].as_f64().unwrap_or(0.0) / b[q].as_f64().unwrap_or(1.0).max(1e-9), 3);
    let p99 = ratio(&gateway, &rdkafka, "p99");
    let p99_tls = ratio(&gateway_tls, &rdkafka_tls, "p99");
    eprintln!(
        "publish: plaintext p50 {} vs {} ms, p99 {} vs {} ms; SASL_SSL p50 {} vs {} ms, p99 {} vs {} ms",
        gateway["p50"],
        rdkafka["p50"],
        gateway["p99"],
        rdkafka["p99"],
        gateway_tls["p50"],
        rdkafka_tls["p50"],
        gateway_tls["p99"],
        rdkafka_tls["p99"]
    );
    eprintln!(
        "publish: cluster node p50 {} ms, p99 {} ms (single node {} / {} ms)",
        gateway_cluster["p50"], gateway_cluster["p99"], gateway["p50"], gateway["p99"]
    );
    Ok(json!({
        "what": "publish-to-receipt latency of sequential publishes: kafkasocks::client::Client::publish through an \
                 in-process gateway vs rdkafka FutureProducer::send awaited, both enable.idempotence=true, \
                 acks=all, linger.ms=1, same broker, on its plaintext listener and on its SASL_SSL listener \
                 (SCRAM-SHA-512 over TLS), and a cluster node, the five interleaved one by one",
        "record_bytes": crate::kafka::RECORD_BYTES,
        "warmup": warmup,
        "gateway_ms": gateway,
        "rdkafka_ms": rdkafka,
        "ratio_p50": ratio(&gateway, &rdkafka, "p50"),
        "ratio_p99": p99,
        "target_p99": { "bar": "gateway p99 <= 1.5 x rdkafka p99", "met": p99 <= 1.5 },
        "sasl_ssl": {
            "gateway_ms": gateway_tls,
            "rdkafka_ms": rdkafka_tls,
            "ratio_p50": ratio(&gateway_tls, &rdkafka_tls, "p50"),
            "ratio_p99": p99_tls,
            "tls_cost_gateway_p50": ratio(&gateway_tls, &gateway, "p50"),
            "tls_cost_gateway_p99": ratio(&gateway_tls, &gateway, "p99"),
            "tls_cost_rdkafka_p50": ratio(&rdkafka_tls, &rdkafka, "p50"),
            "tls_cost_rdkafka_p99": ratio(&rdkafka_tls, &rdkafka, "p99"),
        },
        "cluster": {
            "what": "the same publishes through a node of a one-node cluster (GatewayConfig::cluster): request, \
                     owner transaction, answer; against the single-node gateway path",
            "gateway_ms": gateway_cluster,
            "ratio_p50_to_single_node": ratio(&gateway_cluster, &gateway, "p50"),
            "ratio_p99_to_single_node": ratio(&gateway_cluster, &gateway, "p99"),
        },
        "cpu": cpu,
    }))
}
