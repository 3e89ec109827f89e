//! A chat over Kafka. Run it with `scripts/demo` (starts Kafka, builds the page, runs
//! this), then open http://127.0.0.1:8080/ in two browser windows.
//!
//! * `ws://127.0.0.1:8081/streams`: the KafkaSocks gateway (`CHAT_WS_ADDR`)
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
use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, Streams};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

const TOPIC: &str = "chat.messages";

fn addr(var: &str, default: &str) -> anyhow::Result<SocketAddr> {
    std::env::var(var).unwrap_or_else(|_| default.to_owned()).parse().with_context(|| format!("${var}"))
}

async fn ensure_topic(bootstrap: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&[NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))], &opts).await? {
        match r {
            Ok(_) => tracing::info!(topic = TOPIC, "created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating {t}: {e} (is Kafka up? scripts/services up)"),
        }
    }
    Ok(())
}

async fn serve_page(addr: SocketAddr, web: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
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
    let kafka = KafkaConfig::from_env();
    ensure_topic(kafka.bootstrap()).await?;
    let streams = Streams::new().subscribe("chat.v1.ChatStreams/Messages", TOPIC, KeyField::new(1)).publish(
        "chat.v1.ChatStreams/Post",
        TOPIC,
        KeyField::new(1),
    );
    let config = GatewayConfig::new(kafka)
        .listen(addr("CHAT_WS_ADDR", "127.0.0.1:8081")?)
        .metrics_listen(addr("CHAT_METRICS_ADDR", "127.0.0.1:9090")?);
    let gateway = Gateway::builder(config).streams(streams).bind().await?;
    let http = addr("CHAT_HTTP_ADDR", "127.0.0.1:8080")?;
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    tokio::spawn(async move {
        if let Err(e) = serve_page(http, web).await {
            tracing::error!(error = %e, "web page server stopped");
        }
    });
    println!("chat: open http://{http}/  (gateway ws://{}/streams)", gateway.local_addr());
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.shutdown();
    });
    gateway.run().await?;
    Ok(())
}
