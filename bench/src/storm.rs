//! Reconnect storm: 1,000 subscribed clients lose their connections at once (a TCP proxy
//! between them and the server is cut). Each reconnects at once, without backoff, and
//! (gateway) resubscribes with its cursor. Measured: the time from the cut until every
//! client receives a live record again (one produced after the cut), against the same
//! storm of plain WebSocket clients on a bare tokio-tungstenite live feed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::StreamExt;
use kafkasocks::Limits;
use kafkasocks::wire::{self, frame::Kind, start_position::Position};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::bare::LiveServer;
use crate::gateway::{ChildServer, InProcess, counter_delta, streams, subscribe_method};
use crate::kafka::{RECORD_BYTES, create_topic, delete_topics, producer, record_value, unique_topic};
use crate::net::{LARGE_BACKLOG, Proxy, Sources, client_runtime};
use crate::procfs::{CpuWindow, pid_cpu_seconds, require_open_files, round, rss_kib, tcp_counters, tcp_counters_since};
use crate::protocol::{Conn, Event, client_config, connect_ws, decode_records, latest};
use crate::stats::summary_ms;

/// One live record (or bare message) every this often.
const LIVE_INTERVAL: Duration = Duration::from_millis(10);
/// Credit per subscription: far more than the run produces.
const CREDIT: u32 = 100_000;
const CLIENT_READ_BUFFER: usize = 8 << 10;
/// The clients are given this long to connect and see a first record.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// And this long after the cut to be back.
const RESUME_LIMIT: Duration = Duration::from_secs(30);
/// The storm's clients retry a refused connection after 10 ms: the server is up.
const STORM_RETRY: Backoff = Backoff { min: Duration::from_millis(10), max: Duration::from_millis(10) };
/// The deploy's clients, while the server is down, retry after 100-300 ms (random), as a
/// client library with jittered backoff would; both servers' clients alike.
const DEPLOY_RETRY: Backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_millis(300) };
/// How long the deploy's server is down between the old process's exit and the new one's
/// start: the records of that time are what the resumed cursors are behind by.
const DEPLOY_DOWN: Duration = Duration::from_secs(2);

/// How long a client waits before it tries a refused connection again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    async fn wait(self) {
        let spread = self.max.saturating_sub(self.min).as_secs_f64();
        tokio::time::sleep(self.min + Duration::from_secs_f64(spread * rand::random::<f64>())).await;
    }
}

/// What clients share with the harness.
#[derive(Debug)]
struct Board {
    /// Clients that received a first live record.
    ready: AtomicUsize,
    /// Clients that received a live record after the cut.
    resumed: AtomicUsize,
    /// The newest offset (sequence number) before the cut; `i64::MAX` until the cut.
    cut_mark: AtomicI64,
}

impl Board {
    fn new() -> Arc<Board> {
        Arc::new(Board { ready: AtomicUsize::new(0), resumed: AtomicUsize::new(0), cut_mark: AtomicI64::new(i64::MAX) })
    }

    fn is_cut(&self) -> bool {
        self.cut_mark.load(Ordering::Acquire) != i64::MAX
    }
}

/// One client's story after the cut.
#[derive(Debug, Default)]
struct ClientRun {
    /// The WebSocket (and, for the gateway, Hello/Welcome) was open again.
    reconnected: Option<Instant>,
    /// Subscribed (gateway only).
    resubscribed: Option<Instant>,
    /// The first record produced after the cut arrived.
    resumed: Option<Instant>,
    connect_failures: u64,
    /// Records (messages) received after the cut.
    delivered_after_cut: u64,
    duplicates: u64,
    gaps: u64,
    error: Option<String>,
}

