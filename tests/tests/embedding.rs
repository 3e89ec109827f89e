//! The gateway served by other servers (`GatewayService`, feature `axum`): an axum router
//! with its own routes and the gateway's on one port, a hand-written hyper server, any
//! byte stream; the drain reaching embedded sessions; and health split into liveness and
//! cached readiness, against a broker this test starts, kills and starts again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{Gateway, GatewayConfig, GatewayService, KafkaConfig, Limits, OriginPolicy, SUBPROTOCOL};
use kafkasocks_tests::{
    PUBLISH, RawClient, SUBSCRIBE, TestGateway, bootstrap, create_topic, delete_topic, http_get, init_tracing, message,
    metric, raw_upgrade, streams, unique_topic,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A gateway without a listener of its own, and the server that serves it.
struct Embedded {
    addr: SocketAddr,
    shutdown: kafkasocks::ShutdownHandle,
    gateway: JoinHandle<Result<(), kafkasocks::Error>>,
    server: JoinHandle<()>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        self.server.abort();
    }
}

async fn embedded_gateway(config: GatewayConfig, topic: &str) -> Result<Gateway> {
    let gateway = Gateway::builder(config).streams(streams(topic)).allow_anonymous().without_listener().bind().await?;
    assert_eq!(gateway.local_addr().port(), 0, "no listener of its own");
    Ok(gateway)
}

/// An axum application: its own `/hello` and the gateway's routes, on one port, served
/// with the peers' addresses.
async fn axum_app(config: GatewayConfig, topic: &str) -> Result<Embedded> {
    let gateway = embedded_gateway(config, topic).await?;
    let service = gateway.service();
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hi" }))
        .merge(kafkasocks::axum::routes(service));
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    let shutdown = gateway.shutdown_handle();
    Ok(Embedded { addr, shutdown, gateway: tokio::spawn(gateway.run()), server })
}

fn plain_config() -> GatewayConfig {
    GatewayConfig::new(KafkaConfig::new(bootstrap()))
}

async fn receipt_of(c: &mut RawClient) -> Result<wire::Receipt> {
    loop {
        match c.recv().await? {
            Some(Kind::Receipt(r)) => return Ok(r),
            Some(Kind::Error(e)) => bail!("error instead of a receipt: {e:?}"),
            _ => {}
        }
    }
}

fn publish(id: u64, key: &str, body: &str) -> Kind {
    Kind::Publish(wire::Publish { id, method: PUBLISH.into(), payload: message(key, body), ..Default::default() })
}

/// An axum router serves its own route and the gateway's on the same port: a kafkasocks
/// client subscribes and publishes through it, the Origin check still refuses (403) and
/// the admin answers are mounted beside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_router_serves_its_own_routes_and_the_gateway_on_one_port() -> Result<()> {
    init_tracing();
    let topic = unique_topic("embed-axum");
    create_topic(&topic, 1).await?;
    let config = plain_config().origins(OriginPolicy::new().allow("https://app.example"));
    let app = axum_app(config, &topic).await?;

    assert_eq!(http_get(app.addr, "/hello").await?, (200, "hi".to_owned()));

    let client = Client::connect(ClientConfig::new(format!("ws://{}/streams", app.addr)));
    let mut sub = client.subscribe(SUBSCRIBE, message("a", ""), StartAt::Latest);
    let began = Instant::now();
    while sub.cursor().is_none() {
        assert!(began.elapsed() < Duration::from_secs(20), "the subscription was never confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receipt = client.publish(PUBLISH, message("a", "through axum")).await?;
    assert_eq!(receipt.topic, topic);
    let delivered = tokio::time::timeout(Duration::from_secs(10), sub.next()).await?.context("ended")??;
    assert_eq!((delivered.partition, delivered.offset), (receipt.partition, receipt.offset));
    assert_eq!(&delivered.key[..], b"a");

    // The Origin rules apply through axum as on the gateway's listener.
    let (status, text) = raw_upgrade(app.addr, &[("Origin", "https://evil.example")]).await?;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("may not connect"), "{text}");
    assert_eq!(raw_upgrade(app.addr, &[("Origin", "https://app.example")]).await?.0, 101);

    let (status, body) = http_get(app.addr, "/readyz").await?;
    assert_eq!((status, body.as_str()), (200, "kafka: ok\n"));
    assert_eq!(http_get(app.addr, "/livez").await?, (200, "ok\n".to_owned()));
    let (status, metrics) = http_get(app.addr, "/metrics").await?;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "kafkasocks_publishes_total"), 1.0, "{metrics}");
    assert!(metric(&metrics, "kafkasocks_connections_open") >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "kafkasocks_connections_rejected_total{reason=\"origin\"}"), 1.0, "{metrics}");
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// At shutdown an embedded session gets GoAway and close 1001, and `Gateway::run` waits
/// for it as for its listener's sessions; upgrades are refused (503) from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sessions_get_goaway_and_are_drained_at_shutdown() -> Result<()> {
    init_tracing();
    let topic = unique_topic("embed-drain");
    create_topic(&topic, 1).await?;
    let mut app = axum_app(plain_config(), &topic).await?;
    let mut c = RawClient::open(app.addr).await?;
    c.send(publish(1, "k", "before the shutdown")).await?;
    assert_eq!(receipt_of(&mut c).await?.topic, topic);

    app.shutdown.shutdown();
    assert!(matches!(c.recv().await?, Some(Kind::GoAway(_))), "GoAway first");
    // The session has written its Close and waits for the client's answer, which this
    // client does not give yet: the gateway must still be draining.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!app.gateway.is_finished(), "Gateway::run returned while an embedded session was still open");
    let (code, _) = c.until_close().await;
    assert_eq!(code, 1001);
    tokio::time::timeout(Duration::from_secs(15), &mut app.gateway).await.context("the drain never ended")???;

    let (status, text) = raw_upgrade(app.addr, &[]).await?;
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    let (status, body) = http_get(app.addr, "/readyz").await?;
    assert_eq!(status, 503);
    assert!(body.starts_with("draining"), "{body}");
    assert_eq!(http_get(app.addr, "/livez").await?.0, 200);
    delete_topic(&topic).await?;
    Ok(())
}

