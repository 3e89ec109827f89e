//! One WebSocket session: Hello/Welcome, then subscriptions, publishes, credit,
//! heartbeats and token refresh, until a close. Generic over the byte stream so it runs
//! the same over TCP, TLS, or an in-memory pipe in tests.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use super::clients::Slot;
use super::local::stream_plan;
use super::publish::{PublishRequest, publish};
use super::rate::TokenBucket;
use super::shared::Shared;
use crate::auth::{Handshake, Operation, Principal};
use crate::config::Limits;
use crate::fanout::outbox::{Item, Outbox, dropped_when_discarding};
use crate::fanout::subscriber::SubscriberSpec;
use crate::fanout::subscription::{Opening, SubscriptionHandle};
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::protocol::wire::{self, frame::Kind};
use crate::protocol::{Code, StartAt, Status};
use crate::stream::RequestContext;

/// How long, and how many bytes, a connection that sent its Close reads on: until the
/// peer is silent for [`DRAIN_IDLE`], and at most [`DRAIN_TIME`] and [`DRAIN_BYTES`].
const DRAIN_IDLE: Duration = Duration::from_secs(2);
const DRAIN_TIME: Duration = Duration::from_secs(10);
const DRAIN_BYTES: usize = 32 << 20;

/// After the gateway's Close: reads what the peer still sends (frames already in flight,
/// the rest of an oversized message) until its Close or the end of its side, while it
/// keeps sending (a pause of [`DRAIN_IDLE`] ends it), for at most [`DRAIN_TIME`] and
/// [`DRAIN_BYTES`]. A socket closed with unread input answers with a TCP reset, which can
/// destroy the Close frame before the peer reads it; draining lets 1009 (or 1002, 4008…)
/// reach a client that was still writing, also a slow one (a 4 MiB message masked by a
/// busy Python client took over 2 s). Input that is no longer frames (an oversized
/// message's remainder) is read as bytes, and so is all input once the stream has
/// returned an error (an oversized or malformed message): a `WebSocketStream` that has
/// failed is fused, its `next` is `None` from then on, and reading on through it would
/// read nothing at all.
pub(crate) async fn close_after<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    use futures_util::stream::FusedStream;
    let end = tokio::time::Instant::now() + DRAIN_TIME;
    if ws.is_terminated() {
        return drain_input(ws.get_mut(), end).await;
    }
    loop {
        let deadline = end.min(tokio::time::Instant::now() + DRAIN_IDLE);
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed))) => return,
            Ok(Some(Err(_))) => return drain_input(ws.get_mut(), end).await,
        }
    }
}

/// Reads and discards bytes until the peer closes its side or pauses for [`DRAIN_IDLE`],
/// `end` or [`DRAIN_BYTES`]. Our side is shut for writing first (the Close was the last
/// thing sent): the peer sees the end after the Close and closes its own side, which
/// ends the drain at once instead of after a pause.
async fn drain_input<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S, end: tokio::time::Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout_at(end, socket.shutdown()).await;
    let mut buf = vec![0u8; 64 << 10];
    let mut read = 0;
    while read < DRAIN_BYTES {
        let deadline = end.min(tokio::time::Instant::now() + DRAIN_IDLE);
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => return,
        }
    }
}

/// How often a draining session looks whether its publishes are all answered.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// The smallest WebSocket fragment a Data message is cut into (a write buffer set smaller
/// than this still fragments at this size).
const MIN_FRAGMENT_BYTES: usize = 1 << 10;
const MAX_IDEMPOTENCY_KEY: usize = 64;

fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Serves one accepted WebSocket until it closes. `slot` is its place in the gateway's
/// connection counts (none for in-memory tests).
///
/// Not an `async fn`: what the session is built from is moved into it here, before the
/// future exists, so that the task (allocated at its largest state, for the connection's
/// life) holds no second copy of the WebSocket and the handshake.
pub(crate) fn serve<S>(
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    handshake: Handshake,
    slot: Option<Slot>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // 128 random bits: session ids scope anonymous idempotency keys, so they must not be guessable.
    let session_id = format!("{:032x}", rand::random::<u128>());
    let remote = handshake.peer();
    let span =
        tracing::info_span!("connection", session = %session_id, remote = ?remote, client = ?handshake.client_ip());
    let (sink, mut stream) = ws.split();
    let close_timeout = shared.limits.close_timeout;
    let outbox =
        Outbox::new(shared.limits.send_queue_bytes, shared.limits.send_queue_frames, shared.send_budget.clone());
    let fragment = shared.limits.write_buffer_bytes.max(MIN_FRAGMENT_BYTES);
    let metrics = shared.metrics.clone();
    let mut session = Session {
        inflight: Arc::new(Semaphore::new(shared.limits.max_inflight_publishes)),
        bucket: TokenBucket::new(shared.limits.max_publishes_per_second),
        order: super::order::Sequencer::new(),
        shared,
        outbox: outbox.clone(),
        session_id,
        handshake,
        slot,
        principal: Principal::anonymous(),
        instance_id: None,
        subs: HashMap::new(),
        last_heard: Instant::now(),
        nonce: 0,
    };
    async move {
        let writer = tokio::spawn(write_loop(sink, outbox, metrics, fragment).in_current_span());
        tracing::debug!("connection open");
        session.run(&mut stream).await;
        session.teardown();
        // The session is over: its connection slot is given back now; the socket closes
        // within the bounds below.
        drop(session);
        // Give the writer time to send what is queued and the close frame (a slow
        // consumer's records were dropped for it); a peer that does not read does not get
        // to hold the task for longer than the close timeout.
        let mut writer = writer;
        let sink = match tokio::time::timeout(close_timeout, &mut writer).await {
            Ok(Ok(sink)) => sink,
            Ok(Err(_)) => None,
            Err(_) => {
                writer.abort();
                None
            }
        };
        // After the Close: take in what the peer still sends before closing the socket.
        if let Some(Ok(mut ws)) = sink.map(|sink| stream.reunite(sink)) {
            Box::pin(close_after(&mut ws)).await;
        }
        tracing::debug!("connection closed");
    }
    .instrument(span)
}

struct Session {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    session_id: String,
    handshake: Handshake,
    slot: Option<Slot>,
    principal: Principal,
    /// `Hello.instance_id`, when well-formed.
    instance_id: Option<String>,
    /// Open subscriptions; ones that ended by themselves (an Error frame was sent) are
    /// swept on the heartbeat and the session's checks, and before a subscription opens.
    subs: HashMap<u32, SubscriptionHandle>,
    inflight: Arc<Semaphore>,
    bucket: TokenBucket,
    /// The order publishes are handed to the producer in: the order they were read.
    order: Arc<super::order::Sequencer>,
    last_heard: Instant,
    nonce: u64,
}

/// How the session loop goes on after a frame.
enum Flow {
    Continue,
    Stop,
}

/// One WebSocket message, read.
enum Incoming {
    /// A frame of a type this gateway knows.
    Frame(Kind),
    /// A frame of a type it does not know (answered UNIMPLEMENTED; the session goes on).
    Unknown,
    /// The session must end (the close, if any, is queued).
    End,
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
        // The Hello, its authentication and the Welcome on the heap for as long as they
        // take: the session's own task keeps only what an open connection needs (a task
        // is allocated at its largest state, for the connection's life).
        if let Flow::Stop = Box::pin(self.greet(stream)).await {
            return;
        }
        let shared = self.shared.clone();
        let limits = &shared.limits;
        self.last_heard = Instant::now();
        let mut heartbeat = tokio::time::interval(limits.heartbeat_interval);
        heartbeat.tick().await;
        let mut shutdown = self.shared.shutdown.clone();
        let mut drain_until: Option<Instant> = None;
        let outbox = self.outbox.clone();
        // One timer for everything the session watches besides the heartbeat, set to the
        // earliest of its deadlines (no tick on an idle connection in between: a gateway
        // holds 100,000s of them). The outbox calls for attention when it fills up or is
        // closed from elsewhere.
        let check = tokio::time::sleep_until(self.next_check(limits, drain_until).into());
        tokio::pin!(check);
        loop {
            // A client whose requests' answers fill the control queue is read again once
            // the writer has taken them (backpressure, not a slow-consumer close).
            let room = outbox.has_answer_room();
            let flow = tokio::select! {
                () = outbox.answer_room(), if !room => Flow::Continue,
                m = stream.next(), if room => match m {
                    None => Flow::Stop,
                    Some(m) => {
                        self.last_heard = Instant::now();
                        match self.frame_of(m) {
                            Incoming::Frame(Kind::TokenRefresh(t)) => Box::pin(self.refresh(&t.token)).await,
                            Incoming::Frame(kind) => self.handle(kind),
                            Incoming::Unknown => self.send_error(&Status::new(Code::Unimplemented, "unknown frame type"), 0, 0),
                            Incoming::End => Flow::Stop,
                        }
                    }
                },
                _ = heartbeat.tick() => {
                    self.sweep_ended();
                    self.nonce += 1;
                    self.send(Kind::Ping(wire::Ping { nonce: self.nonce }))
                }
                () = &mut check => {
                    self.sweep_ended();
                    self.watchdog(limits, drain_until)
                }
                () = outbox.attention() => self.watchdog(limits, drain_until),
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
            // Deadlines only move later (a frame heard, a token refreshed) except when the
            // queue fills or a drain starts: the timer is moved earlier at once, and on
            // firing early it is set again.
            let next = self.next_check(limits, drain_until);
            if check.is_elapsed() || next < check.deadline().into_std() {
                check.as_mut().reset(next.into());
            }
        }
    }

