//! A Rust client for the gateway, with reconnection and resume.
//!
//! It keeps every subscription's cursor, resubscribes from it after any reconnect (to
//! any gateway node), drops records it already has, and retries unanswered publishes
//! with their idempotency key, so an application sees each record once and each publish
//! lands once.
//!
//! ```no_run
//! use kafkasocks::client::{Client, ClientConfig, StartAt};
//!
//! # async fn run() -> Result<(), kafkasocks::Error> {
//! let client = Client::connect(ClientConfig::new("ws://127.0.0.1:8080/streams"));
//! let mut sub = client.subscribe("chat.v1.ChatStreams/Messages", b"\x0a\x07general".to_vec(), StartAt::Latest);
//! let receipt = client.publish("chat.v1.ChatStreams/Post", b"\x0a\x07general".to_vec()).await?;
//! while let Some(record) = sub.next().await {
//!     let record = record?;
//!     println!("{}@{}: {} bytes", record.partition, record.offset, record.payload.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::error::Error;
use crate::protocol::wire::{self, frame::Kind};
use crate::protocol::{Code, SUBPROTOCOL, Status};
// The domain types the client API speaks (the same types the gateway uses).
pub use crate::protocol::{Cursor, Delivery, Receipt, StartAt};

/// How a [`Client`] connects.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `ws://host:port/path` or `wss://…`.
    pub url: String,
    /// Sent in Hello and on reconnect. Default empty (anonymous).
    pub token: String,
    /// First reconnect delay cap; doubles per failed attempt. Default 200 ms.
    pub backoff_initial: Duration,
    /// Largest reconnect delay cap. Default 10 s. Each delay is uniform in [0, cap].
    pub backoff_max: Duration,
    /// Records a subscription may have delivered but not yet taken by the application.
    /// Default 1000.
    pub credit_window: u32,
    /// How long a publish waits for its receipt, across reconnects. Default 30 s.
    pub publish_timeout: Duration,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults, at this URL.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            token: String::new(),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            credit_window: 1000,
            publish_timeout: Duration::from_secs(30),
            roots: Vec::new(),
        }
    }

    /// Sets the token.
    pub fn token(mut self, token: impl Into<String>) -> ClientConfig {
        self.token = token.into();
        self
    }

    /// Sets the reconnect backoff bounds.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> ClientConfig {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Sets the credit window.
    pub fn credit_window(mut self, records: u32) -> ClientConfig {
        self.credit_window = records.max(1);
        self
    }

    /// Trusts the certificates in this PEM data for `wss://` (needed for private CAs and
    /// self-signed test certificates).
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<ClientConfig, Error> {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            self.roots.push(cert.map_err(|e| Error::tls("reading PEM root certificates", e))?);
        }
        Ok(self)
    }
}

/// The client's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting for the first time.
    Connecting,
    /// Welcome received.
    Open,
    /// Lost; reconnecting.
    Reconnecting,
    /// Closed for good.
    Closed,
}

enum Command {
    Subscribe(u64, SubSpec),
    Unsubscribe(u64),
    Credit(u64, u32),
    Publish(u64, PendingPublish),
    /// Send a pending publish again (after a rate-limit hint).
    Resend(u64),
    /// Subscribe again (after a transient refusal).
    Resubscribe(u64),
    Disconnect,
    Close,
}

/// What flows from the driver to a [`Subscription`], in wire order.
enum Event {
    /// The gateway confirmed the (re)subscription from this cursor.
    Started(Cursor),
    Record(Delivery),
    /// Filtered-out records moved the cursor.
    Checkpoint(Vec<(i32, i64)>),
    Failed(Status),
}

struct SubSpec {
    method: String,
    request: Bytes,
    start: StartAt,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<SubShared>,
}

#[derive(Default)]
struct SubShared {
    /// Where the driver resumes after a reconnect: after the last record *received*
    /// (records in the channel are not lost while the Subscription lives).
    cursor: Mutex<Option<Cursor>>,
    /// The first resolved start, until the application has taken an event.
    start: Mutex<Option<Cursor>>,
    /// Records handed to the channel and taken by the application.
    delivered: AtomicU64,
    taken: AtomicU64,
    duplicates: AtomicU64,
}

struct PendingPublish {
    method: String,
    payload: Bytes,
    key: Bytes,
    reply: oneshot::Sender<Result<Receipt, Status>>,
}

