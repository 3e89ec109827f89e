//! Flow control, slow consumers, TLS, shutdown, and Kafka going away mid-stream.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, Cursor, StartAt};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{GatewayConfig, KafkaConfig, Limits, TlsConfig};
use kafkasocks_tests::*;

async fn produce_n(topic: &str, n: usize, size: usize) -> anyhow::Result<Vec<i64>> {
    let p = producer();
    let body = vec![b'x'; size];
    let mut offsets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let futs = chunk.iter().map(|_| produce(&p, topic, Some(0), b"k", &body));
        for r in futures_util::future::join_all(futs).await {
            offsets.push(r?.1);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_out_of_credit_is_paused_without_slowing_a_fast_one_and_loses_nothing() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("credit");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let fast = Client::connect(ClientConfig::new(gw.url()));
    let slow = Client::connect(ClientConfig::new(gw.url()).credit_window(50));
    let mut fast_sub = fast.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    let mut slow_sub = slow.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while fast_sub.cursor().is_none() || slow_sub.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let offsets = produce_n(&topic, 3000, 100).await?;
    // The fast client gets everything while the slow one takes nothing.
    let got = collect(&mut fast_sub, 3000, Duration::from_secs(30)).await?;
    assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), offsets);
    let text = gw.metrics_text().await?;
    assert!(metric(&text, "kafkasocks_subscription_pauses_total") >= 1.0, "the slow subscription paused");
    // The slow one was held at its credit, not fed without bound ...
    assert!(metric(&text, "kafkasocks_records_delivered_total") < 3000.0 + 200.0, "{text}");
    // ... and, once it reads, gets every record exactly once.
    let got = collect(&mut slow_sub, 3000, Duration::from_secs(30)).await?;
    assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), offsets);
    assert_eq!(slow_sub.duplicates_dropped(), 0);
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_is_closed_with_4008_and_resumes_without_loss() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("stall");
    create_topic(&topic, 1).await?;
    let limits = Limits::default()
        .with_send_queue_bytes(64 << 10)
        .with_slow_consumer_timeout(Duration::from_millis(500))
        .with_default_credit(100_000);
    let gw = TestGateway::start(streams(&topic), limits).await?;
    // The staller subscribes with all the credit it may, then stops reading.
    let mut staller = RawClient::open(gw.addr).await?;
    staller
        .send(Kind::Subscribe(wire::Subscribe {
            id: 1,
            method: SUBSCRIBE.into(),
            request: message("", ""),
            start: None,
            credit: 100_000,
        }))
        .await?;
    let subscribed = match staller.recv().await? {
        Some(Kind::Subscribed(s)) => s,
        other => panic!("expected Subscribed, got {other:?}"),
    };
    let fast = Client::connect(ClientConfig::new(gw.url()));
    let mut fast_sub = fast.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while fast_sub.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 30 MB: far more than socket buffers hold.
    let offsets = produce_n(&topic, 30_000, 1000).await?;
    let got = collect(&mut fast_sub, 30_000, Duration::from_secs(60)).await?;
    assert_eq!(got.len(), offsets.len(), "the fast client is unaffected");
    // Wait for the gateway to give up on the staller ...
    let mut closed = false;
    for _ in 0..400 {
        if metric(&gw.metrics_text().await?, "kafkasocks_slow_consumer_disconnects_total") >= 1.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(closed, "the staller was closed as a slow consumer");
    // ... then read what reached it, up to the close.
    let (code, frames) = staller.until_close().await;
    assert!(code == 4008 || code == 1006, "close code {code}");
    let mut next = subscribed.cursor.clone().unwrap().positions[0].next_offset;
    let mut seen = 0usize;
    for f in frames {
        if let Kind::Data(d) = f {
            for r in d.records {
                assert_eq!(r.offset, next, "in order, no gap");
                next = r.offset + 1;
                seen += 1;
            }
        }
    }
    assert!(seen < 30_000, "the staller did not get everything before the close ({seen})");
    // It resumes from its cursor and gets the rest, exactly once.
    let cursor = Cursor { topic_id: subscribed.cursor.unwrap().topic_id, positions: vec![(0, next)] };
    let again = Client::connect(ClientConfig::new(gw.url()));
    let mut rest = again.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    let got = collect(&mut rest, 30_000 - seen, Duration::from_secs(60)).await?;
    assert_eq!(got.first().map(|d| d.offset), Some(next));
    assert_eq!(got.last().map(|d| d.offset), offsets.last().copied());
    assert!(got.windows(2).all(|w| w[0].offset < w[1].offset));
    delete_topic(&topic).await?;
    Ok(())
}

