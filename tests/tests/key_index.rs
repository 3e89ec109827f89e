//! The key index: a subscription to one key, joining from `earliest` or resuming, reads
//! the blocks of the partition that hold its key, not the whole partition, and still
//! gets every record for the key exactly once, in order.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::Limits;
use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks_tests::*;

const RECORDS: usize = 100_000;
const NEEDLES: usize = 10;

/// `RECORDS` records in one partition: `NEEDLES` of them for key "needle", spread evenly,
/// the others for 50 other keys; returns the needles' offsets.
async fn haystack(topic: &str) -> anyhow::Result<Vec<i64>> {
    let p = producer();
    let mut needles = Vec::new();
    let every = RECORDS / NEEDLES;
    for chunk in 0..RECORDS / 1_000 {
        let sends =
            (0..1_000).map(|i| {
                let idx = chunk * 1_000 + i;
                let key = if idx % every == every / 2 { "needle".to_owned() } else { format!("other{}", idx % 50) };
                let p = &p;
                async move {
                    produce(p, topic, Some(0), key.as_bytes(), format!("v{idx}").as_bytes()).await.map(|r| (key, r))
                }
            });
        for r in futures_util::future::join_all(sends).await {
            let (key, (_, offset)) = r?;
            if key == "needle" {
                needles.push(offset);
            }
        }
    }
    needles.sort_unstable();
    Ok(needles)
}

async fn counter(gw: &TestGateway, name: &str) -> anyhow::Result<f64> {
    Ok(metric(&gw.metrics_text().await?, name).max(0.0))
}

/// 100,000 records in one partition, 10 of them for "needle": a subscription to it from
/// `earliest` while the index is being built gets them in order and reads a small part of
/// the partition; once the index is built, a subscription to "needle" from `earliest` gets the 10 (and a live one after
/// them) exactly once, in order, through a connection cut after the fifth, while its
/// history reads stay a small fraction of the partition. Without the index it read all
/// 100,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_earliest_reads_the_blocks_that_hold_it() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("key-index");
    create_topic(&topic, 1).await?;
    let needles = haystack(&topic).await?;
    assert_eq!(needles.len(), NEEDLES);
    // A small replay ring: nothing of the haystack is served from memory.
    let limits = Limits::default().with_replay_records(1_024).with_checkpoint_interval(Duration::from_millis(200));
    let gw = TestGateway::start(streams(&topic), limits).await?;
    let proxy = Proxy::start(gw.addr).await?;
    let client =
        Client::connect(ClientConfig::new(proxy.url()).backoff(Duration::from_millis(20), Duration::from_millis(200)));
    // A client reading the topic from the log end: the topic's live reader is there.
    let warm = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while warm.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first keyed subscription: it has the gateway build the index, and waits for the
    // builder rather than reading the partition itself (it had read about half of it).
    let mut cold = client.subscribe(SUBSCRIBE, message("needle", ""), StartAt::Earliest);
    let got: Vec<i64> = collect(&mut cold, NEEDLES, Duration::from_secs(30)).await?.iter().map(|d| d.offset).collect();
    assert_eq!(got, needles, "every record for the key, once, in order, while the index was built");
    let read_cold = counter(&gw, "kafkasocks_catch_up_reads_total").await?;
    eprintln!("history reads for a key joining while the index was built: {read_cold}");
    assert!(read_cold < (RECORDS / 4) as f64, "read {read_cold} records of {RECORDS} while the index was built");
    drop(cold);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counter(&gw, "kafkasocks_key_index_reads_total").await? < RECORDS as f64 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the key index was not built within 60 s: {}",
            counter(&gw, "kafkasocks_key_index_reads_total").await?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read_before = counter(&gw, "kafkasocks_catch_up_reads_total").await?;

    let mut needle = client.subscribe(SUBSCRIBE, message("needle", ""), StartAt::Earliest);
    let first = collect(&mut needle, NEEDLES / 2, Duration::from_secs(30)).await?;
    assert!(proxy.sever() > 0, "the client was connected");
    let rest = collect(&mut needle, NEEDLES - NEEDLES / 2, Duration::from_secs(30)).await?;
    let got: Vec<i64> = first.iter().chain(&rest).map(|d| d.offset).collect();
    assert_eq!(got, needles, "every record for the key, once, in order");
    assert!(first.iter().chain(&rest).all(|d| &d.key[..] == b"needle"));
    assert_eq!(needle.duplicates_dropped(), 0);

    // Live after the catch-up: the next record for the key, and nothing else.
    let p = producer();
    let (_, live) = produce(&p, &topic, Some(0), b"needle", b"live").await?;
    produce(&p, &topic, Some(0), b"other0", b"not for it").await?;
    let after = collect(&mut needle, 1, Duration::from_secs(30)).await?;
    assert_eq!(after[0].offset, live);
    assert!(tokio::time::timeout(Duration::from_millis(300), needle.next()).await.is_err());

    let read = counter(&gw, "kafkasocks_catch_up_reads_total").await? - read_before;
    let skipped = counter(&gw, "kafkasocks_key_index_skipped_total").await?;
    eprintln!("history reads for 10 records of a key among 100,000: {read}; offsets skipped by the index: {skipped}");
    // Each needle costs at most its block (1,024 records), one history batch (512) past it
    // and what the reader had fetched when it seeked; twice for the one the cut repeats.
    assert!(read < (RECORDS / 4) as f64, "read {read} records of {RECORDS} to serve 10");
    assert!(skipped > (RECORDS / 2) as f64, "skipped {skipped}");
    drop(warm);
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// The partition's high watermark.
async fn log_end(topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?;
        Ok(c.fetch_watermarks(&topic, 0, Duration::from_secs(5))?.1)
    })
    .await?
}

