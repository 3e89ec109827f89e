//! Fan-out: 100-byte records already in Kafka, delivered to 1, 100 and 1,000 WebSocket
//! clients, against two bare tokio-tungstenite broadcasts to the same number of clients:
//! one 100-byte message per record (`bare`), and the physical ceiling (`ceiling`): the
//! same records pre-encoded as the gateway's Data frames of the gateway's size, so the
//! server does nothing but write bytes the gateway would write.
//!
//! Two gateway variants, both with every record in Kafka before the clients subscribe
//! from `earliest`:
//! * `gateway_ring`: the gateway's live reader saw the records arrive, so they are in its
//!   replay ring (in memory); subscribers are served from it.
//! * `gateway_cold`: the gateway started after the records were written (as after a
//!   restart): subscribers are caught up from Kafka by the partition's shared history
//!   readers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use kafkasocks::Limits;
use kafkasocks::wire::{self, frame::Kind};
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
    /// The window of runs with 1,000 clients or more: long enough for every client to
    /// get every record, so that "all complete" is part of the result.
    pub(crate) large_window: Duration,
    /// Repetitions of the runs with at most 100 clients.
    pub(crate) reps: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                records: 20_000,
                clients: vec![1, 10, 100],
                window: Duration::from_secs(2),
                large_window: Duration::from_secs(10),
                reps: 1,
            }
        } else {
            Sizes {
                records: 200_000,
                clients: vec![1, 100, 1000],
                window: Duration::from_secs(4),
                large_window: Duration::from_secs(60),
                reps: 3,
            }
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
    let sources = Sources::new(1, 8);
    eprintln!("fanout: producing {r} records to {ring} while the gateway reads them into its replay ring");
    let primer = open_hubs(&gw, &sources, &["Cold", "Ring"]).await?;
    fill_ring(primer, &ring, r).await?;

    let messages: Arc<Vec<Bytes>> = Arc::new((0..r).map(|n| Bytes::from(record_value(n))).collect());
    let frames: Arc<Vec<Bytes>> = Arc::new(data_frames(r));
    let mut runs = Vec::new();
    for &n in &sizes.clients {
        // Short runs are repeated, alternating baselines and gateway, and the median kept.
        let reps = if n <= 100 { sizes.reps } else { 1 };
        let window = if n >= 1000 { sizes.large_window } else { sizes.window };
        let (mut bare, mut ceiling, mut ring_runs) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 1..=reps {
            eprintln!("fanout: {n} clients: bare broadcast ({rep}/{reps})");
            bare.push(run_bare(n, &messages, r, window, &sources).await?);
            eprintln!("fanout: {n} clients: ceiling, pre-encoded Data frames ({rep}/{reps})");
            ceiling.push(run_bare(n, &frames, r, window, &sources).await?);
            eprintln!("fanout: {n} clients: gateway, replay ring ({rep}/{reps})");
            ring_runs.push(run_gateway(&gw, "Ring", n, r, window, &sources).await?);
        }
        let (bare, ceiling, ring_run) = (median(bare), median(ceiling), median(ring_runs));
        eprintln!("fanout: {n} clients: gateway, history readers (records only in Kafka)");
        let cold_run = run_gateway(&gw, "Cold", n, r, window, &sources).await?;
        let rate = |v: &Value| v["records_per_s"].as_f64().unwrap_or(0.0);
        let ratio = |v: &Value, to: &Value| round(rate(v) / rate(to).max(1.0), 3);
        eprintln!(
            "fanout: {n} clients: bare {:.0}/s, ceiling {:.0}/s; gateway ring {:.0}/s ({} of bare, {} of ceiling), \
             cold {:.0}/s ({} of bare, {} of ceiling)",
            rate(&bare),
            rate(&ceiling),
            rate(&ring_run),
            ratio(&ring_run, &bare),
            ratio(&ring_run, &ceiling),
            rate(&cold_run),
            ratio(&cold_run, &bare),
            ratio(&cold_run, &ceiling),
        );
        runs.push(json!({
            "clients": n,
            "window_s": window.as_secs_f64(),
            "ratio_ring_to_bare": ratio(&ring_run, &bare),
            "ratio_ring_to_ceiling": ratio(&ring_run, &ceiling),
            "ratio_cold_to_bare": ratio(&cold_run, &bare),
            "ratio_cold_to_ceiling": ratio(&cold_run, &ceiling),
            "bare": bare,
            "ceiling": ceiling,
            "gateway_ring": ring_run,
            "gateway_cold": cold_run,
        }));
    }
    gw.stop().await;

    // The catch-up baseline: one consumer configured as the gateway's history readers,
    // alone, reading the same topic.
    eprintln!("fanout: one consumer with the history readers' settings, alone");
    let (read, secs) = read_like_catch_up(&cold, r, sizes.window).await?;
    let alone = read as f64 / secs;
    delete_topics(&[cold, ring]).await;

    let at = |n: usize| runs.iter().find(|v| v["clients"] == n);
    let ratio_at = |n: usize, key: &str| at(n).and_then(|v| v[key].as_f64());
    let complete_at = |n: usize, key: &str| {
        at(n).map(|v| v[key]["completed_clients"].as_u64() == v[key]["clients"].as_u64()).unwrap_or(false)
    };
    let single_cold = at(1).and_then(|v| v["gateway_cold"]["records_per_s"].as_f64());
    let target = |x: Option<f64>, bar: f64| x.map(|x| json!({ "ratio": x, "bar": bar, "met": x >= bar }));
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
        "large_window_s": sizes.large_window.as_secs_f64(),
        "ceiling_records_per_frame": round(r as f64 / frames.len() as f64, 1),
        "gateway_limits": {
            "max_credit": CREDIT, "subscribe_credit": CREDIT,
            "replay_records": r + 1024, "replay_bytes": 256 << 20,
            "send_queue_bytes": Limits::default().send_queue_bytes,
            "max_catchup_readers": Limits::default().max_catchup_readers,
            "read_buffer_bytes": Limits::default().read_buffer_bytes,
            "write_buffer_bytes": Limits::default().write_buffer_bytes,
        },
        "targets": {
            "ring_to_ceiling_at_100": target(ratio_at(100, "ratio_ring_to_ceiling"), 0.8),
            "ring_to_ceiling_at_1000": target(ratio_at(1000, "ratio_ring_to_ceiling"), 0.8),
            "single_subscriber_cold_to_consumer_alone": target(single_cold.map(|c| round(c / alone.max(1.0), 3)), 0.8),
            "cold_to_bare_at_1000": target(ratio_at(1000, "ratio_cold_to_bare"), 0.8),
            "cold_at_1000_every_client_complete": complete_at(1000, "gateway_cold"),
            "ring_to_bare_at_100 (round one)": target(ratio_at(100, "ratio_ring_to_bare"), 0.5),
            "cold_to_bare_at_100 (round one)": target(ratio_at(100, "ratio_cold_to_bare"), 0.5),
        },
        "runs": runs,
        "kafka_consumer_alone": {
            "what": "one rdkafka StreamConsumer in this process reading the same topic from offset 0, configured \
                     as the gateway configures its history readers (queued.max.messages.kbytes=2048, \
                     fetch.wait.max.ms=50, fetch.queue.backoff.ms=10, enable.partition.eof=true), touching \
                     nothing of each record: the baseline of one subscriber caught up from Kafka",
            "records": read,
            "seconds": round(secs, 3),
            "records_per_s": round(alone, 0),
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

/// A bare broadcast of `messages` to `n` clients: one record per message, or (when the
/// messages are fewer than `target`) Data frames whose records the clients count.
async fn run_bare(
    n: usize,
    messages: &Arc<Vec<Bytes>>,
    target: u64,
    window: Duration,
    sources: &Arc<Sources>,
) -> Result<Value> {
    let server = BroadcastServer::start().await?;
    let framed = (messages.len() as u64) < target;
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
                        Some(Ok(Message::Binary(b))) => {
                            run.first.get_or_insert_with(Instant::now);
                            run.records += if framed { count_records(&b).map_or(0, |(k, _)| k) } else { 1 };
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

/// The ceiling's messages: records 0..`records` as the gateway sends them, Data frames
/// of up to the gateway's 256 KiB (its writer's batch), encoded once.
fn data_frames(records: u64) -> Vec<Bytes> {
    use prost::Message as _;
    const FRAME_BYTES: usize = 256 << 10;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut frames = Vec::new();
    let mut batch: Vec<wire::Record> = Vec::new();
    let mut bytes = 0;
    let flush = |batch: &mut Vec<wire::Record>, frames: &mut Vec<Bytes>| {
        let data = wire::Data { subscription_id: 1, records: std::mem::take(batch) };
        frames.push(Bytes::from(wire::Frame { kind: Some(Kind::Data(data)) }.encode_to_vec()));
    };
    for n in 0..records {
        let rec = wire::Record {
            partition: 0,
            offset: n as i64,
            timestamp_ms: now,
            payload: record_value(n).into(),
            ..Default::default()
        };
        let len = rec.encoded_len() + 4;
        if bytes + len > FRAME_BYTES && !batch.is_empty() {
            flush(&mut batch, &mut frames);
            bytes = 0;
        }
        bytes += len;
        batch.push(rec);
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut frames);
    }
    frames
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