    /// Reads the Hello, authenticates it and answers Welcome (`Stop`: the session is over,
    /// its close queued).
    async fn greet<S>(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = &self.shared.limits;
        // Hello.
        let first = match tokio::time::timeout(limits.hello_timeout, stream.next()).await {
            Err(_) => {
                self.fail(
                    Status::new(Code::FailedPrecondition, "no Hello within the hello timeout"),
                    close::BAD_HELLO,
                    "hello timeout",
                );
                return Flow::Stop;
            }
            Ok(None) => return Flow::Stop,
            Ok(Some(m)) => m,
        };
        let hello = match self.frame_of(first) {
            Incoming::Frame(Kind::Hello(h)) => h,
            Incoming::Frame(_) | Incoming::Unknown => {
                self.fail(
                    Status::new(Code::FailedPrecondition, "the first frame must be Hello"),
                    close::BAD_HELLO,
                    "expected Hello",
                );
                return Flow::Stop;
            }
            Incoming::End => return Flow::Stop,
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
            return Flow::Stop;
        }
        match self.shared.authenticate(&hello.token, &self.handshake).await {
            Ok(p) => self.principal = p,
            Err(status) => {
                self.shared.metrics.connection_rejected("unauthenticated");
                self.fail(status, close::UNAUTHENTICATED, "unauthenticated");
                return Flow::Stop;
            }
        }
        if let Some(slot) = &mut self.slot
            && let Err(full) = slot.bind_principal(self.principal.subject())
        {
            self.shared.metrics.connection_rejected("principal_limit");
            self.fail(full.status(limits), close::OVERLOADED, "too many connections");
            return Flow::Stop;
        }
        self.instance_id = crate::stream::valid_instance_id(&hello.instance_id);
        self.handshake.keep_origin_and_host();
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
        self.send(Kind::Welcome(welcome))
    }

    /// When the session must next look at its deadlines: the idle timeout, the token's
    /// expiry, a full queue's slow-consumer timeout and, while draining, every 250 ms
    /// (whether its publishes are answered) up to the drain deadline.
    fn next_check(&self, limits: &Limits, drain_until: Option<Instant>) -> Instant {
        let now = Instant::now();
        let mut next = self.last_heard + limits.idle_timeout;
        if let Some(full) = self.outbox.full_since() {
            next = next.min(full + limits.slow_consumer_timeout);
        }
        if let Some(expiry) = self.principal.expiry() {
            let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
            next = next.min(now + left);
        }
        if let Some(deadline) = drain_until {
            next = next.min(deadline).min(now + DRAIN_CHECK);
        }
        // Never in the past: a deadline met a moment early (two clocks) is looked at again.
        next.max(now + Duration::from_millis(1))
    }

