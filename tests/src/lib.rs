//! Test support: the real Kafka broker started by `scripts/services up`, gateways on
//! port 0, a TCP proxy that severs connections on demand, and a raw protocol client
//! for sending exactly the bytes a test wants.
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub, missing_debug_implementations)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{
    Gateway, GatewayConfig, KafkaConfig, KafkaTls, KeyField, Limits, Sasl, Secret, ShutdownHandle, Streams,
};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const SUBSCRIBE: &str = "test.v1.Records/Watch";
pub const PUBLISH: &str = "test.v1.Records/Put";

/// `$KAFKA_BOOTSTRAP`, default what `scripts/services up` starts.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Which of the local broker's listeners (`scripts/services up`) a gateway under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `$KAFKA_BOOTSTRAP`: no TLS, no authentication (a super user).
    Plaintext,
    /// `$KAFKA_SASL_SSL_BOOTSTRAP`, as the user "writer" with SCRAM-SHA-512.
    SaslSsl,
    /// `$KAFKA_MTLS_BOOTSTRAP`, with the client certificate of "writer".
    Mtls,
}

/// The folder `scripts/services up` keeps the secured listeners' CA, certificates and
/// passwords in (`$KAFKA_SECURE_DIR`).
pub fn secure_dir() -> std::path::PathBuf {
    if let Ok(d) = std::env::var("KAFKA_SECURE_DIR") {
        return d.into();
    }
    let state = std::env::var("KAFKASOCKS_STATE")
        .unwrap_or_else(|_| format!("{}/.local/state/kafkasocks", std::env::var("HOME").unwrap_or_default()));
    std::path::Path::new(&state).join("kafka/secure")
}

/// `$KAFKA_SASL_SSL_BOOTSTRAP`, default what `scripts/services up` starts.
pub fn sasl_ssl_bootstrap() -> String {
    std::env::var("KAFKA_SASL_SSL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19094".into())
}

/// `$KAFKA_MTLS_BOOTSTRAP`, default what `scripts/services up` starts.
pub fn mtls_bootstrap() -> String {
    std::env::var("KAFKA_MTLS_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19095".into())
}

/// SASL_SSL as `user` ("writer" or "reader") with this mechanism's constructor.
pub fn sasl_ssl_as(user: &str, mechanism: fn(String, Secret) -> Sasl) -> KafkaConfig {
    let dir = secure_dir();
    KafkaConfig::new(sasl_ssl_bootstrap())
        .tls(KafkaTls::new().ca_file(dir.join("ca.crt")))
        .sasl(mechanism(user.to_owned(), Secret::from_file(dir.join(format!("{user}.password")))))
}

/// The mTLS listener with the client certificate `name` ("writer", or "untrusted" from
/// another CA); `None`: no client certificate.
pub fn mtls_as(name: Option<&str>) -> KafkaConfig {
    let dir = secure_dir();
    let mut tls = KafkaTls::new().ca_file(dir.join("ca.crt"));
    if let Some(n) = name {
        tls = tls.client_certificate(dir.join(format!("{n}.crt")), dir.join(format!("{n}.key")));
    }
    KafkaConfig::new(mtls_bootstrap()).tls(tls)
}

impl Listener {
    /// The gateway's Kafka settings for this listener.
    pub fn kafka(self) -> KafkaConfig {
        match self {
            Listener::Plaintext => KafkaConfig::new(bootstrap()),
            Listener::SaslSsl => sasl_ssl_as("writer", Sasl::scram_sha512),
            Listener::Mtls => mtls_as(Some("writer")),
        }
    }

    /// A topic name no other test uses, that this listener's user may read and write.
    pub fn topic(self, prefix: &str) -> String {
        match self {
            Listener::Plaintext => unique_topic(prefix),
            Listener::SaslSsl | Listener::Mtls => unique_topic(&format!("secure-{prefix}")),
        }
    }
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() >> 16)
}

pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap()
}

pub async fn create_topic(name: &str, partitions: i32) -> Result<()> {
    let r = admin()
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for x in r {
        x.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    wait_for_topic(name, partitions as usize).await
}

/// Waits until metadata shows the topic with this many partitions and leaders.
pub async fn wait_for_topic(name: &str, partitions: usize) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?;
    for _ in 0..100 {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(2))
            && let Some(t) = md.topics().first()
            && t.error().is_none()
            && t.partitions().len() == partitions
            && t.partitions().iter().all(|p| p.leader() >= 0)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topic {name} not ready")
}

