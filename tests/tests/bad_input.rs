//! Bad input gets a clear error frame or close code, never a panic, and the gateway
//! keeps serving everyone else.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Context as _;

use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{Code, GatewayConfig, KafkaConfig, Limits, Principal, Status};
use kafkasocks_tests::*;

fn error_of(k: Option<Kind>) -> wire::Error {
    match k {
        Some(Kind::Error(e)) => e,
        other => panic!("expected Error, got {other:?}"),
    }
}

fn subscribe(id: u32, method: &str) -> Kind {
    Kind::Subscribe(wire::Subscribe { id, method: method.into(), request: message("", ""), start: None, credit: 0 })
}

fn publish(id: u64, method: &str, key: &[u8]) -> Kind {
    Kind::Publish(wire::Publish {
        id,
        method: method.into(),
        payload: message("k", "v"),
        idempotency_key: key.to_vec().into(),
        ..Default::default()
    })
}

async fn gateway(limits: Limits) -> anyhow::Result<(TestGateway, String)> {
    let topic = unique_topic("bad");
    create_topic(&topic, 1).await?;
    Ok((TestGateway::start(streams(&topic), limits).await?, topic))
}

/// The gateway still serves a well-behaved client.
async fn still_serves(gw: &TestGateway) -> anyhow::Result<()> {
    let mut c = RawClient::open(gw.addr).await?;
    c.send(Kind::Ping(wire::Ping { nonce: 7 })).await?;
    match c.recv().await? {
        Some(Kind::Pong(p)) => assert_eq!(p.nonce, 7),
        other => panic!("expected Pong, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_with_1002_after_an_error() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default()).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send_bytes(vec![0x0a, 0xff, 0xff]).await?; // a length past the end
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 1002);
    assert_eq!(error_of(frames.into_iter().next()).code, wire::Code::InvalidArgument as i32);
    still_serves(&gw).await?;
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_types_get_unimplemented_and_the_session_goes_on() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default()).await?;
    let mut c = RawClient::open(gw.addr).await?;
    // Field 99 of Frame: a frame type from the future.
    c.send_bytes(vec![0x9a, 0x06, 0x00]).await?;
    assert_eq!(error_of(c.recv().await?).code, wire::Code::Unimplemented as i32);
    c.send(Kind::Ping(wire::Ping { nonce: 1 })).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Pong(_))));
    // A gateway-only frame from a client.
    c.send(Kind::Receipt(wire::Receipt::default())).await?;
    assert_eq!(error_of(c.recv().await?).code, wire::Code::InvalidArgument as i32);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_messages_close_with_1003() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default()).await?;
    let mut c = RawClient::open(gw.addr).await?;
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Text("hello".into())).await?;
    assert_eq!(c.until_close().await.0, 1003);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_close_with_1009_not_a_dropped_connection() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default().with_max_message_bytes(64 << 10)).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send_bytes(vec![0u8; 100 << 10]).await?;
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 1009);
    assert_eq!(error_of(frames.into_iter().next()).code, wire::Code::ResourceExhausted as i32);
    // Just under the limit is fine (a Ping with padding in an unknown field).
    let mut c = RawClient::open(gw.addr).await?;
    let mut ping = vec![0x62, 0x02, 0x08, 0x05];
    ping.extend_from_slice(&[0xfa, 0x01]); // Frame field 31, length-delimited ...
    let pad = (60 << 10) as u32;
    let mut v = pad;
    while v >= 0x80 {
        ping.push((v as u8) | 0x80);
        v >>= 7;
    }
    ping.push(v as u8);
    ping.extend(std::iter::repeat_n(0u8, pad as usize));
    c.send_bytes(ping).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Pong(p)) if p.nonce == 5));
    still_serves(&gw).await?;
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_hello_and_token_errors() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("auth");
    create_topic(&topic, 1).await?;
    let auth: AuthFn =
        Box::new(
            |token: &str| {
                if token == "good" { Ok(Principal::new("ada")) } else { Err(Status::unauthenticated("bad token")) }
            },
        );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap()))
        .limits(Limits::default().with_hello_timeout(Duration::from_millis(500)));
    let gw = TestGateway::start_with(config, streams(&topic), Some(auth)).await?;

    // No subprotocol: refused at the HTTP level.
    assert!(RawClient::connect_with_protocol(gw.addr, None).await.is_err());
    assert!(RawClient::connect_with_protocol(gw.addr, Some("other.v9")).await.is_err());
    // Bad token: Error UNAUTHENTICATED, close 4001.
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: "bad".into(),
        client: String::new(),
        ..Default::default()
    }))
    .await?;
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 4001);
    assert_eq!(error_of(frames.into_iter().next()).code, wire::Code::Unauthenticated as i32);
    // Unsupported version: 4000.
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 2,
        token: "good".into(),
        client: String::new(),
        ..Default::default()
    }))
    .await?;
    assert_eq!(c.until_close().await.0, 4000);
    // A first frame that is not Hello: 4000.
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(subscribe(1, SUBSCRIBE)).await?;
    assert_eq!(c.until_close().await.0, 4000);
    // No Hello at all: 4000 after the hello timeout.
    let mut c = RawClient::connect(gw.addr).await?;
    assert_eq!(c.until_close().await.0, 4000);
    // A bad token refresh: 4001; a good one: TokenAccepted.
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: "good".into(),
        client: String::new(),
        ..Default::default()
    }))
    .await?;
    assert!(matches!(c.recv().await?, Some(Kind::Welcome(_))));
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "good".into() })).await?;
    assert!(matches!(c.recv().await?, Some(Kind::TokenAccepted(_))));
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "forged".into() })).await?;
    assert_eq!(c.until_close().await.0, 4001);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_close_with_4002() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("expiry");
    create_topic(&topic, 1).await?;
    let auth: AuthFn = Box::new(|_: &str| {
        Ok(Principal::new("ada").expires_at(std::time::SystemTime::now() + Duration::from_millis(300)))
    });
    let gw =
        TestGateway::start_with(GatewayConfig::new(KafkaConfig::new(bootstrap())), streams(&topic), Some(auth)).await?;
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: "t".into(),
        client: String::new(),
        ..Default::default()
    }))
    .await?;
    match c.recv().await? {
        Some(Kind::Welcome(w)) => assert!(w.token_expires_at_ms > 0),
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(c.until_close().await.0, 4002);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_get_errors_naming_them_and_the_session_goes_on() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default().with_max_subscriptions(2)).await?;
    let mut c = RawClient::open(gw.addr).await?;
    let check = |e: wire::Error, id: u32, code: wire::Code| {
        assert_eq!((e.subscription_id, e.code), (id, code as i32), "{e:?}");
        assert!(!e.message.is_empty());
    };
    c.send(subscribe(0, SUBSCRIBE)).await?;
    check(error_of(c.recv().await?), 0, wire::Code::InvalidArgument);
    c.send(subscribe(5, "no.Such/Method")).await?;
    check(error_of(c.recv().await?), 5, wire::Code::NotFound);
    c.send(subscribe(6, PUBLISH)).await?;
    check(error_of(c.recv().await?), 6, wire::Code::InvalidArgument);
    c.send(Kind::Subscribe(wire::Subscribe {
        id: 7,
        method: SUBSCRIBE.into(),
        request: vec![0x0a, 0x05, b'x'].into(), // truncated request message
        start: None,
        credit: 0,
    }))
    .await?;
    check(error_of(c.recv().await?), 7, wire::Code::InvalidArgument);
    c.send(subscribe(1, SUBSCRIBE)).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Subscribed(s)) if s.id == 1));
    // Reusing an open id: refused as a frame (subscription id 0 in the Error, which
    // would otherwise end subscription 1), and subscription 1 goes on.
    c.send(subscribe(1, SUBSCRIBE)).await?;
    let refused = error_of(c.recv().await?);
    check(refused.clone(), 0, wire::Code::AlreadyExists);
    assert!(refused.message.contains("subscription 1 is open"), "{refused:?}");
    c.send(publish(1, PUBLISH, b"")).await?;
    let (mut receipt, mut data) = (false, false);
    while !(receipt && data) {
        match c.recv().await? {
            Some(Kind::Receipt(r)) => receipt = r.id == 1,
            Some(Kind::Data(d)) => data = d.subscription_id == 1,
            Some(Kind::Checkpoint(_)) => {}
            other => panic!("expected the receipt and subscription 1's record, got {other:?}"),
        }
    }
    c.send(subscribe(2, SUBSCRIBE)).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Subscribed(s)) if s.id == 2));
    c.send(subscribe(3, SUBSCRIBE)).await?;
    check(error_of(c.recv().await?), 3, wire::Code::ResourceExhausted);
    // Unsubscribing frees a slot.
    c.send(Kind::Unsubscribe(wire::Unsubscribe { id: 2 })).await?;
    assert!(matches!(c.recv().await?, Some(Kind::End(e)) if e.id == 2));
    c.send(subscribe(3, SUBSCRIBE)).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Subscribed(s)) if s.id == 3));
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_get_errors_and_limits_say_when_to_retry() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default().with_max_publishes_per_second(5)).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(publish(1, "no.Such/Method", b"")).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.publish_id, e.code), (1, wire::Code::NotFound as i32));
    c.send(publish(2, SUBSCRIBE, b"")).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.publish_id, e.code), (2, wire::Code::InvalidArgument as i32));
    c.send(publish(3, PUBLISH, &[7u8; 65])).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.publish_id, e.code), (3, wire::Code::InvalidArgument as i32));
    // The rate limit: the bucket holds 5 tokens; the 4 failures above used 0 (they are
    // refused before), so 5 succeed and the 6th is refused with a retry hint.
    for id in 10..15 {
        c.send(publish(id, PUBLISH, b"")).await?;
    }
    c.send(publish(15, PUBLISH, b"")).await?;
    let mut receipts = 0;
    let mut limited = None;
    for _ in 0..6 {
        match c.recv().await? {
            Some(Kind::Receipt(_)) => receipts += 1,
            Some(Kind::Error(e)) => limited = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(receipts, 5);
    let e = limited.unwrap();
    assert_eq!((e.publish_id, e.code), (15, wire::Code::ResourceExhausted as i32));
    assert!(e.retry_after_ms > 0);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_not_found_for_subscribe_and_publish() -> anyhow::Result<()> {
    init_tracing();
    let gw = TestGateway::start(streams("no-such-topic-kafkasocks"), Limits::default()).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(subscribe(1, SUBSCRIBE)).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.subscription_id, e.code), (1, wire::Code::NotFound as i32), "{e:?}");
    assert!(e.message.contains("no-such-topic-kafkasocks"), "{}", e.message);
    c.send(publish(2, PUBLISH, b"")).await?;
    let e = error_of(c.recv().await?);
    assert_eq!(e.publish_id, 2);
    assert!(
        e.code == wire::Code::NotFound as i32 || e.code == wire::Code::Unavailable as i32,
        "missing topic on publish: {e:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_at_start_gives_unavailable_not_a_panic() -> anyhow::Result<()> {
    init_tracing();
    // Nothing listens on port 9 (discard) on loopback.
    let config = GatewayConfig::new(KafkaConfig::new("127.0.0.1:9"))
        .limits(Limits::default().with_publish_timeout(Duration::from_secs(2)));
    let gw = TestGateway::start_with(config, streams("t"), None).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(subscribe(1, SUBSCRIBE)).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.subscription_id, e.code), (1, wire::Code::Unavailable as i32), "{e:?}");
    c.send(publish(2, PUBLISH, b"")).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.publish_id, e.code), (2, wire::Code::Unavailable as i32), "{e:?}");
    let (status, _) = http_get(gw.metrics.unwrap(), "/readyz").await?;
    assert_eq!(status, 503);
    // Still answering.
    still_serves(&gw).await?;
    let _ = Code::Unavailable;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503_before_the_upgrade() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default().with_max_connections(2)).await?;
    let _a = RawClient::open(gw.addr).await?;
    let _b = RawClient::open(gw.addr).await?;
    // Refused before the upgrade, with when to come back: no WebSocket to accept and close.
    let (status, response) = kafkasocks_tests::raw_upgrade(gw.addr, &[]).await?;
    assert_eq!(status, 503, "{response}");
    assert!(response.to_ascii_lowercase().contains("retry-after: 5"), "{response}");
    assert!(response.contains("limit of 2 connections"), "{response}");
    let text = gw.metrics_text().await?;
    assert!(text.contains("kafkasocks_connections_rejected_total{reason=\"connection_limit\"} 1"), "{text}");
    drop(_a);
    // A slot frees up once a connection ends.
    let mut ok = false;
    for _ in 0..100 {
        if RawClient::open(gw.addr).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot is usable");
    delete_topic(&topic).await?;
    Ok(())
}