pub(crate) async fn run(quick: bool) -> Result<Value> {
    let n = if quick { 100 } else { 1000 };
    require_open_files(4 * n as u64 + 1024)?;
    eprintln!("storm: gateway, {n} clients");
    let gateway = storm_gateway(n).await?;
    eprintln!("storm: bare tokio-tungstenite, {n} clients");
    let bare = storm_bare(n, None).await?;
    eprintln!("storm: bare tokio-tungstenite with an accept queue of {LARGE_BACKLOG}, {n} clients");
    let bare_deep = storm_bare(n, Some(LARGE_BACKLOG)).await?;
    let all = |v: &Value| v["all_resumed_ms"].as_f64();
    let ratio = match (all(&gateway), all(&bare)) {
        (Some(g), Some(b)) => json!(round(g / b.max(1e-3), 2)),
        _ => Value::Null,
    };
    eprintln!("storm: every client back in {:?} ms (gateway) vs {:?} ms (bare)", all(&gateway), all(&bare));
    Ok(json!({
        "what": "clients subscribed through a TCP proxy that is cut at once; each reconnects immediately (no \
                 backoff) and, on the gateway, resubscribes with its cursor; time from the cut until every \
                 client has received a record produced after the cut",
        "clients": n,
        "live_interval_ms": LIVE_INTERVAL.as_millis() as u64,
        "gateway": gateway,
        "bare": bare,
        "bare_accept_queue_4096": bare_deep,
        "ratio_all_resumed_gateway_to_bare": ratio,
        "note": "the gateway and the `bare` server bind with tokio's TcpListener::bind, whose accept queue is \
                 128 connections; 1,000 simultaneous reconnects overflow it and the dropped handshakes are \
                 retried by TCP after 1 s (then 3 s), which dominates these times (see \
                 tcp_counters_during_storm). `bare_accept_queue_4096` is the same bare server with a deeper \
                 queue. The proxy's own queue is 4096.",
    }))
}

/// A deploy: `n` subscribed clients of one gateway process, which stops (SIGTERM's drain:
/// GoAway, then close) and is replaced, DEPLOY_DOWN later, by a fresh process on the same
/// address. Every client reconnects with jittered backoff and resumes from its cursor, by
/// then DEPLOY_DOWN of live records behind. Against the same restart of a bare live feed
/// with plain WebSocket clients.
pub(crate) async fn deploy(quick: bool) -> Result<Value> {
    let n = if quick { 1_000 } else { 10_000 };
    // The clients' sockets (the servers are child processes).
    require_open_files(n as u64 + 1024)?;
    eprintln!("deploy: gateway, {n} clients");
    let gateway = deploy_gateway(n).await?;
    eprintln!("deploy: bare tokio-tungstenite, {n} clients");
    let bare = deploy_bare(n).await?;
    let all = |v: &Value| v["all_resumed_ms"].as_f64();
    let ratio = match (all(&gateway), all(&bare)) {
        (Some(g), Some(b)) => json!(round(g / b.max(1e-3), 2)),
        _ => Value::Null,
    };
    eprintln!("deploy: every client back in {:?} ms (gateway) vs {:?} ms (bare)", all(&gateway), all(&bare));
    Ok(json!({
        "what": "subscribed clients of a server process that stops and is replaced by a fresh one on the same \
                 address after `down_ms`; each client retries with 100-300 ms jittered backoff and, on the \
                 gateway, resumes with its cursor (by then `down_ms` of live records behind). Times are from \
                 the new process's listener being up until each client has received a record produced after \
                 that (on the gateway: after catching up with what it missed)",
        "clients": n,
        "down_ms": DEPLOY_DOWN.as_millis() as u64,
        "live_interval_ms": LIVE_INTERVAL.as_millis() as u64,
        "gateway": gateway,
        "bare": bare,
        "ratio_all_resumed_gateway_to_bare": ratio,
        "target": "<= 2",
    }))
}

async fn deploy_gateway(n: usize) -> Result<Value> {
    let topic = unique_topic("deploy");
    create_topic(&topic, 1).await?;
    let max = (n + 100).to_string();
    let old = ChildServer::spawn(&["serve-gateway", &topic, &max]).await?;
    let addr = old.addr.to_string();
    let (ticker, newest) = live_records(&topic)?;
    let board = Board::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = Sources::new(4, 16);
    let method = subscribe_method("Memory");
    let clients = (0..n)
        .map(|_| {
            client_runtime().spawn(gateway_client(
                old.addr,
                sources.clone(),
                method.clone(),
                board.clone(),
                stop_rx.clone(),
                DEPLOY_RETRY,
            ))
        })
        .collect();
    let cut = || newest.load(Ordering::Acquire);
    // Resumed means caught up: a record produced after the new process was up.
    let at_up = || {
        let live = newest.load(Ordering::Acquire);
        json!({ "records_behind_at_restart": live - board.cut_mark.swap(live, Ordering::AcqRel) })
    };
    let new = ["serve-gateway", &topic, &max, &addr];
    let out = restart(n, &board, old, &new, clients, stop_tx, cut, at_up).await;
    ticker.abort();
    delete_topics(&[topic]).await;
    out
}

/// The bare server's messages after the restart are numbered from here: any message above
/// it is from the new process, whatever the old one had queued.
const NEW_PROCESS_SEQ: u64 = 1 << 40;

