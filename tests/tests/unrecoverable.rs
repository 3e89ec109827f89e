//! A cursor the log can no longer honour gets an explicit DATA_LOSS with the reason,
//! never a silent jump.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, Cursor, StartAt, Subscription};
use kafkasocks::{Code, Discontinuity, Limits, Status};
use kafkasocks_tests::*;

async fn confirmed_cursor(sub: &Subscription) -> Cursor {
    for _ in 0..400 {
        if let Some(c) = sub.cursor() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("subscription never confirmed")
}

async fn expect_data_loss(sub: &mut Subscription, want: Discontinuity) -> Status {
    let status = match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
        Ok(Some(Err(s))) => s,
        other => panic!("expected DATA_LOSS {want:?}, got {other:?}"),
    };
    assert_eq!(status.code(), Code::DataLoss, "{status}");
    assert_eq!(status.discontinuity(), Some(want), "{status}");
    // And then the subscription is over.
    assert!(tokio::time::timeout(Duration::from_millis(200), sub.next()).await.ok().flatten().is_none());
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_below_the_log_start_even_while_the_gateway_still_holds_the_records() -> anyhow::Result<()> {
    offset_below_the_log_start_even_while_the_gateway_still_holds_the_records_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_below_the_log_start_even_while_the_gateway_still_holds_the_records_over_sasl_ssl() -> anyhow::Result<()>
{
    offset_below_the_log_start_even_while_the_gateway_still_holds_the_records_on(Listener::SaslSsl).await
}

async fn offset_below_the_log_start_even_while_the_gateway_still_holds_the_records_on(
    listener: Listener,
) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("lowmark");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut first = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let mut cursor = confirmed_cursor(&first).await;
    let p = producer();
    for i in 0..10 {
        produce(&p, &topic, Some(0), b"k", format!("{i}").as_bytes()).await?;
    }
    // Streamed live: the gateway's replay ring now holds offsets 0..10.
    assert_eq!(collect(&mut first, 10, Duration::from_secs(10)).await?.len(), 10);
    drop(first);
    delete_records_before(&topic, 0, 5).await?;
    cursor.positions = vec![(0, 2)];
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor.clone()));
    expect_data_loss(&mut sub, Discontinuity::OffsetBelowLogStart).await;
    // From the new log start it works.
    cursor.positions = vec![(0, 5)];
    let mut ok = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    let d = tokio::time::timeout(Duration::from_secs(10), ok.next()).await?.unwrap()?;
    assert_eq!(d.offset, 5);
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_beyond_the_log_end() -> anyhow::Result<()> {
    offset_beyond_the_log_end_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_beyond_the_log_end_over_sasl_ssl() -> anyhow::Result<()> {
    offset_beyond_the_log_end_on(Listener::SaslSsl).await
}

async fn offset_beyond_the_log_end_on(listener: Listener) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("highmark");
    create_topic(&topic, 2).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let first = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let mut cursor = confirmed_cursor(&first).await;
    drop(first);
    cursor.positions[1].1 = 1000;
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    expect_data_loss(&mut sub, Discontinuity::OffsetBeyondEnd).await;
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_count_changed() -> anyhow::Result<()> {
    partition_count_changed_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_count_changed_over_sasl_ssl() -> anyhow::Result<()> {
    partition_count_changed_on(Listener::SaslSsl).await
}

async fn partition_count_changed_on(listener: Listener) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("grown");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut live = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let cursor = confirmed_cursor(&live).await;
    add_partitions(&topic, 2).await?;
    // A resume with the old cursor is refused ...
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    expect_data_loss(&mut sub, Discontinuity::PartitionsChanged).await;
    // ... and the subscription that was live is told too.
    expect_data_loss(&mut live, Discontinuity::PartitionsChanged).await;
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_deleted_and_recreated() -> anyhow::Result<()> {
    topic_deleted_and_recreated_on(Listener::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_deleted_and_recreated_over_sasl_ssl() -> anyhow::Result<()> {
    topic_deleted_and_recreated_on(Listener::SaslSsl).await
}

async fn topic_deleted_and_recreated_on(listener: Listener) -> anyhow::Result<()> {
    init_tracing();
    let topic = listener.topic("reborn");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start_on(listener, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut live = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let cursor = confirmed_cursor(&live).await;
    assert_eq!(cursor.topic_id.len(), 16, "the gateway learns the topic id");
    delete_topic(&topic).await?;
    // Creating it again succeeds once the deletion is complete.
    let mut created = false;
    for _ in 0..100 {
        if create_topic(&topic, 1).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "topic re-created");
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    expect_data_loss(&mut sub, Discontinuity::TopicRecreated).await;
    // The live subscription learns that its topic went away (deleted, or re-created).
    let status = match tokio::time::timeout(Duration::from_secs(20), live.next()).await {
        Ok(Some(Err(s))) => s,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(status.code(), Code::DataLoss);
    assert!(matches!(status.discontinuity(), Some(Discontinuity::TopicDeleted | Discontinuity::TopicRecreated)));
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}
