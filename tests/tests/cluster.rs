//! Several gateway nodes of one cluster, in processes of their own, behind a real load
//! balancer (HAProxy from Debian, started here): nodes killed with SIGKILL, drained with
//! GoAway and restarted while a thousand clients read and some publish. Every client gets
//! every record once and in order, every acknowledged publish is in Kafka once, and a
//! publish retried on any node with its idempotency key is produced once (issue 11).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use kafkasocks::client::{Client, ClientConfig, ConnectionState, StartAt};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{ClusterConfig, GatewayConfig, KafkaConfig, Limits};
use kafkasocks_tests::*;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A gateway process of the cluster, on a fixed port so that it comes back where the load
/// balancer expects it.
struct Node {
    child: tokio::process::Child,
    port: u16,
}

async fn start_node(topic: &str, cluster: &str, port: u16) -> anyhow::Result<Node> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fixture-gateway"))
        .arg(topic)
        .env("KAFKA_BOOTSTRAP", bootstrap())
        .env("FIXTURE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FIXTURE_CLUSTER", cluster)
        .env("FIXTURE_BEHIND_PROXY", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("node start")??
        .ok_or_else(|| anyhow::anyhow!("the node exited"))?;
    anyhow::ensure!(line.starts_with("LISTENING "), "unexpected {line:?}");
    // Keep reading what it prints, so that it never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Node { child, port })
}

impl Node {
    /// SIGKILL: no GoAway, no drain, transactions left open.
    async fn kill(mut self) -> u16 {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.port
    }

    /// Graceful: GoAway to every client, publishes drained, the owner group left.
    async fn stop(mut self) -> anyhow::Result<u16> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "node exits cleanly: {status:?}");
        Ok(self.port)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HAProxy in front of the nodes: round robin, a node that stops answering taken out
/// within a second (TCP checks), WebSocket tunnels kept an hour.
struct Haproxy {
    _child: tokio::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn haproxy(backends: &[u16]) -> anyhow::Result<Haproxy> {
    let exe = which("haproxy").context("HAProxy is not installed (apt-get install haproxy; .ci/run does)")?;
    let port = free_port();
    let dir = TempDir(std::env::temp_dir().join(format!("kafkasocks-haproxy-{port}")));
    std::fs::create_dir_all(&dir.0)?;
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server n{i} 127.0.0.1:{p} check inter 250 fall 2 rise 1\n"))
        .collect();
    let cfg = format!(
        "global\n    maxconn 6000\n\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout tunnel 1h\n    option forwardfor\n    option redispatch\n    retries 3\n\n\
         frontend gateways\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\nbackend nodes\n    balance roundrobin\n{servers}"
    );
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let child = tokio::process::Command::new(exe)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "HAProxy did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Haproxy { _child: child, addr, _dir: dir })
}

/// Three nodes of a new cluster serving `topic`, and HAProxy in front of them.
async fn three_nodes_behind_haproxy(topic: &str) -> anyhow::Result<(String, Vec<Option<Node>>, Haproxy)> {
    let cluster = format!("c{:08x}", rand::random::<u32>());
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(Some(start_node(topic, &cluster, port).await?));
    }
    let lb = haproxy(&ports).await?;
    Ok((cluster, nodes, lb))
}