    fn sweep_ended(&mut self) {
        self.subs.retain(|_, sub| !sub.is_ended());
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

    /// Reads one WebSocket message.
    fn frame_of(&self, m: Result<Message, tungstenite::Error>) -> Incoming {
        match m {
            Ok(Message::Binary(b)) => match wire::Frame::decode(b) {
                Ok(wire::Frame { kind: Some(kind) }) => Incoming::Frame(kind),
                Ok(wire::Frame { kind: None }) => Incoming::Unknown,
                Err(e) => {
                    self.fail(
                        Status::invalid_argument(format!("undecodable frame: {e}")),
                        close::PROTOCOL,
                        "undecodable frame",
                    );
                    Incoming::End
                }
            },
            Ok(Message::Text(_)) => {
                self.fail(
                    Status::invalid_argument("text messages are not part of kafkasocks.v1"),
                    close::UNSUPPORTED,
                    "binary frames only",
                );
                Incoming::End
            }
            Ok(Message::Close(_)) => Incoming::End,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                Incoming::Frame(Kind::Pong(wire::Pong { nonce: 0 }))
            }
            Err(tungstenite::Error::Protocol(e)) => {
                // RFC 6455 §7.4.1: 1002 for a protocol violation (an unmasked frame, RSV
                // bits, a reserved opcode, a fragmented or oversized control frame…).
                self.fail(
                    Status::invalid_argument(format!("WebSocket protocol violation: {e}")),
                    close::PROTOCOL,
                    "protocol violation",
                );
                Incoming::End
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
                Incoming::End
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                Incoming::End
            }
        }
    }

