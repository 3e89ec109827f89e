//! One WebSocket session: Hello/Welcome, then subscriptions, publishes, credit,
//! heartbeats and token refresh, until a close. Generic over the byte stream so it runs
//! the same over TCP, TLS, or an in-memory pipe in tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use crate::config::Limits;
use crate::dedup::{Claim, DedupWindow};
use crate::kafka::{Kafka, Landing};
use crate::metrics::Metrics;
use crate::outbox::{Item, Outbox};
use crate::stream::{PublishHook, StreamKind, Streams};
use crate::subscription::{self, Start, SubCore};
use crate::wire::{self, frame::Kind};
use crate::{Authenticator, Code, Principal, RequestContext, Status};

/// Close codes (docs/protocol.md §6).
pub(crate) mod close {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const PROTOCOL: u16 = 1002;
    pub(crate) const UNSUPPORTED: u16 = 1003;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const BAD_HELLO: u16 = 4000;
    pub(crate) const UNAUTHENTICATED: u16 = 4001;
    pub(crate) const TOKEN_EXPIRED: u16 = 4002;
    pub(crate) const SLOW_CONSUMER: u16 = 4008;
    pub(crate) const IDLE: u16 = 4009;
    pub(crate) const OVERLOADED: u16 = 4013;
}

/// The largest Data frame the writer builds from several records.
const DATA_BATCH_BYTES: usize = 256 << 10;
const MAX_IDEMPOTENCY_KEY: usize = 64;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) kafka: Arc<Kafka>,
    pub(crate) streams: Streams,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) server_id: String,
    pub(crate) dedup: DedupWindow,
    pub(crate) registry: Option<crate::registry::SchemaRegistry>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Serves one accepted WebSocket until it closes.
pub(crate) async fn serve<S>(ws: WebSocketStream<S>, shared: Arc<Shared>, remote: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session_id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("connection", session = %session_id, remote = ?remote);
    async move {
        let (sink, mut stream) = ws.split();
        let outbox = Outbox::new(shared.limits.send_queue_bytes, shared.limits.send_queue_frames);
        let writer = tokio::spawn(write_loop(sink, outbox.clone(), shared.metrics.clone()).in_current_span());
        let mut session = Session {
            inflight: Arc::new(Semaphore::new(shared.limits.max_inflight_publishes)),
            bucket: TokenBucket::new(shared.limits.max_publishes_per_second),
            shared,
            outbox,
            session_id,
            remote,
            principal: Principal::anonymous(),
            subs: HashMap::new(),
            last_heard: Instant::now(),
            nonce: 0,
        };
        tracing::debug!("connection open");
        session.run(&mut stream).await;
        session.teardown();
        // Give the writer time to send what is queued and the close frame; a peer that
        // does not read does not get to hold the task.
        let mut writer = writer;
        if tokio::time::timeout(Duration::from_secs(5), &mut writer).await.is_err() {
            writer.abort();
        }
        tracing::debug!("connection closed");
    }
    .instrument(span)
    .await;
}

struct TokenBucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> TokenBucket {
        TokenBucket { tokens: f64::from(per_second), rate: f64::from(per_second), at: Instant::now() }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate.max(1e-9)))
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    session_id: String,
    remote: Option<SocketAddr>,
    principal: Principal,
    /// Open subscriptions; ones that ended by themselves (an Error frame was sent) are
    /// swept on the watchdog tick and when their id is reused.
    subs: HashMap<u32, (Arc<SubCore>, JoinHandle<()>)>,
    inflight: Arc<Semaphore>,
    bucket: TokenBucket,
    last_heard: Instant,
    nonce: u64,
}

/// How the session loop goes on after a frame.
enum Flow {
    Continue,
    Stop,
}