/// A session with this `Hello.instance_id` (the one a client keeps across reconnects).
async fn open_as(addr: SocketAddr, instance: &str) -> anyhow::Result<RawClient> {
    let mut c = RawClient::connect(addr).await?;
    c.send(Kind::Hello(wire::Hello { protocol_version: 1, instance_id: instance.to_owned(), ..Default::default() }))
        .await?;
    match c.recv().await? {
        Some(Kind::Welcome(_)) => Ok(c),
        other => bail!("expected Welcome, got {other:?}"),
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

/// (partition, offset) -> (key, idempotency key header).
type Records = BTreeMap<(i32, i64), (Vec<u8>, Option<Vec<u8>>)>;

/// Every record of `topic` as a read-committed consumer sees it.
fn read_all(topic: &str, partitions: i32) -> anyhow::Result<Records> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "kafkasocks-cluster-readback")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = BTreeMap::new();
    let mut ended = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended.len() < partitions as usize {
        anyhow::ensure!(Instant::now() < deadline, "reading {topic} back took over 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let idem = m.headers().and_then(|h| {
                    h.iter().find(|h| h.key == "kafkasocks-idempotency-key").and_then(|h| h.value.map(<[u8]>::to_vec))
                });
                out.insert((m.partition(), m.offset()), (m.key().unwrap_or_default().to_vec(), idem));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => bail!("reading back: {e}"),
            None => {}
        }
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Two nodes in this process: the same idempotency key published on both, one after the
/// other and at the same moment, is produced once; both get the first receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_on_another_node_is_produced_once() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("cluster2");
    create_topic(&topic, 3).await?;
    let cluster = format!("t{:08x}", rand::random::<u32>());
    let node = |cluster: &str| {
        GatewayConfig::new(KafkaConfig::new(bootstrap()))
            .listen("127.0.0.1:0".parse().unwrap())
            .limits(Limits::default())
            .cluster(ClusterConfig::new(cluster).partitions(4))
    };
    let a = TestGateway::start_with(node(&cluster), streams(&topic), None).await?;
    let b = TestGateway::start_with(node(&cluster), streams(&topic), None).await?;
    // One instance id, as a client that reconnects elsewhere keeps it.
    let instance = format!("{:032x}", rand::random::<u128>());
    let publish = |id: u64, key: &str, idem: &str| {
        Kind::Publish(wire::Publish {
            id,
            method: PUBLISH.into(),
            payload: message(key, "x"),
            idempotency_key: Bytes::from(idem.to_owned()),
            ..Default::default()
        })
    };
    async fn receipt(c: &mut RawClient) -> anyhow::Result<wire::Receipt> {
        match c.recv().await? {
            Some(Kind::Receipt(r)) => Ok(r),
            other => bail!("expected a receipt, got {other:?}"),
        }
    }
    let mut on_a = open_as(a.addr, &instance).await?;
    let mut on_b = open_as(b.addr, &instance).await?;
    // One after the other.
    on_a.send(publish(1, "k", "first")).await?;
    let ra = receipt(&mut on_a).await?;
    on_b.send(publish(1, "k", "first")).await?;
    let rb = receipt(&mut on_b).await?;
    assert!(!ra.duplicate && rb.duplicate, "the retry on node B is answered as a duplicate");
    assert_eq!((ra.partition, ra.offset), (rb.partition, rb.offset), "with the first receipt");
    // At the same moment, 200 keys each on both nodes.
    for i in 0..200u64 {
        let idem = format!("both-{i}");
        on_a.send(publish(100 + i, &format!("k{i}"), &idem)).await?;
        on_b.send(publish(100 + i, &format!("k{i}"), &idem)).await?;
    }
    let mut by_key: HashMap<u64, Vec<wire::Receipt>> = HashMap::new();
    for _ in 0..200 {
        let r = receipt(&mut on_a).await?;
        by_key.entry(r.id).or_default().push(r);
        let r = receipt(&mut on_b).await?;
        by_key.entry(r.id).or_default().push(r);
    }
    for (id, rs) in &by_key {
        assert_eq!(rs.len(), 2, "publish {id}");
        assert_eq!((rs[0].partition, rs[0].offset), (rs[1].partition, rs[1].offset), "publish {id}: one record");
        assert_eq!(rs.iter().filter(|r| r.duplicate).count(), 1, "publish {id}: one produced, one duplicate");
    }
    let records = read_all(&topic, 3)?;
    let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, idem) in records.values() {
        *count.entry(idem.clone().unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(records.len(), 201, "one record per idempotency key: {count:?}");
    assert!(count.values().all(|&n| n == 1));
    delete_topic(&topic).await?;
    Ok(())
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    records: Vec<(i32, i64)>,
    reconnects: Vec<Duration>,
}

/// 1,000 subscribers and 50 publishers through HAProxy to three nodes; one node killed
/// with SIGKILL (and brought back), one drained with GoAway and restarted, one killed and
/// restarted while the publishers publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy_lose_nothing_and_duplicate_nothing() -> anyhow::Result<()> {
    init_tracing();
    const CLIENTS: usize = 1000;
    const PUBLISHERS: usize = 50;
    const FEED: &str = "feed";
    let topic = unique_topic("lb");
    create_topic(&topic, 3).await?;
    let (cluster, mut nodes, lb) = three_nodes_behind_haproxy(&topic).await?;
    let url = format!("ws://{}/streams", lb.addr);

    // Subscribers: the feed's key only (publishes go to other keys).
    let started = Instant::now();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let client =
            Client::connect(ClientConfig::new(&url).backoff(Duration::from_millis(50), Duration::from_secs(1)));
        let mut sub = client.subscribe(SUBSCRIBE, message(FEED, ""), StartAt::Latest);
        let mut stop = stop_rx.clone();
        let opened = opened.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut was_open = false;
            let mut down_since: Option<Instant> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    d = sub.next() => match d {
                        Some(Ok(d)) => {
                            if let Some(t) = down_since.take() {
                                seen.reconnects.push(t.elapsed());
                            }
                            seen.records.push((d.partition, d.offset));
                        }
                        Some(Err(e)) => return Err(anyhow::anyhow!("subscription ended: {e}")),
                        None => return Err(anyhow::anyhow!("subscription ended")),
                    },
                    _ = tick.tick() => {
                        let open = client.state() == ConnectionState::Open;
                        if open && !was_open {
                            was_open = true;
                            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if !open && was_open && down_since.is_none() {
                            down_since = Some(Instant::now());
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            client.close();
            Ok::<_, anyhow::Error>(seen)
        }));
    }
    // Every subscriber is in before the feed starts.
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened.load(std::sync::atomic::Ordering::Relaxed) < CLIENTS {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {CLIENTS} clients connected",
            opened.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{CLIENTS} clients connected through HAProxy in {:?}", started.elapsed());
    // Give their subscriptions a moment to be placed at the log end.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The feed: 10 records a second for the whole test, from a plain Kafka producer.
    let feed_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feed = {
        let topic = topic.clone();
        let feed_stop = feed_stop.clone();
        tokio::spawn(async move {
            let p = producer();
            let mut n = 0u64;
            while !feed_stop.load(std::sync::atomic::Ordering::Relaxed) {
                produce(&p, &topic, None, FEED.as_bytes(), &message(FEED, &format!("feed {n}"))).await?;
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, anyhow::Error>(n)
        })
    };
    // Publishers: each publishes one record a second for its own key, retrying a refused
    // publish with the same idempotency key, until told to stop.
    let pub_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        let client =
            Client::connect(ClientConfig::new(&url).backoff(Duration::from_millis(50), Duration::from_secs(1)));
        let pub_stop = pub_stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut acked: Vec<(Vec<u8>, wire::Receipt)> = Vec::new();
            let mut n = 0u64;
            while !pub_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let idem = format!("pub-{i}-{n}").into_bytes();
                let payload = message(&format!("pub-{i}"), &format!("{n}"));
                let receipt = loop {
                    match client.publish_with_key(PUBLISH, payload.clone(), Bytes::from(idem.clone())).await {
                        Ok(r) => break r,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                let r = wire::Receipt {
                    id: n,
                    topic: receipt.topic.clone(),
                    partition: receipt.partition,
                    offset: receipt.offset,
                    timestamp_ms: receipt.timestamp_ms,
                    duplicate: receipt.duplicate,
                };
                acked.push((idem, r));
                n += 1;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            client.close();
            Ok::<_, anyhow::Error>(acked)
        }));
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    // 1: SIGKILL, back 3 s later (a supervisor restarting it).
    let port = nodes[0].take().unwrap().kill().await;
    eprintln!("node 1 killed at {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[0] = Some(start_node(&topic, &cluster, port).await?);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // 2: drained with GoAway, then restarted (a rolling deploy).
    let port = nodes[1].take().unwrap().stop().await?;
    eprintln!("node 2 drained at {:?}", started.elapsed());
    nodes[1] = Some(start_node(&topic, &cluster, port).await?);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // 3: killed and restarted while the publishers publish.
    let port = nodes[2].take().unwrap().kill().await;
    eprintln!("node 3 killed at {:?}", started.elapsed());
    nodes[2] = Some(start_node(&topic, &cluster, port).await?);
    tokio::time::sleep(Duration::from_secs(8)).await;

    pub_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for p in publishers {
        acked.extend(p.await??);
    }
    feed_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let fed = feed.await??;
    // Everything in Kafka, as a read-committed consumer sees it.
    let records = read_all(&topic, 3)?;
    let feed_records: Vec<(i32, i64)> =
        records.iter().filter(|(_, (k, _))| k == FEED.as_bytes()).map(|(&po, _)| po).collect();
    assert_eq!(feed_records.len() as u64, fed, "the feed is in Kafka");
    // Let the subscribers catch up with the last feed records, then stop them.
    let want: HashSet<(i32, i64)> = feed_records.iter().copied().collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send_replace(true);
    let mut reconnects = Vec::new();
    let mut complete = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let seen = match tokio::time::timeout(Duration::from_secs(30), r).await {
            Ok(j) => j??,
            Err(_) => bail!("subscriber {i} did not stop"),
        };
        // Exactly once, in order per partition.
        let mut last: HashMap<i32, i64> = HashMap::new();
        for &(p, o) in &seen.records {
            if let Some(&prev) = last.get(&p) {
                assert!(o > prev, "subscriber {i}: partition {p} offset {o} after {prev}");
            }
            last.insert(p, o);
        }
        let got: HashSet<(i32, i64)> = seen.records.iter().copied().collect();
        assert_eq!(got.len(), seen.records.len(), "subscriber {i}: a duplicate");
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        assert!(missing.is_empty(), "subscriber {i} misses {} records, e.g. {missing:?}", want.len() - got.len());
        assert!(got.is_subset(&want), "subscriber {i}: records that are not the feed's");
        complete += 1;
        reconnects.extend(seen.reconnects);
    }
    assert_eq!(complete, CLIENTS);
    // Every acknowledged publish is in Kafka once, where its receipt says, in send order.
    let mut by_idem: HashMap<Vec<u8>, Vec<(i32, i64)>> = HashMap::new();
    for (&po, (_, idem)) in &records {
        if let Some(idem) = idem {
            by_idem.entry(idem.clone()).or_default().push(po);
        }
    }
    let mut last_by_publisher: HashMap<String, (i32, i64)> = HashMap::new();
    for (idem, r) in &acked {
        let at = by_idem.get(idem).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(at, [(r.partition, r.offset)], "{}: once, where the receipt says", String::from_utf8_lossy(idem));
        let publisher = String::from_utf8_lossy(idem).rsplit_once('-').unwrap().0.to_owned();
        if let Some(prev) = last_by_publisher.insert(publisher.clone(), (r.partition, r.offset)) {
            assert!(prev.0 == r.partition && prev.1 < r.offset, "{publisher}: one key's publishes in send order");
        }
    }
    let published_total = by_idem.len();
    assert_eq!(published_total, acked.len(), "no record without an acknowledged publish");
    reconnects.sort();
    eprintln!(
        "{CLIENTS} subscribers, {fed} feed records each, {} publishes acknowledged; reconnect to first record: \
         {} reconnects, p50 {:?}, p99 {:?}, max {:?} (records every 100 ms)",
        acked.len(),
        reconnects.len(),
        percentile(&reconnects, 0.5),
        percentile(&reconnects, 0.99),
        reconnects.last().copied().unwrap_or_default()
    );
    assert!(reconnects.len() >= CLIENTS / 3, "the node changes moved clients: {} reconnects", reconnects.len());
    drop(lb);
    for n in nodes.into_iter().flatten() {
        n.stop().await?;
    }
    delete_topic(&topic).await?;
    Ok(())
}

