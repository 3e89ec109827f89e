//! The first connections to a freshly started gateway: a new gateway (child process) gets
//! 100 clients at once, each connecting, saying Hello and subscribing at `latest`, then
//! another 100, and another; per batch, the time from the batch's start to each client's
//! `Subscribed`. The first batch pays for whatever the gateway does once (the topic's
//! metadata, its live reader, Kafka connections); the later ones should not wait longer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::StreamExt;
use kafkasocks::wire::frame::Kind;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::gateway::{ChildServer, subscribe_method};
use crate::kafka::{create_topic, delete_topics, unique_topic};
use crate::net::Sources;
use crate::procfs::round;
use crate::protocol::{Conn, Event, client_config, latest};
use crate::stats::summary_ms;

const BATCH: usize = 100;
const BATCHES: usize = 3;

pub(crate) async fn run(_quick: bool) -> Result<Value> {
    let topic = unique_topic("fresh");
    create_topic(&topic, 1).await?;
    let result = measure(&topic).await;
    delete_topics(&[topic]).await;
    result
}

async fn measure(topic: &str) -> Result<Value> {
    let sources = Sources::new(4, 16);
    let started = Instant::now();
    let server = ChildServer::spawn(&["serve-gateway", topic, "1000"]).await?;
    let listening_ms = round(started.elapsed().as_secs_f64() * 1000.0, 1);
    let method = subscribe_method("Memory");
    let mut batches = Vec::new();
    let mut held = Vec::new();
    for b in 1..=BATCHES {
        let t0 = Instant::now();
        let opened: Vec<Result<(Conn, Duration, Duration)>> = futures_util::stream::iter(0..BATCH)
            .map(|_| {
                let (sources, method) = (sources.clone(), method.clone());
                let addr = server.addr;
                async move { open(&sources, addr, &method, t0).await }
            })
            .buffer_unordered(BATCH)
            .collect()
            .await;
        let mut welcomed = Vec::new();
        let mut subscribed = Vec::new();
        for r in opened {
            let (c, w, s) = r?;
            welcomed.push(w);
            subscribed.push(s);
            held.push(c);
        }
        let batch_ms = round(t0.elapsed().as_secs_f64() * 1000.0, 1);
        eprintln!("fresh: batch {b}: {BATCH} clients subscribed within {batch_ms} ms");
        batches.push(json!({
            "batch": b,
            "all_subscribed_ms": batch_ms,
            "welcome_ms": summary_ms(&welcomed),
            "subscribed_ms": summary_ms(&subscribed),
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(held);
    server.stop().await;
    let all = |i: usize| batches[i]["all_subscribed_ms"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "what": "a freshly started gateway (child process, default limits) gets 100 clients at once that \
                 connect, say Hello and subscribe at latest to one topic; then 100 more, twice; per batch, \
                 from its start to each Welcome and Subscribed",
        "gateway_listening_after_ms": listening_ms,
        "batches": batches,
        "ratio_first_to_last_batch": round(all(0) / all(BATCHES - 1).max(0.001), 2),
    }))
}

/// Connects, says Hello, subscribes: (the connection, time to Welcome, time to Subscribed).
async fn open(
    sources: &Arc<Sources>,
    addr: std::net::SocketAddr,
    method: &str,
    t0: Instant,
) -> Result<(Conn, Duration, Duration)> {
    // Connected and past Hello / Welcome.
    let mut c = Conn::open(sources, addr, client_config(8 << 10)).await?;
    let welcome = t0.elapsed();
    c.subscribe(1, method, latest(), 0).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await?? {
            Event::Frame(Kind::Subscribed(_)) => {
                return Ok((c, welcome, t0.elapsed()));
            }
            Event::Frame(Kind::Error(e)) => bail!("subscribe failed: {e:?}"),
            Event::Closed => bail!("closed before Subscribed"),
            _ => {}
        }
    }
}