impl Session {
    fn send(&self, kind: Kind) -> Flow {
        if self.outbox.push_frame_or_close(wire::encode(kind), &self.shared.metrics) {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    fn send_error(&self, status: &Status, subscription_id: u32, publish_id: u64) -> Flow {
        self.shared.metrics.error(status.code());
        self.send(Kind::Error(status.to_wire(subscription_id, publish_id)))
    }

    /// An error about the whole connection, then the close.
    fn fail(&self, status: Status, code: u16, reason: &'static str) -> Flow {
        tracing::debug!(%status, code, "closing");
        let _ = self.send_error(&status, 0, 0);
        self.outbox.close(code, reason);
        Flow::Stop
    }

    async fn run<S>(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = self.shared.limits.clone();
        // Hello.
        let first = match tokio::time::timeout(limits.hello_timeout, stream.next()).await {
            Err(_) => {
                self.fail(
                    Status::new(Code::FailedPrecondition, "no Hello within the hello timeout"),
                    close::BAD_HELLO,
                    "hello timeout",
                );
                return;
            }
            Ok(None) => return,
            Ok(Some(m)) => m,
        };
        let hello = match self.frame_of(first) {
            Ok(Some(Kind::Hello(h))) => h,
            Ok(Some(_) | None) => {
                self.fail(
                    Status::new(Code::FailedPrecondition, "the first frame must be Hello"),
                    close::BAD_HELLO,
                    "expected Hello",
                );
                return;
            }
            Err(()) => return,
        };
        if hello.protocol_version != 1 {
            self.fail(
                Status::new(
                    Code::FailedPrecondition,
                    format!("protocol version {} is not supported; this gateway speaks 1", hello.protocol_version),
                ),
                close::BAD_HELLO,
                "unsupported protocol version",
            );
            return;
        }
        match self.shared.auth.authenticate(&hello.token) {
            Ok(p) => self.principal = p,
            Err(status) => {
                self.fail(status, close::UNAUTHENTICATED, "unauthenticated");
                return;
            }
        }
        tracing::debug!(client = %hello.client, subject = %self.principal.subject(), "hello");
        let welcome = wire::Welcome {
            session_id: self.session_id.clone(),
            server_id: self.shared.server_id.clone(),
            limits: Some(wire::Limits {
                max_message_bytes: limits.max_message_bytes as u32,
                max_subscriptions: limits.max_subscriptions as u32,
                max_publishes_per_second: limits.max_publishes_per_second,
                max_inflight_publishes: limits.max_inflight_publishes as u32,
                default_credit: limits.default_credit,
                max_credit: limits.max_credit,
            }),
            heartbeat_interval_ms: limits.heartbeat_interval.as_millis() as u32,
            token_expires_at_ms: self.principal.expiry().map_or(0, now_ms),
            server_time_ms: now_ms(SystemTime::now()),
        };
        if let Flow::Stop = self.send(Kind::Welcome(welcome)) {
            return;
        }
        self.last_heard = Instant::now();
        let mut heartbeat = tokio::time::interval(limits.heartbeat_interval);
        heartbeat.tick().await;
        let mut watchdog = tokio::time::interval(Duration::from_millis(250).min(limits.heartbeat_interval));
        let mut shutdown = self.shared.shutdown.clone();
        let mut drain_until: Option<Instant> = None;
        loop {
            let flow = tokio::select! {
                m = stream.next() => match m {
                    None => Flow::Stop,
                    Some(m) => {
                        self.last_heard = Instant::now();
                        match self.frame_of(m) {
                            Ok(Some(kind)) => self.handle(kind),
                            Ok(None) => self.send_error(&Status::new(Code::Unimplemented, "unknown frame type"), 0, 0),
                            Err(()) => Flow::Stop,
                        }
                    }
                },
                _ = heartbeat.tick() => {
                    self.nonce += 1;
                    self.send(Kind::Ping(wire::Ping { nonce: self.nonce }))
                }
                _ = watchdog.tick() => {
                    self.sweep_ended();
                    self.watchdog(&limits, drain_until)
                }
                Ok(()) = shutdown.changed(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + limits.drain_timeout);
                    self.send(Kind::GoAway(wire::GoAway {
                        reason: "gateway shutting down".into(),
                        reconnect_after_ms: 0,
                    }))
                }
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    fn sweep_ended(&mut self) {
        let metrics = &self.shared.metrics;
        self.subs.retain(|_, (core, _)| {
            let keep = !core.is_ended();
            if !keep {
                metrics.subscription_closed();
            }
            keep
        });
    }

    fn watchdog(&self, limits: &Limits, drain_until: Option<Instant>) -> Flow {
        let now = Instant::now();
        if let Some(deadline) = drain_until {
            let idle = self.inflight.available_permits() == limits.max_inflight_publishes;
            if idle || now >= deadline {
                self.outbox.close(close::GOING_AWAY, "gateway shutting down");
                return Flow::Stop;
            }
        }
        if now.duration_since(self.last_heard) >= limits.idle_timeout {
            return self.fail(
                Status::unavailable("nothing received within the idle timeout"),
                close::IDLE,
                "idle timeout",
            );
        }
        if self.outbox.full_since().is_some_and(|t| now.duration_since(t) >= limits.slow_consumer_timeout) {
            self.outbox.close_slow_consumer(&self.shared.metrics);
            return Flow::Stop;
        }
        if self.principal.expiry().is_some_and(|t| SystemTime::now() >= t) {
            return self.fail(Status::unauthenticated("token expired"), close::TOKEN_EXPIRED, "token expired");
        }
        if self.outbox.is_closed() {
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// Decodes one WebSocket message into a frame; `Ok(None)` for an unknown frame type;
    /// `Err` when the connection must end (the close is queued).
    fn frame_of(&self, m: Result<Message, tungstenite::Error>) -> Result<Option<Kind>, ()> {
        match m {
            Ok(Message::Binary(b)) => match wire::Frame::decode(b) {
                Ok(f) => Ok(f.kind),
                Err(e) => {
                    self.fail(
                        Status::invalid_argument(format!("undecodable frame: {e}")),
                        close::PROTOCOL,
                        "undecodable frame",
                    );
                    Err(())
                }
            },
            Ok(Message::Text(_)) => {
                self.fail(
                    Status::invalid_argument("text messages are not part of kafkasocks.v1"),
                    close::UNSUPPORTED,
                    "binary frames only",
                );
                Err(())
            }
            Ok(Message::Close(_)) => Err(()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                Ok(Some(Kind::Pong(wire::Pong { nonce: 0 })))
            }
            Err(tungstenite::Error::Capacity(e)) => {
                self.fail(
                    Status::new(
                        Code::ResourceExhausted,
                        format!("message too big: {e}; the limit is {} bytes", self.shared.limits.max_message_bytes),
                    ),
                    close::TOO_BIG,
                    "message too big",
                );
                Err(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                Err(())
            }
        }
    }

    fn context(&self, method: &str) -> RequestContext {
        RequestContext {
            principal: self.principal.clone(),
            session_id: self.session_id.clone(),
            remote_addr: self.remote,
            method: method.to_owned(),
        }
    }

    fn handle(&mut self, kind: Kind) -> Flow {
        match kind {
            Kind::Subscribe(s) => self.subscribe(s),
            Kind::Unsubscribe(u) => {
                if let Some((core, task)) = self.subs.remove(&u.id) {
                    core.end();
                    if let Some(hub) = core.hub.get() {
                        hub.detach(&core);
                    }
                    task.abort();
                    self.shared.metrics.subscription_closed();
                }
                self.send(Kind::End(wire::End { id: u.id }))
            }
            Kind::Publish(p) => self.publish(p),
            Kind::Credit(c) => {
                if let Some((core, _)) = self.subs.get(&c.subscription_id) {
                    core.add_credit(c.records);
                }
                Flow::Continue
            }
            Kind::TokenRefresh(t) => match self.shared.auth.authenticate(&t.token) {
                Ok(p) => {
                    self.principal = p;
                    self.send(Kind::TokenAccepted(wire::TokenAccepted {
                        token_expires_at_ms: self.principal.expiry().map_or(0, now_ms),
                        server_time_ms: now_ms(SystemTime::now()),
                    }))
                }
                Err(status) => self.fail(status, close::UNAUTHENTICATED, "unauthenticated"),
            },
            Kind::Ping(p) => self.send(Kind::Pong(wire::Pong { nonce: p.nonce })),
            Kind::Pong(_) => Flow::Continue,
            Kind::Hello(_) => {
                self.send_error(&Status::new(Code::FailedPrecondition, "the session is already open"), 0, 0)
            }
            Kind::Welcome(_)
            | Kind::Subscribed(_)
            | Kind::Data(_)
            | Kind::Checkpoint(_)
            | Kind::End(_)
            | Kind::Receipt(_)
            | Kind::Error(_)
            | Kind::TokenAccepted(_)
            | Kind::GoAway(_) => {
                self.send_error(&Status::invalid_argument("that frame only goes from the gateway to the client"), 0, 0)
            }
        }
    }

    fn draining(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    fn subscribe(&mut self, s: wire::Subscribe) -> Flow {
        // An id is free again once its subscription ended (End or Error was sent).
        self.sweep_ended();
        let refuse = |status: Status| (status, s.id);
        let checked = (|| {
            if self.draining() {
                return Err(refuse(Status::unavailable("gateway shutting down; reconnect elsewhere")));
            }
            if s.id == 0 {
                return Err(refuse(Status::invalid_argument("subscription id 0 is reserved")));
            }
            if self.subs.contains_key(&s.id) {
                return Err(refuse(Status::new(Code::AlreadyExists, format!("subscription {} is open", s.id))));
            }
            if self.subs.len() >= self.shared.limits.max_subscriptions {
                return Err(refuse(Status::new(
                    Code::ResourceExhausted,
                    format!("at most {} subscriptions per connection", self.shared.limits.max_subscriptions),
                )));
            }
            let Some(def) = self.shared.streams.get(&s.method) else {
                return Err(refuse(Status::new(Code::NotFound, format!("no stream {:?}", s.method))));
            };
            let StreamKind::Subscribe(hook) = &def.kind else {
                return Err(refuse(Status::invalid_argument(format!("{:?} is a publish method", s.method))));
            };
            let plan = hook.plan(&self.context(&s.method), &s.request).map_err(refuse)?;
            Ok((def.topic.clone(), plan))
        })();
        let (topic, plan) = match checked {
            Ok(v) => v,
            Err((status, id)) => return self.send_error(&status, id, 0),
        };
        let limits = &self.shared.limits;
        let credit = if s.credit == 0 { limits.default_credit } else { s.credit.min(limits.max_credit) };
        let core = SubCore::new(
            s.id,
            self.session_id.clone(),
            plan.key,
            plan.filter,
            self.outbox.clone(),
            self.shared.metrics.clone(),
            credit,
            limits.max_credit,
        );
        let span = tracing::debug_span!("subscription", id = s.id, method = %s.method, topic = %topic);
        let task = tokio::spawn(
            subscription::run(self.shared.kafka.clone(), core.clone(), topic, Start::from_wire(s.start))
                .instrument(span),
        );
        self.subs.insert(s.id, (core, task));
        self.shared.metrics.subscription_opened();
        Flow::Continue
    }

    fn publish(&mut self, p: wire::Publish) -> Flow {
        let checked = (|| {
            if self.draining() {
                return Err(Status::unavailable("gateway shutting down; reconnect elsewhere"));
            }
            let Some(def) = self.shared.streams.get(&p.method) else {
                return Err(Status::new(Code::NotFound, format!("no stream {:?}", p.method)));
            };
            let StreamKind::Publish(hook) = &def.kind else {
                return Err(Status::invalid_argument(format!("{:?} is a subscribe method", p.method)));
            };
            if p.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(Status::invalid_argument(format!(
                    "idempotency keys are at most {MAX_IDEMPOTENCY_KEY} bytes"
                )));
            }
            if let Err(wait) = self.bucket.take() {
                return Err(Status::new(Code::ResourceExhausted, "publish rate limit").with_retry_after(wait));
            }
            let permit = self.inflight.clone().try_acquire_owned().map_err(|_| {
                Status::new(Code::ResourceExhausted, "too many publishes awaiting receipts")
                    .with_retry_after(Duration::from_millis(50))
            })?;
            Ok((def.topic.clone(), hook.clone(), def.schema.clone(), permit))
        })();
        let (topic, hook, schema, permit) = match checked {
            Ok(v) => v,
            Err(status) => {
                self.shared.metrics.publish_failed();
                return self.send_error(&status, 0, p.id);
            }
        };
        let ctx = self.context(&p.method);
        let shared = self.shared.clone();
        let outbox = self.outbox.clone();
        let span = tracing::debug_span!("publish", id = p.id, method = %p.method, topic = %topic);
        tokio::spawn(
            async move {
                let id = p.id;
                let _permit = permit;
                let kind = match publish(&shared, ctx, &topic, hook, schema.as_ref(), p).await {
                    Ok((l, duplicate)) => {
                        shared.metrics.published(duplicate);
                        Kind::Receipt(wire::Receipt {
                            id,
                            topic,
                            partition: l.partition,
                            offset: l.offset,
                            timestamp_ms: l.timestamp_ms,
                            duplicate,
                        })
                    }
                    Err(status) => {
                        tracing::debug!(%status, "publish failed");
                        shared.metrics.publish_failed();
                        shared.metrics.error(status.code());
                        Kind::Error(status.to_wire(0, id))
                    }
                };
                outbox.push_frame_or_close(wire::encode(kind), &shared.metrics);
            }
            .instrument(span),
        );
        Flow::Continue
    }

    fn teardown(&mut self) {
        for (_, (core, task)) in self.subs.drain() {
            core.end();
            if let Some(hub) = core.hub.get() {
                hub.detach(&core);
            }
            task.abort();
            self.shared.metrics.subscription_closed();
        }
        self.outbox.close(1000, "");
    }
}

pub(crate) async fn publish(
    shared: &Shared,
    ctx: RequestContext,
    topic: &str,
    hook: Arc<dyn PublishHook>,
    schema: Option<&crate::RegistrySchema>,
    p: wire::Publish,
) -> Result<(Landing, bool), Status> {
    let key = (!p.idempotency_key.is_empty())
        .then(|| (ctx.principal.subject().to_owned(), p.method.clone(), p.idempotency_key.clone()));
    let owner = match &key {
        Some(k) => match shared.dedup.claim(k).await? {
            Claim::Done(l) => return Ok((l, true)),
            Claim::Owner(tx) => Some(tx),
        },
        None => None,
    };
    let result = async {
        let mut record = hook.prepare(&ctx, p.payload).await?;
        if let Some(schema) = schema {
            let registry = shared.registry.as_ref().ok_or_else(|| {
                Status::new(Code::FailedPrecondition, "this stream has a schema but the gateway has no schema registry")
            })?;
            let id = registry.id_for(schema).await?;
            record.payload = wire::add_confluent_framing(id, &schema.message_indexes, &record.payload);
        }
        shared.kafka.produce(topic, &record, &p.idempotency_key).await
    }
    .await;
    if let (Some(k), Some(tx)) = (&key, owner) {
        match &result {
            Ok(l) => shared.dedup.complete(k, tx, l.clone()),
            Err(_) => shared.dedup.abandon(k, tx),
        }
    }
    result.map(|l| (l, false))
}

async fn write_loop<S>(mut sink: SplitSink<WebSocketStream<S>, Message>, outbox: Arc<Outbox>, metrics: Arc<Metrics>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let items = outbox.take().await;
        let mut batch: Vec<&Bytes> = Vec::new();
        let (mut batch_id, mut batch_bytes) = (0u32, 0usize);
        let (mut records, mut frames) = (0u64, 0u64);
        for item in &items {
            let frame = match item {
                Item::Record(id, rec) => {
                    if !batch.is_empty() && (batch_id != *id || batch_bytes + rec.encoded.len() > DATA_BATCH_BYTES) {
                        frames += 1;
                        if sink.feed(Message::Binary(wire::data_frame(batch_id, &batch))).await.is_err() {
                            return;
                        }
                        batch.clear();
                        batch_bytes = 0;
                    }
                    batch_id = *id;
                    batch_bytes += rec.encoded.len();
                    batch.push(&rec.encoded);
                    records += 1;
                    continue;
                }
                Item::Frame(b) => Message::Binary(b.clone()),
                Item::Close(code, reason) => {
                    Message::Close(Some(CloseFrame { code: CloseCode::from(*code), reason: (*reason).into() }))
                }
            };
            if !batch.is_empty() {
                frames += 1;
                if sink.feed(Message::Binary(wire::data_frame(batch_id, &batch))).await.is_err() {
                    return;
                }
                batch.clear();
                batch_bytes = 0;
            }
            let is_close = matches!(frame, Message::Close(_));
            if sink.feed(frame).await.is_err() {
                return;
            }
            if is_close {
                let _ = sink.flush().await;
                let _ = sink.close().await;
                metrics.delivered(records, frames);
                return;
            }
        }
        if !batch.is_empty() {
            frames += 1;
            if sink.feed(Message::Binary(wire::data_frame(batch_id, &batch))).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        metrics.delivered(records, frames);
    }
}

/// A gateway's shared state for unit tests: Kafka is configured but never reached, the
/// only stream is `a.B/C` on topic `t`.
#[cfg(test)]
pub(crate) fn test_shared(limits: Limits) -> (Arc<Shared>, watch::Sender<bool>) {
    let metrics = Arc::new(Metrics::default());
    let kafka = Kafka::new(crate::KafkaConfig::new("127.0.0.1:9"), limits.clone(), metrics.clone(), "t")
        .unwrap_or_else(|e| panic!("kafka: {e}"));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        kafka,
        streams: Streams::new().subscribe("a.B/C", "t", crate::KeyField::none()),
        auth: Arc::new(crate::AllowAnonymous),
        dedup: DedupWindow::new(limits.dedup_window, 10),
        registry: None,
        limits,
        metrics,
        server_id: "test".into(),
        shutdown: shutdown_rx,
    });
    (shared, shutdown)
}

#[cfg(test)]
mod tests {
    //! The session over an in-memory pipe: no sockets, no Kafka (it is never reached).
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// One gateway's shared state (Kafka is configured but never reached) and its
    /// shutdown switch; `connect` runs a session on an in-memory pipe.
    struct Harness {
        shared: Arc<Shared>,
        shutdown: watch::Sender<bool>,
    }

    impl Harness {
        fn new(limits: Limits) -> Harness {
            let (shared, shutdown) = test_shared(limits);
            Harness { shared, shutdown }
        }

        async fn connect(&self) -> (WebSocketStream<tokio::io::DuplexStream>, JoinHandle<()>) {
            let (server_io, client_io) = tokio::io::duplex(64 << 10);
            let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            let task = tokio::spawn(serve(server, self.shared.clone(), None));
            (WebSocketStream::from_raw_socket(client_io, Role::Client, None).await, task)
        }
    }

    async fn pipe(limits: Limits) -> (WebSocketStream<tokio::io::DuplexStream>, Harness) {
        let h = Harness::new(limits);
        let (ws, _task) = h.connect().await;
        (ws, h)
    }

    /// Random bytes as frames, before and after Hello: every one gets an answer or a
    /// close, and the session task never panics.
    #[tokio::test]
    async fn random_frames_never_panic_the_session() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b61_666b);
        let gateway = Harness::new(Limits::default());
        for round in 0..300 {
            let (mut ws, task) = gateway.connect().await;
            if round % 2 == 0 {
                send(&mut ws, hello()).await;
                assert!(matches!(recv(&mut ws).await, Ok(Kind::Welcome(_))));
            }
            for _ in 0..4 {
                let len = rng.random_range(0..48);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Half the time, a valid frame key so the member's body is what is random.
                if round % 4 < 2 && !bytes.is_empty() {
                    bytes[0] = (rng.random_range(1u8..=17) << 3) | 2;
                }
                if ws.send(Message::Binary(bytes.into())).await.is_err() {
                    break;
                }
            }
            drop(ws);
            let joined = tokio::time::timeout(Duration::from_secs(10), task).await.expect("session ends");
            assert!(joined.is_ok(), "round {round}: the session task panicked");
        }
    }

    async fn send(ws: &mut WebSocketStream<tokio::io::DuplexStream>, kind: Kind) {
        ws.send(Message::Binary(wire::encode(kind))).await.expect("send");
    }

    async fn recv(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Result<Kind, u16> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(k) = wire::Frame::decode(b).expect("frame").kind {
                        return Ok(k);
                    }
                }
                Some(Ok(Message::Close(c))) => return Err(c.map_or(1005, |c| u16::from(c.code))),
                Some(Ok(_)) => {}
                _ => return Err(1006),
            }
        }
    }