/// Bursts of frames that each need an answer (1,100 Pings, 10,000 frames of an unknown
/// type, each more than the 1,024 control frames a connection queues), written at once
/// by a client that reads its answers: every one is answered and the connection stays
/// open. The gateway reads such a client only as fast as the answers leave (TCP pushes
/// back), it does not close it as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_requests_are_all_answered_never_closed_as_a_slow_consumer() -> anyhow::Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::Message;
    init_tracing();
    let (gw, topic) = gateway(Limits::default()).await?;
    let c = RawClient::open(gw.addr).await?;
    let (mut sink, mut stream) = c.ws.split();
    let reader = tokio::spawn(async move {
        let (mut pongs, mut errors) = (0usize, 0usize);
        while pongs < 1_100 || errors < 10_000 {
            let m = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            match m {
                Ok(Some(Ok(Message::Binary(b)))) => match wire::Frame::decode(b)?.kind {
                    Some(Kind::Pong(p)) if p.nonce > 0 => pongs += 1,
                    Some(Kind::Error(e)) if e.code == wire::Code::Unimplemented as i32 => errors += 1,
                    Some(Kind::Ping(_)) => {}
                    other => anyhow::bail!("unexpected {other:?}"),
                },
                Ok(Some(Ok(Message::Close(c)))) => anyhow::bail!("closed after {pongs} pongs, {errors} errors: {c:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => anyhow::bail!("read: {e}"),
                Ok(None) => anyhow::bail!("connection ended after {pongs} pongs, {errors} errors"),
                Err(_) => anyhow::bail!("stuck after {pongs} pongs, {errors} errors"),
            }
        }
        Ok((pongs, errors))
    });
    for nonce in 1..=1_100 {
        let ping = wire::Frame { kind: Some(Kind::Ping(wire::Ping { nonce })) }.encode_to_vec();
        sink.feed(Message::Binary(ping.into())).await?;
    }
    for _ in 0..10_000 {
        sink.feed(Message::Binary(vec![0x9a, 0x06, 0x00].into())).await?;
    }
    sink.flush().await?;
    assert_eq!(reader.await??, (1_100, 10_000));
    delete_topic(&topic).await?;
    Ok(())
}

