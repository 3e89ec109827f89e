//! A chat over Kafka. Run it with `scripts/demo` (starts Kafka, builds the page, runs
//! this), then open http://127.0.0.1:8080/ in two browser windows.
//!
//! Everything typed comes from `proto/chat/v1/chat.proto`: `build.rs` generates the Rust
//! side (messages, the `ChatStreamsHooks` trait, `ChatStreamsGateway`, the tonic service), and
//! `kafkasocks-gen ts` generated the page's client in `web/gen/`.
//!
//! * `ws://127.0.0.1:8081/streams`: the KafkaSocks gateway (`CHAT_WS_ADDR`)
//! * `127.0.0.1:8082`: the same streams over gRPC (`CHAT_GRPC_ADDR`)
//! * `http://127.0.0.1:8080/`: the web page (`CHAT_HTTP_ADDR`)
//! * `http://127.0.0.1:9090/metrics`: Prometheus metrics (`CHAT_METRICS_ADDR`)
//!
//! Kafka is `$KAFKA_BOOTSTRAP` (default `127.0.0.1:19092`); the topic `chat.messages` is
//! created with 3 partitions if it does not exist.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, RequestContext, Status};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

const TOPIC: &str = "chat.messages";

#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
mod chat {
    kafkasocks::include_streams!("chat.v1");
}

/// The chat's rules, on top of the generated defaults.
struct ChatRules;

impl chat::ChatStreamsHooks for ChatRules {
    /// Rooms are short names. (An `async fn`: a real chat would look the room up.)
    async fn authorize_messages(&self, _ctx: &RequestContext, request: &chat::RoomFilter) -> Result<(), Status> {
        valid_room(&request.room)
    }

    /// Validate and enrich before Kafka sees it: a message needs a room, a user and some
    /// text (at most 500 characters); the gateway stamps the time if the browser did not.
    async fn prepare_post(&self, _ctx: &RequestContext, mut m: chat::ChatMessage) -> Result<chat::ChatMessage, Status> {
        valid_room(&m.room)?;
        m.user = m.user.trim().to_owned();
        m.text = m.text.trim().to_owned();
        if m.user.is_empty() || m.text.is_empty() {
            return Err(Status::invalid_argument("a message needs a user and some text"));
        }
        if m.text.chars().count() > 500 {
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

async fn serve_page(listener: tokio::net::TcpListener, web: PathBuf) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let web = web.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let web = web.clone();
                async move {
                    let (file, ctype) = match req.uri().path() {
                        "/" | "/index.html" => ("index.html", "text/html; charset=utf-8"),
                        "/app.js" => ("dist/app.js", "text/javascript"),
                        _ => ("", ""),
                    };
                    let resp = match tokio::fs::read(web.join(file)).await {
                        Ok(body) if !file.is_empty() => Response::builder()
                            .header("content-type", ctype)
                            .header("cache-control", "no-store")
                            .body(Full::new(Bytes::from(body))),
                        _ => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found (did scripts/demo build the page?)\n"))),
                    };
                    Ok::<_, hyper::http::Error>(resp.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
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
    let streams = chat::ChatStreamsGateway::new(ChatRules).streams();
    let config = GatewayConfig::new(kafka)
        .listen(addr("CHAT_WS_ADDR", "127.0.0.1:8081")?)
        .metrics_listen(addr("CHAT_METRICS_ADDR", "127.0.0.1:9090")?);
    let gateway = Gateway::builder(config).streams(streams).bind().await?;
    let http_addr = addr("CHAT_HTTP_ADDR", "127.0.0.1:8080")?;
    let http = tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    let http_addr = http.local_addr()?;
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    tokio::spawn(async move {
        if let Err(e) = serve_page(http, web).await {
            tracing::error!(error = %e, "web page server stopped");
        }
    });
    // The same streams over gRPC, fed by the gateway's own Kafka readers.
    let grpc_incoming = tonic::transport::server::TcpIncoming::bind(addr("CHAT_GRPC_ADDR", "127.0.0.1:8082")?)
        .map_err(|e| anyhow::anyhow!("binding the gRPC port: {e}"))?;
    let grpc_addr = grpc_incoming.local_addr()?;
    let grpc = chat::ChatStreamsGrpc::new(gateway.local_streams()).into_service();
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder().add_service(grpc).serve_with_incoming(grpc_incoming).await {
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
