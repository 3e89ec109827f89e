//! A chat over Kafka. Run it with `scripts/demo` (starts Kafka, builds the page, runs
//! this), then open http://127.0.0.1:8080/ in two browser windows.
//!
//! Everything typed comes from `proto/chat/v1/chat.proto`: `build.rs` generates the Rust
//! side (messages, the `ChatStreamsHooks` trait, `ChatStreamsGateway`, the tonic service), and
//! `kafkasocks-gen ts` generated the page's client in `web/gen/`.
//!
//! * `http://127.0.0.1:8080/`: the web page and `POST /token` (`CHAT_HTTP_ADDR`, [`page`])
//! * `ws://127.0.0.1:8081/streams`: the KafkaSocks gateway (`CHAT_WS_ADDR`)
//! * `127.0.0.1:8082`: the same streams over gRPC (`CHAT_GRPC_ADDR`)
//! * `http://127.0.0.1:9090/metrics`: Prometheus metrics (`CHAT_METRICS_ADDR`)
//!
//! With `CHAT_GATEWAY=host:port` it serves only the page and `POST /token`, for a gateway
//! run elsewhere: `scripts/demo --standalone` runs the `kafkasocks` binary with
//! `examples/chat/kafkasocks.toml` as the gateway, the same page unchanged.
//!
//! Kafka is `$KAFKA_BOOTSTRAP` (default `127.0.0.1:19092`); the topic `chat.messages` is
//! created with 3 partitions if it does not exist.
//!
//! # Who may chat
//!
//! Every WebSocket session and every gRPC call needs a JWT, checked by the gateway's
//! `JwtAuthenticator` against the public half of a key this process makes at start. The
//! page gets its token from `POST /token` ([`token`]), **a stand-in for an identity
//! provider that gives anyone a token for any name**: it shows the flow, it proves nobody's
//! identity. The author of a message is the token's subject, whatever the browser wrote;
//! the rooms are pinned to the token's `rooms` claim; only the page's own origin may open
//! sessions from a browser.

mod grpc;
mod page;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafkasocks::{
    Gateway, GatewayConfig, JwtAlgorithm, JwtAuthenticator, JwtConfig, KafkaConfig, OriginPolicy, Permissions,
    RequestContext, Status,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use token::TokenIssuer;

const TOPIC: &str = "chat.messages";
/// Longest message text, in characters.
const MAX_TEXT_CHARS: usize = 500;

#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
mod chat {
    kafkasocks::include_streams!("chat.v1");
}

/// The chat's rules, on top of the generated defaults and the gateway's permissions (which
/// have already checked the token and pinned the room to its `rooms` claim).
struct ChatRules;

impl chat::ChatStreamsHooks for ChatRules {
    /// Rooms are short names. (An `async fn`: a real chat would look the room up.)
    async fn authorize_messages(&self, _ctx: &RequestContext, request: &chat::RoomFilter) -> Result<(), Status> {
        valid_room(&request.room)
    }

    /// Validate and enrich before Kafka sees it: a message needs a room and some text (at
    /// most 500 characters); its author is the token's subject, never what the browser
    /// wrote; the gateway stamps the time if the browser did not.
    async fn prepare_post(&self, ctx: &RequestContext, mut m: chat::ChatMessage) -> Result<chat::ChatMessage, Status> {
        valid_room(&m.room)?;
        m.user = ctx.principal.subject().to_owned();
        if m.user.is_empty() {
            return Err(Status::unauthenticated("a message needs a signed-in author"));
        }
        m.text = m.text.trim().to_owned();
        if m.text.is_empty() {
            return Err(Status::invalid_argument("a message needs some text"));
        }
        if m.text.chars().count() > MAX_TEXT_CHARS {
            return Err(Status::invalid_argument("messages are at most 500 characters"));
        }
        if m.sent_at_ms == 0 {
            m.sent_at_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        }
        Ok(m)
    }
}

fn valid_room(room: &str) -> Result<(), Status> {
    if room.is_empty() || room.len() > 40 || !room.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
        return Err(Status::invalid_argument("rooms are 1-40 letters, digits, '-' or '_'"));
    }
    Ok(())
}

fn addr(var: &str, default: &str) -> anyhow::Result<SocketAddr> {
    std::env::var(var).unwrap_or_else(|_| default.to_owned()).parse().with_context(|| format!("${var}"))
}

/// Creates the topic if it is missing, with the gateway's own Kafka settings. On a secured
/// cluster the gateway's principal often may not create topics (create `chat.messages`
/// beforehand, with 3 partitions): then this only warns, and the gateway reports a missing
/// topic to its clients as NOT_FOUND.
async fn ensure_topic(kafka: &KafkaConfig) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    for (k, v) in kafka.to_librdkafka()? {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = config.create().context("Kafka admin client")?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))], &opts).await;
    match created.as_deref().map(|r| r.first()) {
        Ok(Some(Ok(_))) => tracing::info!(topic = TOPIC, "created"),
        Ok(Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) | Ok(None) => {}
        Ok(Some(Err((t, e)))) => {
            tracing::warn!(topic = %t, error = %e, "could not create the topic; create it beforehand")
        }
        Err(e) => tracing::warn!(
            topic = TOPIC,
            error = %e,
            "could not create the topic (is Kafka up? scripts/services up); create it beforehand"
        ),
    }
    Ok(())
}