async fn deploy_bare(n: usize) -> Result<Value> {
    let (interval, bytes) = (LIVE_INTERVAL.as_millis().to_string(), RECORD_BYTES.to_string());
    let old = ChildServer::spawn(&["serve-live-bare", "127.0.0.1:0", "0", &interval, &bytes]).await?;
    let addr = old.addr.to_string();
    let board = Board::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = Sources::new(5, 16);
    let clients = (0..n)
        .map(|_| {
            client_runtime().spawn(bare_client(old.addr, sources.clone(), board.clone(), stop_rx.clone(), DEPLOY_RETRY))
        })
        .collect();
    let first = NEW_PROCESS_SEQ.to_string();
    let new = ["serve-live-bare", &addr, &first, &interval, &bytes];
    restart(n, &board, old, &new, clients, stop_tx, || NEW_PROCESS_SEQ as i64, || json!({})).await
}

/// The deploy itself, for either server: once every client has its first record, `cut()`
/// becomes the board's cut mark and the `old` process stops; DEPLOY_DOWN later a process
/// started with `new` takes its address, `at_up()` runs (its fields join the report), and
/// the clients are given RESUME_LIMIT to resume. Reported from the new process's start.
#[allow(clippy::too_many_arguments)]
async fn restart(
    n: usize,
    board: &Arc<Board>,
    old: ChildServer,
    new: &[&str],
    clients: Vec<tokio::task::JoinHandle<ClientRun>>,
    stop: watch::Sender<bool>,
    cut: impl FnOnce() -> i64,
    at_up: impl FnOnce() -> Value,
) -> Result<Value> {
    wait_until(&board.ready, n, READY_LIMIT, "received a first live record").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = CpuWindow::start();
    board.cut_mark.store(cut(), Ordering::Release);
    let t_stop = Instant::now();
    old.stop().await;
    let stopped = t_stop.elapsed();
    tokio::time::sleep(DEPLOY_DOWN).await;
    let t_spawn = Instant::now();
    let new = ChildServer::spawn(new).await?;
    let t_up = Instant::now();
    let pid = new.pid()?;
    let (server_cpu, rss_up) = (pid_cpu_seconds(pid), rss_kib(pid)?);
    let extra = at_up();
    let waited = wait_until(&board.resumed, n, RESUME_LIMIT, "resumed").await;
    let server_cpu = pid_cpu_seconds(pid) - server_cpu;
    let cpu = cpu.end();
    let resident = resident_per_connection(pid, rss_up, n).await?;
    let _ = stop.send(true);
    let mut runs = Vec::with_capacity(n);
    for c in clients {
        runs.push(c.await?);
    }
    new.stop().await;
    let mut out = report(t_up, n, &runs);
    let delivered = out["delivered_after_cut"].as_u64().unwrap_or(0);
    out["old_process_stopped_ms"] = json!(round(stopped.as_secs_f64() * 1e3, 1));
    out["new_process_listening_ms"] = json!(round(t_up.duration_since(t_spawn).as_secs_f64() * 1e3, 1));
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out["resident_bytes_per_connection_after"] = resident;
    out["new_process_cpu_s"] = json!(round(server_cpu, 2));
    out["server_ns_per_delivery"] = json!(round(server_cpu * 1e9 / delivered.max(1) as f64, 0));
    out["cpu"] = cpu;
    if let Err(e) = waited {
        out["incomplete"] = json!(e.to_string());
    }
    Ok(out)
}

/// The new process's VmRSS growth since it started listening, per connection, once every
/// client has resumed and the connections have idled for 2 s: what a connection keeps after
/// its catch-up (the `memory` scenario's connections never had more than 3 records).
async fn resident_per_connection(pid: u32, rss_up_kib: u64, n: usize) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = rss_kib(pid)?;
    Ok(json!(round((now.saturating_sub(rss_up_kib) * 1024) as f64 / n as f64, 0)))
}

