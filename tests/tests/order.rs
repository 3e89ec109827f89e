//! Publish order: one connection's publishes for one key are produced in the order they
//! were sent, whatever the publish hook does in between (issue 11: 12 of 199 consecutive
//! pairs came out of order, and in the browser three posts landed third, first, second).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{Limits, Streams};
use kafkasocks_tests::*;
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_publishes_for_one_key_keep_their_send_order() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("order");
    create_topic(&topic, 3).await?;
    let limits = Limits::default()
        .with_max_publishes_per_second(1_000_000)
        .with_max_publishes_per_second_per_principal(1_000_000);
    // A validation hook that takes a random 0-5 ms, as an async check against a database
    // would; every record is for the same key.
    let streams = Streams::new().publish(PUBLISH, &topic, Jittery { max: Duration::from_millis(5) });
    let gw = TestGateway::start(streams, limits).await?;
    let c = RawClient::open(gw.addr).await?;
    let (mut sink, mut stream) = c.ws.split();
    let n = 10_000u64;
    // Pipelined within the gateway's in-flight bound (256 by default), as the clients do.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let returned = window.clone();
    let reader = tokio::spawn(async move {
        let mut receipts = HashMap::new();
        while (receipts.len() as u64) < n {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => match wire::Frame::decode(b)?.kind {
                    Some(Kind::Receipt(r)) => {
                        receipts.insert(r.id, (r.partition, r.offset));
                        returned.add_permits(1);
                    }
                    Some(Kind::Ping(_)) => {}
                    other => anyhow::bail!("unexpected {other:?}"),
                },
                Ok(Some(Ok(_))) => {}
                other => anyhow::bail!("after {} receipts: {other:?}", receipts.len()),
            }
        }
        Ok(receipts)
    });
    for id in 1..=n {
        window.acquire().await?.forget();
        let frame = wire::Frame {
            kind: Some(Kind::Publish(wire::Publish {
                id,
                method: PUBLISH.into(),
                payload: message("room-1", &id.to_string()),
                idempotency_key: Bytes::new(),
                ..Default::default()
            })),
        };
        sink.send(Message::Binary(frame.encode_to_vec().into())).await?;
    }
    let receipts = reader.await??;
    let partition = receipts[&1].0;
    let mut out_of_order = 0;
    for id in 2..=n {
        let (p, offset) = receipts[&id];
        assert_eq!(p, partition, "one key, one partition");
        if offset <= receipts[&(id - 1)].1 {
            out_of_order += 1;
        }
    }
    assert_eq!(out_of_order, 0, "consecutive publishes whose offsets are not in send order");
    delete_topic(&topic).await?;
    Ok(())
}

/// The receipts of every publish in flight must fit a connection's control queue: a
/// configuration where they could not is refused when the gateway binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflight_bound_beyond_the_control_queue_is_refused_at_start() -> anyhow::Result<()> {
    let limits = Limits::default().with_max_inflight_publishes(5_000);
    let started = TestGateway::start(streams("t"), limits).await;
    let why = format!("{:#}", started.err().expect("started"));
    assert!(why.contains("max_inflight_publishes (5000)") && why.contains("send_queue_frames (1024)"), "{why}");
    Ok(())
}