/// 1,000 publishes, each cut between send and receipt (the connection dropped, or its
/// node killed), each retried through the load balancer to whichever node it lands on:
/// Kafka holds exactly one record per idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_publishes_retried_across_nodes_are_produced_once() -> anyhow::Result<()> {
    init_tracing();
    const N: usize = 1000;
    let topic = unique_topic("retry");
    create_topic(&topic, 3).await?;
    let (cluster, mut nodes, lb) = three_nodes_behind_haproxy(&topic).await?;
    let instance = format!("{:032x}", rand::random::<u128>());
    let publish = |i: usize| {
        Kind::Publish(wire::Publish {
            id: i as u64,
            method: PUBLISH.into(),
            payload: message(&format!("k{}", i % 10), &format!("{i}")),
            idempotency_key: Bytes::from(format!("cut-{i}")),
            ..Default::default()
        })
    };
    // First attempts, ten per connection: sent, then the connection cut before any
    // receipt is read; at four points a node is killed with SIGKILL right after the sends
    // (its owner partitions move) and restarted.
    const PER: usize = 10;
    for batch in 0..N / PER {
        let mut c = loop {
            match open_as(lb.addr, &instance).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        for i in batch * PER..(batch + 1) * PER {
            c.send(publish(i)).await?;
        }
        if batch % 25 == 12 {
            let n = (batch / 25) % 3;
            let port = nodes[n].take().unwrap().kill().await;
            nodes[n] = Some(start_node(&topic, &cluster, port).await?);
        }
        drop(c);
    }
    // Retries, ten per connection through the load balancer (so on every node), until
    // each is answered.
    let mut duplicates = 0;
    let mut answered: HashSet<u64> = HashSet::new();
    while answered.len() < N {
        let mut c = match open_as(lb.addr, &instance).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let todo: Vec<usize> = (0..N).filter(|i| !answered.contains(&(*i as u64))).take(PER).collect();
        for &i in &todo {
            c.send(publish(i)).await?;
        }
        for _ in &todo {
            match c.recv().await {
                Ok(Some(Kind::Receipt(r))) => {
                    duplicates += usize::from(r.duplicate);
                    answered.insert(r.id);
                }
                Ok(Some(Kind::Error(e))) if e.code == kafkasocks::Code::Unavailable.grpc() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => {
                    eprintln!("retrying {todo:?}: {other:?}");
                    break;
                }
            }
        }
    }
    let records = read_all(&topic, 3)?;
    let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, idem) in records.values() {
        *count.entry(idem.clone().unwrap_or_default()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).map(|(k, _)| String::from_utf8_lossy(k)).collect();
    assert!(twice.is_empty(), "produced more than once: {twice:?}");
    assert_eq!(count.len(), N, "one record per idempotency key");
    eprintln!("{N} interrupted publishes: {duplicates} retries answered as duplicates (the first attempt had landed)");
    assert!(duplicates > N / 2, "most first attempts reached Kafka before their connection was cut");
    drop(lb);
    for n in nodes.into_iter().flatten() {
        n.stop().await?;
    }
    delete_topic(&topic).await?;
    Ok(())
}
