//! Fan-out: 100-byte records already in Kafka, delivered to 1, 100 and 1,000 WebSocket
//! clients, against a bare tokio-tungstenite broadcast of the same 100-byte payloads to
//! the same number of clients.
//!
//! Three gateway variants, all with every record in Kafka before the clients subscribe
//! from `earliest`:
//! * `gateway_ring`: the gateway's live reader saw the records arrive, so they are in its
//!   replay ring (in memory); subscribers are served from it.
//! * `gateway_cold`: the gateway started after the records were written; each
//!   subscriber is caught up by a Kafka catch-up reader of its own (at most
//!   `max_catchup_readers` at once).
//! * `gateway_cold_backoff_10ms`: the same with `fetch.queue.backoff.ms=10` set on the
//!   gateway's Kafka clients (a `KafkaConfig::option`; librdkafka's default is 1 s), to
//!   show how much of the catch-up path's cost that one setting is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use kafkasocks::Limits;
use kafkasocks::wire::frame::Kind;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::bare::{BroadcastServer, Job};
use crate::gateway::{InProcess, counter_delta, streams, subscribe_method};
use crate::kafka::{create_topic, delete_topics, produce_bulk, read_like_catch_up, record_value, unique_topic};
use crate::net::{Sources, client_runtime};
use crate::procfs::{CpuWindow, round};
use crate::protocol::{Conn, Event, client_config, connect_ws, count_records, earliest, latest};
use crate::stats::summary_ms;

/// Credit each subscriber asks for (and the gateway's raised `max_credit`): enough for
/// the whole run, so no Credit frames are needed.
const CREDIT: u32 = 1 << 30;
/// Clients' WebSocket read buffer (bare and gateway clients alike).
const CLIENT_READ_BUFFER: usize = 64 << 10;
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;

pub(crate) struct Sizes {
    pub(crate) records: u64,
    pub(crate) clients: Vec<usize>,
    pub(crate) window: Duration,
    /// Repetitions of the runs with at most 100 clients.
    pub(crate) reps: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes { records: 20_000, clients: vec![1, 10, 100], window: Duration::from_secs(2), reps: 1 }
        } else {
            Sizes { records: 200_000, clients: vec![1, 100, 1000], window: Duration::from_secs(4), reps: 3 }
        }
    }
}