fn report(t_cut: Instant, cut: usize, runs: &[ClientRun]) -> Value {
    let since = |f: fn(&ClientRun) -> Option<Instant>| -> Vec<Duration> {
        runs.iter().filter_map(|r| f(r).map(|t| t.saturating_duration_since(t_cut))).collect()
    };
    let resumed = since(|r| r.resumed);
    let all = (resumed.len() == runs.len()).then(|| resumed.iter().max().map(|d| round(d.as_secs_f64() * 1e3, 1)));
    json!({
        "connections_cut": cut,
        "clients_resumed": resumed.len(),
        "all_resumed_ms": all.flatten(),
        "reconnected_ms": summary_ms(&since(|r| r.reconnected)),
        "resubscribed_ms": summary_ms(&since(|r| r.resubscribed)),
        "resumed_ms": summary_ms(&resumed),
        "connect_failures": runs.iter().map(|r| r.connect_failures).sum::<u64>(),
        "delivered_after_cut": runs.iter().map(|r| r.delivered_after_cut).sum::<u64>(),
        "duplicates": runs.iter().map(|r| r.duplicates).sum::<u64>(),
        "gaps": runs.iter().map(|r| r.gaps).sum::<u64>(),
        "errors": runs.iter().filter_map(|r| r.error.clone()).take(3).collect::<Vec<_>>(),
    })
}

async fn wait_until(count: &AtomicUsize, n: usize, limit: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            bail!("only {} of {n} clients {what} within {limit:?}", count.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Cuts the proxy when every client is ready, waits for every one to be back, stops them.
async fn storm<F>(
    n: usize,
    board: &Arc<Board>,
    proxy: &Proxy,
    newest: impl Fn() -> i64,
    clients: Vec<tokio::task::JoinHandle<ClientRun>>,
    stop: watch::Sender<bool>,
    after: F,
) -> Result<Value>
where
    F: FnOnce(),
{
    wait_until(&board.ready, n, READY_LIMIT, "received a first live record").await?;
    // Steady state for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = CpuWindow::start();
    let tcp = tcp_counters();
    board.cut_mark.store(newest(), Ordering::Release);
    let t_cut = Instant::now();
    let cut = proxy.cut();
    let waited = wait_until(&board.resumed, n, RESUME_LIMIT, "resumed").await;
    let cpu = cpu.end();
    let tcp = tcp_counters_since(&tcp);
    let _ = stop.send(true);
    after();
    let mut runs = Vec::with_capacity(n);
    for c in clients {
        runs.push(c.await?);
    }
    let mut out = report(t_cut, cut, &runs);
    out["cpu"] = cpu;
    out["tcp_counters_during_storm"] = tcp;
    if let Err(e) = waited {
        out["incomplete"] = json!(e.to_string());
    }
    Ok(out)
}

async fn storm_gateway(n: usize) -> Result<Value> {
    let topic = unique_topic("storm");
    create_topic(&topic, 1).await?;
    let gw = InProcess::start(streams(&[("Storm", &topic)]), Limits::default()).await?;
    let proxy = Proxy::start(gw.addr, Sources::new(3, 8)).await?;
    let (ticker, newest) = live_records(&topic)?;
    let board = Board::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = Sources::new(4, 8);
    let method = subscribe_method("Storm");
    let clients = (0..n)
        .map(|_| {
            client_runtime().spawn(gateway_client(
                proxy.addr,
                sources.clone(),
                method.clone(),
                board.clone(),
                stop_rx.clone(),
                STORM_RETRY,
            ))
        })
        .collect();
    let before = gw.counters().await;
    let mut out =
        storm(n, &board, &proxy, || newest.load(Ordering::Acquire), clients, stop_tx, || ticker.abort()).await?;
    out["gateway_counters"] = counter_delta(&before, &gw.counters().await);
    drop(proxy);
    gw.stop().await;
    delete_topics(&[topic]).await;
    Ok(out)
}

/// A live record to partition 0 of `topic` every LIVE_INTERVAL (until aborted), and the
/// offset of the last one acknowledged.
fn live_records(topic: &str) -> Result<(tokio::task::JoinHandle<()>, Arc<AtomicI64>)> {
    let newest = Arc::new(AtomicI64::new(-1));
    let (producer, topic, last) = (producer()?, topic.to_owned(), newest.clone());
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for i in 0u64.. {
            tick.tick().await;
            let value = record_value(i);
            let r: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic).partition(0).payload(&value);
            if let Ok(d) = producer.send(r, Duration::from_secs(10)).await {
                last.fetch_max(d.offset, Ordering::AcqRel);
            }
        }
    });
    Ok((ticker, newest))
}