pub async fn delete_topic(name: &str) -> Result<()> {
    for x in admin().delete_topics(&[name], &AdminOptions::new()).await? {
        x.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
    }
    Ok(())
}

pub async fn add_partitions(name: &str, total: usize) -> Result<()> {
    for x in admin().create_partitions(&[NewPartitions::new(name, total)], &AdminOptions::new()).await? {
        x.map_err(|(t, e)| anyhow::anyhow!("adding partitions to {t}: {e}"))?;
    }
    wait_for_topic(name, total).await
}

/// Deletes records below `offset` in `partition` (moves the log start).
pub async fn delete_records_before(name: &str, partition: i32, offset: i64) -> Result<()> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(name, partition, rdkafka::Offset::Offset(offset))?;
    admin().delete_records(&tpl, &AdminOptions::new()).await?;
    Ok(())
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Produces `value` with `key` to `partition`; returns the offset.
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    value: &[u8],
) -> Result<(i32, i64)> {
    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key).payload(value);
    if let Some(part) = partition {
        r = r.partition(part);
    }
    let d = p.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    Ok((d.partition, d.offset))
}

/// A record read back from Kafka with a plain consumer.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The record's headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

/// Reads the record at (partition, offset) with a plain consumer: (key, value).
pub async fn read_back(topic: &str, partition: i32, offset: i64) -> Result<(Vec<u8>, Vec<u8>)> {
    read_record(topic, partition, offset).await.map(|r| (r.key, r.value))
}

/// Reads the record at (partition, offset) with a plain consumer, headers included.
pub async fn read_record(topic: &str, partition: i32, offset: i64) -> Result<ReadBack> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::Message;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", "kafkasocks-tests-readback")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(offset))?;
        c.assign(&tpl)?;
        for _ in 0..100 {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                let headers = m.headers().map_or_else(Vec::new, |h| {
                    use rdkafka::message::Headers as _;
                    h.iter().map(|h| (h.key.to_owned(), Bytes::copy_from_slice(h.value.unwrap_or_default()))).collect()
                });
                return Ok(ReadBack {
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        bail!("nothing at {topic}/{partition}@{offset}")
    })
    .await?
}

/// Streams for one topic: subscribe keyed by request field 1, publish keyed by field 1.
pub fn streams(topic: &str) -> Streams {
    Streams::new().subscribe(SUBSCRIBE, topic, KeyField::new(1)).publish(PUBLISH, topic, KeyField::new(1))
}

/// A publish hook that waits a random 0..`max` before keying the record by field 1 of the
/// request, as an async check against a database would (the publish-order tests).
#[derive(Debug, Clone, Copy)]
pub struct Jittery {
    pub max: Duration,
}

impl kafkasocks::PublishHook for Jittery {
    fn prepare(
        &self,
        ctx: &kafkasocks::RequestContext,
        payload: Bytes,
    ) -> kafkasocks::BoxFuture<Result<kafkasocks::OutgoingRecord, kafkasocks::Status>> {
        let micros = self.max.as_micros() as u64;
        let wait = Duration::from_micros(if micros == 0 { 0 } else { rand::random::<u64>() % micros });
        let keyed = kafkasocks::PublishHook::prepare(&KeyField::new(1), ctx, payload);
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            keyed.await
        })
    }
}

/// A request/record message: field 1 = key (string), field 2 = body.
pub fn message(key: &str, body: &str) -> Bytes {
    let mut out = Vec::new();
    for (field, v) in [(1u8, key), (2, body)] {
        if !v.is_empty() {
            out.push(field << 3 | 2);
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
    }
    out.into()
}

/// A token check for [`TestGateway::start_with`].
pub type AuthFn = Box<dyn Fn(&str) -> Result<kafkasocks::Principal, kafkasocks::Status> + Send + Sync>;

/// Takes `n` records from a subscription within `limit`, or says how many came.
pub async fn collect(
    sub: &mut kafkasocks::client::Subscription,
    n: usize,
    limit: Duration,
) -> Result<Vec<kafkasocks::client::Delivery>> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < n {
        let d = tokio::time::timeout_at(deadline, sub.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} records arrived", got.len()))?
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))??;
        got.push(d);
    }
    Ok(got)
}