/// The gateway's limits here: credit raised so that one Subscribe covers the run, and
/// a replay ring big enough to hold every record of the ring variant. Everything else
/// (send queue 1 MiB, 8 KiB / 16 KiB WebSocket buffers, 8 catch-up readers) is default.
pub(crate) fn limits(records: u64) -> Limits {
    Limits::default()
        .with_max_credit(CREDIT)
        .with_default_credit(CREDIT)
        .with_replay_records(records as usize + 1024)
        .with_replay_bytes(256 << 20)
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientRun {
    records: u64,
    /// Gateway only: when Subscribed arrived.
    subscribed: Option<Instant>,
    first: Option<Instant>,
    done: Option<Instant>,
    error: Option<String>,
}

/// `clients` replaces the default client counts (`--clients`).
pub(crate) async fn run(quick: bool, clients: Option<Vec<usize>>) -> Result<Value> {
    let mut sizes = Sizes::new(quick);
    if let Some(c) = clients {
        sizes.clients = c;
    }
    let r = sizes.records;
    let cold = unique_topic("fanout-cold");
    let ring = unique_topic("fanout-ring");
    create_topic(&cold, 1).await?;
    create_topic(&ring, 1).await?;
    eprintln!("fanout: producing {r} records of 100 bytes to {cold}");
    produce_bulk(&cold, r).await?;

    let gw = InProcess::start(streams(&[("Cold", &cold), ("Ring", &ring)]), limits(r)).await?;
    // The same gateway with one librdkafka setting changed on its Kafka clients, to show
    // how much of the catch-up path's cost is librdkafka's fetch-queue backoff.
    let tuned =
        InProcess::start_with(streams(&[("Cold", &cold)]), limits(r), &[("fetch.queue.backoff.ms", "10")]).await?;
    let sources = Sources::new(1, 8);
    eprintln!("fanout: producing {r} records to {ring} while the gateway reads them into its replay ring");
    let primer = open_hubs(&gw, &sources, &["Cold", "Ring"]).await?;
    fill_ring(primer, &ring, r).await?;
    drop(open_hubs(&tuned, &sources, &["Cold"]).await?);

    let messages: Arc<Vec<Bytes>> = Arc::new((0..r).map(|n| Bytes::from(record_value(n))).collect());
    let mut runs = Vec::new();
    for &n in &sizes.clients {
        // Short runs are repeated, alternating bare and gateway, and the median kept.
        let reps = if n <= 100 { sizes.reps } else { 1 };
        let (mut bare, mut ring_runs) = (Vec::new(), Vec::new());
        for rep in 1..=reps {
            eprintln!("fanout: {n} clients: bare broadcast ({rep}/{reps})");
            bare.push(run_bare(n, &messages, sizes.window, &sources).await?);
            eprintln!("fanout: {n} clients: gateway, replay ring ({rep}/{reps})");
            ring_runs.push(run_gateway(&gw, "Ring", n, r, sizes.window, &sources).await?);
        }
        let (bare, ring_run) = (median(bare), median(ring_runs));
        eprintln!("fanout: {n} clients: gateway, catch-up readers");
        let cold_run = run_gateway(&gw, "Cold", n, r, sizes.window, &sources).await?;
        eprintln!("fanout: {n} clients: gateway, catch-up readers, fetch.queue.backoff.ms=10");
        let tuned_run = run_gateway(&tuned, "Cold", n, r, sizes.window, &sources).await?;
        let rate = |v: &Value| v["records_per_s"].as_f64().unwrap_or(0.0);
        let ratio = |v: &Value| round(rate(v) / rate(&bare).max(1.0), 3);
        eprintln!(
            "fanout: {n} clients: bare {:.0}/s; gateway ring {:.0}/s ({}), cold {:.0}/s ({}), cold+backoff {:.0}/s ({})",
            rate(&bare),
            rate(&ring_run),
            ratio(&ring_run),
            rate(&cold_run),
            ratio(&cold_run),
            rate(&tuned_run),
            ratio(&tuned_run),
        );
        runs.push(json!({
            "clients": n,
            "ratio_ring_to_bare": ratio(&ring_run),
            "ratio_cold_to_bare": ratio(&cold_run),
            "ratio_cold_backoff_10ms_to_bare": ratio(&tuned_run),
            "bare": bare,
            "gateway_ring": ring_run,
            "gateway_cold": cold_run,
            "gateway_cold_backoff_10ms": tuned_run,
        }));
    }
    gw.stop().await;
    tuned.stop().await;

    // Why the catch-up path is slow: one consumer with the catch-up readers' settings,
    // alone, and the same with a short fetch-queue backoff.
    eprintln!("fanout: diagnostic: one consumer with the catch-up readers' settings");
    let mut diagnostics = serde_json::Map::new();
    for (name, extra) in [
        ("catch_up_settings", &[][..]),
        ("catch_up_settings_with_fetch_queue_backoff_10ms", &[("fetch.queue.backoff.ms", "10")][..]),
    ] {
        let (read, secs) = read_like_catch_up(&cold, r, extra, sizes.window).await?;
        diagnostics.insert(
            name.into(),
            json!({ "records": read, "seconds": round(secs, 3), "records_per_s": round(read as f64 / secs, 0) }),
        );
    }
    delete_topics(&[cold, ring]).await;

    let at_100 = runs.iter().find(|v| v["clients"] == 100);
    let target = |key: &str| at_100.and_then(|v| v[key].as_f64()).map(|x| json!({ "ratio": x, "met": x >= 0.5 }));
    Ok(json!({
        "what": "records delivered per second to N clients (sum over clients) vs 100-byte messages per second \
                 delivered by a bare tokio-tungstenite broadcast to as many clients in the same process",
        "note": "the gateway batches records into Data frames (up to 256 KiB each) and its clients count the \
                 records inside them; each bare message is one 100-byte record. Records/s vs messages/s is the \
                 fair comparison of useful payload delivered. Clients run on their own tokio runtime (2 workers), \
                 servers on another, in this one process.",
        "records_in_kafka": r,
        "record_bytes": crate::kafka::RECORD_BYTES,
        "window_s": sizes.window.as_secs_f64(),
        "gateway_limits": {
            "max_credit": CREDIT, "subscribe_credit": CREDIT,
            "replay_records": r + 1024, "replay_bytes": 256 << 20,
            "send_queue_bytes": Limits::default().send_queue_bytes,
            "max_catchup_readers": Limits::default().max_catchup_readers,
            "read_buffer_bytes": Limits::default().read_buffer_bytes,
            "write_buffer_bytes": Limits::default().write_buffer_bytes,
        },
        "target_at_100_clients": {
            "bar": "gateway >= 0.5 x bare",
            "gateway_ring": target("ratio_ring_to_bare"),
            "gateway_cold": target("ratio_cold_to_bare"),
            "gateway_cold_backoff_10ms": target("ratio_cold_backoff_10ms_to_bare"),
        },
        "runs": runs,
        "diagnostic_kafka_consumer_alone": {
            "what": "one rdkafka StreamConsumer in this process reading the same topic from offset 0, configured \
                     as the gateway configures its catch-up readers (queued.max.messages.kbytes=2048, \
                     fetch.wait.max.ms=50, enable.partition.eof=true), then the same plus \
                     fetch.queue.backoff.ms=10 (librdkafka's default is 1000 ms). A lone consumer drains its \
                     queue fast and trips the 1 s backoff only now and then, so the first figure varies a lot \
                     from run to run (0.1 to 2 M records/s seen); the in-gateway pair gateway_cold vs \
                     gateway_cold_backoff_10ms is the steadier evidence.",
            "results": diagnostics,
        },
    }))
}

/// Makes the topic hubs of `names` exist (a subscription at `latest` to each), so that
/// no measured run pays for starting a topic's reader.
async fn open_hubs(gw: &InProcess, sources: &Sources, names: &[&str]) -> Result<Conn> {
    let mut c = Conn::open(sources, gw.addr, client_config(CLIENT_READ_BUFFER)).await?;
    for (id, name) in (1..).zip(names) {
        c.subscribe(id, &subscribe_method(name), latest(), CREDIT).await?;
    }
    let mut subscribed = 0;
    while subscribed < names.len() {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await?? {
            Event::Frame(Kind::Subscribed(_)) => subscribed += 1,
            Event::Frame(Kind::Error(e)) => bail!("subscribe failed: {e:?}"),
            Event::Closed => bail!("closed while subscribing"),
            _ => {}
        }
    }
    Ok(c)
}

/// Produces the ring topic's records while `primer` is subscribed to it live, and waits
/// until they have all gone through the gateway's live reader (and so into its ring).
async fn fill_ring(mut primer: Conn, ring: &str, records: u64) -> Result<()> {
    let producing = {
        let ring = ring.to_owned();
        tokio::spawn(async move { produce_bulk(&ring, records).await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = 0;
    while got < records {
        match tokio::time::timeout_at(deadline, primer.recv()).await.context("the ring was not filled in 120 s")?? {
            Event::Data(b) => got += count_records(&b)?.0,
            Event::Frame(Kind::Error(e)) => bail!("primer failed: {e:?}"),
            Event::Closed => bail!("primer closed"),
            Event::Frame(_) => {}
        }
    }
    producing.await??;
    Ok(())
}

/// The run with the median rate, with every run's rate beside it.
fn median(mut runs: Vec<Value>) -> Value {
    let rate = |v: &Value| v["records_per_s"].as_f64().unwrap_or(0.0);
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let all: Vec<f64> = runs.iter().map(rate).collect();
    let mut mid = runs.swap_remove(runs.len() / 2);
    if all.len() > 1 {
        mid["records_per_s_each_repetition"] = json!(all);
    }
    mid
}

/// How the clients of one run start: connect (a few at a time), report, wait for go.
#[derive(Clone)]
struct Starting {
    gate: Arc<Semaphore>,
    connected: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    go: watch::Receiver<Option<Instant>>,
}

impl Starting {
    fn new() -> (Starting, watch::Sender<Option<Instant>>) {
        let (tx, go) = watch::channel(None);
        let s = Starting {
            gate: Arc::new(Semaphore::new(CONNECT_CONCURRENCY)),
            connected: Arc::default(),
            failed: Arc::default(),
            go,
        };
        (s, tx)
    }

    /// Connects with `open`; then waits for go and returns the deadline.
    async fn connect<T>(&mut self, open: impl std::future::Future<Output = Result<T>>) -> Option<(T, Instant)> {
        let opened = {
            let _permit = self.gate.acquire().await.ok()?;
            open.await
        };
        match opened {
            Ok(c) => {
                self.connected.fetch_add(1, Ordering::Relaxed);
                let deadline = self.go.wait_for(Option::is_some).await.ok().and_then(|d| *d)?;
                Some((c, deadline))
            }
            Err(e) => {
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{e:#}"));
                None
            }
        }
    }

    /// Waits until all `n` clients are connected (or one failed).
    async fn all_connected(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).first() {
                bail!("a client failed to connect: {e}");
            }
            if self.connected.load(Ordering::Relaxed) >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("only {} of {n} clients connected", self.connected.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn run_gateway(
    gw: &InProcess,
    stream: &str,
    n: usize,
    target: u64,
    window: Duration,
    sources: &Arc<Sources>,
) -> Result<Value> {
    let method = subscribe_method(stream);
    let (starting, go) = Starting::new();
    let addr = gw.addr;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut starting, method, sources) = (starting.clone(), method.clone(), sources.clone());
            client_runtime().spawn(async move {
                let mut run = ClientRun::default();
                let open = Conn::open(&sources, addr, client_config(CLIENT_READ_BUFFER));
                let Some((mut conn, deadline)) = starting.connect(open).await else { return run };
                if let Err(e) = conn.subscribe(1, &method, earliest(), CREDIT).await {
                    run.error = Some(e.to_string());
                    return run;
                }
                while let Ok(event) = tokio::time::timeout_at(deadline, conn.recv()).await {
                    match event {
                        Ok(Event::Data(b)) => match count_records(&b) {
                            Ok((k, _)) => {
                                run.first.get_or_insert_with(Instant::now);
                                run.records += k;
                                if run.records >= target {
                                    run.done = Some(Instant::now());
                                    break;
                                }
                            }
                            Err(e) => {
                                run.error = Some(e.to_string());
                                break;
                            }
                        },
                        Ok(Event::Frame(Kind::Subscribed(_))) => run.subscribed = Some(Instant::now()),
                        Ok(Event::Frame(Kind::Error(e))) => {
                            run.error = Some(format!("{e:?}"));
                            break;
                        }
                        Ok(Event::Frame(_)) => {}
                        Ok(Event::Closed) => {
                            run.error = Some("closed".into());
                            break;
                        }
                        Err(e) => {
                            run.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                run
            })
        })
        .collect();
    let ready = starting.all_connected(n).await;
    let before = gw.counters().await;
    let cpu = CpuWindow::start();
    let t_go = Instant::now();
    let _ = go.send(Some(t_go + window));
    drop(go);
    ready?;
    let mut runs = Vec::with_capacity(n);
    for t in tasks {
        runs.push(t.await?);
    }
    let mut out = summarize(t_go, window, target, &runs);
    let subscribed: Vec<Duration> = runs.iter().filter_map(|r| r.subscribed.map(|s| s.duration_since(t_go))).collect();
    out["subscribed_ms"] = summary_ms(&subscribed);
    out["cpu"] = cpu.end();
    cpu_per_record(&mut out);
    let after = gw.counters().await;
    let delta = counter_delta(&before, &after);
    let records = delta["records_delivered_total"].as_f64().unwrap_or(0.0);
    let frames = delta["data_frames_total"].as_f64().unwrap_or(0.0);
    out["records_per_data_frame"] = json!(round(records / frames.max(1.0), 1));
    out["gateway_counters"] = delta;
    wait_for_idle(gw).await;
    Ok(out)
}

/// Waits (at most 20 s) until the gateway has closed the previous run's connections.
async fn wait_for_idle(gw: &InProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if gw.counters().await.get("connections_open").copied().unwrap_or(0.0) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_bare(n: usize, messages: &Arc<Vec<Bytes>>, window: Duration, sources: &Arc<Sources>) -> Result<Value> {
    let server = BroadcastServer::start().await?;
    let target = messages.len() as u64;
    let (starting, go) = Starting::new();
    let addr = server.addr;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut starting, sources) = (starting.clone(), sources.clone());
            client_runtime().spawn(async move {
                let mut run = ClientRun::default();
                let open = connect_ws(&sources, addr, None, client_config(CLIENT_READ_BUFFER));
                let Some((mut ws, deadline)) = starting.connect(open).await else { return run };
                while let Ok(m) = tokio::time::timeout_at(deadline, ws.next()).await {
                    match m {
                        Some(Ok(Message::Binary(_))) => {
                            run.first.get_or_insert_with(Instant::now);
                            run.records += 1;
                            if run.records >= target {
                                run.done = Some(Instant::now());
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            run.error = Some(e.to_string());
                            break;
                        }
                        None => {
                            run.error = Some("closed".into());
                            break;
                        }
                    }
                }
                run
            })
        })
        .collect();
    let ready = starting.all_connected(n).await;
    let settle = Instant::now() + Duration::from_secs(10);
    while server.accepted.load(Ordering::Relaxed) < n && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = CpuWindow::start();
    let t_go = Instant::now();
    server.go(Job { messages: messages.clone(), stop_at: t_go + window });
    let _ = go.send(Some(t_go + window));
    drop(go);
    ready?;
    let mut runs = Vec::with_capacity(n);
    for t in tasks {
        runs.push(t.await?);
    }
    let mut out = summarize(t_go, window, target, &runs);
    out["cpu"] = cpu.end();
    cpu_per_record(&mut out);
    Ok(out)
}

/// This process's CPU time (servers and clients together) per record delivered: less
/// sensitive to other load on the machine than records/s.
fn cpu_per_record(out: &mut Value) {
    let cpu = out["cpu"]["own_cpu_s"].as_f64().unwrap_or(0.0);
    let delivered = out["delivered"].as_f64().unwrap_or(0.0).max(1.0);
    out["own_cpu_ns_per_record"] = json!(round(cpu * 1e9 / delivered, 0));
}

fn summarize(t_go: Instant, window: Duration, target: u64, runs: &[ClientRun]) -> Value {
    let delivered: u64 = runs.iter().map(|r| r.records).sum();
    let completed = runs.iter().filter(|r| r.done.is_some()).count();
    let end = if completed == runs.len() {
        runs.iter().filter_map(|r| r.done).max().unwrap_or(t_go + window)
    } else {
        t_go + window
    };
    let elapsed = end.duration_since(t_go).as_secs_f64().max(1e-6);
    let first: Vec<Duration> = runs.iter().filter_map(|r| r.first.map(|f| f.duration_since(t_go))).collect();
    let errors: Vec<&str> = runs.iter().filter_map(|r| r.error.as_deref()).take(3).collect();
    json!({
        "clients": runs.len(),
        "records_per_client": target,
        "delivered": delivered,
        "completed_clients": completed,
        "clients_that_received_records": first.len(),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(delivered as f64 / elapsed, 0),
        "first_record_ms": summary_ms(&first),
        "errors": errors,
    })
}