/// The browser origins that may open sessions: the page's own (`http://CHAT_HTTP_ADDR`,
/// and `http://localhost:PORT` beside a loopback address), then `CHAT_ALLOWED_ORIGINS`
/// (comma-separated, e.g. `https://chat.example.com`).
fn page_origins(page: SocketAddr) -> Vec<String> {
    let mut origins = Vec::new();
    if page.ip().is_unspecified() {
        tracing::warn!(%page, "the page listens on every address: name its origin in CHAT_ALLOWED_ORIGINS");
    } else {
        origins.push(format!("http://{page}"));
        if page.ip().is_loopback() {
            origins.push(format!("http://localhost:{}", page.port()));
        }
    }
    let extra = std::env::var("CHAT_ALLOWED_ORIGINS").unwrap_or_default();
    origins.extend(extra.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned));
    origins
}

/// `CHAT_GATEWAY=host:port`: only the page and its token endpoint, for a gateway run
/// elsewhere, such as `kafkasocks serve --config examples/chat/kafkasocks.toml` (the chat
/// without this example's Rust). The public half of the signing key is written to
/// `CHAT_TOKEN_PUBLIC_KEY_FILE` (default `examples/chat/demo-keys/token-public.pem`, where
/// that config reads it) before the page is served.
async fn page_only(issuer: Arc<TokenIssuer>, gateway: &str) -> anyhow::Result<()> {
    let key_file = std::env::var("CHAT_TOKEN_PUBLIC_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo-keys/token-public.pem"));
    if let Some(dir) = key_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&key_file, issuer.public_pem()).with_context(|| format!("writing {}", key_file.display()))?;
    let http_addr = addr("CHAT_HTTP_ADDR", "127.0.0.1:8080")?;
    let http = tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    let http_addr = http.local_addr()?;
    tracing::warn!(
        "DEMO ONLY: POST http://{http_addr}/token gives anyone a token for any name; a real deployment \
         takes its tokens from its identity provider (docs/security.md)"
    );
    tracing::info!(key = %key_file.display(), "token public key written; the gateway checks tokens with it");
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("chat: open http://{http_addr}/?ws={gateway}  (page only; gateway ws://{gateway}/streams)");
    tokio::select! {
        served = page::serve(http, web, issuer) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kafkasocks=info".into()),
        )
        .init();
    let kafka = KafkaConfig::from_env()?;
    ensure_topic(&kafka).await?;

    // Who may chat: tokens signed by this process's own key (the demo's identity provider).
    let issuer = Arc::new(TokenIssuer::from_env()?);
    if let Ok(gateway) = std::env::var("CHAT_GATEWAY") {
        return page_only(issuer, &gateway).await;
    }
    let jwt: JwtAuthenticator = JwtConfig::new()
        .issuer(token::ISSUER)
        .audience(token::AUDIENCE)
        .key_pem(issuer.public_pem().as_bytes(), JwtAlgorithm::EdDsa)
        .build()
        .context("the JWT authenticator")?;
    // Both streams for every signed-in user, on the rooms of the token's `rooms` claim only.
    let permissions =
        Permissions::none().grant_all_operations("chat.v1.ChatStreams/*").pin_keys("chat.v1.ChatStreams/*", "rooms");

    // The page's port first (it may be 0): the gateway lets in pages of that origin only.
    let http_addr = addr("CHAT_HTTP_ADDR", "127.0.0.1:8080")?;
    let http = tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    let http_addr = http.local_addr()?;
    let origins = page_origins(http_addr).into_iter().fold(OriginPolicy::new(), OriginPolicy::allow);

    let streams = chat::ChatStreamsGateway::new(ChatRules).streams();
    let config = GatewayConfig::new(kafka)
        .listen(addr("CHAT_WS_ADDR", "127.0.0.1:8081")?)
        .metrics_listen(addr("CHAT_METRICS_ADDR", "127.0.0.1:9090")?)
        .origins(origins);
    let gateway = Gateway::builder(config).streams(streams).authenticator(jwt).permissions(permissions).bind().await?;

    tracing::warn!(
        "DEMO ONLY: POST http://{http_addr}/token gives anyone a token for any name; a real deployment \
         takes its tokens from its identity provider (docs/security.md)"
    );
    tracing::info!(ttl = ?issuer.ttl(), rooms = ?issuer.rooms(), "tokens: EdDSA JWTs, key made at start");
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    let page_issuer = issuer.clone();
    tokio::spawn(async move {
        if let Err(e) = page::serve(http, web, page_issuer).await {
            tracing::error!(error = %e, "web page server stopped");
        }
    });

    // The same streams over gRPC, fed by the gateway's own Kafka readers; every call
    // carries `authorization: Bearer <token>`, checked like a WebSocket session's.
    let grpc_incoming = grpc::bind(addr("CHAT_GRPC_ADDR", "127.0.0.1:8082")?)?;
    let grpc_addr = grpc_incoming.local_addr()?;
    let grpc = chat::ChatStreamsGrpc::new(gateway.local_streams()).into_service();
    tokio::spawn(async move {
        if let Err(e) = grpc::server().add_service(grpc).serve_with_incoming(grpc::bounded(grpc_incoming)).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    // One line with every address (ports may have been 0): scripts and tests read it.
    let ws = gateway.local_addr();
    println!("chat: open http://{http_addr}/?ws={ws}  (gateway ws://{ws}/streams, gRPC {grpc_addr})");
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.shutdown();
    });
    gateway.run().await?;
    Ok(())
}
