//! Resume across disconnects and across gateway processes: every record exactly once,
//! in order per partition.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use kafkasocks::Limits;
use kafkasocks::client::{Client, ClientConfig, Delivery, StartAt};
use kafkasocks_tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const RECORDS: usize = 10_000;
const DISCONNECTS: usize = 20;

/// Produces `n` records with keys k0..k9 (so they spread over partitions); returns
/// partition -> offsets and key -> (partition, offset) list.
async fn produce_many<F, Fut>(topic: &str, n: usize, mut every: F) -> anyhow::Result<Vec<(String, i32, i64)>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p = producer();
    let mut out = Vec::with_capacity(n);
    for chunk in 0..n / 500 {
        let futs: Vec<_> = (0..500)
            .map(|i| {
                let idx = chunk * 500 + i;
                let key = format!("k{}", idx % 10);
                let p = &p;
                async move {
                    let r = produce(p, topic, None, key.as_bytes(), format!("v{idx}").as_bytes()).await;
                    r.map(|(part, off)| (key, part, off))
                }
            })
            .collect();
        for r in futures_util::future::join_all(futs).await {
            out.push(r?);
        }
        every(chunk).await;
    }
    Ok(out)
}

/// Every produced record exactly once, and per partition in offset order.
fn assert_exactly_once(got: &[Delivery], produced: &[(i32, i64)]) {
    let mut by_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for d in got {
        by_part.entry(d.partition).or_default().push(d.offset);
    }
    for (p, offs) in &by_part {
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "partition {p} out of order or duplicated");
    }
    let mut want: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in produced {
        want.entry(p).or_default().push(o);
    }
    for v in want.values_mut() {
        v.sort_unstable();
    }
    assert_eq!(by_part, want, "delivered set differs from produced set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_through_twenty_disconnects() -> anyhow::Result<()> {
    ten_thousand_records_through_twenty_disconnects_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_through_twenty_disconnects_over_sasl_ssl() -> anyhow::Result<()> {
    ten_thousand_records_through_twenty_disconnects_on(Listener::SaslSsl).await
}

async fn ten_thousand_records_through_twenty_disconnects_on(listener: Listener) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("resume");
    create_topic(&topic, 3).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let proxy = std::sync::Arc::new(Proxy::start(gw.addr).await?);
    let client =
        Client::connect(ClientConfig::new(proxy.url()).backoff(Duration::from_millis(20), Duration::from_millis(200)));
    let mut all = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let mut keyed = client.subscribe(SUBSCRIBE, message("k3", ""), StartAt::Latest);
    while all.cursor().is_none() || keyed.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let severed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer_task = {
        let (topic, proxy, severed) = (topic.clone(), proxy.clone(), severed.clone());
        tokio::spawn(async move {
            produce_many(&topic, RECORDS, |chunk| {
                let (proxy, severed) = (proxy.clone(), severed.clone());
                async move {
                    // 20 chunks of 500: cut the client's connection after each one, once
                    // it has reconnected from the previous cut.
                    if chunk < DISCONNECTS && proxy.sever_when_connected(Duration::from_secs(10)).await > 0 {
                        severed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await
        })
    };
    let got = collect(&mut all, RECORDS, Duration::from_secs(120)).await?;
    let produced = producer_task.await??;
    let k3: Vec<(i32, i64)> = produced.iter().filter(|r| r.0 == "k3").map(|r| (r.1, r.2)).collect();
    let got_k3 = collect(&mut keyed, k3.len(), Duration::from_secs(60)).await?;
    let severed = severed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(severed, DISCONNECTS, "every cut found a connection");
    assert_exactly_once(&got, &produced.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>());
    assert_exactly_once(&got_k3, &k3);
    assert!(got_k3.iter().all(|d| &d.key[..] == b"k3"));
    // The gateway itself never resent a record the client had.
    assert_eq!(all.duplicates_dropped(), 0);
    assert_eq!(keyed.duplicates_dropped(), 0);
    // And nothing beyond.
    assert!(tokio::time::timeout(Duration::from_millis(300), all.next()).await.is_err());
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

struct GatewayProcess {
    child: tokio::process::Child,
    url: String,
}

async fn spawn_gateway(topic: &str) -> anyhow::Result<GatewayProcess> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fixture-gateway"))
        .arg(topic)
        .env("KAFKA_BOOTSTRAP", bootstrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("gateway exited"))?;
    let addr = line.strip_prefix("LISTENING ").ok_or_else(|| anyhow::anyhow!("unexpected {line:?}"))?;
    Ok(GatewayProcess { url: format!("ws://{addr}/streams"), child })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_gateway_process_without_gap_or_duplicate() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("twogw");
    create_topic(&topic, 3).await?;
    let a = spawn_gateway(&topic).await?;
    let b = spawn_gateway(&topic).await?;
    let produced = produce_many(&topic, 2000, |_| async {}).await?;
    let produced: Vec<(i32, i64)> = produced.iter().map(|r| (r.1, r.2)).collect();

    let on_a = Client::connect(ClientConfig::new(&a.url));
    let mut sub = on_a.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let mut got = collect(&mut sub, 1234, Duration::from_secs(60)).await?;
    let cursor = sub.cursor().unwrap();
    // The saved cursor survives a trip through bytes (as an app would persist it).
    let cursor = kafkasocks::client::Cursor::from_bytes(&cursor.to_bytes())?;
    on_a.close();
    drop(sub);
    // Gateway A goes away for good.
    drop(a);

    let on_b = Client::connect(ClientConfig::new(&b.url));
    let mut sub = on_b.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    got.extend(collect(&mut sub, 2000 - 1234, Duration::from_secs(60)).await?);
    assert_exactly_once(&got, &produced);
    assert_eq!(sub.duplicates_dropped(), 0);
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next()).await.is_err());
    on_b.close();
    let mut b = b;
    drop(b.child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await??;
    assert!(status.success(), "gateway B exits cleanly on shutdown: {status:?}");
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_earliest_shares_one_reader_and_latest_still_means_latest() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("burst");
    create_topic(&topic, 1).await?;
    let old = produce_many(&topic, 5000, |_| async {}).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    // Fast readers: enough credit that none of them blocks while the burst is read.
    let client = Client::connect(ClientConfig::new(gw.url()).credit_window(20_000));
    // The topic's hub exists first, reading at the log end, as in a gateway that has run
    // for a while; then a burst resumes from the start of the log.
    let mut latest = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while latest.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut early: Vec<_> = (0..10).map(|_| client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest)).collect();
    let p = producer();
    let mut new = Vec::new();
    for i in 0..10 {
        new.push(produce(&p, &topic, None, b"k", format!("new{i}").as_bytes()).await?);
    }
    let mut want: Vec<(i32, i64)> = old.iter().map(|r| (r.1, r.2)).collect();
    want.extend(new.iter().copied());
    for sub in &mut early {
        let got = collect(sub, want.len(), Duration::from_secs(60)).await?;
        assert_exactly_once(&got, &want);
        assert_eq!(sub.duplicates_dropped(), 0);
    }
    // "Latest" got only what was produced after it subscribed.
    let got = collect(&mut latest, new.len(), Duration::from_secs(20)).await?;
    assert_eq!(got.iter().map(|d| (d.partition, d.offset)).collect::<Vec<_>>(), new);
    // The burst shared the partition's history reader: the log was read about once, not
    // once per subscriber (10 x 5000 before the history reader existed).
    let text = gw.metrics_text().await?;
    let reads = metric(&text, "kafkasocks_catch_up_reads_total");
    assert!((5000.0..10_000.0).contains(&reads), "records read for catching up: {reads}");
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// Subscribers that come after the partition's history reader has passed their cursor
/// share another history reader: the log is read once more, not once per latecomer (a
/// reader of its own each, as before: 10 x 5,000 reads here). The history reader they
/// came too late for is held back by a slow subscriber that stops reading, so it is
/// still running when they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latecomers_behind_a_running_history_reader_share_another_one() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("latecomers");
    create_topic(&topic, 1).await?;
    let old = produce_many(&topic, 5000, |_| async {}).await?;
    let want: Vec<(i32, i64)> = old.iter().map(|r| (r.1, r.2)).collect();
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let fast = Client::connect(ClientConfig::new(gw.url()).credit_window(20_000));
    // The hub reads at the log end, as in a gateway that has run for a while.
    let latest = fast.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while latest.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let slow_client = Client::connect(ClientConfig::new(gw.url()).credit_window(16));
    let mut slow = slow_client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let mut slow_got = collect(&mut slow, 100, Duration::from_secs(30)).await?;
    // Its history reader is past offset 0 now, waiting for it to read on.
    let mut late: Vec<_> = (0..10).map(|_| fast.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest)).collect();
    for sub in &mut late {
        let got = collect(sub, want.len(), Duration::from_secs(60)).await?;
        assert_exactly_once(&got, &want);
    }
    let reads = metric(&gw.metrics_text().await?, "kafkasocks_catch_up_reads_total");
    assert!(reads < 15_000.0, "records read for catching up 11 subscribers of 5,000 records: {reads}");
    // And the slow one, reading again, gets the rest, once each.
    slow_got.extend(collect(&mut slow, want.len() - 100, Duration::from_secs(60)).await?);
    assert_exactly_once(&slow_got, &want);
    fast.close();
    slow_client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// A key-filtered subscription from the earliest record, on a quiet topic whose records
/// are all for other keys: within the checkpoint interval its cursor reaches the end of
/// every partition, so a resume never rescans what was filtered out already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_cursors_reach_the_log_end_on_a_quiet_topic() -> anyhow::Result<()> {
    use kafkasocks::wire::{self, frame::Kind};
    init_tracing();
    let topic = unique_topic("quiet-filtered");
    create_topic(&topic, 2).await?;
    // The topic's hub is running (another client reads it all), so partition 0's records
    // are in the replay ring, and partition 1 has more than the ring holds (16,384): the
    // filtered subscription below skips through both, from the ring and a catch-up reader.
    let limits = kafkasocks::Limits::default().with_checkpoint_interval(Duration::from_millis(500));
    let gw = TestGateway::start(streams(&topic), limits).await?;
    let watcher = Client::connect(ClientConfig::new(gw.url()));
    let mut all = watcher.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while all.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = producer();
    let mut ends = [0i64; 2];
    for (partition, n) in [(0, 2_000), (1, 20_000)] {
        for chunk in (0..n).collect::<Vec<i32>>().chunks(1_000) {
            let sends = chunk.iter().map(|_| produce(&p, &topic, Some(partition), b"other", b"\x0a\x05other"));
            for r in futures_util::future::join_all(sends).await {
                let (part, offset) = r?;
                ends[part as usize] = ends[part as usize].max(offset + 1);
            }
        }
    }
    collect(&mut all, 22_000, Duration::from_secs(30)).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(Kind::Subscribe(wire::Subscribe {
        id: 1,
        method: SUBSCRIBE.into(),
        request: message("mine", ""),
        start: Some(wire::StartPosition { position: Some(wire::start_position::Position::Earliest(wire::Empty {})) }),
        credit: 0,
    }))
    .await?;
    let mut cursor = [0i64; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cursor != ends {
        let frame = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| anyhow::anyhow!("cursor {cursor:?} short of the log ends {ends:?} after 5 s"))??;
        match frame {
            Some(Kind::Subscribed(s)) => {
                for po in s.cursor.unwrap_or_default().positions {
                    cursor[po.partition as usize] = po.next_offset;
                }
            }
            Some(Kind::Checkpoint(cp)) => {
                for po in cp.positions {
                    assert!(po.next_offset >= cursor[po.partition as usize], "a checkpoint went back");
                    cursor[po.partition as usize] = po.next_offset;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    delete_topic(&topic).await?;
    Ok(())
}

/// A one-partition topic whose records retention deletes `retention_ms` after they were
/// written (the broker checks every second: scripts/services sets
/// `log.retention.check.interval.ms=1000`), in segments rolled every `segment_ms` (the
/// active segment is rolled too when everything in it has expired).
async fn create_expiring_topic(name: &str, segment_ms: u64, retention_ms: u64) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let (segment_ms, retention_ms) = (segment_ms.to_string(), retention_ms.to_string());
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1))
        .set("segment.ms", &segment_ms)
        .set("retention.ms", &retention_ms);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin().create_topics(&[topic], &options).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    wait_for_topic(name, 1).await
}

/// Turns retention off for the topic (`retention.ms=-1`), so what is written from now on
/// stays.
async fn stop_retention(name: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
    let change = AlterConfig::new(ResourceSpecifier::Topic(name)).set("retention.ms", "-1");
    for r in admin().alter_configs(&[change], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("altering {t:?}: {e}"))?;
    }
    Ok(())
}

/// Partition 0's (log start, log end), asked of the broker.
async fn watermarks(topic: &str) -> anyhow::Result<(i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?;
        Ok(c.fetch_watermarks(&topic, 0, Duration::from_secs(5))?)
    })
    .await?
}