    fn context(&self, method: &str) -> RequestContext {
        RequestContext {
            principal: self.principal.clone(),
            session_id: self.session_id.clone(),
            remote_addr: self.handshake.peer(),
            client_ip: self.handshake.client_ip(),
            method: method.to_owned(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// A new token for the session: checked like the first; it must name the same subject
    /// (subscriptions and receipts were granted to that one).
    async fn refresh(&mut self, token: &str) -> Flow {
        match self.shared.authenticate(token, &self.handshake).await {
            Ok(p) if p.subject() == self.principal.subject() => {
                self.principal = p;
                self.send(Kind::TokenAccepted(wire::TokenAccepted {
                    token_expires_at_ms: self.principal.expiry().map_or(0, now_ms),
                    server_time_ms: now_ms(SystemTime::now()),
                }))
            }
            Ok(_) => self.fail(
                Status::permission_denied("a refreshed token must name the session's subject"),
                close::UNAUTHENTICATED,
                "token subject changed",
            ),
            Err(status) => self.fail(status, close::UNAUTHENTICATED, "unauthenticated"),
        }
    }

    fn handle(&mut self, kind: Kind) -> Flow {
        match kind {
            Kind::Subscribe(s) => self.subscribe(s),
            Kind::Unsubscribe(u) => {
                drop(self.subs.remove(&u.id));
                self.send(Kind::End(wire::End { id: u.id }))
            }
            Kind::Publish(p) => self.publish(p),
            Kind::Credit(c) => {
                if let Some(sub) = self.subs.get(&c.subscription_id) {
                    sub.add_credit(c.records);
                }
                Flow::Continue
            }
            // Answered in `run` (the authenticator is async); never reaches here.
            Kind::TokenRefresh(_) => Flow::Continue,
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
        self.shared.draining()
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
                // Not about subscription s.id (an Error carrying it would end the open one):
                // about this frame.
                let status = Status::new(
                    Code::AlreadyExists,
                    format!("subscription {} is open: this Subscribe is refused", s.id),
                );
                return Err((status, 0));
            }
            if self.subs.len() >= self.shared.limits.max_subscriptions {
                return Err(refuse(Status::new(
                    Code::ResourceExhausted,
                    format!("at most {} subscriptions per connection", self.shared.limits.max_subscriptions),
                )));
            }
            let (def, hook) = self.shared.streams.subscription(&s.method).map_err(refuse)?;
            let ctx = self.context(&s.method);
            self.shared.authorize(&ctx, Operation::Subscribe).map_err(refuse)?;
            let plan = stream_plan(&self.shared, &ctx, def, hook.plan(&ctx, s.request.clone()));
            Ok((def.topic.clone(), plan))
        })();
        let (topic, plan) = match checked {
            Ok(v) => v,
            Err((status, id)) => return self.send_error(&status, id, 0),
        };
        let limits = &self.shared.limits;
        let credit = if s.credit == 0 { limits.default_credit } else { s.credit.min(limits.max_credit) };
        let span = tracing::debug_span!("subscription", id = s.id, method = %s.method, topic = %topic);
        let opening = Opening {
            spec: SubscriberSpec { id: s.id, credit, max_credit: limits.max_credit },
            topic,
            start: StartAt::from_wire(s.start),
            plan,
        };
        let handle = SubscriptionHandle::open(&self.shared.hubs, self.outbox.clone(), opening, span);
        self.subs.insert(s.id, handle);
        Flow::Continue
    }

    fn publish(&mut self, p: wire::Publish) -> Flow {
        let checked = (|| {
            if self.draining() {
                return Err(Status::unavailable("gateway shutting down; reconnect elsewhere"));
            }
            let (def, hook) = self.shared.streams.publication(&p.method)?;
            if p.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(Status::invalid_argument(format!(
                    "idempotency keys are at most {MAX_IDEMPOTENCY_KEY} bytes"
                )));
            }
            // The in-flight bound first: a publish it refuses takes no rate token.
            let permit = self.inflight.clone().try_acquire_owned().map_err(|_| {
                Status::new(Code::ResourceExhausted, "too many publishes awaiting receipts")
                    .with_retry_after(Duration::from_millis(50))
            })?;
            // Then the connection's rate and the principal's: a publish either refuses takes
            // no token of the other.
            if let Err(wait) = self.bucket.ready() {
                return Err(Status::new(Code::ResourceExhausted, "publish rate limit").with_retry_after(wait));
            }
            super::publish::admit(&self.shared, &self.context(&p.method))?;
            let _ = self.bucket.take();
            Ok((def.topic.clone(), hook.clone(), (def.schema.clone(), def.key_message.clone()), permit))
        })();
        let (topic, hook, (schema, key_message), permit) = match checked {
            Ok(v) => v,
            Err(status) => {
                self.shared.metrics.publish_failed();
                return self.send_error(&status, 0, p.id);
            }
        };
        let ctx = self.context(&p.method);
        let shared = self.shared.clone();
        let outbox = self.outbox.clone();
        let turn = self.order.ticket();
        let span = tracing::debug_span!("publish", id = p.id, method = %p.method, topic = %topic);
        tokio::spawn(
            async move {
                let id = p.id;
                let _permit = permit;
                let req = PublishRequest {
                    ctx,
                    topic: &topic,
                    hook,
                    schema: schema.as_deref(),
                    key_message: key_message.as_deref(),
                    turn: Some(turn),
                    admitted: true,
                    untraced: super::trace::Untraced::NewTrace,
                    publish: p,
                };
                let kind = match publish(&shared, req).await {
                    Ok(r) => Kind::Receipt(wire::Receipt {
                        id,
                        topic: r.topic,
                        partition: r.partition,
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        duplicate: r.duplicate,
                    }),
                    Err(status) => {
                        tracing::debug!(%status, "publish failed");
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
        self.subs.clear();
        self.outbox.close(1000, "");
    }
}

/// Gives a taken batch's record bytes back to the gateway's send budget once written (or
/// dropped, when the writer stops).
struct Release<'a>(&'a crate::fanout::outbox::SendBudget, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    fragment: usize,
) -> Option<SplitSink<WebSocketStream<S>, Message>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let (mut items, bytes) = outbox.take().await;
        let release = Release(outbox.budget(), bytes);
        // On the heap while it writes: the writer's task, allocated at its largest state
        // for the connection's life, keeps only what waiting for the queue needs.
        let rest = match Box::pin(write_items(&mut sink, &mut items, &outbox, &metrics, fragment)).await {
            Written::All => continue,
            Written::Closed => return Some(sink),
            Written::Failed => return None,
            Written::Discarded(rest) => rest,
        };
        // A slow consumer: the records taken leave memory and the send budget now, before
        // the rest (the Close, when it was taken too) waits for the peer to read.
        drop(items);
        drop(release);
        // On the heap too: the task does not keep room for the messages it writes.
        match Box::pin(write_rest(&mut sink, rest)).await {
            Rest::Written => {}
            Rest::Closed => return Some(sink),
            Rest::Failed => return None,
        }
    }
}

/// What became of what a slow consumer is still sent.
enum Rest {
    Written,
    Closed,
    Failed,
}

/// Writes what a slow consumer is still sent, up to its Close.
async fn write_rest<S>(sink: &mut SplitSink<WebSocketStream<S>, Message>, rest: Vec<Message>) -> Rest
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for m in rest {
        let is_close = matches!(m, Message::Close(_));
        if sink.feed(m).await.is_err() {
            return Rest::Failed;
        }
        if is_close {
            let _ = sink.flush().await;
            return Rest::Closed;
        }
    }
    if sink.flush().await.is_err() {
        return Rest::Failed;
    }
    Rest::Written
}