/// Reads `c` up to its end: the records of its Data frames in arrival order, and the close
/// frame's code and reason, or how the connection ended without one (1006).
async fn read_to_close(c: &mut RawClient) -> (Vec<wire::Record>, Result<(u16, String), String>) {
    use futures_util::StreamExt as _;
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut records = Vec::new();
    loop {
        let m = match tokio::time::timeout(Duration::from_secs(30), c.ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return (records, Err(e.to_string())),
            Ok(None) => return (records, Err("the stream ended".into())),
            Err(_) => return (records, Err("nothing for 30 s".into())),
        };
        match m {
            Message::Binary(b) => {
                if let Some(Kind::Data(d)) = wire::Frame::decode(b).unwrap().kind {
                    records.extend(d.records);
                }
            }
            Message::Close(c) => {
                return (records, Ok(c.map_or((1005, String::new()), |c| (u16::from(c.code), c.reason.to_string()))));
            }
            _ => {}
        }
    }
}

/// A subscriber that stops reading until long after the slow-consumer timeout still gets
/// its 4008 when it reads again: the gateway drops what it had queued for it and keeps
/// writing the Close for `close_timeout`, so after the records its socket buffers held the
/// client reads a Close frame, not a reset or an end without one. It then resumes from its
/// cursor without gap or duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_that_reads_again_gets_its_4008_close_frame() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("stall-close");
    create_topic(&topic, 1).await?;
    // 16 MB, far more than the loopback socket buffers between gateway and client hold.
    let offsets = produce_n(&topic, 16_000, 1000).await?;
    let limits = Limits::default()
        .with_send_queue_bytes(64 << 10)
        .with_slow_consumer_timeout(Duration::from_secs(1))
        .with_close_timeout(Duration::from_secs(20))
        .with_default_credit(100_000);
    let gw = TestGateway::start(streams(&topic), limits).await?;
    let mut staller = RawClient::open(gw.addr).await?;
    staller
        .send(Kind::Subscribe(wire::Subscribe {
            id: 1,
            method: SUBSCRIBE.into(),
            request: message("", ""),
            start: Some(wire::StartPosition {
                position: Some(wire::start_position::Position::Earliest(wire::Empty {})),
            }),
            credit: 100_000,
        }))
        .await?;
    let subscribed = match staller.recv().await? {
        Some(Kind::Subscribed(s)) => s,
        other => panic!("expected Subscribed, got {other:?}"),
    };
    // The staller reads nothing more. The gateway gives up on it after the timeout ...
    let waited = std::time::Instant::now();
    while metric(&gw.metrics_text().await?, "kafkasocks_slow_consumer_disconnects_total") < 1.0 {
        assert!(waited.elapsed() < Duration::from_secs(30), "the staller was never closed as a slow consumer");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ... and the staller goes on not reading for longer than the gateway once kept a
    // connection whose writer was blocked (5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let resumed = std::time::Instant::now();
    let (records, close) = read_to_close(&mut staller).await;
    let (code, reason) = close.unwrap_or_else(|end| {
        panic!("a Close frame, not a reset or an end without one: {end} after {} records", records.len())
    });
    assert_eq!(code, 4008, "closed as a slow consumer: {reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(resumed.elapsed() < Duration::from_secs(10), "the Close came right after the buffered records");
    // What reached it is in order from its start, and not everything.
    let start = subscribed.cursor.clone().unwrap().positions[0].next_offset;
    assert_eq!(start, offsets[0]);
    let mut next = start;
    for r in &records {
        assert_eq!(r.offset, next, "in order, no gap");
        next = r.offset + 1;
    }
    assert!(records.len() < offsets.len(), "the staller did not get everything before the close");
    // It resumes from its cursor and gets the rest, exactly once.
    let cursor = Cursor { topic_id: subscribed.cursor.unwrap().topic_id, positions: vec![(0, next)] };
    let again = Client::connect(ClientConfig::new(gw.url()));
    let mut rest = again.subscribe(SUBSCRIBE, message("", ""), StartAt::Cursor(cursor));
    let got = collect(&mut rest, offsets.len() - records.len(), Duration::from_secs(60)).await?;
    assert_eq!(got.first().map(|d| d.offset), Some(next));
    assert_eq!(got.last().map(|d| d.offset), offsets.last().copied());
    assert!(got.windows(2).all(|w| w[0].offset + 1 == w[1].offset));
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_round_trip() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("tls");
    create_topic(&topic, 1).await?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let dir = std::env::temp_dir().join(format!("kafkasocks-tls-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap()))
        .tls(TlsConfig::from_pem_files(dir.join("cert.pem"), dir.join("key.pem")));
    let gw = TestGateway::start_with(config, streams(&topic), None).await?;
    let url = format!("wss://localhost:{}/streams", gw.addr.port());
    let client = Client::connect(ClientConfig::new(url).add_root_certificates_pem(cert.cert.pem().as_bytes())?);
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let r = client.publish(PUBLISH, message("a", "secret")).await?;
    let d = collect(&mut sub, 1, Duration::from_secs(10)).await?;
    assert_eq!(d[0].offset, r.offset);
    // A plain ws:// client gets nowhere on the TLS port.
    assert!(RawClient::connect(gw.addr).await.is_err());
    std::fs::remove_dir_all(&dir)?;
    delete_topic(&topic).await?;
    Ok(())
}

/// A publish hook that tells the test when a publish is in flight, then waits a little.
struct SlowPublish(tokio::sync::mpsc::UnboundedSender<()>);

impl kafkasocks::PublishHook for SlowPublish {
    fn prepare(
        &self,
        _ctx: &kafkasocks::RequestContext,
        payload: bytes::Bytes,
    ) -> kafkasocks::BoxFuture<Result<kafkasocks::OutgoingRecord, kafkasocks::Status>> {
        let started = self.0.clone();
        Box::pin(async move {
            let _ = started.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(kafkasocks::OutgoingRecord { key: None, payload, headers: Vec::new() })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_answers_inflight_publishes_then_closes_1001() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("drain");
    create_topic(&topic, 1).await?;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let streams = kafkasocks::Streams::new().publish(PUBLISH, &topic, SlowPublish(started_tx));
    let gw = TestGateway::start(streams, Limits::default()).await?;
    let mut c = RawClient::open(gw.addr).await?;
    c.send(Kind::Publish(wire::Publish {
        id: 9,
        method: PUBLISH.into(),
        payload: message("k", "v"),
        ..Default::default()
    }))
    .await?;
    started.recv().await;
    gw.shutdown.shutdown();
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 1001);
    assert!(matches!(frames.first(), Some(Kind::GoAway(_))), "{frames:?}");
    assert!(
        frames.iter().any(|f| matches!(f, Kind::Receipt(r) if r.id == 9)),
        "in-flight publish answered: {frames:?}"
    );
    tokio::time::timeout(Duration::from_secs(20), gw.task).await???;
    assert!(RawClient::connect(gw.addr).await.is_err(), "no longer accepting");
    delete_topic(&topic).await?;
    Ok(())
}

/// Kafka going away mid-stream, with rdkafka's in-process mock cluster: a shared real
/// broker cannot be stopped under the other tests, and the mock can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_going_away_mid_stream_fails_publishes_cleanly_and_the_stream_continues() -> anyhow::Result<()> {
    init_tracing();
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("mocked", 1, 1)?;
    let config = GatewayConfig::new(KafkaConfig::new(mock.bootstrap_servers()))
        .limits(Limits::default().with_publish_timeout(Duration::from_secs(2)));
    let gw = TestGateway::start_with(config, streams("mocked"), None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let before = client.publish(PUBLISH, message("k", "before")).await?;
    mock.broker_down(1)?;
    let during = client.publish_with_key(PUBLISH, message("k", "during"), bytes::Bytes::new()).await;
    let err = during.expect_err("no receipt while Kafka is down");
    assert!(matches!(err.code(), kafkasocks::Code::Unavailable | kafkasocks::Code::DeadlineExceeded), "{err}");
    mock.broker_up(1)?;
    let after = client.publish(PUBLISH, message("k", "after")).await?;
    // Every acknowledged record reaches the subscriber, in order, nothing twice.
    let mut got = Vec::new();
    while got.last() != Some(&after.offset) {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.unwrap()?;
        got.push(d.offset);
    }
    assert_eq!(got.first(), Some(&before.offset));
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    client.close();
    Ok(())
}

/// A subscription that runs out of credit while catching up (reading history, not the
/// live feed) is counted as paused too, once per pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_are_counted_on_every_path_once_each() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("pauses");
    create_topic(&topic, 1).await?;
    produce_n(&topic, 200, 10).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let before = metric(&gw.metrics_text().await?, "kafkasocks_subscription_pauses_total").max(0.0);
    let mut c = RawClient::open(gw.addr).await?;
    c.send(Kind::Subscribe(wire::Subscribe {
        id: 1,
        method: SUBSCRIBE.into(),
        request: message("", ""),
        start: Some(wire::StartPosition { position: Some(wire::start_position::Position::Earliest(wire::Empty {})) }),
        credit: 5,
    }))
    .await?;
    let mut records = 0;
    while records < 5 {
        match c.recv().await? {
            Some(Kind::Data(d)) => records += d.records.len(),
            Some(Kind::Subscribed(_) | Kind::Checkpoint(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = metric(&gw.metrics_text().await?, "kafkasocks_subscription_pauses_total") - before;
    assert_eq!(paused, 1.0, "one pause, however often the record was offered again");
    delete_topic(&topic).await?;
    Ok(())
}

/// Subscriptions ended the moment they are opened (Subscribe then Unsubscribe in one
/// write, the id reused each time) leave nothing behind: after 1,000 of them, a record for
/// their key reaches no one, no frame names an ended id after its `End`, and the one
/// subscription still open (another key, the same id) gets only its own records. (A
/// driver that joined the hub's index just after the handle detached stayed there for
/// good, delivering under an id the client had ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_ended_as_they_open_leave_nothing_in_the_hub() -> anyhow::Result<()> {
    use futures_util::SinkExt as _;
    use prost::Message as _;
    init_tracing();
    let topic = unique_topic("churn");
    create_topic(&topic, 3).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let p = producer();
    // A live hub: records flow while the churn runs.
    for i in 0..300 {
        produce(&p, &topic, None, format!("old{i}").as_bytes(), &message(&format!("old{i}"), "x")).await?;
    }
    produce(&p, &topic, None, b"churn", &message("churn", "before")).await?;
    let mut c = RawClient::open(gw.addr).await?;
    let frame = |kind: Kind| bytes::Bytes::from(wire::Frame { kind: Some(kind) }.encode_to_vec());
    let sub_from = |key: &str, earliest: bool| {
        let start = earliest
            .then(|| wire::StartPosition { position: Some(wire::start_position::Position::Earliest(wire::Empty {})) });
        frame(Kind::Subscribe(wire::Subscribe {
            id: 1,
            method: SUBSCRIBE.into(),
            request: message(key, ""),
            start,
            credit: 0,
        }))
    };
    let sub = |key: &str| sub_from(key, false);
    let unsub = frame(Kind::Unsubscribe(wire::Unsubscribe { id: 1 }));
    let mut ends = 0;
    for round in 0..1000 {
        // Half from the log end, ended in the same write; half from the start of the log
        // (catching up partition by partition), ended as soon as they are announced.
        if round % 2 == 0 {
            c.ws.feed(tokio_tungstenite::tungstenite::Message::Binary(sub("churn"))).await?;
        } else {
            c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(sub_from("churn", true))).await?;
            match c.recv().await? {
                Some(Kind::Subscribed(_)) => {}
                other => anyhow::bail!("round {round}: expected Subscribed, got {other:?}"),
            }
        }
        c.ws.feed(tokio_tungstenite::tungstenite::Message::Binary(unsub.clone())).await?;
        c.ws.flush().await?;
        // Up to its End: Subscribed may come first, and records of the catch-up.
        loop {
            match c.recv().await? {
                Some(Kind::Subscribed(_)) if round % 2 == 0 => {}
                Some(Kind::Data(_)) if round % 2 == 1 => {}
                Some(Kind::End(e)) if e.id == 1 => {
                    ends += 1;
                    break;
                }
                other => anyhow::bail!("round {round}: unexpected {other:?}"),
            }
        }
        if round % 100 == 0 {
            produce(&p, &topic, None, b"churn", &message("churn", "during")).await?;
        }
    }
    assert_eq!(ends, 1000);
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(sub("mine"))).await?;
    let Some(Kind::Subscribed(_)) = c.recv().await? else { anyhow::bail!("expected Subscribed") };
    for _ in 0..20 {
        produce(&p, &topic, None, b"churn", &message("churn", "after")).await?;
    }
    produce(&p, &topic, None, b"mine", &message("mine", "mine")).await?;
    match c.recv().await? {
        Some(Kind::Data(d)) => {
            let keys: Vec<_> = d.records.iter().map(|r| r.key.clone()).collect();
            assert!(keys.iter().all(|k| &k[..] == b"mine"), "records of ended subscriptions: {keys:?}");
        }
        other => anyhow::bail!("expected Data, got {other:?}"),
    }
    assert!(gw.metrics_text().await?.lines().any(|l| l == "kafkasocks_subscriptions_open 1"), "one subscription open");
    delete_topic(&topic).await?;
    Ok(())
}

/// A TCP stream that keeps a copy of every byte it reads: the frames as the gateway put
/// them on the wire, before the client's WebSocket reassembles fragments.
struct Tap {
    tcp: tokio::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Tap {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl tokio::io::AsyncWrite for Tap {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The (opcode, FIN, payload length) of each server frame in `bytes`, an HTTP upgrade
/// answer followed by unmasked WebSocket frames (RFC 6455 section 5.2).
fn server_frames(bytes: &[u8]) -> Vec<(u8, bool, usize)> {
    let start = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer") + 4;
    let (mut at, mut frames) = (start, Vec::new());
    while at + 2 <= bytes.len() {
        let (b0, b1) = (bytes[at], bytes[at + 1]);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, header) = match b1 & 0x7f {
            126 if at + 4 <= bytes.len() => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, 4),
            127 if at + 10 <= bytes.len() => {
                (u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if at + header + len > bytes.len() {
            break;
        }
        frames.push((b0 & 0x0f, b0 & 0x80 != 0, len));
        at += header + len;
    }
    frames
}

/// A catch-up leaves the gateway in Data messages of up to 256 KiB; tungstenite keeps the
/// largest frame a connection ever wrote in its write buffer for the connection's life, so
/// whole messages cost an idle connection what its catch-up was (110 KB each, bench/
/// `deploy`). The gateway sends them in fragments of at most its write buffer, and the
/// client still gets every record once, in order, in whole messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_is_written_in_fragments_no_larger_than_the_write_buffer() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("fragments");
    create_topic(&topic, 1).await?;
    let limits = Limits::default().with_default_credit(100_000);
    let write_buffer = limits.write_buffer_bytes;
    let gw = TestGateway::start(streams(&topic), limits).await?;
    // The records go through the topic's live reader into the replay ring (a watcher made
    // the reader first), so the catch-up below is served from memory in whole batches.
    let watcher = Client::connect(ClientConfig::new(gw.url()));
    let mut all = watcher.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while all.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let offsets = produce_n(&topic, 4000, 200).await?;
    collect(&mut all, offsets.len(), Duration::from_secs(30)).await?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tap = Tap { tcp: tokio::net::TcpStream::connect(gw.addr).await?, seen: seen.clone() };
    let mut c = RawClient::connect_on(tap, gw.addr, Some("kafkasocks.v1")).await?.hello("").await?;
    c.send(Kind::Subscribe(wire::Subscribe {
        id: 1,
        method: SUBSCRIBE.into(),
        request: message("", ""),
        start: Some(wire::StartPosition { position: Some(wire::start_position::Position::Earliest(wire::Empty {})) }),
        credit: 100_000,
    }))
    .await?;
    let mut got = Vec::new();
    let mut largest_message = 0usize;
    while got.len() < offsets.len() {
        if let Some(Kind::Data(d)) = c.recv().await? {
            largest_message = largest_message.max(d.records.iter().map(|r| r.payload.len()).sum());
            got.extend(d.records.iter().map(|r| r.offset));
        }
    }
    assert_eq!(got, offsets, "every record once, in order");
    assert!(largest_message > 4 * write_buffer, "the catch-up was batched ({largest_message} B)");
    let frames = server_frames(&seen.lock().unwrap());
    let largest_frame = frames.iter().map(|f| f.2).max().unwrap_or(0);
    assert!(largest_frame <= write_buffer, "a frame of {largest_frame} B with a write buffer of {write_buffer} B");
    let continuations = frames.iter().filter(|f| f.0 == 0).count();
    assert!(continuations > 0, "large messages went out in fragments");
    // Every fragmented message ends with a FIN, and only continuations follow its first frame.
    let mut open = false;
    for &(op, fin, _) in &frames {
        match op {
            0 => assert!(open, "a continuation outside a fragmented message"),
            1 | 2 => assert!(!open, "a new message inside a fragmented one"),
            _ => assert!(fin, "control frames are never fragmented"),
        }
        if op <= 2 {
            open = !fin;
        }
    }
    watcher.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// A subscription that makes the topic's live reader (the first on this gateway) from
/// `earliest`, in a partition of 300,000 records with one for its key near the start: the
/// record reaches the client while the reader is still reading the backlog. It came only
/// once the reader had read all 300,000: a reader that always has a record ready never
/// gave its worker back to the connection writer it had woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reading_a_backlog_lets_what_it_delivered_go_out() -> anyhow::Result<()> {
    const BACKLOG: usize = 300_000;
    init_tracing();
    let topic = unique_topic("backlog");
    create_topic(&topic, 1).await?;
    let p = producer();
    let mut needle = None;
    for chunk in 0..BACKLOG / 1_000 {
        let sends = (0..1_000).map(|i| {
            let key: &[u8] = if chunk == 0 && i == 100 { b"needle" } else { b"other" };
            let (p, topic) = (&p, &topic);
            async move { produce(p, topic, Some(0), key, b"v").await.map(|r| (key, r.1)) }
        });
        for r in futures_util::future::join_all(sends).await {
            if let (b"needle", offset) = r? {
                needle = Some(offset);
            }
        }
    }
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = client.subscribe(SUBSCRIBE, message("needle", ""), StartAt::Earliest);
    let got = collect(&mut sub, 1, Duration::from_secs(30)).await?;
    let read = metric(&gw.metrics_text().await?, "kafkasocks_live_reads_total");
    assert_eq!(Some(got[0].offset), needle);
    eprintln!("records the live reader had read when the first record arrived: {read}");
    assert!(read < (BACKLOG / 2) as f64, "the record came after {read} of {BACKLOG} records were read");
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}
