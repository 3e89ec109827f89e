//! `kafkasocks-conformance`: a black-box conformance suite for the KafkaSocks wire protocol
//! (docs/protocol.md), run against any gateway URL.
//!
//! ```text
//! kafkasocks-conformance --url ws://HOST:PORT/PATH [options]
//!
//!   --url URL              the gateway's WebSocket URL (ws:// only)
//!   --token TOKEN          the Hello token (default: none, an anonymous gateway)
//!   --token-url URL        instead: POST {"user": NAME} to this URL for a fresh token before
//!                          every connection (the chat example's demo endpoint, POST /token);
//!                          the answer is JSON with a "token" member
//!   --token-user NAME      the NAME for --token-url (default "conformance")
//!   --origin ORIGIN        the Origin header of every upgrade (default: none)
//!   --subscribe METHOD     a server-streaming method with a key field (default test.v1.Records/Watch)
//!   --publish METHOD       a unary method of the same topic, keyed by the same field (default
//!                          test.v1.Records/Put)
//!   --key-field N          the string field of the request, the publish payload and the record
//!                          that holds the key (default 1)
//!   --body-field N         the string field of the publish payload and the record that holds
//!                          a text (default 2)
//!   --partitioner NAME     java (default: murmur2, the documented default) or librdkafka (crc32)
//!   --admin-url URL        the gateway's admin endpoint (http://HOST:PORT): checks /healthz and
//!                          /readyz (default: not checked)
//!   --slow                 also run the cases that wait for the gateway's timers (the hello
//!                          timeout, heartbeats, the idle timeout, token expiry): minutes
//!   --only A,B             run only the cases whose names contain one of these
//!   --case-timeout SECS    the time limit of one ordinary case (default 30)
//!   --list                 print the cases and exit
//! ```
//!
//! The suite assumes both methods are bound to one topic and that their messages carry the
//! key and the text as string fields: for the fixture gateway (`fixture-gateway TOPIC 3`)
//! the defaults fit; for the chat example (`chat.v1.ChatStreams/Messages` and `/Post`,
//! `RoomFilter.room` = 1, `ChatMessage.room` = 1, `ChatMessage.text` = 3) pass
//! `--key-field 1 --body-field 3`. `scripts/conformance` builds and starts the chat example
//! and runs this against it.
//!
//! Every case opens its own connections, uses keys with a random suffix and has a time limit,
//! so one failure never stops the others. Output: one line per case, `PASS <case>`,
//! `FAIL <case>: <why>` or `SKIP <case>: <why>` (a case this gateway or these options cannot
//! run), then `N passed, M failed, K skipped`. The exit status is 1 when a case failed.
//!
//! Cases that need more than a few records are bounded: the rate-limit case sends publishes
//! the stream's hook refuses (nothing reaches Kafka), the subscription-limit case opens
//! `max_subscriptions` subscriptions on one connection, the principal-limit case opens at
//! most 128 connections. Nothing here shuts a gateway down or changes a topic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use kafkasocks::wire::{self, frame::Kind, start_position::Position};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

// ------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partitioner {
    Java,
    Librdkafka,
}

#[derive(Debug, Clone)]
enum TokenSource {
    Anonymous,
    Fixed(String),
    Url { addr: HttpAddr, user: String },
}

#[derive(Debug, Clone)]
struct HttpAddr {
    host: String,
    port: u16,
    path: String,
}

#[derive(Debug, Clone)]
struct Config {
    url: String,
    host: String,
    port: u16,
    path: String,
    token: TokenSource,
    origin: Option<String>,
    subscribe: String,
    publish: String,
    key_field: u32,
    body_field: u32,
    partitioner: Partitioner,
    admin: Option<HttpAddr>,
    slow: bool,
    only: Vec<String>,
    case_timeout: Duration,
}

const USAGE: &str = "usage: kafkasocks-conformance --url ws://HOST:PORT/PATH [--token TOKEN | --token-url URL \
                     [--token-user NAME]] [--origin ORIGIN] [--subscribe METHOD] [--publish METHOD] [--key-field N] \
                     [--body-field N] [--partitioner java|librdkafka] [--admin-url URL] [--slow] [--only A,B] \
                     [--case-timeout SECS] [--list]\n(see the doc comment of tests/src/bin/conformance.rs)";

/// What the command line asks for.
enum Invocation {
    Run(Box<Config>),
    List,
    Help,
}