/// A publish refused because too many await receipts takes no rate token: with one
/// publish in flight allowed and two tokens, a publish refused for the in-flight bound
/// leaves the second token for the next one. Rate-limit refusals say how long to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_for_the_inflight_bound_take_no_rate_token() -> anyhow::Result<()> {
    init_tracing();
    let limits = Limits::default().with_max_publishes_per_second(2).with_max_inflight_publishes(1);
    let (gw, topic) = gateway(limits).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(publish(1, PUBLISH, b"")).await?;
    c.send(publish(2, PUBLISH, b"")).await?;
    let (mut receipt, mut refused) = (false, None);
    while !receipt || refused.is_none() {
        match c.recv().await? {
            Some(Kind::Receipt(r)) => receipt = r.id == 1,
            Some(Kind::Error(e)) => refused = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    let e = refused.unwrap();
    assert_eq!((e.publish_id, e.code), (2, wire::Code::ResourceExhausted as i32));
    assert!(e.message.contains("awaiting receipts"), "{e:?}");
    // The second token is still there.
    c.send(publish(3, PUBLISH, b"")).await?;
    assert!(matches!(c.recv().await?, Some(Kind::Receipt(r)) if r.id == 3));
    // Now the bucket is empty: refused with the real wait (about 500 ms at 2/s).
    c.send(publish(4, PUBLISH, b"")).await?;
    let e = error_of(c.recv().await?);
    assert_eq!((e.publish_id, e.code), (4, wire::Code::ResourceExhausted as i32));
    assert!((100..=500).contains(&e.retry_after_ms), "{e:?}");
    delete_topic(&topic).await?;
    Ok(())
}

/// A message far over the limit (4 MiB against the default 1 MiB), which the client is
/// still writing when the gateway refuses it: the gateway reads on before it closes the
/// socket, so the client's writes are not reset (a reset fails a writer such as
/// Autobahn's, which then never reads the Close waiting in its buffer: 1006), and the
/// Close 1009 reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_writing_an_oversized_message_gets_1009_not_a_reset() -> anyhow::Result<()> {
    init_tracing();
    let (gw, topic) = gateway(Limits::default()).await?;
    for attempt in 0..3 {
        let mut c = RawClient::open(gw.addr).await?;
        c.send_bytes(vec![0u8; 4 << 20]).await.with_context(|| format!("attempt {attempt}: the 4 MiB message"))?;
        // And it goes on writing, 8 MiB more (the rest of a longer message, say), well
        // past the moment the gateway sent its Close.
        for chunk in 0..128 {
            let write = tokio::io::AsyncWriteExt::write_all(c.ws.get_mut(), &[0u8; 64 << 10]);
            tokio::time::timeout(Duration::from_secs(10), write)
                .await
                .with_context(|| format!("attempt {attempt}: chunk {chunk} not taken within 10 s"))?
                .with_context(|| format!("attempt {attempt}: chunk {chunk}: the gateway reset the connection"))?;
        }
        let (code, _) = c.until_close().await;
        assert_eq!(code, 1009, "attempt {attempt}");
    }
    still_serves(&gw).await?;
    delete_topic(&topic).await?;
    Ok(())
}