/// What became of the items the writer took.
enum Written {
    /// Written and flushed.
    All,
    /// Written up to their Close, which ends the connection.
    Closed,
    /// The socket failed.
    Failed,
    /// The connection was closed as a slow consumer before they were written: what is
    /// left to write of them, without records and checkpoints.
    Discarded(Vec<Message>),
}

/// What became of one message handed to the socket.
enum Fed {
    Sent,
    Failed,
    /// Not written: the connection was closed as a slow consumer first (while the socket
    /// was full, or before the message got its turn).
    Discarded,
}

/// Hands `m` to the socket unless the connection is (or becomes, while the socket is full)
/// a slow consumer. A write given up leaves nothing half-sent: `feed` takes the message
/// only once the sink is ready for it.
async fn feed<S>(sink: &mut SplitSink<WebSocketStream<S>, Message>, m: Message, outbox: &Outbox) -> Fed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        () = outbox.discarding() => Fed::Discarded,
        r = sink.feed(m) => if r.is_ok() { Fed::Sent } else { Fed::Failed },
    }
}

/// Hands one Data message to the socket, as [`feed`] does, in WebSocket fragments of at
/// most `fragment` payload bytes. tungstenite formats every frame into a per-connection
/// write buffer that keeps its largest capacity for the connection's life: a whole Data
/// message of up to [`DATA_BATCH_BYTES`](crate::fanout::outbox::DATA_BATCH_BYTES) would stay allocated on a connection that then
/// idles (110 KB a connection after a catch-up, bench/ `deploy`), fragments keep it at the
/// write buffer's size. A message whose first fragment is out must be finished before any
/// other message (RFC 6455 §5.4): when the connection becomes a slow consumer meanwhile,
/// the fragments left are handed back ([`Fed::Interrupted`]) so that the records taken
/// leave the send budget at once while the message is finished once the peer reads.
async fn feed_data<S>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    data: Bytes,
    fragment: usize,
    outbox: &Outbox,
) -> Result<Fed, Interrupted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if data.len() <= fragment {
        return Ok(feed(sink, Message::Binary(data), outbox).await);
    }
    let first = Frame::message(data.slice(..fragment), OpCode::Data(OpData::Binary), false);
    match feed(sink, Message::Frame(first), outbox).await {
        Fed::Sent => {}
        other => return Ok(other),
    }
    let continuation = |at: usize| {
        let end = (at + fragment).min(data.len());
        (Message::Frame(Frame::message(data.slice(at..end), OpCode::Data(OpData::Continue), end == data.len())), end)
    };
    let mut at = fragment;
    while at < data.len() {
        let (next, end) = continuation(at);
        tokio::select! {
            biased;
            () = outbox.discarding() => {
                let mut tail = Vec::with_capacity((data.len() - at).div_ceil(fragment));
                while at < data.len() {
                    let (next, end) = continuation(at);
                    tail.push(next);
                    at = end;
                }
                return Err(Interrupted(tail));
            }
            r = sink.feed(next) => if r.is_err() { return Ok(Fed::Failed) },
        }
        at = end;
    }
    Ok(Fed::Sent)
}

/// A Data message begun (its first fragments are out) when the connection was closed as a
/// slow consumer: the fragments that finish it, to be written before anything else.
struct Interrupted(Vec<Message>);