fn parse_http(url: &str) -> Result<HttpAddr> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    ensure!(uri.scheme_str() == Some("http"), "{url:?}: only http:// URLs are supported");
    let host = uri.host().with_context(|| format!("{url:?} has no host"))?.trim_matches(['[', ']']).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(HttpAddr { host, port: uri.port_u16().unwrap_or(80), path })
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Invocation> {
    let mut args = args.into_iter();
    let mut url = None;
    let mut token = None;
    let mut token_url = None;
    let mut token_user = "conformance".to_owned();
    let mut cfg_origin = None;
    let mut subscribe = kafkasocks_tests::SUBSCRIBE.to_owned();
    let mut publish = kafkasocks_tests::PUBLISH.to_owned();
    let (mut key_field, mut body_field) = (1u32, 2u32);
    let mut partitioner = Partitioner::Java;
    let mut admin = None;
    let mut slow = false;
    let mut only = Vec::new();
    let mut case_timeout = Duration::from_secs(30);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).with_context(|| format!("{name} needs a value"));
        match name.as_str() {
            "--url" => url = Some(value()?),
            "--token" => token = Some(value()?),
            "--token-url" => token_url = Some(parse_http(&value()?)?),
            "--token-user" => token_user = value()?,
            "--origin" => cfg_origin = Some(value()?),
            "--subscribe" => subscribe = value()?,
            "--publish" => publish = value()?,
            "--key-field" => key_field = value()?.parse().context("--key-field")?,
            "--body-field" => body_field = value()?.parse().context("--body-field")?,
            "--partitioner" => {
                partitioner = match value()?.as_str() {
                    "java" | "murmur2" => Partitioner::Java,
                    "librdkafka" | "crc32" => Partitioner::Librdkafka,
                    other => bail!("--partitioner {other:?}: expected java or librdkafka"),
                }
            }
            "--admin-url" => admin = Some(parse_http(&value()?)?),
            "--slow" => slow = true,
            "--only" => only.extend(value()?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)),
            "--case-timeout" => case_timeout = Duration::from_secs(value()?.parse().context("--case-timeout")?),
            "--list" => return Ok(Invocation::List),
            "-h" | "--help" => return Ok(Invocation::Help),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let url = url.with_context(|| format!("--url is required\n{USAGE}"))?;
    let uri: Uri = url.parse().with_context(|| format!("--url {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => bail!("--url {url:?}: wss:// is not supported by this suite (run it against ws://)"),
        _ => bail!("--url {url:?}: expected ws://HOST:PORT/PATH"),
    }
    ensure!(key_field > 0 && body_field > 0 && key_field != body_field, "--key-field and --body-field: two fields");
    ensure!(key_field < (1 << 29) && body_field < (1 << 29), "field numbers are below 2^29");
    let host = uri.host().with_context(|| format!("--url {url:?} has no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let token = match (token, token_url) {
        (Some(_), Some(_)) => bail!("give --token or --token-url, not both"),
        (Some(t), None) => TokenSource::Fixed(t),
        (None, Some(addr)) => TokenSource::Url { addr, user: token_user },
        (None, None) => TokenSource::Anonymous,
    };
    Ok(Invocation::Run(Box::new(Config {
        url,
        host,
        port,
        path,
        token,
        origin: cfg_origin,
        subscribe,
        publish,
        key_field,
        body_field,
        partitioner,
        admin,
        slow,
        only,
        case_timeout,
    })))
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

/// (name, needs --slow, time limit in seconds: 0 for --case-timeout).
const CASES: &[(&str, bool, u64)] = &[
    ("handshake.subprotocol-missing", false, 0),
    ("handshake.subprotocol-unknown", false, 0),
    ("handshake.subprotocol-accepted", false, 0),
    ("handshake.subprotocol-highest", false, 0),
    ("handshake.no-extensions", false, 0),
    ("handshake.origin-null", false, 0),
    ("hello.welcome", false, 0),
    ("hello.not-first", false, 0),
    ("hello.bad-version", false, 0),
    ("hello.bad-token", false, 0),
    ("hello.second-hello", false, 0),
    ("hello.principal-limit", false, 60),
    ("hello.timeout", true, 40),
    ("session.ping-pong", false, 0),
    ("session.ws-ping", false, 0),
    ("session.heartbeat", true, 90),
    ("session.idle-timeout", true, 120),
    ("session.token-expiry", true, 180),
    ("token.refresh", false, 0),
    ("token.refresh-bad", false, 0),
    ("token.refresh-other-subject", false, 0),
    ("frame.unknown-type", false, 0),
    ("frame.gateway-only", false, 0),
    ("frame.undecodable", false, 0),
    ("frame.text", false, 0),
    ("frame.max-size", false, 0),
    ("frame.oversized", false, 0),
    ("frame.ws-reserved-opcode", false, 0),
    ("frame.ws-unmasked", false, 0),
    ("subscribe.subscribed", false, 0),
    ("subscribe.credit-clamped", false, 0),
    ("subscribe.unknown-method", false, 0),
    ("subscribe.unary-method", false, 0),
    ("subscribe.bad-request", false, 0),
    ("subscribe.id-zero", false, 0),
    ("subscribe.duplicate-id", false, 0),
    ("subscribe.id-reuse", false, 0),
    ("subscribe.max-subscriptions", false, 60),
    ("subscribe.key-filter", false, 0),
    ("subscribe.start-latest", false, 0),
    ("subscribe.start-earliest", false, 60),
    ("subscribe.start-timestamp", false, 0),
    ("unsubscribe.end", false, 0),
    ("unsubscribe.unknown-id", false, 0),
    ("unsubscribe.nothing-after-end", false, 0),
    ("credit.flow", false, 0),
    ("credit.unknown-id", false, 0),
    ("publish.receipt", false, 0),
    ("publish.unknown-method", false, 0),
    ("publish.stream-method", false, 0),
    ("publish.bad-payload", false, 0),
    ("publish.key-too-long", false, 0),
    ("publish.partitioner", false, 0),
    ("publish.order", false, 0),
    ("publish.dedup", false, 0),
    ("publish.dedup-in-flight", false, 0),
    ("publish.dedup-across-connections", false, 0),
    ("publish.dedup-scope", false, 0),
    ("publish.same-id", false, 0),
    ("publish.rate-limit", false, 0),
    ("resume.cursor", false, 0),
    ("resume.beyond-end", false, 0),
    ("resume.partitions-changed", false, 0),
    ("resume.topic-recreated", false, 0),
    ("resume.below-log-start", false, 60),
    ("checkpoint.filtered", false, 0),
    ("admin.healthz", false, 0),
    ("admin.readyz", false, 0),
    ("admin.unknown-path", false, 0),
];

async fn dispatch(s: &Suite, name: &str) -> Result<()> {
    match name {
        "handshake.subprotocol-missing" => handshake_subprotocol_missing(s).await,
        "handshake.subprotocol-unknown" => handshake_subprotocol_unknown(s).await,
        "handshake.subprotocol-accepted" => handshake_subprotocol_accepted(s).await,
        "handshake.subprotocol-highest" => handshake_subprotocol_highest(s).await,
        "handshake.no-extensions" => handshake_no_extensions(s).await,
        "handshake.origin-null" => handshake_origin_null(s).await,
        "hello.welcome" => hello_welcome(s).await,
        "hello.not-first" => hello_not_first(s).await,
        "hello.bad-version" => hello_bad_version(s).await,
        "hello.bad-token" => hello_bad_token(s).await,
        "hello.second-hello" => hello_second_hello(s).await,
        "hello.principal-limit" => hello_principal_limit(s).await,
        "hello.timeout" => hello_timeout(s).await,
        "session.ping-pong" => session_ping_pong(s).await,
        "session.ws-ping" => session_ws_ping(s).await,
        "session.heartbeat" => session_heartbeat(s).await,
        "session.idle-timeout" => session_idle_timeout(s).await,
        "session.token-expiry" => session_token_expiry(s).await,
        "token.refresh" => token_refresh(s).await,
        "token.refresh-bad" => token_refresh_bad(s).await,
        "token.refresh-other-subject" => token_refresh_other_subject(s).await,
        "frame.unknown-type" => frame_unknown_type(s).await,
        "frame.gateway-only" => frame_gateway_only(s).await,
        "frame.undecodable" => frame_undecodable(s).await,
        "frame.text" => frame_text(s).await,
        "frame.max-size" => frame_max_size(s).await,
        "frame.oversized" => frame_oversized(s).await,
        "frame.ws-reserved-opcode" => frame_ws_raw(s, &[0x83, 0x80, 1, 2, 3, 4]).await,
        "frame.ws-unmasked" => frame_ws_raw(s, &[0x82, 0x00]).await,
        "subscribe.subscribed" => subscribe_subscribed(s).await,
        "subscribe.credit-clamped" => subscribe_credit_clamped(s).await,
        "subscribe.unknown-method" => {
            subscribe_refused(s, "conformance.v1.NoSuch/Method", None, wire::Code::NotFound).await
        }
        "subscribe.unary-method" => {
            let method = s.cfg.publish.clone();
            subscribe_refused(s, &method, None, wire::Code::InvalidArgument).await
        }
        "subscribe.bad-request" => {
            let method = s.cfg.subscribe.clone();
            subscribe_refused(s, &method, Some(s.truncated()), wire::Code::InvalidArgument).await
        }
        "subscribe.id-zero" => subscribe_id_zero(s).await,
        "subscribe.duplicate-id" => subscribe_duplicate_id(s).await,
        "subscribe.id-reuse" => subscribe_id_reuse(s).await,
        "subscribe.max-subscriptions" => subscribe_max_subscriptions(s).await,
        "subscribe.key-filter" => subscribe_key_filter(s).await,
        "subscribe.start-latest" => subscribe_start_latest(s).await,
        "subscribe.start-earliest" => subscribe_start_earliest(s).await,
        "subscribe.start-timestamp" => subscribe_start_timestamp(s).await,
        "unsubscribe.end" => unsubscribe_end(s).await,
        "unsubscribe.unknown-id" => unsubscribe_unknown_id(s).await,
        "unsubscribe.nothing-after-end" => unsubscribe_nothing_after_end(s).await,
        "credit.flow" => credit_flow(s).await,
        "credit.unknown-id" => credit_unknown_id(s).await,
        "publish.receipt" => publish_receipt(s).await,
        "publish.unknown-method" => {
            publish_refused(s, "conformance.v1.NoSuch/Method", None, b"", wire::Code::NotFound).await
        }
        "publish.stream-method" => {
            let method = s.cfg.subscribe.clone();
            publish_refused(s, &method, None, b"", wire::Code::InvalidArgument).await
        }
        "publish.bad-payload" => {
            let method = s.cfg.publish.clone();
            publish_refused(s, &method, Some(s.truncated()), b"", wire::Code::InvalidArgument).await
        }
        "publish.key-too-long" => {
            let method = s.cfg.publish.clone();
            publish_refused(s, &method, None, &[b'k'; 65], wire::Code::InvalidArgument).await
        }
        "publish.partitioner" => publish_partitioner(s).await,
        "publish.order" => publish_order(s).await,
        "publish.dedup" => publish_dedup(s).await,
        "publish.dedup-in-flight" => publish_dedup_in_flight(s).await,
        "publish.dedup-across-connections" => publish_dedup_across_connections(s).await,
        "publish.dedup-scope" => publish_dedup_scope(s).await,
        "publish.same-id" => publish_same_id(s).await,
        "publish.rate-limit" => publish_rate_limit(s).await,
        "resume.cursor" => resume_cursor(s).await,
        "resume.beyond-end" => resume_bad_cursor(s, BadCursor::BeyondEnd).await,
        "resume.partitions-changed" => resume_bad_cursor(s, BadCursor::ExtraPartition).await,
        "resume.topic-recreated" => resume_bad_cursor(s, BadCursor::OtherTopicId).await,
        "resume.below-log-start" => resume_below_log_start(s).await,
        "checkpoint.filtered" => checkpoint_filtered(s).await,
        "admin.healthz" => admin_get(s, "/healthz", 200, "ok").await,
        "admin.readyz" => admin_get(s, "/readyz", 200, "kafka: ok").await,
        "admin.unknown-path" => admin_get(s, "/conformance-no-such-path", 404, "").await,
        other => bail!("no such case {other:?}"),
    }
}

/// A case this gateway or these options cannot run.
#[derive(Debug)]
struct Skip(String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

fn skip(why: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Skip(why.into()))
}

#[tokio::main]
async fn main() {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Run(cfg)) => cfg,
        Ok(Invocation::List) => {
            for (name, slow, _) in CASES {
                println!("{name}{}", if *slow { " (--slow)" } else { "" });
            }
            return;
        }
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("kafkasocks-conformance: {e:#}");
            std::process::exit(2);
        }
    };
    let suite = Suite::new(*cfg);
    eprintln!("kafkasocks-conformance: {} (run {})", suite.cfg.url, suite.run);
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for &(name, slow, limit) in CASES {
        if !suite.cfg.only.is_empty() && !suite.cfg.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        if slow && !suite.cfg.slow {
            println!("SKIP {name}: waits for the gateway's timers (run with --slow)");
            skipped += 1;
            continue;
        }
        let limit = if limit == 0 { suite.cfg.case_timeout } else { Duration::from_secs(limit) };
        let outcome = tokio::time::timeout(limit, dispatch(&suite, name)).await;
        let violations = suite.take_violations();
        let result = match outcome {
            Err(_) => Err(anyhow!("no outcome within {} s", limit.as_secs())),
            Ok(r) => r,
        };
        match result {
            Err(e) if e.downcast_ref::<Skip>().is_some() && violations.is_empty() => {
                println!("SKIP {name}: {e}");
                skipped += 1;
            }
            Ok(()) if violations.is_empty() => {
                println!("PASS {name}");
                passed += 1;
            }
            Ok(()) => {
                println!("FAIL {name}: {}", violations.join("; "));
                failed += 1;
            }
            Err(e) => {
                let mut why = format!("{e:#}");
                if !violations.is_empty() {
                    why = format!("{why}; also: {}", violations.join("; "));
                }
                println!("FAIL {name}: {}", why.replace('\n', " "));
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------------------------------
// The suite: options, tokens, keys and messages
// ------------------------------------------------------------------------------------------

struct Suite {
    cfg: Config,
    /// Random, in every key and idempotency key of this run.
    run: String,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Suite {
    fn new(cfg: Config) -> Suite {
        Suite { cfg, run: format!("{:08x}", rand::random::<u32>()), violations: Arc::default() }
    }

    fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *self.violations.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A key no other case (and no other run) uses: at most 40 characters of
    /// `[A-Za-z0-9_-]`, which the chat example accepts as a room.
    fn key(&self, tag: &str) -> String {
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(16).collect();
        format!("cf-{tag}-{}{:06x}", self.run, rand::random::<u32>() >> 8)
    }

    fn authenticated(&self) -> bool {
        !matches!(self.cfg.token, TokenSource::Anonymous)
    }

    /// A token for the suite's own principal (fresh from --token-url).
    async fn token(&self) -> Result<String> {
        match &self.cfg.token {
            TokenSource::Anonymous => Ok(String::new()),
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::Url { addr, user } => fetch_token(addr, user).await,
        }
    }

    /// A token for another principal, when --token-url can make one.
    async fn token_for(&self, user: &str) -> Result<Option<String>> {
        match &self.cfg.token {
            TokenSource::Url { addr, .. } => Ok(Some(fetch_token(addr, user).await?)),
            _ => Ok(None),
        }
    }

    fn request(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, self.cfg.key_field, key);
        out
    }

    fn payload(&self, key: &str, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, self.cfg.key_field, key);
        put_string(&mut out, self.cfg.body_field, body);
        out
    }

    /// A message whose key field claims more bytes than follow: it cannot decode.
    fn truncated(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(self.cfg.key_field) << 3 | 2);
        out.extend_from_slice(&[0x05, b'x']);
        out
    }

    fn body_of(&self, payload: &[u8]) -> Option<String> {
        string_field(payload, self.cfg.body_field)
    }

    fn partition_for(&self, key: &[u8], partitions: usize) -> i32 {
        let n = partitions.max(1) as u32;
        let p = match self.cfg.partitioner {
            Partitioner::Java => (murmur2(key) & 0x7fff_ffff) % n,
            Partitioner::Librdkafka => crc32(key) % n,
        };
        p as i32
    }

    /// A WebSocket with the kafkasocks.v1 subprotocol (and the Origin, if any), no Hello yet.
    async fn connect(&self) -> Result<Conn> {
        let mut req = self.cfg.url.as_str().into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("kafkasocks.v1"));
        if let Some(o) = &self.cfg.origin {
            req.headers_mut().insert("Origin", HeaderValue::from_str(o)?);
        }
        let tcp =
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((self.cfg.host.as_str(), self.cfg.port)))
                .await
                .context("TCP connect timed out")?
                .with_context(|| format!("connecting to {}:{}", self.cfg.host, self.cfg.port))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(req, tcp))
            .await
            .context("WebSocket upgrade timed out")?
            .context("WebSocket upgrade")?;
        Ok(Conn::new(ws, self.violations.clone()))
    }

    /// A session: connected, Hello sent with the suite's token, Welcome received.
    async fn open(&self) -> Result<Conn> {
        let token = self.token().await?;
        self.open_as(&token, "").await
    }

    async fn open_as(&self, token: &str, instance_id: &str) -> Result<Conn> {
        let mut c = self.connect().await?;
        c.send(hello(token, instance_id)).await?;
        match c.next_within(Duration::from_secs(10)).await? {
            Got::Frame(Kind::Welcome(w)) => {
                c.welcome = w;
                Ok(c)
            }
            other => bail!("expected Welcome after Hello, got {}", other.describe()),
        }
    }

    /// Publishes these bodies with `key` on a connection of their own; their receipts.
    async fn publish_all(&self, key: &str, bodies: &[&str]) -> Result<Vec<wire::Receipt>> {
        let mut c = self.open().await?;
        let mut receipts = Vec::new();
        for body in bodies {
            receipts.push(c.publish_ok(self, key, body).await?);
        }
        c.close().await;
        Ok(receipts)
    }

    /// An HTTP upgrade request written by hand: (status, headers, body).
    async fn raw_upgrade(&self, protocol: Option<&str>, origin: Option<&str>, extra: &[(&str, &str)]) -> Result<Reply> {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            self.cfg.path,
            host_header(&self.cfg.host, self.cfg.port)
        );
        if let Some(p) = protocol {
            head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        if let Some(o) = origin.or(self.cfg.origin.as_deref()) {
            head.push_str(&format!("Origin: {o}\r\n"));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        http_exchange(&self.cfg.host, self.cfg.port, head.as_bytes(), true).await
    }
}

fn hello(token: &str, instance_id: &str) -> Kind {
    Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: token.to_owned(),
        client: "kafkasocks-conformance".into(),
        instance_id: instance_id.to_owned(),
    })
}

fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_string(out: &mut Vec<u8>, field: u32, value: &str) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The last value of string field `field` of a protobuf message; None when absent or
/// when the message does not parse.
fn string_field(mut msg: &[u8], field: u32) -> Option<String> {
    let mut found = None;
    while !msg.is_empty() {
        let tag = read_varint(&mut msg)?;
        let skip = match tag & 7 {
            0 => {
                read_varint(&mut msg)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(read_varint(&mut msg)?).ok()?;
                let value = msg.get(..len)?;
                if tag >> 3 == u64::from(field) {
                    found = Some(String::from_utf8_lossy(value).into_owned());
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        msg = msg.get(skip..)?;
    }
    found
}

/// Kafka's `Utils.murmur2` (the Java producer's default partitioner).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// CRC-32 (IEEE, as zlib): librdkafka's `consistent_random` partitioner.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

// ------------------------------------------------------------------------------------------
// HTTP by hand (the token endpoint, the admin endpoint, upgrade refusals)
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` and reads the answer: its head, then (unless it is a 101 and
/// `upgrade`) its body until the connection ends, within 10 s.
async fn http_exchange(host: &str, port: u16, request: &[u8], upgrade: bool) -> Result<Reply> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect((host, port)))
        .await
        .context("TCP connect timed out")?
        .with_context(|| format!("connecting to {host}:{port}"))?;
    s.write_all(request).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut head_end = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) if head_end.is_some() => break,
            Err(_) => bail!("no HTTP answer within 10 s"),
            Ok(Err(_)) if head_end.is_some() => break,
            Ok(r) => r?,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none() {
            head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(end) = head_end {
            if upgrade && buf.starts_with(b"HTTP/1.1 101") {
                break;
            }
            // A body with a length: stop when it is complete.
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                && buf.len() >= end + len
            {
                break;
            }
        }
        ensure!(buf.len() < 1 << 20, "an HTTP answer over 1 MiB");
    }
    let end = head_end.context("the HTTP answer has no complete head")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = buf[end..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else { break };
        let start = eol + 2;
        let Some(data) = raw.get(start..start + size) else { break };
        out.extend_from_slice(data);
        raw = raw.get(start + size + 2..).unwrap_or_default();
    }
    out
}

async fn fetch_token(addr: &HttpAddr, user: &str) -> Result<String> {
    let body = serde_json::json!({ "user": user }).to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        addr.path,
        host_header(&addr.host, addr.port),
        body.len()
    );
    let reply = http_exchange(&addr.host, addr.port, request.as_bytes(), false).await.context("the token endpoint")?;
    ensure!(reply.status == 200, "the token endpoint answered {}: {}", reply.status, reply.body.trim());
    let v: serde_json::Value = serde_json::from_str(reply.body.trim()).context("the token endpoint's JSON")?;
    Ok(v.get("token").and_then(|t| t.as_str()).context("no \"token\" in the token endpoint's answer")?.to_owned())
}

// ------------------------------------------------------------------------------------------
// A connection that checks what it receives
// ------------------------------------------------------------------------------------------

/// What one read gave.
#[derive(Debug)]
enum Got {
    Frame(Kind),
    /// The connection closed: the close code (1005 without one, 1006 when it was dropped
    /// without a close frame) and reason.
    Closed(u16, String),
    /// A WebSocket-level pong.
    WsPong(Vec<u8>),
    Timeout,
}

impl Got {
    fn describe(&self) -> String {
        match self {
            Got::Frame(k) => describe(k),
            Got::Closed(code, reason) => format!("close {code} {reason:?}"),
            Got::WsPong(_) => "a WebSocket pong".into(),
            Got::Timeout => "nothing (timed out)".into(),
        }
    }
}

fn code_name(code: i32) -> String {
    wire::Code::try_from(code).map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned())
}

fn describe(k: &Kind) -> String {
    match k {
        Kind::Error(e) => format!(
            "Error{{{}, subscription_id {}, publish_id {}, retry_after_ms {}, {:?}}}",
            code_name(e.code),
            e.subscription_id,
            e.publish_id,
            e.retry_after_ms,
            e.message
        ),
        Kind::Data(d) => format!("Data{{subscription {}, {} records}}", d.subscription_id, d.records.len()),
        other => {
            let text = format!("{other:?}");
            if text.chars().count() > 200 { format!("{}…", text.chars().take(200).collect::<String>()) } else { text }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    Subscribing,
    Streaming,
    Ended,
}

/// What the connection knows of one subscription id.
#[derive(Debug)]
struct Track {
    state: SubState,
    /// The cursor a client keeps: Subscribed's, raised by records and checkpoints.
    topic_id: Vec<u8>,
    next: HashMap<i32, i64>,
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
    violations: Arc<Mutex<Vec<String>>>,
    welcome: wire::Welcome,
    subs: HashMap<u32, Track>,
    /// Publishes sent and not yet answered, by id.
    pubs: HashMap<u64, u32>,
    next_pub: u64,
    /// Frames read while waiting for others.
    stash: VecDeque<Kind>,
    answer_pings: bool,
    pings: Vec<u64>,
    closed: Option<(u16, String)>,
}

impl Conn {
    fn new(ws: WebSocketStream<TcpStream>, violations: Arc<Mutex<Vec<String>>>) -> Conn {
        Conn {
            ws,
            violations,
            welcome: wire::Welcome::default(),
            subs: HashMap::new(),
            pubs: HashMap::new(),
            next_pub: 1,
            stash: VecDeque::new(),
            answer_pings: true,
            pings: Vec::new(),
            closed: None,
        }
    }

    fn limits(&self) -> wire::Limits {
        self.welcome.limits.unwrap_or_default()
    }

    fn violation(&self, what: String) {
        self.violations.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    async fn send(&mut self, kind: Kind) -> Result<()> {
        match &kind {
            Kind::Subscribe(s) if s.id != 0 => {
                let open = self.subs.get(&s.id).is_some_and(|t| t.state != SubState::Ended);
                if !open {
                    self.subs.insert(
                        s.id,
                        Track { state: SubState::Subscribing, topic_id: Vec::new(), next: HashMap::new() },
                    );
                }
            }
            Kind::Publish(p) => *self.pubs.entry(p.id).or_default() += 1,
            _ => {}
        }
        self.send_bytes(wire::Frame { kind: Some(kind) }.encode_to_vec()).await
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.ws.send(Message::Binary(bytes.into())))
            .await
            .context("sending timed out")?
            .context("sending")
    }

    async fn subscribe(
        &mut self,
        id: u32,
        method: &str,
        request: Vec<u8>,
        start: Option<Position>,
        credit: u32,
    ) -> Result<()> {
        self.send(Kind::Subscribe(wire::Subscribe {
            id,
            method: method.to_owned(),
            request: request.into(),
            start: start.map(|p| wire::StartPosition { position: Some(p) }),
            credit,
        }))
        .await
    }

    /// Subscribes to `key` with the suite's method and waits for `Subscribed`.
    async fn subscribe_key(
        &mut self,
        s: &Suite,
        id: u32,
        key: &str,
        start: Option<Position>,
        credit: u32,
    ) -> Result<wire::Subscribed> {
        self.subscribe(id, &s.cfg.subscribe, s.request(key), start, credit).await?;
        self.subscribed(id).await
    }

    async fn subscribed(&mut self, id: u32) -> Result<wire::Subscribed> {
        let got = self
            .until(Duration::from_secs(15), &format!("Subscribed{{id: {id}}}"), |k| match k {
                Kind::Subscribed(s) if s.id == id => Some(Ok(s.clone())),
                Kind::Error(e) if e.subscription_id == id => Some(Err(describe(k))),
                _ => None,
            })
            .await?;
        got.map_err(|e| anyhow!("Subscribe {id} was refused: {e}"))
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_pub;
        self.next_pub += 1;
        id
    }

    async fn publish(&mut self, id: u64, method: &str, payload: Vec<u8>, idempotency_key: &[u8]) -> Result<()> {
        self.send(Kind::Publish(wire::Publish {
            id,
            method: method.to_owned(),
            payload: payload.into(),
            idempotency_key: idempotency_key.to_vec().into(),
            ..Default::default()
        }))
        .await
    }

    /// The answer to publish `id`: its Receipt, or its Error.
    async fn answer(&mut self, id: u64) -> Result<std::result::Result<wire::Receipt, wire::Error>> {
        self.until(Duration::from_secs(20), &format!("the answer to publish {id}"), |k| match k {
            Kind::Receipt(r) if r.id == id => Some(Ok(r.clone())),
            Kind::Error(e) if e.publish_id == id => Some(Err(e.clone())),
            _ => None,
        })
        .await
    }

    async fn receipt(&mut self, id: u64) -> Result<wire::Receipt> {
        match self.answer(id).await? {
            Ok(r) => Ok(r),
            Err(e) => bail!("publish {id} failed: {}", describe(&Kind::Error(e))),
        }
    }

    async fn publish_ok(&mut self, s: &Suite, key: &str, body: &str) -> Result<wire::Receipt> {
        let id = self.next_id();
        self.publish(id, &s.cfg.publish, s.payload(key, body), b"").await?;
        self.receipt(id).await
    }

    async fn ping_pong(&mut self) -> Result<()> {
        let nonce = rand::random::<u64>() | 1;
        self.send(Kind::Ping(wire::Ping { nonce })).await?;
        self.until(Duration::from_secs(10), "the Pong", |k| {
            matches!(k, Kind::Pong(p) if p.nonce == nonce).then_some(())
        })
        .await
    }

    /// Sends Ping and requires its Pong to be the very next frame.
    async fn next_is_pong(&mut self, after: &str) -> Result<()> {
        let nonce = rand::random::<u64>() | 1;
        self.send(Kind::Ping(wire::Ping { nonce })).await?;
        match self.next_within(Duration::from_secs(10)).await? {
            Got::Frame(Kind::Pong(p)) if p.nonce == nonce => Ok(()),
            other => bail!("after {after}, expected nothing but the Pong of a Ping; got {}", other.describe()),
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    /// The next frame (stashed ones first), answering and skipping gateway Pings.
    async fn next_within(&mut self, within: Duration) -> Result<Got> {
        if let Some(k) = self.stash.pop_front() {
            return Ok(Got::Frame(k));
        }
        self.read(Instant::now() + within).await
    }

    async fn read(&mut self, deadline: Instant) -> Result<Got> {
        loop {
            if let Some((code, reason)) = &self.closed {
                return Ok(Got::Closed(*code, reason.clone()));
            }
            let Ok(m) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return Ok(Got::Timeout);
            };
            match m {
                Some(Ok(Message::Binary(b))) => {
                    let frame = match wire::Frame::decode(b) {
                        Ok(f) => f,
                        Err(e) => {
                            self.violation(format!("the gateway sent a message that is not a Frame: {e}"));
                            continue;
                        }
                    };
                    // A frame type newer than this suite: skipped, as peers do.
                    let Some(kind) = frame.kind else { continue };
                    if let Kind::Ping(p) = &kind {
                        self.pings.push(p.nonce);
                        if self.answer_pings {
                            let _ = self.send(Kind::Pong(wire::Pong { nonce: p.nonce })).await;
                        }
                        continue;
                    }
                    self.observe(&kind);
                    return Ok(Got::Frame(kind));
                }
                Some(Ok(Message::Close(c))) => {
                    self.closed = Some(c.map_or((1005, String::new()), |c| (u16::from(c.code), c.reason.to_string())));
                }
                Some(Ok(Message::Pong(p))) => return Ok(Got::WsPong(p.to_vec())),
                Some(Ok(Message::Text(_))) => self.violation("the gateway sent a text message".into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => self.closed = Some((1006, format!("dropped without a close frame ({e})"))),
                None => self.closed = Some((1006, "dropped without a close frame".into())),
            }
        }
    }

    /// Waits for the first frame `pick` takes (stashed frames first); frames it does not
    /// take are kept for later waits. Fails on a close or after `within`.
    async fn until<T>(&mut self, within: Duration, what: &str, mut pick: impl FnMut(&Kind) -> Option<T>) -> Result<T> {
        for i in 0..self.stash.len() {
            if let Some(t) = pick(&self.stash[i]) {
                self.stash.remove(i);
                return Ok(t);
            }
        }
        let deadline = Instant::now() + within;
        loop {
            match self.read(deadline).await? {
                Got::Frame(k) => match pick(&k) {
                    Some(t) => return Ok(t),
                    None => self.stash.push_back(k),
                },
                Got::Closed(code, reason) => {
                    bail!("the connection closed ({code} {reason:?}) while waiting for {what}")
                }
                Got::WsPong(_) => {}
                Got::Timeout => bail!("no {what} within {} s", within.as_secs_f32()),
            }
        }
    }

    /// Every frame `pick` takes within `window` (others are stashed); a close ends it early.
    async fn during<T>(&mut self, window: Duration, mut pick: impl FnMut(&Kind) -> Option<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(k) = self.stash.pop_front() {
            match pick(&k) {
                Some(t) => out.push(t),
                None => kept.push_back(k),
            }
        }
        self.stash = kept;
        let deadline = Instant::now() + window;
        loop {
            match self.read(deadline).await? {
                Got::Frame(k) => match pick(&k) {
                    Some(t) => out.push(t),
                    None => self.stash.push_back(k),
                },
                Got::Closed(..) | Got::Timeout => return Ok(out),
                Got::WsPong(_) => {}
            }
        }
    }

    /// Records of subscription `sub` until there are at least `n`.
    async fn records(&mut self, sub: u32, n: usize) -> Result<Vec<wire::Record>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = self
                .until(left, &format!("record {} of {n} of subscription {sub}", got.len() + 1), |k| match k {
                    Kind::Data(d) if d.subscription_id == sub => Some(d.records.clone()),
                    _ => None,
                })
                .await?;
            got.extend(batch);
        }
        Ok(got)
    }

    /// Records of subscription `sub` arriving within `window`.
    async fn records_during(&mut self, sub: u32, window: Duration) -> Result<Vec<wire::Record>> {
        let batches = self
            .during(window, |k| match k {
                Kind::Data(d) if d.subscription_id == sub => Some(d.records.clone()),
                _ => None,
            })
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Reads until the close: its code and the frames before it.
    async fn until_close(&mut self, within: Duration) -> Result<(u16, Vec<Kind>)> {
        let mut frames: Vec<Kind> = self.stash.drain(..).collect();
        let deadline = Instant::now() + within;
        loop {
            match self.read(deadline).await? {
                Got::Frame(k) => frames.push(k),
                Got::Closed(code, _) => return Ok((code, frames)),
                Got::WsPong(_) => {}
                Got::Timeout => bail!(
                    "no close within {} s (frames before: {})",
                    within.as_secs_f32(),
                    frames.iter().map(describe).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    }

    /// The cursor a client holds for subscription `sub` now.
    fn cursor(&self, sub: u32) -> Result<wire::Cursor> {
        let t = self.subs.get(&sub).with_context(|| format!("subscription {sub} is not known"))?;
        let mut positions: Vec<wire::PartitionOffset> =
            t.next.iter().map(|(&partition, &next_offset)| wire::PartitionOffset { partition, next_offset }).collect();
        positions.sort_by_key(|p| p.partition);
        Ok(wire::Cursor { topic_id: t.topic_id.clone().into(), positions })
    }

    /// Checks the order rules of docs/protocol.md §4 and §5 on every frame received.
    fn observe(&mut self, k: &Kind) {
        let mut problems = Vec::new();
        match k {
            Kind::Subscribed(s) => match self.subs.get_mut(&s.id) {
                None => problems.push(format!("Subscribed{{id: {}}} for an id never subscribed", s.id)),
                Some(t) => {
                    match t.state {
                        SubState::Subscribing => {}
                        SubState::Streaming => problems.push(format!("a second Subscribed{{id: {}}}", s.id)),
                        SubState::Ended => problems.push(format!("Subscribed{{id: {}}} after its End or Error", s.id)),
                    }
                    t.state = SubState::Streaming;
                    if let Some(c) = &s.cursor {
                        t.topic_id = c.topic_id.to_vec();
                        t.next = c.positions.iter().map(|p| (p.partition, p.next_offset)).collect();
                    }
                }
            },
            Kind::Data(d) => match self.subs.get_mut(&d.subscription_id) {
                Some(t) if t.state == SubState::Streaming => {
                    for r in &d.records {
                        let next = t.next.get(&r.partition).copied();
                        if next.is_none() {
                            problems.push(format!(
                                "subscription {}: a record of partition {}, which its cursor does not list",
                                d.subscription_id, r.partition
                            ));
                        }
                        if let Some(n) = next
                            && r.offset < n
                        {
                            problems.push(format!(
                                "subscription {}: record {}@{} is below the cursor ({n}): a duplicate or out of order",
                                d.subscription_id, r.partition, r.offset
                            ));
                        }
                        t.next.insert(r.partition, r.offset.saturating_add(1));
                    }
                }
                Some(t) => problems.push(format!(
                    "Data for subscription {} {}",
                    d.subscription_id,
                    if t.state == SubState::Ended { "after its End or Error" } else { "before its Subscribed" }
                )),
                None => problems.push(format!("Data for subscription {}, never subscribed", d.subscription_id)),
            },
            Kind::Checkpoint(c) => match self.subs.get_mut(&c.subscription_id) {
                Some(t) if t.state == SubState::Streaming => {
                    for p in &c.positions {
                        let now = t.next.get(&p.partition).copied().unwrap_or(0);
                        if p.next_offset < now {
                            problems.push(format!(
                                "Checkpoint of subscription {} moves partition {} back from {now} to {}",
                                c.subscription_id, p.partition, p.next_offset
                            ));
                        } else {
                            t.next.insert(p.partition, p.next_offset);
                        }
                    }
                }
                _ => problems
                    .push(format!("Checkpoint for subscription {} while it is not streaming", c.subscription_id)),
            },
            Kind::End(e) => {
                if let Some(t) = self.subs.get_mut(&e.id) {
                    if t.state == SubState::Ended {
                        problems.push(format!("End{{id: {}}} after its End or Error", e.id));
                    }
                    t.state = SubState::Ended;
                }
            }
            Kind::Error(e) if e.subscription_id != 0 => match self.subs.get_mut(&e.subscription_id) {
                Some(t) if t.state != SubState::Ended => t.state = SubState::Ended,
                _ => problems.push(format!("{} for a subscription that is not open", describe(k))),
            },
            Kind::Error(e) if e.publish_id != 0 => self.answered(e.publish_id, &mut problems),
            Kind::Receipt(r) => self.answered(r.id, &mut problems),
            _ => {}
        }
        for p in problems {
            self.violation(p);
        }
    }

    fn answered(&mut self, id: u64, problems: &mut Vec<String>) {
        match self.pubs.get_mut(&id) {
            Some(n) if *n > 0 => *n -= 1,
            _ => problems.push(format!("an answer to publish {id}, which is not awaiting one")),
        }
    }
}

fn error_code(k: &Kind) -> Option<(wire::Code, &wire::Error)> {
    match k {
        Kind::Error(e) => Some((wire::Code::try_from(e.code).unwrap_or(wire::Code::Unknown), e)),
        _ => None,
    }
}

/// The close `code`, after exactly one Error frame about the connection with `error`.
fn expect_error_then_close((code, frames): (u16, Vec<Kind>), error: wire::Code, close: u16) -> Result<wire::Error> {
    let errors: Vec<&wire::Error> = frames.iter().filter_map(|k| error_code(k).map(|e| e.1)).collect();
    let others: Vec<String> = frames.iter().filter(|k| !matches!(k, Kind::Error(_))).map(describe).collect();
    ensure!(code == close, "closed with {code}, expected {close} (frames before: {:?})", others);
    let [e] = errors.as_slice() else {
        bail!(
            "expected one Error{{{}}} before the close {close}, got {} Error frames",
            error.as_str_name(),
            errors.len()
        )
    };
    ensure!(
        e.code == error as i32 && e.subscription_id == 0 && e.publish_id == 0,
        "expected Error{{{}}} about the connection before close {close}, got {}",
        error.as_str_name(),
        describe(&Kind::Error((*e).clone()))
    );
    ensure!(others.is_empty(), "unexpected frames before the close: {}", others.join(", "));
    Ok((*e).clone())
}

fn ensure_error(k: &Kind, code: wire::Code, subscription_id: u32, publish_id: u64) -> Result<()> {
    match k {
        Kind::Error(e)
            if e.code == code as i32 && e.subscription_id == subscription_id && e.publish_id == publish_id =>
        {
            ensure!(!e.message.is_empty(), "the Error has no message");
            Ok(())
        }
        other => bail!(
            "expected Error{{{}, subscription_id {subscription_id}, publish_id {publish_id}}}, got {}",
            code.as_str_name(),
            describe(other)
        ),
    }
}

async fn next_frame(c: &mut Conn, what: &str) -> Result<Kind> {
    match c.next_within(Duration::from_secs(10)).await? {
        Got::Frame(k) => Ok(k),
        other => bail!("expected {what}, got {}", other.describe()),
    }
}

fn partitions_of(s: &wire::Subscribed) -> Result<usize> {
    let c = s.cursor.as_ref().context("Subscribed has no cursor")?;
    ensure!(!c.positions.is_empty(), "Subscribed's cursor lists no partition");
    Ok(c.positions.len())
}

// ------------------------------------------------------------------------------------------
// Handshake
// ------------------------------------------------------------------------------------------

async fn handshake_subprotocol_missing(s: &Suite) -> Result<()> {
    let r = s.raw_upgrade(None, None, &[]).await?;
    ensure!(r.status == 400, "an upgrade without Sec-WebSocket-Protocol got HTTP {}, expected 400", r.status);
    ensure!(!r.body.trim().is_empty(), "the 400 has no reason in its body");
    Ok(())
}

async fn handshake_subprotocol_unknown(s: &Suite) -> Result<()> {
    let r = s.raw_upgrade(Some("kafkasocks.v9, chat"), None, &[]).await?;
    ensure!(r.status == 400, "an upgrade offering only unknown subprotocols got HTTP {}, expected 400", r.status);
    Ok(())
}

async fn handshake_subprotocol_accepted(s: &Suite) -> Result<()> {
    let r = s.raw_upgrade(Some("kafkasocks.v1"), None, &[]).await?;
    ensure!(r.status == 101, "an upgrade offering kafkasocks.v1 got HTTP {}: {}", r.status, r.body.trim());
    ensure!(
        r.header("Sec-WebSocket-Protocol") == Some("kafkasocks.v1"),
        "the 101 answers Sec-WebSocket-Protocol {:?}, expected kafkasocks.v1",
        r.header("Sec-WebSocket-Protocol")
    );
    // A session that then works, through a WebSocket library.
    let mut c = s.open().await?;
    c.ping_pong().await
}

async fn handshake_subprotocol_highest(s: &Suite) -> Result<()> {
    let r = s.raw_upgrade(Some("kafkasocks.v2, kafkasocks.v1"), None, &[]).await?;
    ensure!(r.status == 101, "an upgrade offering kafkasocks.v2 and v1 got HTTP {}", r.status);
    let chosen = r.header("Sec-WebSocket-Protocol");
    ensure!(
        matches!(chosen, Some("kafkasocks.v1" | "kafkasocks.v2")),
        "the 101 answers Sec-WebSocket-Protocol {chosen:?}: not one of those offered"
    );
    Ok(())
}

async fn handshake_no_extensions(s: &Suite) -> Result<()> {
    let r = s
        .raw_upgrade(
            Some("kafkasocks.v1"),
            None,
            &[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")],
        )
        .await?;
    ensure!(r.status == 101, "an upgrade offering permessage-deflate got HTTP {}", r.status);
    ensure!(
        r.header("Sec-WebSocket-Extensions").is_none(),
        "the gateway negotiated {:?}; docs/protocol.md says no extension is negotiated",
        r.header("Sec-WebSocket-Extensions")
    );
    Ok(())
}

async fn handshake_origin_null(s: &Suite) -> Result<()> {
    let r = s.raw_upgrade(Some("kafkasocks.v1"), Some("null"), &[]).await?;
    ensure!(r.status == 403, "an upgrade with Origin: null got HTTP {}, expected 403", r.status);
    ensure!(!r.body.trim().is_empty(), "the 403 has no reason in its body");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Hello
// ------------------------------------------------------------------------------------------

async fn hello_welcome(s: &Suite) -> Result<()> {
    let c = s.open().await?;
    let w = &c.welcome;
    ensure!(!w.session_id.is_empty(), "Welcome.session_id is empty");
    ensure!(!w.server_id.is_empty(), "Welcome.server_id is empty");
    let l = w.limits.context("Welcome has no limits")?;
    for (name, v) in [
        ("max_message_bytes", l.max_message_bytes),
        ("max_subscriptions", l.max_subscriptions),
        ("max_publishes_per_second", l.max_publishes_per_second),
        ("max_inflight_publishes", l.max_inflight_publishes),
        ("default_credit", l.default_credit),
        ("max_credit", l.max_credit),
    ] {
        ensure!(v > 0, "Welcome.limits.{name} is 0");
    }
    ensure!(l.default_credit <= l.max_credit, "default_credit {} > max_credit {}", l.default_credit, l.max_credit);
    ensure!(w.heartbeat_interval_ms > 0, "Welcome.heartbeat_interval_ms is 0 (never 0 from a gateway)");
    ensure!(w.server_time_ms > 0, "Welcome.server_time_ms is not set");
    if w.token_expires_at_ms != 0 {
        ensure!(
            w.token_expires_at_ms > w.server_time_ms,
            "Welcome.token_expires_at_ms {} is not after server_time_ms {}",
            w.token_expires_at_ms,
            w.server_time_ms
        );
    }
    if matches!(s.cfg.token, TokenSource::Url { .. }) {
        ensure!(w.token_expires_at_ms > 0, "a token with an expiry, but Welcome.token_expires_at_ms is 0");
    }
    c.close().await;
    Ok(())
}

async fn hello_not_first(s: &Suite) -> Result<()> {
    let mut c = s.connect().await?;
    c.send(Kind::Ping(wire::Ping { nonce: 1 })).await?;
    expect_error_then_close(c.until_close(Duration::from_secs(10)).await?, wire::Code::FailedPrecondition, 4000)?;
    Ok(())
}

async fn hello_bad_version(s: &Suite) -> Result<()> {
    let mut c = s.connect().await?;
    let token = s.token().await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 2,
        token,
        client: "kafkasocks-conformance".into(),
        ..Default::default()
    }))
    .await?;
    expect_error_then_close(c.until_close(Duration::from_secs(10)).await?, wire::Code::FailedPrecondition, 4000)?;
    Ok(())
}

async fn hello_bad_token(s: &Suite) -> Result<()> {
    if !s.authenticated() {
        return Err(skip("no --token or --token-url: an anonymous gateway accepts any token"));
    }
    for token in ["", "conformance.not-a-token.x"] {
        let mut c = s.connect().await?;
        c.send(hello(token, "")).await?;
        expect_error_then_close(c.until_close(Duration::from_secs(15)).await?, wire::Code::Unauthenticated, 4001)
            .with_context(|| format!("Hello with token {token:?}"))?;
    }
    Ok(())
}

async fn hello_second_hello(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let token = s.token().await?;
    c.send(hello(&token, "")).await?;
    let k = next_frame(&mut c, "an Error for the second Hello").await?;
    ensure_error(&k, wire::Code::FailedPrecondition, 0, 0)?;
    c.next_is_pong("the second Hello's Error").await?;
    c.close().await;
    Ok(())
}

async fn hello_principal_limit(s: &Suite) -> Result<()> {
    let token = match &s.cfg.token {
        TokenSource::Anonymous => return Err(skip("anonymous sessions have no principal to count")),
        TokenSource::Fixed(t) => t.clone(),
        TokenSource::Url { .. } => s.token_for(&s.key("cap")).await?.context("a token")?,
    };
    let mut open = Vec::new();
    let result = async {
        for n in 1..=128usize {
            let mut c = s.connect().await?;
            c.send(hello(&token, "")).await?;
            match c.next_within(Duration::from_secs(10)).await? {
                Got::Frame(Kind::Welcome(_)) => open.push(c),
                Got::Frame(k @ Kind::Error(_)) => {
                    ensure_error(&k, wire::Code::ResourceExhausted, 0, 0)
                        .with_context(|| format!("connection {n} of one principal"))?;
                    if let Kind::Error(e) = &k {
                        ensure!(e.retry_after_ms > 0, "the principal-limit Error has no retry_after_ms");
                    }
                    let (code, rest) = c.until_close(Duration::from_secs(10)).await?;
                    ensure!(code == 4013, "connection {n} refused with close {code}, expected 4013");
                    ensure!(
                        rest.is_empty(),
                        "frames after the refusal: {}",
                        rest.iter().map(describe).collect::<Vec<_>>().join(", ")
                    );
                    if matches!(s.cfg.token, TokenSource::Url { .. }) {
                        ensure!(n == 65, "a new principal was refused at connection {n}; the documented default is 64");
                    }
                    return Ok(());
                }
                other => bail!("connection {n}: expected Welcome or Error, got {}", other.describe()),
            }
        }
        bail!("128 connections of one principal were all accepted (the documented default limit is 64)")
    }
    .await;
    for c in open {
        c.close().await;
    }
    // The gateway frees the principal's places as those sessions end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    result
}

async fn hello_timeout(s: &Suite) -> Result<()> {
    let mut c = s.connect().await?;
    let started = Instant::now();
    let closed = c.until_close(Duration::from_secs(25)).await.context("the documented hello timeout is 10 s")?;
    let e = expect_error_then_close(closed, wire::Code::FailedPrecondition, 4000)?;
    eprintln!("hello.timeout: closed after {:.1} s ({:?})", started.elapsed().as_secs_f32(), e.message);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Session: heartbeats, timeouts, token refresh
// ------------------------------------------------------------------------------------------

async fn session_ping_pong(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    // A Pong from the client (for no Ping) is ignored: nothing answers it.
    c.send(Kind::Pong(wire::Pong { nonce: 77 })).await?;
    c.next_is_pong("a Pong").await?;
    c.next_is_pong("a Ping").await?;
    c.close().await;
    Ok(())
}

async fn session_ws_ping(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.ws.send(Message::Ping(b"conformance".to_vec().into())).await?;
    match c.next_within(Duration::from_secs(10)).await? {
        Got::WsPong(p) => ensure!(p == b"conformance", "the WebSocket pong carries {p:?}, not the ping's payload"),
        other => bail!("expected a WebSocket pong, got {}", other.describe()),
    }
    c.next_is_pong("a WebSocket ping").await?;
    c.close().await;
    Ok(())
}

async fn session_heartbeat(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let every = Duration::from_millis(u64::from(c.welcome.heartbeat_interval_ms));
    ensure!(!every.is_zero(), "heartbeat_interval_ms is 0");
    ensure!(every <= Duration::from_secs(40), "heartbeat_interval_ms {} is too long to wait for", every.as_millis());
    let deadline = Instant::now() + every * 2 + Duration::from_secs(3);
    // Pings are answered and skipped by reads: read in short steps and count them.
    while c.pings.len() < 2 {
        if Instant::now() >= deadline {
            bail!("{} gateway Ping(s) within two heartbeat intervals ({} ms)", c.pings.len(), every.as_millis());
        }
        let step = (Instant::now() + Duration::from_millis(200)).min(deadline);
        if let Got::Closed(code, reason) = c.read(step).await? {
            bail!("closed ({code} {reason:?}) while waiting for heartbeats");
        }
    }
    ensure!(c.pings[1] != c.pings[0], "two heartbeat Pings with the same nonce");
    c.next_is_pong("heartbeats").await.context("the session goes on after heartbeats")?;
    c.close().await;
    Ok(())
}

async fn session_idle_timeout(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let w = c.welcome.clone();
    if w.token_expires_at_ms != 0 && w.token_expires_at_ms.saturating_sub(w.server_time_ms) < 55_000 {
        return Err(skip("the token expires before the documented idle timeout (45 s) would be seen"));
    }
    // Silence: no Pong for the gateway's Pings, nothing at all.
    c.answer_pings = false;
    let started = Instant::now();
    let closed = c.until_close(Duration::from_secs(75)).await.context("the documented idle timeout is 45 s")?;
    expect_error_then_close(closed, wire::Code::Unavailable, 4009)?;
    eprintln!("session.idle-timeout: closed after {:.1} s", started.elapsed().as_secs_f32());
    Ok(())
}

async fn session_token_expiry(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let w = c.welcome.clone();
    if w.token_expires_at_ms == 0 {
        return Err(skip("the token does not expire (Welcome.token_expires_at_ms is 0)"));
    }
    let lifetime = w.token_expires_at_ms.saturating_sub(w.server_time_ms);
    if lifetime > 150_000 {
        return Err(skip(format!(
            "the token lives {} s; this case waits for tokens of at most 150 s",
            lifetime / 1000
        )));
    }
    let wait = Duration::from_millis(u64::try_from(lifetime).unwrap_or(0)) + Duration::from_secs(10);
    let closed = c.until_close(wait).await?;
    expect_error_then_close(closed, wire::Code::Unauthenticated, 4002)?;
    Ok(())
}

async fn token_refresh(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let token = s.token().await?;
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token })).await?;
    match next_frame(&mut c, "TokenAccepted").await? {
        Kind::TokenAccepted(a) => {
            ensure!(a.server_time_ms > 0, "TokenAccepted.server_time_ms is not set");
            if c.welcome.token_expires_at_ms != 0 {
                ensure!(a.token_expires_at_ms > a.server_time_ms, "TokenAccepted: an expiry not after server_time_ms");
            }
        }
        other => bail!("expected TokenAccepted, got {}", describe(&other)),
    }
    c.next_is_pong("TokenAccepted").await?;
    c.close().await;
    Ok(())
}

async fn token_refresh_bad(s: &Suite) -> Result<()> {
    if !s.authenticated() {
        return Err(skip("an anonymous gateway accepts any token"));
    }
    let mut c = s.open().await?;
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "conformance.not-a-token.x".into() })).await?;
    expect_error_then_close(c.until_close(Duration::from_secs(15)).await?, wire::Code::Unauthenticated, 4001)?;
    Ok(())
}

async fn token_refresh_other_subject(s: &Suite) -> Result<()> {
    let Some(other) = s.token_for(&s.key("other")).await? else {
        return Err(skip("needs --token-url to get a token for another subject"));
    };
    let mut c = s.open().await?;
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: other })).await?;
    expect_error_then_close(c.until_close(Duration::from_secs(15)).await?, wire::Code::PermissionDenied, 4001)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Frames
// ------------------------------------------------------------------------------------------

async fn frame_unknown_type(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    // Field 99 of Frame (a frame type from the future), then an empty message (no member).
    for bytes in [vec![0x9a, 0x06, 0x00], Vec::new()] {
        c.send_bytes(bytes.clone()).await?;
        let k = next_frame(&mut c, "an Error for an unknown frame type").await?;
        ensure_error(&k, wire::Code::Unimplemented, 0, 0).with_context(|| format!("the message {bytes:02x?}"))?;
    }
    c.next_is_pong("UNIMPLEMENTED").await?;
    c.close().await;
    Ok(())
}

async fn frame_gateway_only(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    for k in [
        Kind::Welcome(wire::Welcome::default()),
        Kind::Data(wire::Data::default()),
        Kind::GoAway(wire::GoAway::default()),
    ] {
        let what = describe(&k);
        c.send(k).await?;
        let got = next_frame(&mut c, "an Error for a gateway-only frame").await?;
        ensure_error(&got, wire::Code::InvalidArgument, 0, 0).with_context(|| format!("a client sent {what}"))?;
    }
    c.next_is_pong("gateway-only frames").await?;
    c.close().await;
    Ok(())
}

async fn frame_undecodable(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.send_bytes(vec![0x0a, 0xff, 0xff]).await?;
    expect_error_then_close(c.until_close(Duration::from_secs(10)).await?, wire::Code::InvalidArgument, 1002)?;
    Ok(())
}

async fn frame_text(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.ws.send(Message::Text("hello".into())).await?;
    expect_error_then_close(c.until_close(Duration::from_secs(10)).await?, wire::Code::InvalidArgument, 1003)?;
    Ok(())
}

/// A Ping{5} frame padded (an unknown length-delimited field 31) to exactly `size` bytes.
fn padded_ping(size: usize) -> Option<Vec<u8>> {
    let ping = [0x62u8, 0x02, 0x08, 0x05];
    // An empty unknown field 30 absorbs the sizes where the pad's length varint grows by one.
    for extra in [&[][..], &[0xf2, 0x01, 0x00][..]] {
        let head = ping.len() + extra.len() + 2;
        for varint_len in 1..=5usize {
            let Some(pad) = size.checked_sub(head + varint_len) else { continue };
            let mut len = Vec::new();
            put_varint(&mut len, pad as u64);
            if len.len() == varint_len {
                let mut out = Vec::with_capacity(size);
                out.extend_from_slice(&ping);
                out.extend_from_slice(extra);
                out.extend_from_slice(&[0xfa, 0x01]);
                out.extend_from_slice(&len);
                out.resize(size, 0);
                return Some(out);
            }
        }
    }
    None
}

async fn frame_max_size(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let max = c.limits().max_message_bytes as usize;
    if max > 64 << 20 {
        return Err(skip(format!("max_message_bytes is {max}: too large to send here")));
    }
    let ping = padded_ping(max).context("max_message_bytes is too small for a padded Ping")?;
    c.send_bytes(ping).await?;
    match next_frame(&mut c, "the Pong of a Ping of exactly max_message_bytes").await? {
        Kind::Pong(p) if p.nonce == 5 => {}
        other => bail!("a message of exactly max_message_bytes ({max}) got {}", describe(&other)),
    }
    c.close().await;
    Ok(())
}

async fn frame_oversized(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let max = c.limits().max_message_bytes as usize;
    if max > 64 << 20 {
        return Err(skip(format!("max_message_bytes is {max}: too large to send here")));
    }
    // The gateway may close before it has read it all: a failed send is not the verdict.
    let _ = c.send_bytes(padded_ping(max + 1).context("a padded Ping")?).await;
    expect_error_then_close(c.until_close(Duration::from_secs(15)).await?, wire::Code::ResourceExhausted, 1009)?;
    Ok(())
}

/// Bytes written past the WebSocket library: a reserved opcode, or an unmasked frame.
async fn frame_ws_raw(s: &Suite, bytes: &[u8]) -> Result<()> {
    let mut c = s.open().await?;
    c.ws.get_mut().write_all(bytes).await?;
    c.ws.get_mut().flush().await?;
    expect_error_then_close(c.until_close(Duration::from_secs(10)).await?, wire::Code::InvalidArgument, 1002)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Subscriptions
// ------------------------------------------------------------------------------------------

async fn subscribe_subscribed(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("sub");
    let sub = c.subscribe_key(s, 1, &key, None, 0).await?;
    ensure!(!sub.topic.is_empty(), "Subscribed.topic is empty");
    let cursor = sub.cursor.clone().context("Subscribed has no cursor")?;
    ensure!(
        cursor.topic_id.is_empty() || cursor.topic_id.len() == 16,
        "Subscribed.cursor.topic_id has {} bytes (16, or none)",
        cursor.topic_id.len()
    );
    let partitions: Vec<i32> = cursor.positions.iter().map(|p| p.partition).collect();
    let expected: Vec<i32> = (0..partitions.len() as i32).collect();
    ensure!(
        !partitions.is_empty() && partitions == expected,
        "the cursor lists partitions {partitions:?}, not 0..n in order"
    );
    ensure!(cursor.positions.iter().all(|p| p.next_offset >= 0), "a negative next_offset in {cursor:?}");
    let default = c.limits().default_credit;
    ensure!(sub.credit == default, "Subscribe.credit 0 was granted {}, not default_credit {default}", sub.credit);
    c.close().await;
    Ok(())
}

async fn subscribe_credit_clamped(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let max = c.limits().max_credit;
    if max == u32::MAX {
        return Err(skip("max_credit is u32::MAX: nothing to clamp"));
    }
    let sub = c.subscribe_key(s, 1, &s.key("clamp"), None, max + 1).await?;
    ensure!(sub.credit == max, "Subscribe.credit {} was granted {}, not max_credit {max}", max + 1, sub.credit);
    let sub = c.subscribe_key(s, 2, &s.key("clamp"), None, 1).await?;
    ensure!(sub.credit == 1, "Subscribe.credit 1 was granted {}", sub.credit);
    c.close().await;
    Ok(())
}

async fn subscribe_refused(s: &Suite, method: &str, request: Option<Vec<u8>>, code: wire::Code) -> Result<()> {
    let mut c = s.open().await?;
    let request = request.unwrap_or_else(|| s.request(&s.key("refused")));
    c.subscribe(5, method, request, None, 0).await?;
    let k = next_frame(&mut c, "an Error for the Subscribe").await?;
    ensure_error(&k, code, 5, 0)?;
    c.next_is_pong("the refusal").await.context("the session goes on")?;
    c.close().await;
    Ok(())
}

async fn subscribe_id_zero(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let method = s.cfg.subscribe.clone();
    c.subscribe(0, &method, s.request(&s.key("zero")), None, 0).await?;
    let k = next_frame(&mut c, "an Error for Subscribe{id: 0}").await?;
    ensure_error(&k, wire::Code::InvalidArgument, 0, 0)?;
    c.next_is_pong("the refusal").await.context("the session goes on")?;
    c.close().await;
    Ok(())
}

async fn subscribe_duplicate_id(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("dup");
    c.subscribe_key(s, 1, &key, None, 0).await?;
    let method = s.cfg.subscribe.clone();
    c.subscribe(1, &method, s.request(&s.key("dup2")), None, 0).await?;
    let refusal = c
        .until(Duration::from_secs(10), "the refusal of the second Subscribe{id: 1}", |k| match k {
            Kind::Error(e) if e.publish_id == 0 => Some(k.clone()),
            _ => None,
        })
        .await?;
    ensure_error(&refusal, wire::Code::AlreadyExists, 0, 0)?;
    if let Kind::Error(e) = &refusal {
        ensure!(e.message.contains('1'), "the ALREADY_EXISTS message does not name the id: {:?}", e.message);
    }
    // Subscription 1 goes on: it gets the next record of its key.
    let r = c.publish_ok(s, &key, "still-open").await?;
    let got = c.records(1, 1).await.context("subscription 1 after the refused duplicate")?;
    ensure!(
        got[0].partition == r.partition && got[0].offset == r.offset,
        "subscription 1 got {}@{}, expected the record just published ({}@{})",
        got[0].partition,
        got[0].offset,
        r.partition,
        r.offset
    );
    c.close().await;
    Ok(())
}

async fn subscribe_id_reuse(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.subscribe_key(s, 3, &s.key("reuse"), None, 0).await?;
    c.send(Kind::Unsubscribe(wire::Unsubscribe { id: 3 })).await?;
    c.until(Duration::from_secs(10), "End{id: 3}", |k| matches!(k, Kind::End(e) if e.id == 3).then_some(())).await?;
    c.subscribe_key(s, 3, &s.key("reuse"), None, 0).await.context("reusing id 3 after its End")?;
    // After an Error too.
    let method = s.cfg.subscribe.clone();
    c.subscribe(4, &method, s.truncated(), None, 0).await?;
    c.until(Duration::from_secs(10), "the Error of subscription 4", |k| {
        matches!(k, Kind::Error(e) if e.subscription_id == 4).then_some(())
    })
    .await?;
    c.subscribe_key(s, 4, &s.key("reuse"), None, 0).await.context("reusing id 4 after its Error")?;
    c.close().await;
    Ok(())
}

async fn subscribe_max_subscriptions(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let max = c.limits().max_subscriptions;
    if max > 512 {
        return Err(skip(format!("max_subscriptions is {max}: too many to open here")));
    }
    let method = s.cfg.subscribe.clone();
    for id in 1..=max {
        c.subscribe(id, &method, s.request(&s.key("max")), None, 1).await?;
    }
    for id in 1..=max {
        c.subscribed(id).await?;
    }
    c.subscribe(max + 1, &method, s.request(&s.key("max")), None, 1).await?;
    let k = c
        .until(Duration::from_secs(10), "the refusal of one subscription too many", |k| {
            matches!(k, Kind::Error(e) if e.subscription_id == max + 1).then(|| k.clone())
        })
        .await?;
    ensure_error(&k, wire::Code::ResourceExhausted, max + 1, 0)?;
    // Ending one frees its place.
    c.send(Kind::Unsubscribe(wire::Unsubscribe { id: 1 })).await?;
    c.until(Duration::from_secs(10), "End{id: 1}", |k| matches!(k, Kind::End(e) if e.id == 1).then_some(())).await?;
    c.subscribe_key(s, max + 2, &s.key("max"), None, 1).await.context("after an Unsubscribe freed a place")?;
    c.close().await;
    Ok(())
}

async fn subscribe_key_filter(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("mine");
    let sub = c.subscribe_key(s, 1, &key, None, 0).await?;
    let n = partitions_of(&sub)?;
    // Another key on the same partition, so that only the key filter can tell them apart.
    let want = s.partition_for(key.as_bytes(), n);
    let other = (0..10_000)
        .map(|_| s.key("theirs"))
        .find(|k| s.partition_for(k.as_bytes(), n) == want)
        .context("no other key on the same partition")?;
    let theirs = s.publish_all(&other, &["not-mine"]).await?;
    let mine = s.publish_all(&key, &["mine"]).await?;
    ensure!(
        theirs[0].partition == mine[0].partition,
        "the two keys landed on partitions {} and {}: is --partitioner right?",
        theirs[0].partition,
        mine[0].partition
    );
    let got = c.records(1, 1).await?;
    let extra = c.records_during(1, Duration::from_millis(1500)).await?;
    let all: Vec<_> = got.iter().chain(&extra).collect();
    ensure!(
        all.len() == 1 && all[0].offset == mine[0].offset && all[0].key == key.as_bytes(),
        "subscription on key {key:?} got {} records ({}); expected only {}@{}",
        all.len(),
        all.iter()
            .map(|r| format!("{}@{} key {:?}", r.partition, r.offset, String::from_utf8_lossy(&r.key)))
            .collect::<Vec<_>>()
            .join(", "),
        mine[0].partition,
        mine[0].offset
    );
    c.close().await;
    Ok(())
}

async fn subscribe_start_latest(s: &Suite) -> Result<()> {
    let key = s.key("latest");
    let before = s.publish_all(&key, &["before"]).await?;
    // Let the gateway's live reader pass it: "latest" is what the gateway reads after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = s.open().await?;
    let sub = c.subscribe_key(s, 1, &key, Some(Position::Latest(wire::Empty {})), 0).await?;
    let cursor = sub.cursor.context("no cursor")?;
    let at = cursor.positions.iter().find(|p| p.partition == before[0].partition).map_or(-1, |p| p.next_offset);
    ensure!(
        at > before[0].offset,
        "latest starts partition {} at {at}, at or before a record published before",
        before[0].partition
    );
    let after = s.publish_all(&key, &["after"]).await?;
    let got = c.records(1, 1).await?;
    let extra = c.records_during(1, Duration::from_secs(1)).await?;
    ensure!(extra.is_empty() && got.len() == 1, "latest delivered {} records, expected 1", got.len() + extra.len());
    ensure!(
        got[0].offset == after[0].offset,
        "latest delivered offset {}, expected {}",
        got[0].offset,
        after[0].offset
    );
    ensure!(s.body_of(&got[0].payload).as_deref() == Some("after"), "latest delivered the wrong record");
    c.close().await;
    Ok(())
}

async fn subscribe_start_earliest(s: &Suite) -> Result<()> {
    let key = s.key("earliest");
    let sent = s.publish_all(&key, &["one", "two"]).await?;
    let mut c = s.open().await?;
    let sub = c.subscribe_key(s, 1, &key, Some(Position::Earliest(wire::Empty {})), 0).await?;
    let cursor = sub.cursor.context("no cursor")?;
    for r in &sent {
        let at = cursor.positions.iter().find(|p| p.partition == r.partition).map_or(i64::MAX, |p| p.next_offset);
        ensure!(
            at <= r.offset,
            "earliest starts partition {} at {at}, after a retained record ({})",
            r.partition,
            r.offset
        );
    }
    let got = c.records(1, 2).await?;
    let extra = c.records_during(1, Duration::from_secs(1)).await?;
    let offsets: Vec<i64> = got.iter().chain(&extra).map(|r| r.offset).collect();
    let expected: Vec<i64> = sent.iter().map(|r| r.offset).collect();
    ensure!(offsets == expected, "earliest delivered offsets {offsets:?}, expected {expected:?}");
    c.close().await;
    Ok(())
}

async fn subscribe_start_timestamp(s: &Suite) -> Result<()> {
    let key = s.key("time");
    let first = s.publish_all(&key, &["first"]).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = s.publish_all(&key, &["second"]).await?;
    let (a, b) = (&first[0], &second[0]);
    ensure!(
        b.timestamp_ms > a.timestamp_ms,
        "receipt timestamps {} then {}: not increasing",
        a.timestamp_ms,
        b.timestamp_ms
    );
    let mut c = s.open().await?;
    let sub = c.subscribe_key(s, 1, &key, Some(Position::TimestampMs(b.timestamp_ms)), 0).await?;
    let cursor = sub.cursor.context("no cursor")?;
    let at = cursor.positions.iter().find(|p| p.partition == b.partition).map_or(-1, |p| p.next_offset);
    ensure!(
        (a.offset.saturating_add(1)..=b.offset).contains(&at) || a.partition != b.partition,
        "timestamp {} starts partition {} at {at}; expected after {} and at most {}",
        b.timestamp_ms,
        b.partition,
        a.offset,
        b.offset
    );
    let got = c.records(1, 1).await?;
    let extra = c.records_during(1, Duration::from_secs(1)).await?;
    let offsets: Vec<i64> = got.iter().chain(&extra).map(|r| r.offset).collect();
    ensure!(offsets == [b.offset], "timestamp start delivered offsets {offsets:?}, expected [{}]", b.offset);
    c.close().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Unsubscribe and credit
// ------------------------------------------------------------------------------------------

async fn unsubscribe_end(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("unsub");
    c.subscribe_key(s, 1, &key, None, 0).await?;
    c.send(Kind::Unsubscribe(wire::Unsubscribe { id: 1 })).await?;
    c.until(Duration::from_secs(10), "End{id: 1}", |k| matches!(k, Kind::End(e) if e.id == 1).then_some(())).await?;
    s.publish_all(&key, &["after-end"]).await?;
    // Any frame about id 1 from now on is reported by the connection's checks.
    c.during(Duration::from_millis(1500), |_| Some(())).await?;
    c.close().await;
    Ok(())
}

async fn unsubscribe_unknown_id(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.send(Kind::Unsubscribe(wire::Unsubscribe { id: 4242 })).await?;
    match next_frame(&mut c, "End{id: 4242}").await? {
        Kind::End(e) if e.id == 4242 => {}
        other => bail!("Unsubscribe for an id never subscribed got {}, expected End{{id: 4242}}", describe(&other)),
    }
    c.next_is_pong("End").await?;
    c.close().await;
    Ok(())
}

async fn unsubscribe_nothing_after_end(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let method = s.cfg.subscribe.clone();
    for id in 1..=30u32 {
        c.subscribe(id, &method, s.request(&s.key("race")), None, 0).await?;
        c.send(Kind::Unsubscribe(wire::Unsubscribe { id })).await?;
    }
    for id in 1..=30u32 {
        c.until(Duration::from_secs(10), &format!("End{{id: {id}}}"), |k| {
            matches!(k, Kind::End(e) if e.id == id).then_some(())
        })
        .await?;
    }
    // A Subscribed (or anything) after its End is reported by the connection's checks.
    c.during(Duration::from_secs(1), |_| Some(())).await?;
    c.close().await;
    Ok(())
}

async fn credit_flow(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("credit");
    let sub = c.subscribe_key(s, 1, &key, None, 2).await?;
    ensure!(sub.credit == 2, "Subscribe.credit 2 was granted {}", sub.credit);
    let sent = s.publish_all(&key, &["c1", "c2", "c3", "c4", "c5"]).await?;
    let mut got = c.records(1, 2).await?;
    got.extend(c.records_during(1, Duration::from_millis(1500)).await?);
    ensure!(got.len() == 2, "with credit 2, {} records arrived before any Credit", got.len());
    c.send(Kind::Credit(wire::Credit { subscription_id: 1, records: 2 })).await?;
    let mut more = c.records(1, 2).await?;
    more.extend(c.records_during(1, Duration::from_millis(1500)).await?);
    ensure!(more.len() == 2, "Credit{{records: 2}} let {} records through", more.len());
    got.extend(more);
    c.send(Kind::Credit(wire::Credit { subscription_id: 1, records: 100 })).await?;
    got.extend(c.records(1, 1).await?);
    got.extend(c.records_during(1, Duration::from_millis(500)).await?);
    let offsets: Vec<(i32, i64)> = got.iter().map(|r| (r.partition, r.offset)).collect();
    let expected: Vec<(i32, i64)> = sent.iter().map(|r| (r.partition, r.offset)).collect();
    ensure!(offsets == expected, "records {offsets:?}, expected {expected:?} (no gap, no duplicate)");
    c.close().await;
    Ok(())
}

async fn credit_unknown_id(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    c.send(Kind::Credit(wire::Credit { subscription_id: 9999, records: 10 })).await?;
    c.next_is_pong("Credit for an id with no subscription (it is ignored)").await?;
    c.close().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Publishes
// ------------------------------------------------------------------------------------------

async fn publish_receipt(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("receipt");
    let sub = c.subscribe_key(s, 1, &key, None, 0).await?;
    let n = partitions_of(&sub)?;
    let id = 41;
    c.publish(id, &s.cfg.publish.clone(), s.payload(&key, "hello receipt"), b"").await?;
    let r = c.receipt(id).await?;
    ensure!(r.topic == sub.topic, "Receipt.topic {:?}, but the subscription's topic is {:?}", r.topic, sub.topic);
    ensure!((0..n as i32).contains(&r.partition), "Receipt.partition {} of {n}", r.partition);
    ensure!(r.offset >= 0 && r.timestamp_ms > 0, "Receipt {r:?}");
    ensure!(!r.duplicate, "a first publish has duplicate = true");
    let got = c.records(1, 1).await?;
    let rec = &got[0];
    ensure!(
        (rec.partition, rec.offset) == (r.partition, r.offset),
        "the record is {}@{}, the receipt says {}@{}",
        rec.partition,
        rec.offset,
        r.partition,
        r.offset
    );
    ensure!(
        rec.key == key.as_bytes(),
        "the record key is {:?}, expected the request's key field {key:?}",
        String::from_utf8_lossy(&rec.key)
    );
    ensure!(rec.timestamp_ms > 0, "the record has no timestamp");
    ensure!(
        s.body_of(&rec.payload).as_deref() == Some("hello receipt"),
        "the record's body field is {:?}",
        s.body_of(&rec.payload)
    );
    ensure!(
        string_field(&rec.payload, s.cfg.key_field).as_deref() == Some(key.as_str()),
        "the record's key field differs"
    );
    c.close().await;
    Ok(())
}

async fn publish_refused(
    s: &Suite,
    method: &str,
    payload: Option<Vec<u8>>,
    key: &[u8],
    code: wire::Code,
) -> Result<()> {
    let mut c = s.open().await?;
    let payload = payload.unwrap_or_else(|| s.payload(&s.key("refused"), "refused"));
    c.publish(9, method, payload, key).await?;
    let k = c
        .until(Duration::from_secs(15), "the answer to publish 9", |k| match k {
            Kind::Receipt(r) if r.id == 9 => Some(k.clone()),
            Kind::Error(e) if e.publish_id == 9 => Some(k.clone()),
            _ => None,
        })
        .await?;
    ensure_error(&k, code, 0, 9)?;
    c.next_is_pong("the refused publish").await.context("the session goes on")?;
    c.close().await;
    Ok(())
}

async fn publish_partitioner(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let sub = c.subscribe_key(s, 1, &s.key("parts"), None, 0).await?;
    let n = partitions_of(&sub)?;
    if n == 1 {
        return Err(skip("the topic has one partition"));
    }
    for _ in 0..8 {
        let key = s.key("part");
        let r = c.publish_ok(s, &key, "where").await?;
        let want = s.partition_for(key.as_bytes(), n);
        ensure!(
            r.partition == want,
            "key {key:?} went to partition {}; the {:?} partitioner picks {want} of {n}",
            r.partition,
            s.cfg.partitioner
        );
    }
    c.close().await;
    Ok(())
}

async fn publish_order(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("order");
    let method = s.cfg.publish.clone();
    for id in 1..=20u64 {
        c.publish(id, &method, s.payload(&key, &format!("n{id}")), b"").await?;
    }
    let mut receipts = Vec::new();
    for id in 1..=20u64 {
        receipts.push(c.receipt(id).await?);
    }
    ensure!(receipts.iter().all(|r| r.partition == receipts[0].partition), "one key, several partitions");
    ensure!(
        receipts.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets in send order: {:?}",
        receipts.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    c.close().await;
    Ok(())
}

/// An idempotency key of exactly 64 bytes (the documented maximum), unique to this run.
fn idempotency_key(s: &Suite, tag: &str) -> Vec<u8> {
    let mut k = format!("{}-{}-{:016x}-", s.key(tag), s.run, rand::random::<u64>()).into_bytes();
    k.resize(64, b'x');
    k
}

async fn publish_dedup(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("dedup");
    c.subscribe_key(s, 1, &key, None, 0).await?;
    let idem = idempotency_key(s, "dedup");
    let method = s.cfg.publish.clone();
    c.publish(1, &method, s.payload(&key, "first"), &idem).await?;
    let first = c.receipt(1).await?;
    ensure!(!first.duplicate, "the first publish of a key has duplicate = true");
    c.publish(2, &method, s.payload(&key, "second"), &idem).await?;
    let second = c.receipt(2).await?;
    ensure!(second.duplicate, "the second publish of the idempotency key has duplicate = false");
    ensure!(
        (second.topic.as_str(), second.partition, second.offset)
            == (first.topic.as_str(), first.partition, first.offset),
        "the duplicate's receipt says {}@{}, the first {}@{}",
        second.partition,
        second.offset,
        first.partition,
        first.offset
    );
    let mut got = c.records(1, 1).await?;
    got.extend(c.records_during(1, Duration::from_millis(1500)).await?);
    ensure!(got.len() == 1, "{} records for one idempotency key", got.len());
    ensure!(s.body_of(&got[0].payload).as_deref() == Some("first"), "the record is not the first publish's");
    let header = got[0].headers.iter().find(|h| h.key == "kafkasocks-idempotency-key");
    ensure!(
        header.is_some_and(|h| h.value == idem),
        "the record has no kafkasocks-idempotency-key header with the key (headers: {:?})",
        got[0].headers.iter().map(|h| h.key.as_str()).collect::<Vec<_>>()
    );
    c.close().await;
    Ok(())
}

async fn publish_dedup_in_flight(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("inflight");
    let idem = idempotency_key(s, "inflight");
    let method = s.cfg.publish.clone();
    c.publish(1, &method, s.payload(&key, "a"), &idem).await?;
    c.publish(2, &method, s.payload(&key, "b"), &idem).await?;
    let (a, b) = (c.receipt(1).await?, c.receipt(2).await?);
    ensure!(
        (a.partition, a.offset) == (b.partition, b.offset),
        "two records ({}@{}, {}@{}) for one idempotency key",
        a.partition,
        a.offset,
        b.partition,
        b.offset
    );
    ensure!(a.duplicate != b.duplicate, "duplicate flags {} and {}: expected exactly one", a.duplicate, b.duplicate);
    c.close().await;
    Ok(())
}

fn instance_id() -> String {
    format!("cf{:032x}", rand::random::<u128>())
}

async fn publish_dedup_across_connections(s: &Suite) -> Result<()> {
    let key = s.key("across");
    let idem = idempotency_key(s, "across");
    let instance = instance_id();
    let method = s.cfg.publish.clone();
    let mut a = s.open_as(&s.token().await?, &instance).await?;
    a.publish(1, &method, s.payload(&key, "a"), &idem).await?;
    let first = a.receipt(1).await?;
    a.close().await;
    let mut b = s.open_as(&s.token().await?, &instance).await?;
    b.publish(1, &method, s.payload(&key, "b"), &idem).await?;
    let second = b.receipt(1).await?;
    ensure!(
        second.duplicate && (second.partition, second.offset) == (first.partition, first.offset),
        "the same principal (and instance_id) on a new connection got {second:?}, expected the first receipt \
         ({}@{}) with duplicate = true (a gateway behind a load balancer may have sent it to another node)",
        first.partition,
        first.offset
    );
    b.close().await;
    Ok(())
}

async fn publish_dedup_scope(s: &Suite) -> Result<()> {
    let (token_a, token_b) = match &s.cfg.token {
        TokenSource::Anonymous => (String::new(), String::new()),
        TokenSource::Url { .. } => (s.token().await?, s.token_for(&s.key("scope")).await?.context("a token")?),
        TokenSource::Fixed(_) => return Err(skip("needs an anonymous gateway or --token-url for a second principal")),
    };
    let key = s.key("scope");
    let idem = idempotency_key(s, "scope");
    let method = s.cfg.publish.clone();
    let mut a = s.open_as(&token_a, &instance_id()).await?;
    a.publish(1, &method, s.payload(&key, "a"), &idem).await?;
    let first = a.receipt(1).await?;
    a.close().await;
    // Another principal (anonymous: another instance_id) with the same key: its own record.
    let mut b = s.open_as(&token_b, &instance_id()).await?;
    b.publish(1, &method, s.payload(&key, "b"), &idem).await?;
    let second = b.receipt(1).await?;
    ensure!(
        !second.duplicate && (second.partition, second.offset) != (first.partition, first.offset),
        "another client's publish with the same idempotency key got {second:?}: keys are not scoped to a client"
    );
    b.close().await;
    Ok(())
}

async fn publish_same_id(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("sameid");
    c.subscribe_key(s, 1, &key, None, 0).await?;
    let method = s.cfg.publish.clone();
    c.publish(7, &method, s.payload(&key, "a"), b"").await?;
    c.publish(7, &method, s.payload(&key, "b"), b"").await?;
    // Both are produced and both answered, with the same id.
    let (x, y) = (c.receipt(7).await?, c.receipt(7).await?);
    ensure!(x.offset != y.offset || x.partition != y.partition, "two publishes with id 7 got the same receipt");
    let mut got = c.records(1, 2).await?;
    got.extend(c.records_during(1, Duration::from_millis(500)).await?);
    let mut bodies: Vec<String> = got.iter().filter_map(|r| s.body_of(&r.payload)).collect();
    bodies.sort();
    ensure!(bodies == ["a", "b"], "records {bodies:?}, expected both publishes (a, b)");
    c.close().await;
    Ok(())
}

async fn publish_rate_limit(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let limits = c.limits();
    let rate = limits.max_publishes_per_second as u64;
    if rate > 5000 {
        return Err(skip(format!("max_publishes_per_second is {rate}: too many to send here")));
    }
    // Publishes the stream's hook refuses (the payload does not decode): each takes a rate
    // token, none reaches Kafka.
    let total = rate + rate / 2 + 64;
    let method = s.cfg.publish.clone();
    let bad = s.truncated();
    let (mut limited, mut refused, mut sent) = (Vec::new(), 0u64, 0u64);
    let mut answered = 0u64;
    while answered < total {
        while sent < total && sent - answered < 256 {
            sent += 1;
            c.publish(sent, &method, bad.clone(), b"").await?;
        }
        let k = c
            .until(Duration::from_secs(15), "publish answers", |k| match k {
                Kind::Error(e) if e.publish_id != 0 => Some(Ok(e.clone())),
                Kind::Receipt(r) => Some(Err(r.id)),
                _ => None,
            })
            .await?;
        answered += 1;
        match k {
            Err(id) => bail!("publish {id} of an undecodable payload got a Receipt"),
            Ok(e) if e.code == wire::Code::ResourceExhausted as i32 => limited.push(e),
            Ok(e) if e.code == wire::Code::InvalidArgument as i32 => refused += 1,
            Ok(e) => bail!("unexpected {}", describe(&Kind::Error(e))),
        }
    }
    ensure!(
        !limited.is_empty(),
        "{total} publishes within a second and no RESOURCE_EXHAUSTED (max_publishes_per_second {rate})"
    );
    ensure!(
        limited.iter().all(|e| e.retry_after_ms > 0),
        "a RESOURCE_EXHAUSTED refusal with retry_after_ms 0: {}",
        limited
            .iter()
            .filter(|e| e.retry_after_ms == 0)
            .map(|e| describe(&Kind::Error(e.clone())))
            .next()
            .unwrap_or_default()
    );
    ensure!(refused >= rate, "only {refused} publishes admitted before the limit; the bucket holds {rate}");
    eprintln!("publish.rate-limit: {refused} admitted, {} limited", limited.len());
    c.close().await;
    // Let the connection's and the principal's buckets refill for the cases after.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Resume
// ------------------------------------------------------------------------------------------

async fn resume_cursor(s: &Suite) -> Result<()> {
    let key = s.key("resume");
    let mut a = s.open().await?;
    a.subscribe_key(s, 1, &key, None, 0).await?;
    let early = s.publish_all(&key, &["r1", "r2", "r3"]).await?;
    let got = a.records(1, 3).await?;
    ensure!(got.len() == 3, "{} records, expected 3", got.len());
    let cursor = a.cursor(1)?;
    a.close().await;
    let late = s.publish_all(&key, &["r4", "r5", "r6"]).await?;
    let mut c = s.open().await?;
    let sub = c.subscribe_key(s, 1, &key, Some(Position::Cursor(cursor.clone())), 0).await?;
    ensure!(
        sub.cursor.as_ref() == Some(&cursor),
        "Subscribed.cursor {:?} is not the cursor given {cursor:?}",
        sub.cursor
    );
    let mut resumed = c.records(1, 3).await?;
    resumed.extend(c.records_during(1, Duration::from_secs(1)).await?);
    let offsets: Vec<(i32, i64)> = resumed.iter().map(|r| (r.partition, r.offset)).collect();
    let expected: Vec<(i32, i64)> = late.iter().map(|r| (r.partition, r.offset)).collect();
    ensure!(
        offsets == expected,
        "resumed with {offsets:?}, expected exactly the records after the cursor {expected:?} (before it: {:?})",
        early.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    c.close().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum BadCursor {
    BeyondEnd,
    ExtraPartition,
    OtherTopicId,
}

async fn resume_bad_cursor(s: &Suite, bad: BadCursor) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("badcursor");
    let sub = c.subscribe_key(s, 1, &key, None, 0).await?;
    let mut cursor = sub.cursor.context("no cursor")?;
    let (discontinuity, what) = match bad {
        BadCursor::BeyondEnd => {
            let first = cursor.positions.first_mut().context("Subscribed's cursor lists no partition")?;
            first.next_offset = first.next_offset.saturating_add(1_000_000_000);
            (wire::Discontinuity::OffsetBeyondEnd, "a next_offset past the log end")
        }
        BadCursor::ExtraPartition => {
            let n = cursor.positions.len() as i32;
            cursor.positions.push(wire::PartitionOffset { partition: n, next_offset: 0 });
            (wire::Discontinuity::PartitionsChanged, "a partition the topic does not have")
        }
        BadCursor::OtherTopicId => {
            if cursor.topic_id.is_empty() {
                return Err(skip("the gateway gives no topic ids (Subscribed.cursor.topic_id is empty)"));
            }
            let flipped: Vec<u8> = cursor.topic_id.iter().map(|b| b ^ 0xff).collect();
            cursor.topic_id = flipped.into();
            (wire::Discontinuity::TopicRecreated, "another topic id")
        }
    };
    let method = s.cfg.subscribe.clone();
    c.subscribe(2, &method, s.request(&key), Some(Position::Cursor(cursor)), 0).await?;
    let k = c
        .until(Duration::from_secs(15), "the answer to a Subscribe with a bad cursor", |k| match k {
            Kind::Subscribed(x) if x.id == 2 => Some(k.clone()),
            Kind::Error(e) if e.subscription_id == 2 => Some(k.clone()),
            _ => None,
        })
        .await?;
    ensure_error(&k, wire::Code::DataLoss, 2, 0).with_context(|| format!("a cursor with {what}"))?;
    if let Kind::Error(e) = &k {
        ensure!(
            e.discontinuity == discontinuity as i32,
            "a cursor with {what}: discontinuity {:?}, expected {}",
            wire::Discontinuity::try_from(e.discontinuity).map_or("unknown", |d| d.as_str_name()),
            discontinuity.as_str_name()
        );
    }
    c.next_is_pong("DATA_LOSS").await.context("the session goes on")?;
    c.close().await;
    Ok(())
}

async fn resume_below_log_start(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("logstart");
    let sub = c.subscribe_key(s, 1, &key, Some(Position::Earliest(wire::Empty {})), 0).await?;
    let mut cursor = sub.cursor.context("no cursor")?;
    let Some(i) = cursor.positions.iter().position(|p| p.next_offset > 0) else {
        return Err(skip("every partition's log starts at offset 0: no offset below the log start to ask for"));
    };
    cursor.positions[i].next_offset -= 1;
    let method = s.cfg.subscribe.clone();
    c.subscribe(2, &method, s.request(&key), Some(Position::Cursor(cursor)), 0).await?;
    let k = c
        .until(Duration::from_secs(15), "the answer to a Subscribe below the log start", |k| match k {
            Kind::Subscribed(x) if x.id == 2 => Some(k.clone()),
            Kind::Error(e) if e.subscription_id == 2 => Some(k.clone()),
            _ => None,
        })
        .await?;
    ensure_error(&k, wire::Code::DataLoss, 2, 0)?;
    if let Kind::Error(e) = &k {
        ensure!(
            e.discontinuity == wire::Discontinuity::OffsetBelowLogStart as i32,
            "discontinuity {}",
            e.discontinuity
        );
    }
    c.close().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Checkpoints
// ------------------------------------------------------------------------------------------

async fn checkpoint_filtered(s: &Suite) -> Result<()> {
    let mut c = s.open().await?;
    let key = s.key("quiet");
    c.subscribe_key(s, 1, &key, None, 0).await?;
    let other = s.publish_all(&s.key("noise"), &["noise"]).await?;
    let (p, o) = (other[0].partition, other[0].offset);
    // The documented interval is 5 s: a Checkpoint moves partition p past the other key's record.
    let started = Instant::now();
    let deadline = Duration::from_secs(12);
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        c.until(left, &format!("a Checkpoint of subscription 1 past {p}@{o}"), |k| {
            matches!(k, Kind::Checkpoint(cp) if cp.subscription_id == 1).then_some(())
        })
        .await?;
        let cursor = c.cursor(1)?;
        if cursor.positions.iter().any(|x| x.partition == p && x.next_offset > o) {
            break;
        }
    }
    let data = c.records_during(1, Duration::from_millis(100)).await?;
    ensure!(data.is_empty(), "the filtered subscription got {} records of another key", data.len());
    eprintln!("checkpoint.filtered: after {:.1} s", started.elapsed().as_secs_f32());
    c.close().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The admin endpoint
// ------------------------------------------------------------------------------------------

async fn admin_get(s: &Suite, path: &str, status: u16, contains: &str) -> Result<()> {
    let Some(admin) = &s.cfg.admin else {
        return Err(skip("no --admin-url"));
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host_header(&admin.host, admin.port));
    let r = http_exchange(&admin.host, admin.port, request.as_bytes(), false).await?;
    ensure!(r.status == status, "GET {path} answered {}, expected {status}: {}", r.status, r.body.trim());
    ensure!(r.body.contains(contains), "GET {path}: {:?} does not contain {contains:?}", r.body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 3] =
            [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)];
        for (key, want) in cases {
            assert_eq!(murmur2(key) as i32, want, "{key:?}");
        }
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn padded_pings_have_the_size_asked_for() {
        for size in (7usize..20_000).chain([(1 << 20) - 1, 1 << 20, (1 << 20) + 1]) {
            let p = padded_ping(size).unwrap_or_default();
            assert_eq!(p.len(), size);
            let f = wire::Frame::decode(p.as_slice()).ok().and_then(|f| f.kind);
            assert!(matches!(f, Some(Kind::Ping(wire::Ping { nonce: 5 }))), "{size}");
        }
    }

    #[test]
    fn string_fields_are_found() {
        let mut m = Vec::new();
        put_varint(&mut m, 4 << 3);
        put_varint(&mut m, 300);
        put_string(&mut m, 3, "text");
        put_string(&mut m, 1, "room");
        assert_eq!(string_field(&m, 3).as_deref(), Some("text"));
        assert_eq!(string_field(&m, 1).as_deref(), Some("room"));
        assert_eq!(string_field(&m, 2), None);
        assert_eq!(string_field(&[0x0a, 0x05, b'x'], 1), None);
    }
}