/// Two gateways one after the other (a restart) sharing a key index topic: the first
/// builds the index and shares its blocks; the second loads them, reads only the
/// partition's tail to build the rest, and serves a key from `earliest` from the blocks
/// that hold it. Without sharing, the second read the whole partition again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_loads_the_shared_key_index() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("key-index-restart");
    let shared = unique_topic("key-index-shared");
    create_topic(&topic, 1).await?;
    let needles = haystack(&topic).await?;
    let config = || {
        kafkasocks::GatewayConfig::new(kafkasocks::KafkaConfig::new(bootstrap()))
            .limits(Limits::default().with_replay_records(1_024))
            .key_index_topic(shared.clone())
    };
    // A client of the whole topic from the log end (the topic's live reader is there),
    // then one for the key from earliest.
    let join = |gw: &TestGateway| {
        let client = Client::connect(ClientConfig::new(gw.url()));
        let all = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
        async move {
            while all.cursor().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut sub = client.subscribe(SUBSCRIBE, message("needle", ""), StartAt::Earliest);
            let got = collect(&mut sub, NEEDLES, Duration::from_secs(30)).await?;
            client.close();
            anyhow::Ok(got.iter().map(|d| d.offset).collect::<Vec<i64>>())
        }
    };

    let first = TestGateway::start_with(config(), streams(&topic), None).await?;
    assert_eq!(join(&first).await?, needles);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Every block the first gateway sealed (all but the open one) is in the shared topic.
    let sealed = (RECORDS / 1_024) as i64;
    while log_end(&shared).await? < sealed {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the blocks were not shared within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.shutdown.shutdown();
    let _ = first.task.await;

    let second = TestGateway::start_with(config(), streams(&topic), None).await?;
    assert_eq!(join(&second).await?, needles, "every record for the key, once, in order");
    let index_reads = counter(&second, "kafkasocks_key_index_reads_total").await?;
    let history_reads = counter(&second, "kafkasocks_catch_up_reads_total").await?;
    eprintln!("after the restart: {index_reads} records read to build the index, {history_reads} to serve the key");
    assert!(index_reads < 2_048.0, "the index was built again: {index_reads} records read");
    assert!(history_reads < (RECORDS / 4) as f64, "read {history_reads} records to serve 10");
    second.shutdown.shutdown();
    let _ = second.task.await;
    delete_topic(&topic).await?;
    delete_topic(&shared).await?;
    Ok(())
}
