//! Memory: resident memory per idle connection at 10,000 connections, each of which has
//! received some traffic, measured on a server in a child process (so the clients'
//! memory is not counted), for the gateway and for a bare tokio-tungstenite server with
//! the same WebSocket buffer sizes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use kafkasocks::wire::frame::Kind;
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::gateway::{ChildServer, subscribe_method};
use crate::kafka::{create_topic, delete_topics, producer, record_value, unique_topic};
use crate::net::Sources;
use crate::procfs::{pid_cpu_seconds, require_open_files, round, rss_kib};
use crate::protocol::{Conn, Event, client_config, connect_ws, count_records, latest};

/// Records (gateway) or messages (bare) each connection receives before it idles.
const RECEIVED: u64 = 3;
/// The clients' read buffer (their memory is not measured; kept small).
const CLIENT_READ_BUFFER: usize = 8 << 10;
const CONNECT_CONCURRENCY: usize = 64;
/// Time given to the server to settle before the second reading.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the server's CPU time is watched while every connection idles.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

pub(crate) async fn run(quick: bool) -> Result<Value> {
    let n = if quick { 1000 } else { 10_000 };
    require_open_files(n as u64 + 2048)?;
    let topic = unique_topic("memory");
    create_topic(&topic, 1).await?;
    let sources = Sources::new(2, 16);
    eprintln!("memory: gateway child process, {n} connections");
    let gateway = measure_gateway(n, &topic, &sources).await?;
    eprintln!("memory: bare tokio-tungstenite child process, {n} connections");
    let bare = measure_bare(n, &sources).await?;
    delete_topics(&[topic]).await;
    let per = |v: &Value| v["bytes_per_connection"].as_f64().unwrap_or(0.0);
    let gw = per(&gateway);
    eprintln!("memory: gateway {:.0} B/connection, bare {:.0} B/connection", gw, per(&bare));
    Ok(json!({
        "what": "growth of the server process's VmRSS from before the connections were opened to after every \
                 one had received traffic and gone idle, divided by the number of connections; server in a \
                 child process, clients in this one",
        "connections": n,
        "received_per_connection": RECEIVED,
        "websocket_buffers": {
            "read_bytes": kafkasocks::Limits::default().read_buffer_bytes,
            "write_bytes": kafkasocks::Limits::default().write_buffer_bytes,
        },
        "gateway": gateway,
        "bare": bare,
        "ratio_gateway_to_bare": round(gw / per(&bare).max(1.0), 3),
        "target": { "bar": "gateway <= 8 KiB (8192 B) per idle subscribed connection (issue 13)", "met": gw <= 8192.0 },
        "not_counted": "kernel socket memory (about 4-5 KB per socket on loopback) is not in VmRSS",
    }))
}

/// Runs `per_conn` on `n` new connections, `CONNECT_CONCURRENCY` at a time.
async fn connect_all<F, Fut>(n: usize, per_conn: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> =
        futures_util::stream::iter(0..n).map(per_conn).buffer_unordered(CONNECT_CONCURRENCY).collect().await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        bail!("{failed} of {n} connections failed; first: {e:#}");
    }
    Ok(())
}