/// The Confluent-compatible Schema Registry the tests use (scripts/services prints it).
pub fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:18081/apis/ccompat/v7".into())
}

/// The member field number and the record inside a typed stream's wrapper message
/// (exactly one length-delimited field); panics on anything else.
pub fn member(wrapper: &[u8]) -> (u32, Vec<u8>) {
    let mut rest = wrapper;
    let tag = kafkasocks::wire::read_varint(&mut rest).expect("tag");
    let len = kafkasocks::wire::read_varint(&mut rest).expect("len") as usize;
    assert_eq!((tag & 7, rest.len()), (2, len), "one length-delimited member, nothing else");
    ((tag >> 3) as u32, rest.to_vec())
}

/// The next record of an in-process subscription, or the error that ended it, within 20 s.
pub async fn next_local(s: &mut kafkasocks::RecordStream) -> Result<kafkasocks::Delivery, kafkasocks::Status> {
    use futures_util::StreamExt as _;
    match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
        Ok(Some(r)) => r,
        Ok(None) => Err(kafkasocks::Status::unavailable("the subscription ended")),
        Err(_) => Err(kafkasocks::Status::unavailable("nothing within 20 s")),
    }
}

/// The value of an unlabelled metric in Prometheus text, -1 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub local: kafkasocks::LocalStreams,
    pub metrics: Option<SocketAddr>,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<Result<(), kafkasocks::Error>>,
}

impl TestGateway {
    pub async fn start(streams: Streams, limits: Limits) -> Result<TestGateway> {
        Self::start_on(Listener::Plaintext, streams, limits).await
    }

    /// A gateway connected to Kafka through `listener`.
    pub async fn start_on(listener: Listener, streams: Streams, limits: Limits) -> Result<TestGateway> {
        Self::start_with(GatewayConfig::new(listener.kafka()).limits(limits), streams, None).await
    }

    /// A gateway with this token check, or anonymous access when `auth` is `None`.
    pub async fn start_with(config: GatewayConfig, streams: Streams, auth: Option<AuthFn>) -> Result<TestGateway> {
        Self::start_built(config, streams, move |b| match auth {
            Some(a) => b.authenticator(move |token: &str, _: &kafkasocks::Handshake| a(token)),
            None => b.allow_anonymous(),
        })
        .await
    }

    /// A gateway on a free port (and a free metrics port), configured further by `build`
    /// (which must choose an authenticator or anonymous access).
    pub async fn start_built(
        config: GatewayConfig,
        streams: Streams,
        build: impl FnOnce(kafkasocks::GatewayBuilder) -> kafkasocks::GatewayBuilder,
    ) -> Result<TestGateway> {
        let config = config.listen("127.0.0.1:0".parse()?).metrics_listen("127.0.0.1:0".parse()?);
        let gw = build(Gateway::builder(config).streams(streams)).bind().await?;
        Ok(TestGateway {
            addr: gw.local_addr(),
            local: gw.local_streams(),
            metrics: gw.metrics_addr(),
            shutdown: gw.shutdown_handle(),
            task: tokio::spawn(gw.run()),
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/streams", self.addr)
    }

    pub async fn metrics_text(&self) -> Result<String> {
        http_get(self.metrics.context("no metrics listener")?, "/metrics").await.map(|(_, b)| b)
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf.get(9..12).context("short response")?.parse()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Sends a WebSocket upgrade request for `/streams` with the kafkasocks subprotocol and
/// these extra header lines (raw, so odd bytes reach the gateway as they are), and returns
/// the response's status code and its whole text (head and, for refusals, body).
pub async fn raw_upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!(
        "GET /streams HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n",
        kafkasocks::SUBPROTOCOL
    )
    .into_bytes();
    for (k, v) in extra {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // A refusal ends with the connection; a 101 ends the head and waits for frames.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.context("no answer")??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(b"HTTP/1.1 101") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).context("short response")?.parse()?;
    Ok((status, text))
}

/// A TCP connection from a chosen loopback source address (all of 127/8 is loopback), so
/// that tests can be several clients, or attackers, at other addresses than their own.
pub async fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// A TCP proxy in front of a gateway; `sever()` cuts every connection through it, as a
/// network failure would.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<HashMap<u64, JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<HashMap<u64, JoinHandle<()>>>> = Arc::default();
        let c2 = conns.clone();
        let accept = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((mut inbound, _)) = listener.accept().await {
                n += 1;
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut map = c2.lock().unwrap();
                map.retain(|_, t| !t.is_finished());
                map.insert(n, task);
            }
        });
        Ok(Proxy { addr, conns, accept })
    }

