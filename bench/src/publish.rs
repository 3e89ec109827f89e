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
use crate::kafka::{create_topic, delete_topics, producer, unique_topic};
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

pub(crate) async fn run(quick: bool) -> Result<Value> {
    let (count, warmup) = if quick { (200, 20) } else { (2000, 100) };
    let topic = unique_topic("publish");
    create_topic(&topic, 1).await?;
    // Sequential publishes never come near the default rate limit (1000/s); it is raised
    // anyway so that a fast broker cannot make the bucket part of the measurement.
    let limits = Limits::default().with_max_publishes_per_second(1_000_000);
    let gw = InProcess::start(streams(&[("Publish", &topic)]), limits).await?;
    // The client runs on the clients' runtime, as it would in another process.
    let client = {
        let _in_client_runtime = crate::net::client_runtime().enter();
        Client::connect(ClientConfig::new(gw.url()))
    };
    if client.wait_open().await != ConnectionState::Open {
        bail!("the client did not connect");
    }
    let direct = producer()?;
    let method = publish_method("Publish");
    let payload = request();

    let mut via_gateway = Vec::with_capacity(count);
    let mut via_rdkafka = Vec::with_capacity(count);
    eprintln!("publish: {warmup} warm-up + {count} sequential publishes each way, interleaved");
    let cpu = CpuWindow::start();
    for i in 0..warmup + count {
        let gateway_first = i % 2 == 0;
        let mut pair = [Duration::ZERO; 2];
        for leg in 0..2 {
            let through_gateway = (leg == 0) == gateway_first;
            let t = Instant::now();
            if through_gateway {
                client.publish(&method, payload.clone()).await.map_err(|s| anyhow::anyhow!("publish: {s}"))?;
                pair[0] = t.elapsed();
            } else {
                let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key(KEY).payload(&payload);
                direct.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
                pair[1] = t.elapsed();
            }
        }
        if i >= warmup {
            via_gateway.push(pair[0]);
            via_rdkafka.push(pair[1]);
        }
    }
    let cpu = cpu.end();
    client.close();
    gw.stop().await;
    delete_topics(&[topic]).await;

    let gateway = summary_ms(&via_gateway);
    let rdkafka = summary_ms(&via_rdkafka);
    let ratio = |q: &str| round(gateway[q].as_f64().unwrap_or(0.0) / rdkafka[q].as_f64().unwrap_or(1.0).max(1e-9), 3);
    let p99 = ratio("p99");
    eprintln!(
        "publish: p50 {} vs {} ms, p99 {} vs {} ms",
        gateway["p50"], rdkafka["p50"], gateway["p99"], rdkafka["p99"]
    );
    Ok(json!({
        "what": "publish-to-receipt latency of sequential publishes: kafkasocks::client::Client::publish through an \
                 in-process gateway vs rdkafka FutureProducer::send awaited, both enable.idempotence=true, \
                 acks=all, linger.ms=1, same broker, interleaved one by one",
        "record_bytes": crate::kafka::RECORD_BYTES,
        "warmup": warmup,
        "gateway_ms": gateway,
        "rdkafka_ms": rdkafka,
        "ratio_p50": ratio("p50"),
        "ratio_p99": p99,
        "target_p99": { "bar": "gateway p99 <= 1.5 x rdkafka p99", "met": p99 <= 1.5 },
        "cpu": cpu,
    }))
}