/// A connection to a gateway that outlives network failures. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    next_id: Arc<AtomicU64>,
    credit_window: u32,
    publish_timeout: Duration,
}

/// A live subscription. Ends (returns `None`) after [`Subscription::unsubscribe`], or
/// after an error that no reconnect can fix (for example `DATA_LOSS`).
#[derive(Debug)]
pub struct Subscription {
    key: u64,
    events: mpsc::UnboundedReceiver<Event>,
    /// After the last record handed to the application.
    taken: Option<Cursor>,
    shared: Arc<SubSharedHandle>,
    client: Client,
}

#[derive(Default)]
struct SubSharedHandle(Arc<SubShared>);

impl std::fmt::Debug for SubSharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubShared")
    }
}

impl Subscription {
    /// The next record, or the error that ended the subscription.
    pub async fn next(&mut self) -> Option<Result<Delivery, Status>> {
        loop {
            match self.events.recv().await? {
                Event::Started(c) => match &mut self.taken {
                    None => self.taken = Some(c),
                    Some(t) => t.topic_id = c.topic_id,
                },
                Event::Checkpoint(positions) => {
                    let t = self.taken.get_or_insert_with(Cursor::default);
                    for (p, o) in positions {
                        t.advance(p, o);
                    }
                }
                Event::Failed(status) => return Some(Err(status)),
                Event::Record(d) => {
                    self.taken.get_or_insert_with(Cursor::default).advance(d.partition, d.offset + 1);
                    let taken = self.shared.0.taken.fetch_add(1, Ordering::AcqRel) + 1;
                    let half = u64::from(self.client.credit_window / 2).max(1);
                    if taken.is_multiple_of(half) {
                        let _ = self.client.commands.send(Command::Credit(self.key, half as u32));
                    }
                    return Some(Ok(d));
                }
            }
        }
    }

    /// Where to resume after the last record [`Subscription::next`] returned: save this
    /// to continue later, on any gateway, with [`StartAt::Cursor`]. `None` until the
    /// gateway confirmed the subscription.
    pub fn cursor(&self) -> Option<Cursor> {
        self.taken.clone().or_else(|| self.shared.0.start.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Records the gateway sent that this client already had and dropped. Always 0 with
    /// a conforming gateway; exposed so that can be checked.
    pub fn duplicates_dropped(&self) -> u64 {
        self.shared.0.duplicates.load(Ordering::Relaxed)
    }

    /// Stops the subscription (as dropping it does).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.client.commands.send(Command::Unsubscribe(self.key));
    }
}

impl Client {
    /// Starts connecting in the background (to be called within a tokio runtime).
    pub fn connect(config: ClientConfig) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let client = Client {
            commands: tx,
            state,
            next_id: Arc::new(AtomicU64::new(1)),
            credit_window: config.credit_window,
            publish_timeout: config.publish_timeout,
        };
        tokio::spawn(Driver::new(config, state_tx, client.commands.clone()).run(rx));
        client
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Waits until the state is `Open` (or `Closed`).
    pub async fn wait_open(&self) -> ConnectionState {
        let mut s = self.state.clone();
        let r = s.wait_for(|s| matches!(s, ConnectionState::Open | ConnectionState::Closed)).await.map(|s| *s);
        r.unwrap_or(ConnectionState::Closed)
    }

    /// Subscribes to a server-streaming method with an encoded request.
    pub fn subscribe(&self, method: &str, request: impl Into<Bytes>, start: StartAt) -> Subscription {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (etx, erx) = mpsc::unbounded_channel();
        let shared = Arc::new(SubShared::default());
        let start_copy = start.clone();
        if let StartAt::Cursor(c) = &start {
            *shared.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        }
        let _ = self.commands.send(Command::Subscribe(
            key,
            SubSpec { method: method.to_owned(), request: request.into(), start, events: etx, shared: shared.clone() },
        ));
        let taken = match &start_copy {
            StartAt::Cursor(c) => Some(c.clone()),
            _ => None,
        };
        Subscription { key, events: erx, taken, shared: Arc::new(SubSharedHandle(shared)), client: self.clone() }
    }

    /// Publishes an encoded request with a fresh idempotency key and waits for the receipt.
    pub async fn publish(&self, method: &str, payload: impl Into<Bytes>) -> Result<Receipt, Status> {
        let key: [u8; 16] = rand::random();
        self.publish_with_key(method, payload, Bytes::copy_from_slice(&key)).await
    }