/// Flushes the socket unless the connection is (or becomes) a slow consumer first.
async fn flush<S>(sink: &mut SplitSink<WebSocketStream<S>, Message>, outbox: &Outbox) -> Fed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        () = outbox.discarding() => Fed::Discarded,
        r = sink.flush() => if r.is_ok() { Fed::Sent } else { Fed::Failed },
    }
}

fn message(item: &Item) -> Option<Message> {
    match item {
        Item::Records(..) => None,
        Item::Frame(b) => Some(Message::Binary(b.clone())),
        Item::Close(code, reason) => {
            Some(Message::Close(Some(CloseFrame { code: CloseCode::from(*code), reason: (*reason).into() })))
        }
    }
}

/// Writes what the writer took, in order: each run of records as the Data frame its queue
/// built, control frames as they are, then one flush.
async fn write_items<S>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    items: &mut VecDeque<Item>,
    outbox: &Outbox,
    metrics: &Metrics,
    fragment: usize,
) -> Written
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // What a slow consumer is still sent of an item.
    let kept = |item: &Item| if dropped_when_discarding(item) { None } else { message(item) };
    let (mut records, mut frames) = (0u64, 0u64);
    while let Some(item) = items.pop_front() {
        let item = match item {
            Item::Records(id, data) => {
                let n = u64::from(data.records());
                match feed_data(sink, data.finish(id), fragment, outbox).await {
                    Ok(Fed::Sent) => (records, frames) = (records + n, frames + 1),
                    Ok(Fed::Failed) => return Written::Failed,
                    Ok(Fed::Discarded) => {
                        metrics.delivered(records, frames);
                        return Written::Discarded(items.iter().filter_map(kept).collect());
                    }
                    // A Data message interrupted between its fragments is finished first.
                    Err(Interrupted(tail)) => {
                        metrics.delivered(records + n, frames + 1);
                        return Written::Discarded(tail.into_iter().chain(items.iter().filter_map(kept)).collect());
                    }
                }
                continue;
            }
            other => other,
        };
        let Some(m) = message(&item) else { continue };
        let is_close = matches!(m, Message::Close(_));
        match feed(sink, m, outbox).await {
            Fed::Sent => {}
            Fed::Failed => return Written::Failed,
            Fed::Discarded => {
                metrics.delivered(records, frames);
                return Written::Discarded(std::iter::once(&item).chain(items.iter()).filter_map(kept).collect());
            }
        }
        if is_close {
            let _ = sink.flush().await;
            metrics.delivered(records, frames);
            return Written::Closed;
        }
    }
    let flushed = flush(sink, outbox).await;
    metrics.delivered(records, frames);
    match flushed {
        Fed::Sent => Written::All,
        Fed::Failed => Written::Failed,
        Fed::Discarded => Written::Discarded(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    //! The session over an in-memory pipe: no sockets, no Kafka (it is never reached).
    use super::*;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// One gateway's shared state (Kafka is configured but never reached) and its
    /// shutdown switch; `connect` runs a session on an in-memory pipe.
    struct Harness {
        shared: Arc<Shared>,
        shutdown: watch::Sender<bool>,
    }

    impl Harness {
        fn new(limits: Limits) -> Harness {
            let (shared, shutdown) = crate::session::shared::test_shared(limits);
            Harness { shared, shutdown }
        }

        async fn connect(&self) -> (WebSocketStream<tokio::io::DuplexStream>, JoinHandle<()>) {
            let (server_io, client_io) = tokio::io::duplex(64 << 10);
            let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            let handshake = Handshake::new(
                crate::auth::Transport::WebSocket,
                "/streams",
                std::iter::empty::<(String, String)>(),
                None,
            );
            let task = tokio::spawn(serve(server, self.shared.clone(), handshake, None));
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
        Kind::Hello(wire::Hello { protocol_version: 1, token: String::new(), client: "t".into(), ..Default::default() })
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

    /// A connection's two tasks are allocated at their largest state and kept for the
    /// connection's life: what only the Hello, a write or the close needs is boxed while it
    /// runs. Before, the session's task took 2,816 B and the writer's 904 B of every idle
    /// connection (bench/ `memory`); a bound here keeps a new inline await from growing them.
    #[tokio::test]
    async fn an_idle_connection_s_tasks_stay_small() {
        let (shared, _shutdown) = crate::session::shared::test_shared(Limits::default());
        let (server_io, _client_io) = tokio::io::duplex(1 << 10);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let handshake =
            Handshake::new(crate::auth::Transport::WebSocket, "/streams", std::iter::empty::<(String, String)>(), None);
        let session = serve(server, shared.clone(), handshake, None);
        assert!(std::mem::size_of_val(&session) <= 1536, "session task: {} B", std::mem::size_of_val(&session));
        let (server_io, _client_io) = tokio::io::duplex(1 << 10);
        let (sink, _stream) = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await.split();
        let outbox = Outbox::new(1 << 20, 64, shared.send_budget.clone());
        let writer = write_loop(sink, outbox, shared.metrics.clone(), 16 << 10);
        assert!(std::mem::size_of_val(&writer) <= 320, "writer task: {} B", std::mem::size_of_val(&writer));
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

    /// A slow consumer whose socket is full: its records, queued and in the writer's hands,
    /// and its checkpoints are dropped at once (the send budget is free again while the
    /// socket is still blocked), and once it reads it gets what the socket already held, its
    /// receipt, then the Close 4008.
    #[tokio::test]
    async fn a_slow_consumer_loses_its_queued_records_and_gets_its_close_once_it_reads() {
        use crate::fanout::outbox::SendBudget;
        use crate::protocol::wire::SharedRecord;
        let (server_io, client_io) = tokio::io::duplex(16 << 10);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let (sink, _stream) = server.split();
        let budget = SendBudget::new(64 << 20);
        let outbox = Outbox::new(1 << 20, 64, budget.clone());
        let metrics = Arc::new(Metrics::default());
        let writer =
            tokio::spawn(write_loop(sink, outbox.clone(), metrics.clone(), Limits::default().write_buffer_bytes));
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut offered = 0i64;
        // Records until the queue refuses: the writer holds a batch it cannot write.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while outbox.full_since().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the queue never filled");
            let rec = SharedRecord::new(0, offered, 0, b"k", &[], &[7u8; 1000]);
            if outbox.offer_record(1, &wake, &rec) {
                offered += 1;
            } else {
                tokio::task::yield_now().await;
            }
        }
        let checkpoint = wire::Checkpoint {
            subscription_id: 1,
            positions: vec![wire::PartitionOffset { partition: 0, next_offset: offered }],
        };
        outbox.push_frame(wire::encode(Kind::Checkpoint(checkpoint))).expect("room");
        let receipt = wire::Receipt { id: 5, topic: "t".into(), ..Default::default() };
        outbox.push_frame(wire::encode(Kind::Receipt(receipt.clone()))).expect("room");
        assert!(budget.used() > 1 << 20, "the queue and the writer's batch: {}", budget.used());
        outbox.close_slow_consumer(&metrics);
        tokio::time::timeout(Duration::from_secs(5), async {
            while budget.used() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every record dropped while the socket is blocked");
        assert!(!writer.is_finished(), "the Close waits for the peer to read");
        // The peer reads again.
        let mut records = Vec::new();
        let mut frames = Vec::new();
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("no stall") {
                Some(Ok(Message::Binary(b))) => match wire::Frame::decode(b).expect("frame").kind {
                    Some(Kind::Data(d)) => records.extend(d.records.into_iter().map(|r| r.offset)),
                    other => frames.push(other),
                },
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                other => panic!("no Close frame: {other:?}"),
            }
        };
        assert_eq!(close, Some(close::SLOW_CONSUMER));
        assert_eq!(frames, vec![Some(Kind::Receipt(receipt))], "the receipt stays, the checkpoint goes");
        assert!(records.iter().enumerate().all(|(i, &o)| o == i as i64), "a prefix, in order");
        // Only what the socket had taken: the pipe's 16 KiB, the write buffer's fragment and
        // the Data message of 256 KiB begun when the socket blocked, finished once it reads
        // (a decoding error above if it were cut short).
        assert!(records.len() < 600 && offered > 2000, "{} of {offered} records written", records.len());
        let joined = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("the writer ends");
        assert!(matches!(joined, Ok(Some(_))), "and hands the socket back for the close handshake");
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