async fn gateway_client(
    addr: SocketAddr,
    sources: Arc<Sources>,
    method: String,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
    retry: Backoff,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut topic_id = None::<bytes::Bytes>;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut ready, mut after_cut) = (false, false);
    loop {
        let opened = tokio::select! {
            _ = stop.changed() => return run,
            c = Conn::open(&sources, addr, client_config(CLIENT_READ_BUFFER)) => c,
        };
        let mut conn = match opened {
            Ok(c) => c,
            Err(_) => {
                run.connect_failures += 1;
                retry.wait().await;
                continue;
            }
        };
        if after_cut {
            run.reconnected.get_or_insert_with(Instant::now);
        }
        let start = match &topic_id {
            Some(id) => Position::Cursor(wire::Cursor {
                topic_id: id.clone(),
                positions: next
                    .iter()
                    .map(|(&partition, &next_offset)| wire::PartitionOffset { partition, next_offset })
                    .collect(),
            }),
            None => latest(),
        };
        if conn.subscribe(1, &method, start, CREDIT).await.is_err() {
            continue;
        }
        loop {
            let event = tokio::select! {
                _ = stop.changed() => return run,
                e = conn.recv() => e,
            };
            match event {
                Ok(Event::Frame(Kind::Subscribed(s))) => {
                    if topic_id.is_none() {
                        let cursor = s.cursor.unwrap_or_default();
                        next = cursor.positions.iter().map(|p| (p.partition, p.next_offset)).collect();
                        topic_id = Some(cursor.topic_id);
                    }
                    if after_cut {
                        run.resubscribed.get_or_insert_with(Instant::now);
                    }
                }
                Ok(Event::Data(frame)) => {
                    let records = match decode_records(frame) {
                        Ok(r) => r,
                        Err(e) => {
                            run.error = Some(e.to_string());
                            return run;
                        }
                    };
                    for rec in records {
                        let expected = next.entry(rec.partition).or_insert(rec.offset);
                        if rec.offset < *expected {
                            run.duplicates += 1;
                            continue;
                        }
                        run.gaps += (rec.offset - *expected) as u64;
                        *expected = rec.offset + 1;
                        run.delivered_after_cut += u64::from(after_cut);
                        if !ready {
                            ready = true;
                            board.ready.fetch_add(1, Ordering::Relaxed);
                        }
                        if after_cut && run.resumed.is_none() && rec.offset > board.cut_mark.load(Ordering::Acquire) {
                            run.resumed = Some(Instant::now());
                            board.resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Event::Frame(Kind::Error(e))) => {
                    run.error = Some(format!("{e:?}"));
                    return run;
                }
                Ok(Event::Frame(_)) => {}
                Ok(Event::Closed) | Err(_) => {
                    after_cut |= board.is_cut();
                    break;
                }
            }
        }
    }
}

async fn storm_bare(n: usize, backlog: Option<u32>) -> Result<Value> {
    let server = LiveServer::start(LIVE_INTERVAL, RECORD_BYTES, backlog).await?;
    let block = if backlog.is_some() { 7 } else { 5 };
    let proxy = Proxy::start(server.addr, Sources::new(block, 8)).await?;
    let board = Board::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = Sources::new(block + 1, 8);
    let clients = (0..n)
        .map(|_| tokio::spawn(bare_client(proxy.addr, sources.clone(), board.clone(), stop_rx.clone(), STORM_RETRY)))
        .collect();
    let seq = server.seq.clone();
    let out = storm(n, &board, &proxy, || seq.load(Ordering::Acquire) as i64, clients, stop_tx, || {}).await?;
    drop(proxy);
    drop(server);
    Ok(out)
}

async fn bare_client(
    addr: SocketAddr,
    sources: Arc<Sources>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
    retry: Backoff,
) -> ClientRun {
    let mut run = ClientRun::default();
    let (mut ready, mut after_cut) = (false, false);
    loop {
        let opened = tokio::select! {
            _ = stop.changed() => return run,
            c = connect_ws(&sources, addr, None, client_config(CLIENT_READ_BUFFER)) => c,
        };
        let mut ws = match opened {
            Ok(ws) => ws,
            Err(_) => {
                run.connect_failures += 1;
                retry.wait().await;
                continue;
            }
        };
        if after_cut {
            run.reconnected.get_or_insert_with(Instant::now);
        }
        loop {
            let m = tokio::select! {
                _ = stop.changed() => return run,
                m = ws.next() => m,
            };
            match m {
                Some(Ok(Message::Binary(b))) => {
                    let seq = b.get(..8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_be_bytes);
                    run.delivered_after_cut += u64::from(after_cut);
                    if !ready {
                        ready = true;
                        board.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    if after_cut && run.resumed.is_none() && seq as i64 > board.cut_mark.load(Ordering::Acquire) {
                        run.resumed = Some(Instant::now());
                        board.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    after_cut |= board.is_cut();
                    break;
                }
            }
        }
    }
}