    /// Open connections through the proxy.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().unwrap().values().filter(|t| !t.is_finished()).count()
    }

    /// Waits (at most `limit`) until a connection is open, then cuts them all.
    pub async fn sever_when_connected(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.open_connections() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.sever()
    }

    /// Cuts every open connection; returns how many.
    pub fn sever(&self) -> usize {
        let mut map = self.conns.lock().unwrap();
        let n = map.values().filter(|t| !t.is_finished()).count();
        for (_, t) in map.drain() {
            t.abort();
        }
        n
    }

    pub fn url(&self) -> String {
        format!("ws://{}/streams", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

/// A protocol client that sends exactly what the test says.
pub struct RawClient<S = TcpStream> {
    pub ws: tokio_tungstenite::WebSocketStream<S>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Result<RawClient> {
        Self::connect_with_protocol(addr, Some("kafkasocks.v1")).await
    }

    pub async fn connect_with_protocol(addr: SocketAddr, protocol: Option<&str>) -> Result<RawClient> {
        RawClient::connect_on(TcpStream::connect(addr).await?, addr, protocol).await
    }

    /// Connects and completes Hello/Welcome.
    pub async fn open(addr: SocketAddr) -> Result<RawClient> {
        Self::open_with_token(addr, "").await
    }

    /// Connects and completes Hello/Welcome with this token.
    pub async fn open_with_token(addr: SocketAddr, token: &str) -> Result<RawClient> {
        Self::connect(addr).await?.hello(token).await
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawClient<S> {
    /// The WebSocket upgrade to the gateway at `addr` over `stream`, a connection the test
    /// made itself (offering `protocol`, when given).
    pub async fn connect_on(stream: S, addr: SocketAddr, protocol: Option<&str>) -> Result<RawClient<S>> {
        let mut req = format!("ws://{addr}/streams").into_client_request()?;
        if let Some(p) = protocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
        Ok(RawClient { ws })
    }

    /// Completes Hello/Welcome with this token.
    pub async fn hello(mut self, token: &str) -> Result<RawClient<S>> {
        self.send(Kind::Hello(wire::Hello {
            protocol_version: 1,
            token: token.into(),
            client: "raw-test".into(),
            ..Default::default()
        }))
        .await?;
        match self.recv().await? {
            Some(Kind::Welcome(_)) => Ok(self),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, kind: Kind) -> Result<()> {
        self.send_bytes(wire::Frame { kind: Some(kind) }.encode_to_vec()).await
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next frame, skipping pings; `Err` with the close code on close.
    pub async fn recv(&mut self) -> Result<Option<Kind>> {
        loop {
            let m =
                tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await.context("no frame within 30 s")?;
            match m {
                Some(Ok(Message::Binary(b))) => {
                    let f = wire::Frame::decode(b)?;
                    if let Some(Kind::Ping(_)) = f.kind {
                        continue;
                    }
                    return Ok(f.kind);
                }
                Some(Ok(Message::Close(c))) => bail!(Closed(c.map_or(1005, |c| u16::from(c.code)))),
                Some(Ok(_)) => continue,
                // A connection dropped without a close frame: abnormal closure.
                Some(Err(
                    tokio_tungstenite::tungstenite::Error::Protocol(
                        tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    )
                    | tokio_tungstenite::tungstenite::Error::Io(_)
                    | tokio_tungstenite::tungstenite::Error::ConnectionClosed,
                )) => bail!(Closed(1006)),
                Some(Err(e)) => bail!("read: {e}"),
                None => bail!(Closed(1006)),
            }
        }
    }

    /// Reads until the connection closes; returns the close code and the frames before.
    pub async fn until_close(&mut self) -> (u16, Vec<Kind>) {
        let mut frames = Vec::new();
        loop {
            match self.recv().await {
                Ok(Some(k)) => frames.push(k),
                Ok(None) => {}
                Err(e) => {
                    let code = e.downcast_ref::<Closed>().map_or(0, |c| c.0);
                    if code == 0 {
                        eprintln!("until_close: {e:#}");
                    }
                    return (code, frames);
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Closed(pub u16);

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "closed with {}", self.0)
    }
}

impl std::error::Error for Closed {}