type HyperBody = http_body_util::Full<Bytes>;

/// A hand-written hyper server: `/streams` is the gateway's, anything else its admin
/// answers.
async fn hyper_server(service: GatewayService) -> Result<(SocketAddr, JoinHandle<()>)> {
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, remote)) = tcp.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let handle = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(service, request, remote).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handle)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok((addr, task))
}

async fn handle(
    service: GatewayService,
    request: hyper::Request<hyper::body::Incoming>,
    remote: SocketAddr,
) -> hyper::Response<HyperBody> {
    if request.uri().path() != "/streams" {
        return service.admin_response(request.uri().path()).await.map(HyperBody::new);
    }
    let (mut parts, _body) = request.into_parts();
    let admission = match service.admit(&parts, Some(remote)) {
        Ok(admission) => admission,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return hyper::Response::new(HyperBody::from("no upgrade"));
    };
    let answer = admission.response();
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            service.serve_websocket(admission, hyper_util::rt::TokioIo::new(upgraded)).await;
        }
    });
    answer
}

/// `admit` + `serve_websocket` behind a hyper server written by hand: the same session,
/// the same refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_hyper_server_serves_the_gateway() -> Result<()> {
    init_tracing();
    let topic = unique_topic("embed-hyper");
    create_topic(&topic, 1).await?;
    let gateway = embedded_gateway(plain_config(), &topic).await?;
    let (addr, server) = hyper_server(gateway.service()).await?;
    let shutdown = gateway.shutdown_handle();
    let run = tokio::spawn(gateway.run());

    let mut c = RawClient::open(addr).await?;
    c.send(publish(1, "k", "through hyper")).await?;
    let receipt = receipt_of(&mut c).await?;
    assert_eq!(receipt.topic, topic);
    // Without the subprotocol: 400 before the upgrade, as on the listener.
    let refused = RawClient::connect_with_protocol(addr, None).await.err().context("upgraded without a subprotocol")?;
    assert!(refused.to_string().contains("400"), "{refused}");
    // Not an upgrade at all: 400 saying so (the listener closes such connections).
    let (status, body) = http_get(addr, "/streams").await?;
    assert_eq!(status, 400);
    assert!(body.contains("not a WebSocket upgrade request"), "{body}");
    assert_eq!(http_get(addr, "/readyz").await?, (200, "kafka: ok\n".to_owned()));

    shutdown.shutdown();
    assert!(matches!(c.recv().await?, Some(Kind::GoAway(_))));
    assert_eq!(c.until_close().await.0, 1001);
    tokio::time::timeout(Duration::from_secs(15), run).await???;
    server.abort();
    delete_topic(&topic).await?;
    Ok(())
}