    fn hello() -> Kind {
        Kind::Hello(wire::Hello { protocol_version: 1, token: String::new(), client: "t".into() })
    }

    #[tokio::test]
    async fn hello_welcome_ping_pong_then_protocol_error() {
        let (mut ws, _shutdown) = pipe(Limits::default()).await;
        send(&mut ws, hello()).await;
        let Ok(Kind::Welcome(w)) = recv(&mut ws).await else { panic!("no welcome") };
        assert_eq!(w.server_id, "test");
        assert_eq!(w.limits.map(|l| l.max_subscriptions), Some(64));
        assert!(w.server_time_ms > 0);
        send(&mut ws, Kind::Ping(wire::Ping { nonce: 42 })).await;
        assert_eq!(recv(&mut ws).await, Ok(Kind::Pong(wire::Pong { nonce: 42 })));
        ws.send(Message::Binary(vec![0xff].into())).await.expect("send");
        let Ok(Kind::Error(e)) = recv(&mut ws).await else { panic!("no error") };
        assert_eq!(e.code, wire::Code::InvalidArgument as i32);
        assert_eq!(recv(&mut ws).await, Err(1002));
    }

    #[tokio::test]
    async fn the_gateway_pings_and_closes_silent_clients_with_4009() {
        let limits = Limits::default()
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_idle_timeout(Duration::from_millis(450));
        let (mut ws, _shutdown) = pipe(limits).await;
        send(&mut ws, hello()).await;
        assert!(matches!(recv(&mut ws).await, Ok(Kind::Welcome(_))));
        let mut pings = Vec::new();
        let code = loop {
            match recv(&mut ws).await {
                Ok(Kind::Ping(p)) => pings.push(p.nonce),
                Ok(Kind::Error(e)) => assert_eq!(e.code, wire::Code::Unavailable as i32),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(code) => break code,
            }
        };
        assert_eq!(code, close::IDLE);
        assert!(pings.len() >= 3, "pings every heartbeat: {pings:?}");
        assert!(pings.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[tokio::test]
    async fn answering_pings_keeps_a_session_alive() {
        let limits = Limits::default()
            .with_heartbeat_interval(Duration::from_millis(50))
            .with_idle_timeout(Duration::from_millis(200));
        let (mut ws, _shutdown) = pipe(limits).await;
        send(&mut ws, hello()).await;
        assert!(matches!(recv(&mut ws).await, Ok(Kind::Welcome(_))));
        for _ in 0..12 {
            // 12 pings = 600 ms, three idle timeouts.
            let Ok(Kind::Ping(p)) = recv(&mut ws).await else { panic!("expected a ping") };
            send(&mut ws, Kind::Pong(wire::Pong { nonce: p.nonce })).await;
        }
    }

    #[tokio::test]
    async fn shutdown_sends_goaway_then_1001_when_nothing_is_in_flight() {
        let (mut ws, gateway) = pipe(Limits::default()).await;
        send(&mut ws, hello()).await;
        assert!(matches!(recv(&mut ws).await, Ok(Kind::Welcome(_))));
        gateway.shutdown.send(true).expect("shutdown");
        assert!(matches!(recv(&mut ws).await, Ok(Kind::GoAway(_))));
        assert_eq!(recv(&mut ws).await, Err(close::GOING_AWAY));
    }

    #[tokio::test]
    async fn an_unknown_method_is_refused_without_touching_kafka() {
        let (mut ws, _shutdown) = pipe(Limits::default()).await;
        send(&mut ws, hello()).await;
        assert!(matches!(recv(&mut ws).await, Ok(Kind::Welcome(_))));
        send(
            &mut ws,
            Kind::Subscribe(wire::Subscribe {
                id: 3,
                method: "x.Y/Z".into(),
                request: Bytes::new(),
                start: None,
                credit: 0,
            }),
        )
        .await;
        let Ok(Kind::Error(e)) = recv(&mut ws).await else { panic!("no error") };
        assert_eq!((e.subscription_id, e.code), (3, wire::Code::NotFound as i32));
    }
}