    /// Publishes with a given idempotency key (empty: none).
    pub async fn publish_with_key(
        &self,
        method: &str,
        payload: impl Into<Bytes>,
        key: Bytes,
    ) -> Result<Receipt, Status> {
        let (reply, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.commands
            .send(Command::Publish(
                id,
                PendingPublish { method: method.to_owned(), payload: payload.into(), key, reply },
            ))
            .map_err(|_| Status::new(Code::Cancelled, "client closed"))?;
        match tokio::time::timeout(self.publish_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Status::new(Code::Cancelled, "client closed")),
            Err(_) => Err(Status::new(Code::DeadlineExceeded, "no receipt within the publish timeout")),
        }
    }

    /// Drops the current connection (it reconnects and resumes). For tests and for
    /// applications that know the network changed.
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Disconnect);
    }

    /// Closes the client for good.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

struct ActiveSub {
    spec: SubSpec,
    wire_id: Option<u32>,
}

struct Driver {
    config: ClientConfig,
    /// Sent in every Hello: scopes this client's idempotency keys when it is anonymous,
    /// so retries after a reconnect are deduplicated.
    instance_id: String,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Sender<ConnectionState>,
    subs: HashMap<u64, ActiveSub>,
    wire_to_key: HashMap<u32, u64>,
    next_wire: u32,
    /// By id, which grows in send order: resent in that order after a reconnect (the
    /// gateway keeps one connection's order, docs/protocol.md §5).
    publishes: BTreeMap<u64, PendingPublish>,
    attempt: u32,
}

enum Outcome {
    Reconnect(Duration),
    Closed,
}