async fn send<S>(ws: &mut WebSocketStream<S>, kind: Kind) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Binary(wire::Frame { kind: Some(kind) }.encode_to_vec().into())).await?;
    Ok(())
}

async fn recv<S>(ws: &mut WebSocketStream<S>) -> Result<Kind>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next()).await?.context("closed")??;
        if let Message::Binary(b) = m {
            match wire::Frame::decode(b)?.kind {
                Some(Kind::Ping(_)) | None => continue,
                Some(kind) => return Ok(kind),
            }
        }
    }
}

/// The parts of a WebSocket upgrade request, as any HTTP server parses them.
fn upgrade_request(extra: &[(&str, &str)]) -> hyper::http::request::Parts {
    let mut request = hyper::Request::builder()
        .method("GET")
        .uri("/streams")
        .header("host", "gateway.internal")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13");
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.body(()).unwrap_or_default().into_parts().0
}

/// `serve_websocket` is generic over the stream: here an in-memory pipe, upgraded by
/// nobody's HTTP server, serves a whole session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_websocket_runs_a_session_on_any_byte_stream() -> Result<()> {
    init_tracing();
    let topic = unique_topic("embed-pipe");
    create_topic(&topic, 1).await?;
    let gateway = embedded_gateway(plain_config(), &topic).await?;
    let service = gateway.service();
    let shutdown = gateway.shutdown_handle();
    let run = tokio::spawn(gateway.run());
    let remote: SocketAddr = "192.0.2.7:40000".parse()?;

    // The refusals come with what to answer.
    let refusal = service.admit(&upgrade_request(&[]), Some(remote)).expect_err("no subprotocol");
    assert_eq!(refusal.status(), 400);
    assert!(refusal.body().contains(SUBPROTOCOL), "{refusal}");
    let mut not_upgrade = upgrade_request(&[("sec-websocket-protocol", SUBPROTOCOL)]);
    not_upgrade.headers.remove("upgrade");
    assert_eq!(service.admit(&not_upgrade, Some(remote)).expect_err("not an upgrade").status(), 400);

    let admission = service.admit(&upgrade_request(&[("sec-websocket-protocol", SUBPROTOCOL)]), Some(remote))?;
    let headers = admission.response_headers();
    // RFC 6455's example key and its answer.
    assert_eq!(headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(headers["sec-websocket-protocol"], SUBPROTOCOL);
    assert_eq!(admission.response::<()>().status(), 101);

    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let session = tokio::spawn({
        let service = service.clone();
        async move { service.serve_websocket(admission, theirs).await }
    });
    let mut ws = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
    send(&mut ws, Kind::Hello(wire::Hello { protocol_version: 1, client: "pipe".into(), ..Default::default() }))
        .await?;
    assert!(matches!(recv(&mut ws).await?, Kind::Welcome(_)));
    send(&mut ws, publish(1, "k", "through a pipe")).await?;
    match recv(&mut ws).await? {
        Kind::Receipt(r) => assert_eq!(r.topic, topic),
        other => bail!("expected a receipt, got {other:?}"),
    }
    let metrics = service.admin_response("/metrics").await;
    let metrics = String::from_utf8_lossy(metrics.body()).into_owned();
    assert_eq!(metric(&metrics, "kafkasocks_connections_open"), 1.0, "{metrics}");

    shutdown.shutdown();
    assert!(matches!(recv(&mut ws).await?, Kind::GoAway(_)));
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(close) = m {
            assert_eq!(close.map(|c| u16::from(c.code)), Some(1001));
        }
    }
    tokio::time::timeout(Duration::from_secs(15), session).await??;
    tokio::time::timeout(Duration::from_secs(15), run).await???;
    delete_topic(&topic).await?;
    Ok(())
}

/// A single-node KRaft broker of this test's own (Kafka from `$KAFKA_LIBS`), on free
/// ports and in its own folder, that can be killed and started again.
struct OwnBroker {
    dir: PathBuf,
    port: u16,
    child: Option<tokio::process::Child>,
}