/// Waits (at most 60 s) until retention moved partition 0's log start to `offset` or past.
async fn wait_for_log_start(topic: &str, offset: i64) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (low, _) = watermarks(topic).await?;
        if low >= offset {
            return Ok(low);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "log start still {low}, not {offset}, after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A subscription for key `mine` from this start.
fn subscribe_mine(start: kafkasocks::wire::start_position::Position) -> kafkasocks::wire::frame::Kind {
    use kafkasocks::wire::{self, frame::Kind};
    Kind::Subscribe(wire::Subscribe {
        id: 1,
        method: SUBSCRIBE.into(),
        request: message("mine", ""),
        start: Some(wire::StartPosition { position: Some(start) }),
        credit: 0,
    })
}

/// Subscribes for key `mine` (from the log end), then writes one record for it (`mine@0`)
/// and 200 for other keys, and keeps the cursor as a client does (Subscribed, records,
/// Checkpoints) until it reaches the log end. Returns the cursor (topic id, next offset)
/// and the offsets of the records it got; the connection is closed.
async fn filtered_cursor_at_the_log_end(gw: &TestGateway, topic: &str) -> anyhow::Result<(Vec<u8>, i64, Vec<i64>)> {
    use kafkasocks::wire::{self, frame::Kind};
    let mut c = RawClient::open(gw.addr).await?;
    c.send(subscribe_mine(wire::start_position::Position::Latest(wire::Empty {}))).await?;
    let (topic_id, mut next) = match c.recv().await? {
        Some(Kind::Subscribed(s)) => {
            let cursor = s.cursor.unwrap_or_default();
            (cursor.topic_id.to_vec(), cursor.positions[0].next_offset)
        }
        other => panic!("expected Subscribed, got {other:?}"),
    };
    let p = producer();
    produce(&p, topic, Some(0), b"mine", &message("mine", "first")).await?;
    let others = (0..200).map(|_| produce(&p, topic, Some(0), b"other", b"\x0a\x05other"));
    let mut end = 0;
    for r in futures_util::future::join_all(others).await {
        end = end.max(r?.1 + 1);
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while next != end {
        let frame = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| anyhow::anyhow!("cursor {next} short of the log end {end} after 10 s"))??;
        match frame {
            Some(Kind::Data(d)) => {
                for r in d.records {
                    assert_eq!(&r.key[..], b"mine");
                    assert!(r.offset >= next, "a record below the cursor");
                    got.push(r.offset);
                    next = r.offset + 1;
                }
            }
            Some(Kind::Checkpoint(cp)) => {
                for po in cp.positions {
                    assert!(po.next_offset >= next, "a checkpoint went back");
                    next = po.next_offset;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok((topic_id, next, got))
}

/// The first frame about subscription 1 of a resume with this cursor: Subscribed then the
/// first record, or the Error that refused it.
async fn resume_mine(
    gw: &TestGateway,
    topic_id: &[u8],
    next: i64,
) -> anyhow::Result<Result<i64, kafkasocks::wire::Error>> {
    use kafkasocks::wire::{self, frame::Kind};
    let mut c = RawClient::open(gw.addr).await?;
    let cursor = wire::Cursor {
        topic_id: topic_id.to_vec().into(),
        positions: vec![wire::PartitionOffset { partition: 0, next_offset: next }],
    };
    c.send(subscribe_mine(wire::start_position::Position::Cursor(cursor))).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), c.recv())
            .await
            .map_err(|_| anyhow::anyhow!("nothing in 20 s"))??
        {
            Some(Kind::Subscribed(s)) => {
                let positions = s.cursor.unwrap_or_default().positions;
                assert_eq!(positions.iter().map(|p| (p.partition, p.next_offset)).collect::<Vec<_>>(), [(0, next)]);
            }
            Some(Kind::Checkpoint(_)) => {}
            Some(Kind::Data(d)) => {
                let r = &d.records[0];
                assert_eq!(&r.key[..], b"mine");
                return Ok(Ok(r.offset));
            }
            Some(Kind::Error(e)) => return Ok(Err(e)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A key-filtered cursor that checkpoints moved to the log end survives retention deleting
/// every record below it: the resume (on the gateway that served it, whose replay ring
/// still holds the deleted records, and on a new one) is no DATA_LOSS, and gets the next
/// record for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_resume_after_retention_deleted_only_other_keys_loses_nothing() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("expiring-others");
    create_expiring_topic(&topic, 200, 1000).await?;
    let limits = Limits::default().with_checkpoint_interval(Duration::from_millis(300));
    let gw = TestGateway::start(streams(&topic), limits.clone()).await?;
    let (topic_id, next, got) = filtered_cursor_at_the_log_end(&gw, &topic).await?;
    assert_eq!(got, [0], "the one record for the key");
    // Retention deletes everything the cursor passed: the record for the key and the
    // others.
    let low = wait_for_log_start(&topic, next).await?;
    assert_eq!(low, next, "the log is empty from the cursor on");
    stop_retention(&topic).await?;
    let (_, later) = produce(&producer(), &topic, Some(0), b"mine", &message("mine", "later")).await?;
    assert_eq!(later, next);
    assert_eq!(resume_mine(&gw, &topic_id, next).await?.map_err(|e| format!("{e:?}")), Ok(later));
    let fresh = TestGateway::start(streams(&topic), limits).await?;
    assert_eq!(resume_mine(&fresh, &topic_id, next).await?.map_err(|e| format!("{e:?}")), Ok(later));
    delete_topic(&topic).await?;
    Ok(())
}

/// A key-filtered cursor at the log end, then a record for the key that the client never
/// got (it was away) is deleted by retention: the resume is refused with DATA_LOSS,
/// OFFSET_BELOW_LOG_START, on the gateway that still holds the record in memory and on a
/// new one, rather than silently skipping it to the next record for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_resume_after_retention_deleted_a_record_for_its_key_is_data_loss() -> anyhow::Result<()> {
    use kafkasocks::wire;
    init_tracing();
    let topic = unique_topic("expiring-mine");
    create_expiring_topic(&topic, 200, 1000).await?;
    let limits = Limits::default().with_checkpoint_interval(Duration::from_millis(300));
    let gw = TestGateway::start(streams(&topic), limits.clone()).await?;
    // The gateway's hub reads the topic on: it has the missed record in its replay ring.
    let watcher = Client::connect(ClientConfig::new(gw.url()));
    let mut all = watcher.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while all.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (topic_id, next, _) = filtered_cursor_at_the_log_end(&gw, &topic).await?;
    collect(&mut all, 201, Duration::from_secs(10)).await?;
    // While the client is away: a record for its key, then retention deletes it.
    let p = producer();
    let (_, missed) = produce(&p, &topic, Some(0), b"mine", &message("mine", "missed")).await?;
    assert_eq!(missed, next);
    assert_eq!(collect(&mut all, 1, Duration::from_secs(10)).await?[0].offset, missed);
    wait_for_log_start(&topic, missed + 1).await?;
    stop_retention(&topic).await?;
    produce(&p, &topic, Some(0), b"mine", &message("mine", "later")).await?;
    let fresh = TestGateway::start(streams(&topic), limits).await?;
    for gateway in [&gw, &fresh] {
        let e = resume_mine(gateway, &topic_id, next).await?.expect_err("DATA_LOSS, not the later record");
        assert_eq!((e.subscription_id, e.code), (1, wire::Code::DataLoss as i32), "{e:?}");
        assert_eq!(e.discontinuity, wire::Discontinuity::OffsetBelowLogStart as i32, "{e:?}");
    }
    watcher.close();
    delete_topic(&topic).await?;
    Ok(())
}