async fn wait_count(count: &AtomicUsize, n: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            bail!("only {} of {n} connections received their traffic", count.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The server's CPU time while its `n` connections idle for [`IDLE_WINDOW`] (they answer
/// the gateway's Pings): what holding them costs.
async fn idle_cpu(pid: u32, n: usize) -> Value {
    let before = pid_cpu_seconds(pid);
    tokio::time::sleep(IDLE_WINDOW).await;
    let used = pid_cpu_seconds(pid) - before;
    let secs = IDLE_WINDOW.as_secs_f64();
    json!({
        "window_s": secs,
        "cpu_s": round(used, 2),
        "cpu_percent_of_one_core": round(used / secs * 100.0, 1),
        "cpu_us_per_connection_per_s": round(used * 1e6 / secs / n as f64, 3),
    })
}

/// Per-connection growth at each stage, from the reading before any connection.
fn report(n: usize, stages: &[(&str, u64)], setup_s: f64) -> Value {
    let per = |from: u64, to: u64| round((to.saturating_sub(from) * 1024) as f64 / n as f64, 0);
    let before = stages[0].1;
    let after = stages[stages.len() - 1].1;
    let mut by_stage = serde_json::Map::new();
    for w in stages.windows(2) {
        by_stage.insert(w[1].0.to_owned(), json!(per(w[0].1, w[1].1)));
    }
    json!({
        "bytes_per_connection": per(before, after),
        "kib_per_connection": round(per(before, after) / 1024.0, 2),
        "bytes_per_connection_by_stage": by_stage,
        "rss_kib": stages.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "setup_s": round(setup_s, 2),
    })
}

/// Stages the clients go through together.
const HOLD: u8 = 0;
const GO_ON: u8 = 1;
const STOP: u8 = 2;

async fn measure_gateway(n: usize, topic: &str, sources: &Arc<Sources>) -> Result<Value> {
    let server = ChildServer::spawn(&["serve-gateway", topic, &(n + 100).to_string()]).await?;
    let pid = server.pid()?;
    let method = subscribe_method("Memory");
    let producer = producer()?;
    let produce = |i: u64| {
        let producer = producer.clone();
        let topic = topic.to_owned();
        async move {
            let value = record_value(i);
            let r: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic).payload(&value);
            producer.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
        }
    };
    // Warm-up: one subscription makes the topic's reader and touches every code path.
    {
        let mut c = Conn::open(sources, server.addr, client_config(CLIENT_READ_BUFFER)).await?;
        c.subscribe(1, &method, latest(), 0).await?;
        wait_subscribed(&mut c).await?;
        produce(0).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), c.recv()).await?? {
                Event::Data(_) => break,
                Event::Closed => bail!("warm-up connection closed"),
                _ => {}
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stages = vec![("before", rss_kib(pid)?)];

    let started = Instant::now();
    let (stage_tx, stage_rx) = watch::channel(HOLD);
    let subscribed = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    connect_all(n, |_| {
        let (subscribed, received, mut stage, method) =
            (subscribed.clone(), received.clone(), stage_rx.clone(), method.clone());
        async move {
            let mut c = Conn::open(sources, server.addr, client_config(CLIENT_READ_BUFFER)).await?;
            tokio::spawn(async move {
                if stage.wait_for(|s| *s >= GO_ON).await.is_err() || c.subscribe(1, &method, latest(), 0).await.is_err()
                {
                    return;
                }
                let mut got = 0;
                loop {
                    tokio::select! {
                        _ = stage.wait_for(|s| *s >= STOP) => return,
                        e = c.recv() => match e {
                            Ok(Event::Frame(Kind::Subscribed(_))) => {
                                subscribed.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Event::Data(b)) => {
                                let before = got;
                                got += count_records(&b).map_or(0, |x| x.0);
                                if before < RECEIVED && got >= RECEIVED {
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(Event::Frame(_)) => {}
                            Ok(Event::Closed) | Err(_) => return,
                        }
                    }
                }
            });
            Ok(())
        }
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    stages.push(("open_after_hello", rss_kib(pid)?));
    let _ = stage_tx.send(GO_ON);
    wait_count(&subscribed, n, Duration::from_secs(60)).await?;
    tokio::time::sleep(SETTLE).await;
    stages.push(("subscribed", rss_kib(pid)?));
    for i in 1..=RECEIVED {
        produce(i).await?;
    }
    wait_count(&received, n, Duration::from_secs(60)).await?;
    let setup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    stages.push(("received_records_then_idle", rss_kib(pid)?));
    let idle = idle_cpu(pid, n).await;
    let _ = stage_tx.send(STOP);
    server.stop().await;
    let mut out = report(n, &stages, setup_s);
    out["idle_cpu"] = idle;
    Ok(out)
}

async fn wait_subscribed(c: &mut Conn) -> Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await.context("no Subscribed in 30 s")?? {
            Event::Frame(Kind::Subscribed(_)) => return Ok(()),
            Event::Frame(Kind::Error(e)) => bail!("subscribe failed: {e:?}"),
            Event::Closed => bail!("closed while subscribing"),
            _ => {}
        }
    }
}

async fn measure_bare(n: usize, sources: &Arc<Sources>) -> Result<Value> {
    let server = ChildServer::spawn(&["serve-bare", &RECEIVED.to_string()]).await?;
    let pid = server.pid()?;
    // Warm-up, as for the gateway.
    {
        let mut ws = connect_ws(sources, server.addr, None, client_config(CLIENT_READ_BUFFER)).await?;
        ws.send(Message::Binary(record_value(0).into())).await?;
        let mut got = 0;
        while got < RECEIVED {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => got += 1,
                Some(Ok(_)) => {}
                _ => bail!("warm-up connection closed"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stages = vec![("before", rss_kib(pid)?)];

    let started = Instant::now();
    let (stage_tx, stage_rx) = watch::channel(HOLD);
    let received = Arc::new(AtomicUsize::new(0));
    connect_all(n, |_| {
        let (received, mut stage) = (received.clone(), stage_rx.clone());
        async move {
            let mut ws = connect_ws(sources, server.addr, None, client_config(CLIENT_READ_BUFFER)).await?;
            tokio::spawn(async move {
                if stage.wait_for(|s| *s >= GO_ON).await.is_err()
                    || ws.send(Message::Binary(record_value(0).into())).await.is_err()
                {
                    return;
                }
                let mut got = 0;
                loop {
                    tokio::select! {
                        _ = stage.wait_for(|s| *s >= STOP) => return,
                        m = ws.next() => match m {
                            Some(Ok(Message::Binary(_))) => {
                                got += 1;
                                if got == RECEIVED {
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                }
            });
            Ok(())
        }
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    stages.push(("open_after_handshake", rss_kib(pid)?));
    let _ = stage_tx.send(GO_ON);
    wait_count(&received, n, Duration::from_secs(60)).await?;
    let setup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    stages.push(("sent_one_received_three_then_idle", rss_kib(pid)?));
    let idle = idle_cpu(pid, n).await;
    let _ = stage_tx.send(STOP);
    server.stop().await;
    let mut out = report(n, &stages, setup_s);
    out["idle_cpu"] = idle;
    Ok(out)
}