fn kafka_libs() -> Result<PathBuf> {
    if let Ok(libs) = std::env::var("KAFKA_LIBS") {
        return Ok(libs.into());
    }
    let home = std::env::var("HOME").context("HOME")?;
    let libs = Path::new(&home).join(".cache/kafkasocks/kafka-4.3.1/libs");
    if libs.is_dir() { Ok(libs) } else { bail!("set KAFKA_LIBS to Kafka's libs folder (scripts/services status)") }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl OwnBroker {
    async fn format() -> Result<OwnBroker> {
        let dir = std::env::temp_dir().join(format!("kafkasocks-embedding-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("data"))?;
        let (port, controller) = (free_port()?, free_port()?);
        std::fs::write(
            dir.join("server.properties"),
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={}\n\
                 offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
                 num.network.threads=1\nnum.io.threads=2\n",
                dir.join("data").display()
            ),
        )?;
        std::fs::write(dir.join("log4j2.properties"), "status = warn\nrootLogger.level = warn\n")?;
        let out = tokio::process::Command::new("java")
            .args(Self::jvm(&dir)?)
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
            .arg("0fKz2cS5QUCgpLL5jT3BCw")
            .arg("-c")
            .arg(dir.join("server.properties"))
            .output()
            .await?;
        if !out.status.success() {
            bail!("formatting the broker's storage failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(OwnBroker { dir, port, child: None })
    }

    fn jvm(dir: &Path) -> Result<Vec<String>> {
        Ok(vec![
            "-Xshare:auto".into(),
            "-Xmx384m".into(),
            "-XX:TieredStopAtLevel=1".into(),
            format!("-Dlog4j2.configurationFile=file:{}", dir.join("log4j2.properties").display()),
            "-cp".into(),
            format!("{}/*", kafka_libs()?.display()),
        ])
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker; returns once its port accepts connections.
    async fn start(&mut self) -> Result<()> {
        let child = tokio::process::Command::new("java")
            .args(Self::jvm(&self.dir)?)
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let began = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the broker exited at start: {status}");
            }
            if began.elapsed() > Duration::from_secs(60) {
                bail!("the broker did not open its port within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGKILL: the broker is gone at once, as in a crash.
    async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `path` until it answers `status` (at most `limit`); how long that took.
async fn until_status(admin: SocketAddr, path: &str, status: u16, limit: Duration) -> Result<Duration> {
    let began = Instant::now();
    loop {
        let (got, body) = http_get(admin, path).await?;
        if got == status {
            return Ok(began.elapsed());
        }
        if began.elapsed() > limit {
            bail!("{path} still {got} after {limit:?}: {body}");
        }
        assert_eq!(http_get(admin, "/livez").await?.0, 200, "/livez must not follow Kafka");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/livez` stays 200 while Kafka is down; `/readyz` turns 503 within
/// `readiness_interval + readiness_timeout` of the broker's death and 200 again once it is
/// back. The probes themselves make no Kafka requests (the unit tests count them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_stays_up_while_readyz_follows_a_broker_that_dies_and_returns() -> Result<()> {
    init_tracing();
    let mut broker = OwnBroker::format().await?;
    broker.start().await?;
    let (interval, timeout) = (Duration::from_millis(500), Duration::from_secs(3));
    let limits = Limits::default().with_readiness_interval(interval).with_readiness_timeout(timeout);
    let config = GatewayConfig::new(KafkaConfig::new(broker.bootstrap())).limits(limits);
    let gw = TestGateway::start_with(config, streams("embedding-health"), None).await?;
    let admin = gw.metrics.context("admin listener")?;
    let boot = until_status(admin, "/readyz", 200, Duration::from_secs(40)).await?;
    eprintln!("readyz 200 {boot:?} after the broker's port opened");
    assert_eq!(http_get(admin, "/livez").await?, (200, "ok\n".to_owned()));

    broker.kill().await?;
    let down = until_status(admin, "/readyz", 503, interval + timeout + Duration::from_secs(2)).await?;
    eprintln!("readyz 503 {down:?} after the broker was killed (bound: {:?})", interval + timeout);
    let (_, body) = http_get(admin, "/readyz").await?;
    assert!(body.starts_with("kafka: not ready: "), "{body}");
    assert_eq!(http_get(admin, "/livez").await?, (200, "ok\n".to_owned()));

    broker.start().await?;
    // librdkafka reconnects with a backoff that grows to reconnect.backoff.max.ms (10 s).
    let up = until_status(admin, "/readyz", 200, Duration::from_secs(30)).await?;
    eprintln!("readyz 200 {up:?} after the restarted broker's port opened");
    gw.shutdown.shutdown();
    tokio::time::timeout(Duration::from_secs(30), gw.task).await???;
    broker.kill().await?;
    Ok(())
}