impl Driver {
    fn new(
        config: ClientConfig,
        state: watch::Sender<ConnectionState>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Driver {
        Driver {
            config,
            instance_id: format!("{:032x}", rand::random::<u128>()),
            commands,
            state,
            subs: HashMap::new(),
            wire_to_key: HashMap::new(),
            next_wire: 0,
            publishes: BTreeMap::new(),
            attempt: 0,
        }
    }

    fn backoff(&self) -> Duration {
        let cap = self.config.backoff_initial.saturating_mul(1 << self.attempt.min(16)).min(self.config.backoff_max);
        cap.mul_f64(rand::random::<f64>())
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let outcome = match self.dial().await {
                Ok(ws) => self.session(ws, &mut commands).await,
                Err(e) => {
                    tracing::debug!(error = %e, "connect failed");
                    Outcome::Reconnect(self.backoff())
                }
            };
            match outcome {
                Outcome::Closed => {
                    let _ = self.state.send(ConnectionState::Closed);
                    for (_, p) in std::mem::take(&mut self.publishes) {
                        let _ = p.reply.send(Err(Status::new(Code::Cancelled, "client closed")));
                    }
                    return;
                }
                Outcome::Reconnect(delay) => {
                    let _ = self.state.send(ConnectionState::Reconnecting);
                    self.attempt = self.attempt.saturating_add(1);
                    // Keep taking commands while waiting, so publishes queue and closes work.
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            c = commands.recv() => match c {
                                None | Some(Command::Close) => {
                                    let _ = self.state.send(ConnectionState::Closed);
                                    return;
                                }
                                Some(c) => self.offline(c),
                            }
                        }
                    }
                }
            }
        }
    }

    fn offline(&mut self, c: Command) {
        match c {
            Command::Subscribe(k, spec) => {
                self.subs.insert(k, ActiveSub { spec, wire_id: None });
            }
            Command::Unsubscribe(k) => {
                self.subs.remove(&k);
            }
            Command::Publish(id, p) => {
                self.publishes.insert(id, p);
            }
            Command::Credit(..)
            | Command::Resend(_)
            | Command::Resubscribe(_)
            | Command::Disconnect
            | Command::Close => {}
        }
    }

    async fn dial(&self) -> Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>, Error> {
        let mut req = self
            .config
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::websocket(format!("bad URL {:?}", self.config.url), e))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
        let uri = req.uri().clone();
        let host = uri.host().unwrap_or("localhost").to_owned();
        let tls = uri.scheme_str() == Some("wss");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|e| Error::websocket(format!("connecting to {host}:{port}"), e))??;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if tls { self.tls(host, tcp).await? } else { Box::new(tcp) };
        let (ws, resp) =
            tokio_tungstenite::client_async(req, io).await.map_err(|e| Error::websocket("the handshake failed", e))?;
        if resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()) != Some(SUBPROTOCOL) {
            return Err(Error::websocket("the handshake failed", format!("the server did not accept {SUBPROTOCOL}")));
        }
        Ok(ws)
    }

    #[cfg(feature = "tls")]
    async fn tls(&self, host: String, tcp: TcpStream) -> Result<Box<dyn Io>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.config.roots {
            roots.add(c.clone()).map_err(|e| Error::tls("adding a root certificate", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::tls("choosing TLS versions", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::tls(format!("{host:?} as a TLS server name"), e))?;
        Ok(Box::new(tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?))
    }

    #[cfg(not(feature = "tls"))]
    async fn tls(&self, _host: String, _tcp: TcpStream) -> Result<Box<dyn Io>, Error> {
        Err(Error::Config("wss:// needs the `tls` feature of kafkasocks".into()))
    }

    fn subscribe_frame(&mut self, key: u64) -> Option<Message> {
        self.next_wire = self.next_wire.wrapping_add(1).max(1);
        let wire_id = self.next_wire;
        let sub = self.subs.get_mut(&key)?;
        sub.wire_id = Some(wire_id);
        self.wire_to_key.insert(wire_id, key);
        let cursor = sub.spec.shared.cursor.lock().unwrap_or_else(|p| p.into_inner()).clone();
        use wire::start_position::Position;
        let position = match (&cursor, &sub.spec.start) {
            (Some(c), _) => Position::Cursor(c.to_wire()),
            (None, StartAt::Latest) => Position::Latest(wire::Empty {}),
            (None, StartAt::Earliest) => Position::Earliest(wire::Empty {}),
            (None, StartAt::Timestamp(t)) => Position::TimestampMs(*t),
            (None, StartAt::Cursor(c)) => Position::Cursor(c.to_wire()),
        };
        let buffered =
            sub.spec.shared.delivered.load(Ordering::Acquire) - sub.spec.shared.taken.load(Ordering::Acquire);
        let credit = u64::from(self.config.credit_window).saturating_sub(buffered).max(1) as u32;
        Some(frame(Kind::Subscribe(wire::Subscribe {
            id: wire_id,
            method: sub.spec.method.clone(),
            request: sub.spec.request.clone(),
            start: Some(wire::StartPosition { position: Some(position) }),
            credit,
        })))
    }

    fn publish_frame(id: u64, p: &PendingPublish) -> Message {
        frame(Kind::Publish(wire::Publish {
            id,
            method: p.method.clone(),
            payload: p.payload.clone(),
            idempotency_key: p.key.clone(),
            ..Default::default()
        }))
    }

    async fn session(
        &mut self,
        ws: tokio_tungstenite::WebSocketStream<Box<dyn Io>>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Outcome {
        let (mut sink, mut stream) = ws.split();
        let hello = frame(Kind::Hello(wire::Hello {
            protocol_version: 1,
            token: self.config.token.clone(),
            client: concat!("kafkasocks-rust/", env!("CARGO_PKG_VERSION")).into(),
            instance_id: self.instance_id.clone(),
        }));
        if sink.send(hello).await.is_err() {
            return Outcome::Reconnect(self.backoff());
        }
        let heartbeat = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => match wire::Frame::decode(b).ok().and_then(|f| f.kind) {
                Some(Kind::Welcome(w)) => Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(1000))),
                Some(Kind::Error(e)) => {
                    let status = Status::from_wire(&e);
                    tracing::warn!(%status, "refused at hello");
                    if status.code() == Code::Unauthenticated || status.code() == Code::FailedPrecondition {
                        self.fail_all(&status);
                        return Outcome::Closed;
                    }
                    return Outcome::Reconnect(self.backoff());
                }
                _ => return Outcome::Reconnect(self.backoff()),
            },
            _ => return Outcome::Reconnect(self.backoff()),
        };
        let _ = self.state.send(ConnectionState::Open);
        self.attempt = 0;
        self.wire_to_key.clear();
        let keys: Vec<u64> = self.subs.keys().copied().collect();
        let mut out: Vec<Message> = keys.into_iter().filter_map(|k| self.subscribe_frame(k)).collect();
        out.extend(self.publishes.iter().map(|(id, p)| Self::publish_frame(*id, p)));
        for m in out {
            if sink.feed(m).await.is_err() {
                return Outcome::Reconnect(self.backoff());
            }
        }
        if sink.flush().await.is_err() {
            return Outcome::Reconnect(self.backoff());
        }
        let dead_after = heartbeat * 2;
        let mut last_heard = tokio::time::Instant::now();
        let mut check = tokio::time::interval(Duration::from_millis(250));
        let mut go_away: Option<Duration> = None;
        loop {
            let mut out: Vec<Message> = Vec::new();
            tokio::select! {
                m = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match m {
                        Some(Ok(Message::Binary(b))) => match wire::Frame::decode(b) {
                            Ok(f) => {
                                if let Some(kind) = f.kind {
                                    if let Kind::GoAway(g) = &kind {
                                        go_away = Some(Duration::from_millis(u64::from(g.reconnect_after_ms)));
                                    }
                                    self.on_frame(kind, &mut out);
                                }
                            }
                            Err(_) => return Outcome::Reconnect(self.backoff()),
                        },
                        Some(Ok(Message::Close(c))) => {
                            let code = c.as_ref().map_or(1005, |c| u16::from(c.code));
                            return self.after_close(code, go_away);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Outcome::Reconnect(go_away.unwrap_or_else(|| self.backoff())),
                    }
                }
                c = commands.recv() => match c {
                    None | Some(Command::Close) => {
                        let _ = sink.send(Message::Close(None)).await;
                        return Outcome::Closed;
                    }
                    Some(Command::Disconnect) => return Outcome::Reconnect(Duration::ZERO),
                    Some(Command::Subscribe(k, spec)) => {
                        self.subs.insert(k, ActiveSub { spec, wire_id: None });
                        out.extend(self.subscribe_frame(k));
                    }
                    Some(Command::Unsubscribe(k)) => {
                        if let Some(ActiveSub { wire_id: Some(id), .. }) = self.subs.remove(&k) {
                            out.push(frame(Kind::Unsubscribe(wire::Unsubscribe { id })));
                        }
                    }
                    Some(Command::Credit(k, n)) => {
                        if let Some(ActiveSub { wire_id: Some(id), .. }) = self.subs.get(&k) {
                            out.push(frame(Kind::Credit(wire::Credit { subscription_id: *id, records: n })));
                        }
                    }
                    Some(Command::Publish(id, p)) => {
                        out.push(Self::publish_frame(id, &p));
                        self.publishes.insert(id, p);
                    }
                    Some(Command::Resubscribe(k)) => {
                        if self.subs.get(&k).is_some_and(|s| s.wire_id.is_none()) {
                            out.extend(self.subscribe_frame(k));
                        }
                    }
                    Some(Command::Resend(id)) => {
                        if let Some(p) = self.publishes.get(&id) {
                            out.push(Self::publish_frame(id, p));
                        }
                    }
                },
                _ = check.tick() => {
                    if last_heard.elapsed() > dead_after {
                        tracing::debug!("no frame within two heartbeats: reconnecting");
                        return Outcome::Reconnect(Duration::ZERO);
                    }
                }
            }
            for m in out {
                if sink.feed(m).await.is_err() {
                    return Outcome::Reconnect(self.backoff());
                }
            }
            if sink.flush().await.is_err() {
                return Outcome::Reconnect(self.backoff());
            }
        }
    }

    fn after_close(&mut self, code: u16, go_away: Option<Duration>) -> Outcome {
        match code {
            1002 | 1003 | 4000 | 4001 => {
                self.fail_all(&Status::new(
                    Code::FailedPrecondition,
                    format!("the gateway closed the connection with {code}"),
                ));
                Outcome::Closed
            }
            _ => Outcome::Reconnect(go_away.unwrap_or_else(|| self.backoff())),
        }
    }

    fn fail_all(&mut self, status: &Status) {
        for (_, s) in self.subs.drain() {
            let _ = s.spec.events.send(Event::Failed(status.clone()));
        }
        for (_, p) in std::mem::take(&mut self.publishes) {
            let _ = p.reply.send(Err(status.clone()));
        }
    }

    fn on_frame(&mut self, kind: Kind, out: &mut Vec<Message>) {
        match kind {
            Kind::Subscribed(s) => {
                if let Some(sub) = self.wire_to_key.get(&s.id).and_then(|k| self.subs.get(k)) {
                    let mut cur = sub.spec.shared.cursor.lock().unwrap_or_else(|p| p.into_inner());
                    let resolved = s.cursor.as_ref().map(Cursor::from_wire).unwrap_or_default();
                    // Keep what we already have: the gateway starts where we asked.
                    if cur.is_none() {
                        *cur = Some(resolved.clone());
                    } else if let Some(c) = cur.as_mut() {
                        c.topic_id = resolved.topic_id.clone();
                    }
                    drop(cur);
                    let mut start = sub.spec.shared.start.lock().unwrap_or_else(|p| p.into_inner());
                    if start.is_none() {
                        *start = Some(resolved.clone());
                    }
                    let _ = sub.spec.events.send(Event::Started(resolved));
                }
            }
            Kind::Data(d) => {
                let Some(sub) = self.wire_to_key.get(&d.subscription_id).and_then(|k| self.subs.get(k)) else {
                    return;
                };
                let shared = &sub.spec.shared;
                let mut cur = shared.cursor.lock().unwrap_or_else(|p| p.into_inner());
                let cursor = cur.get_or_insert_with(Cursor::default);
                for r in d.records {
                    if cursor.next_offset(r.partition).is_some_and(|n| r.offset < n) {
                        // Already delivered: never twice. A conforming gateway never sends one.
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    cursor.advance(r.partition, r.offset + 1);
                    shared.delivered.fetch_add(1, Ordering::AcqRel);
                    let _ = sub.spec.events.send(Event::Record(Delivery::from(r)));
                }
            }
            Kind::Checkpoint(c) => {
                if let Some(sub) = self.wire_to_key.get(&c.subscription_id).and_then(|k| self.subs.get(k)) {
                    let mut cur = sub.spec.shared.cursor.lock().unwrap_or_else(|p| p.into_inner());
                    let cursor = cur.get_or_insert_with(Cursor::default);
                    for p in &c.positions {
                        cursor.advance(p.partition, p.next_offset);
                    }
                    let _ = sub
                        .spec
                        .events
                        .send(Event::Checkpoint(c.positions.iter().map(|p| (p.partition, p.next_offset)).collect()));
                }
            }
            Kind::End(e) => {
                if let Some(k) = self.wire_to_key.remove(&e.id) {
                    self.subs.remove(&k);
                }
            }
            Kind::Receipt(r) => {
                if let Some(p) = self.publishes.remove(&r.id) {
                    let _ = p.reply.send(Ok(Receipt {
                        topic: r.topic,
                        partition: r.partition,
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        duplicate: r.duplicate,
                    }));
                }
            }
            Kind::Error(e) => self.on_error(&e),
            Kind::Ping(p) => out.push(frame(Kind::Pong(wire::Pong { nonce: p.nonce }))),
            _ => {}
        }
    }

    fn on_error(&mut self, e: &wire::Error) {
        let status = Status::from_wire(e);
        if e.subscription_id != 0 {
            let Some(k) = self.wire_to_key.remove(&e.subscription_id) else { return };
            if status.code() == Code::Unavailable {
                // Transient (the gateway is draining or Kafka is away): ask again, after
                // the hint or a backoff, never in a tight loop.
                if let Some(sub) = self.subs.get_mut(&k) {
                    sub.wire_id = None;
                    let delay = status.retry_after().unwrap_or_else(|| self.backoff().max(Duration::from_millis(100)));
                    let tx = self.commands.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Command::Resubscribe(k));
                    });
                }
            } else if let Some(s) = self.subs.remove(&k) {
                let _ = s.spec.events.send(Event::Failed(status));
            }
        } else if e.publish_id != 0 {
            let id = e.publish_id;
            let retry = matches!(status.code(), Code::ResourceExhausted | Code::Unavailable);
            match (retry, self.publishes.contains_key(&id)) {
                (true, true) => {
                    // Try again after the gateway's hint (the publish timeout bounds the tries).
                    let delay = status.retry_after().unwrap_or(Duration::from_millis(100));
                    let tx = self.commands.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Command::Resend(id));
                    });
                }
                _ => {
                    if let Some(p) = self.publishes.remove(&id) {
                        let _ = p.reply.send(Err(status));
                    }
                }
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn frame(kind: Kind) -> Message {
    Message::Binary(wire::encode(kind))
}
