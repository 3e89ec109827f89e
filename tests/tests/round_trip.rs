//! Subscribe and publish through the gateway against the real broker.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kafkasocks::Limits;
use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_receipts_match_what_kafka_holds_and_subscribers_get_them() -> anyhow::Result<()> {
    publish_receipts_match_what_kafka_holds_and_subscribers_get_them_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_receipts_match_what_kafka_holds_and_subscribers_get_them_over_sasl_ssl() -> anyhow::Result<()> {
    publish_receipts_match_what_kafka_holds_and_subscribers_get_them_on(Listener::SaslSsl).await
}

async fn publish_receipts_match_what_kafka_holds_and_subscribers_get_them_on(listener: Listener) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("rt");
    create_topic(&topic, 3).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    // One subscriber for room "a" (key-filtered), one for everything.
    let mut room_a = client.subscribe(SUBSCRIBE, message("a", ""), StartAt::Latest);
    let mut all = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    // Wait until both are confirmed (their cursor is known) before publishing.
    for _ in 0..200 {
        if room_a.cursor().is_some() && all.cursor().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(room_a.cursor().is_some() && all.cursor().is_some(), "subscriptions confirmed");

    let mut receipts = Vec::new();
    for i in 0..20 {
        let room = if i % 2 == 0 { "a" } else { "b" };
        let r = client.publish(PUBLISH, message(room, &format!("m{i}"))).await?;
        assert_eq!(r.topic, topic);
        assert!(!r.duplicate);
        // The receipt names exactly the record a plain consumer finds there.
        let (key, value) = read_back(&topic, r.partition, r.offset).await?;
        assert_eq!(key, room.as_bytes());
        assert_eq!(value, message(room, &format!("m{i}")).to_vec());
        receipts.push((room, r));
    }
    // Room "a" receives exactly its 10 records, with the receipts' coordinates.
    for (_, r) in receipts.iter().filter(|(room, _)| *room == "a") {
        let d = tokio::time::timeout(Duration::from_secs(10), room_a.next()).await?.unwrap()?;
        assert_eq!((d.partition, d.offset), (r.partition, r.offset));
        assert_eq!(&d.key[..], b"a");
    }
    // The unfiltered subscription gets all 20; per partition in offset order.
    let mut got = Vec::new();
    for _ in 0..20 {
        let d = tokio::time::timeout(Duration::from_secs(10), all.next()).await?.unwrap()?;
        got.push((d.partition, d.offset));
    }
    let mut expected: Vec<_> = receipts.iter().map(|(_, r)| (r.partition, r.offset)).collect();
    expected.sort_unstable();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
    for p in 0..3 {
        let offs: Vec<_> = got.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "partition {p} in order: {offs:?}");
    }
    // Nothing else arrives for room "a".
    assert!(tokio::time::timeout(Duration::from_millis(300), room_a.next()).await.is_err());

    // Metrics saw it.
    let text = gw.metrics_text().await?;
    let value = |name: &str| metric(&text, name);
    assert_eq!(value("kafkasocks_publishes_total"), 20.0);
    assert!(value("kafkasocks_records_delivered_total") >= 30.0);
    assert_eq!(value("kafkasocks_connections_open"), 1.0);
    assert_eq!(value("kafkasocks_subscriptions_open"), 2.0);
    let (status, body) = http_get(gw.metrics.unwrap(), "/healthz").await?;
    assert_eq!((status, body.trim()), (200, "ok"));
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotency_key_gets_the_first_receipt_and_produces_once() -> anyhow::Result<()> {
    a_retried_idempotency_key_gets_the_first_receipt_and_produces_once_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotency_key_gets_the_first_receipt_and_produces_once_over_sasl_ssl() -> anyhow::Result<()> {
    a_retried_idempotency_key_gets_the_first_receipt_and_produces_once_on(Listener::SaslSsl).await
}

async fn a_retried_idempotency_key_gets_the_first_receipt_and_produces_once_on(
    listener: Listener,
) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("dedup");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let key = Bytes::from_static(b"order-42");
    let first = client.publish_with_key(PUBLISH, message("k", "once"), key.clone()).await?;
    // Across a reconnect, too.
    client.reconnect();
    let second = client.publish_with_key(PUBLISH, message("k", "once"), key.clone()).await?;
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!((first.partition, first.offset), (second.partition, second.offset));
    // Kafka holds exactly one record: the next publish lands right after it.
    let third = client.publish(PUBLISH, message("k", "other")).await?;
    assert_eq!(third.offset, first.offset + 1);
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_and_timestamp_starts() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("starts");
    create_topic(&topic, 1).await?;
    let p = producer();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(produce(&p, &topic, Some(0), b"k", format!("v{i}").as_bytes()).await?.1);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle_ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 5..8 {
        offsets.push(produce(&p, &topic, Some(0), b"k", format!("v{i}").as_bytes()).await?.1);
    }
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut earliest = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    for want in &offsets {
        let d = tokio::time::timeout(Duration::from_secs(10), earliest.next()).await?.unwrap()?;
        assert_eq!(d.offset, *want);
    }
    let mut by_time = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Timestamp(middle_ts));
    for want in &offsets[5..] {
        let d = tokio::time::timeout(Duration::from_secs(10), by_time.next()).await?.unwrap()?;
        assert_eq!(d.offset, *want);
    }
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_streams_share_the_gateway_and_its_rules() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    init_tracing();
    let topic = unique_topic("local");
    create_topic(&topic, 2).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let me = kafkasocks::Principal::new("grpc-user");
    let mut room_a = gw.local.subscribe(me.clone(), SUBSCRIBE, &message("a", ""), StartAt::Earliest).await?;
    // A WebSocket client publishes; the in-process subscriber sees exactly its room.
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut want = Vec::new();
    for (i, room) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        let r = client.publish(PUBLISH, message(room, &format!("{i}"))).await?;
        if *room == "a" {
            want.push((r.partition, r.offset));
        }
    }
    // An in-process publish, with dedup across retries.
    let key = Bytes::from_static(b"local-1");
    let r1 = gw.local.publish(me.clone(), PUBLISH, message("a", "local"), key.clone()).await?;
    let r2 = gw.local.publish(me.clone(), PUBLISH, message("a", "local"), key).await?;
    assert!(!r1.duplicate && r2.duplicate && r1.offset == r2.offset);
    want.push((r1.partition, r1.offset));
    let mut got = Vec::new();
    while got.len() < want.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), room_a.next()).await?.unwrap()?;
        assert_eq!(&d.key[..], b"a");
        got.push((d.partition, d.offset));
    }
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    // Wrong kinds and unknown methods are refused the same way as over WebSockets.
    assert_eq!(
        gw.local.subscribe(me.clone(), PUBLISH, &[], StartAt::Latest).await.err().map(|s| s.code()),
        Some(kafkasocks::Code::InvalidArgument)
    );
    assert_eq!(
        gw.local.publish(me, "x.Y/Z", Bytes::new(), Bytes::new()).await.err().map(|s| s.code()),
        Some(kafkasocks::Code::NotFound)
    );
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}