/// A publish the principal's budget refuses takes no token of its connection's: the
/// connection can publish again as soon as the principal's budget allows, not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_by_the_principal_budget_take_no_connection_token() -> anyhow::Result<()> {
    init_tracing();
    // Two connections from one address share its anonymous budget of 3/s; each has 2/s.
    let limits = Limits::default().with_max_publishes_per_second(2).with_max_publishes_per_second_per_principal(3);
    let (gw, topic) = gateway(limits).await?;
    let mut a = RawClient::open(gw.addr).await?;
    let mut b = RawClient::open(gw.addr).await?;
    // The budgets are taken as frames are read, in order, before Kafka is asked: a Pong
    // after the publishes says they have been counted. Waiting for receipts instead would
    // let a slow broker refill the shared budget before the publish that must be refused.
    async fn counted(c: &mut RawClient, ids: &[u64]) -> anyhow::Result<Vec<Kind>> {
        for &id in ids {
            c.send(publish(id, PUBLISH, b"")).await?;
        }
        c.send(Kind::Ping(wire::Ping { nonce: 9 })).await?;
        let mut seen = Vec::new();
        loop {
            match c.recv().await?.context("closed")? {
                Kind::Pong(_) => return Ok(seen),
                k => seen.push(k),
            }
        }
    }
    /// What `c` answered to `ids`, the answers `counted` has already seen included.
    async fn answers(c: &mut RawClient, mut seen: Vec<Kind>, ids: &[u64]) -> anyhow::Result<Vec<Kind>> {
        let id = |k: &Kind| match k {
            Kind::Receipt(r) => Some(r.id),
            Kind::Error(e) => Some(e.publish_id),
            _ => None,
        };
        while !ids.iter().all(|i| seen.iter().any(|k| id(k) == Some(*i))) {
            seen.push(c.recv().await?.context("closed")?);
        }
        Ok(seen)
    }
    let seen_a = counted(&mut a, &[1, 2]).await?;
    let seen_b = counted(&mut b, &[3, 4]).await?;
    let refused_at = tokio::time::Instant::now();
    let of_a = answers(&mut a, seen_a, &[1, 2]).await?;
    assert!(of_a.iter().all(|k| matches!(k, Kind::Receipt(_))), "{of_a:?}");
    let of_b = answers(&mut b, seen_b, &[3, 4]).await?;
    assert!(of_b.iter().any(|k| matches!(k, Kind::Receipt(r) if r.id == 3)), "{of_b:?}");
    let e = of_b.into_iter().find_map(|k| match k {
        Kind::Error(e) if e.publish_id == 4 => Some(e),
        _ => None,
    });
    let e = e.context("publish 4 was not refused")?;
    assert!(e.message.contains("of this principal"), "{e:?}");
    // 400 ms after the refusal the shared budget has a token again (3/s); the connection
    // still has the token the refused publish did not take (it would have only 0.8 more).
    tokio::time::sleep_until(refused_at + Duration::from_millis(400)).await;
    b.send(publish(5, PUBLISH, b"")).await?;
    match b.recv().await? {
        Some(Kind::Receipt(r)) => assert_eq!(r.id, 5),
        other => panic!("the connection's own token was taken by the refused publish: {other:?}"),
    }
    delete_topic(&topic).await?;
    Ok(())
}
