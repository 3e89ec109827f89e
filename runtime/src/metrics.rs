//! Counters in Prometheus' text format, and the `/metrics` + `/healthz` HTTP endpoint.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Code;
use crate::kafka::Kafka;

const CODES: [Code; 16] = [
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// Most per-subscription lag series in one scrape (the most lagging ones).
const MAX_LAG_SERIES: usize = 100;

#[derive(Default)]
pub(crate) struct Metrics {
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    connections_rejected: AtomicU64,
    subscriptions_open: AtomicI64,
    subscriptions_total: AtomicU64,
    records_delivered: AtomicU64,
    data_frames: AtomicU64,
    replay_served: AtomicU64,
    catch_up_reads: AtomicU64,
    paused: AtomicU64,
    publishes: AtomicU64,
    publish_duplicates: AtomicU64,
    publish_failures: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    kafka_errors: AtomicU64,
    errors: [AtomicU64; 16],
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        inc(&self.connections_total);
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn connections_open(&self) -> i64 {
        self.connections_open.load(Ordering::Relaxed)
    }
    pub(crate) fn connection_rejected(&self) {
        inc(&self.connections_rejected);
    }
    pub(crate) fn subscription_opened(&self) {
        self.subscriptions_open.fetch_add(1, Ordering::Relaxed);
        inc(&self.subscriptions_total);
    }
    pub(crate) fn subscription_closed(&self) {
        self.subscriptions_open.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn delivered(&self, records: u64, frames: u64) {
        self.records_delivered.fetch_add(records, Ordering::Relaxed);
        self.data_frames.fetch_add(frames, Ordering::Relaxed);
    }
    pub(crate) fn replay_served(&self, records: u64) {
        self.replay_served.fetch_add(records, Ordering::Relaxed);
    }
    pub(crate) fn catch_up_read(&self) {
        inc(&self.catch_up_reads);
    }
    pub(crate) fn paused(&self) {
        inc(&self.paused);
    }
    pub(crate) fn published(&self, duplicate: bool) {
        inc(&self.publishes);
        if duplicate {
            inc(&self.publish_duplicates);
        }
    }
    pub(crate) fn publish_failed(&self) {
        inc(&self.publish_failures);
    }
    pub(crate) fn slow_consumer(&self) {
        inc(&self.slow_consumer_disconnects);
    }
    pub(crate) fn kafka_error(&self) {
        inc(&self.kafka_errors);
    }
    pub(crate) fn error(&self, code: Code) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            inc(&self.errors[i]);
        }
    }

    pub(crate) fn render(&self, kafka: &Kafka) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).to_string();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric("kafkasocks_connections", "gauge", "Open WebSocket connections.", g(&self.connections_open));
        metric(
            "kafkasocks_connections_total",
            "counter",
            "WebSocket connections accepted.",
            c(&self.connections_total),
        );
        metric(
            "kafkasocks_connections_rejected_total",
            "counter",
            "Connections refused at the connection limit.",
            c(&self.connections_rejected),
        );
        metric("kafkasocks_subscriptions", "gauge", "Open subscriptions.", g(&self.subscriptions_open));
        metric("kafkasocks_subscriptions_total", "counter", "Subscriptions opened.", c(&self.subscriptions_total));
        metric(
            "kafkasocks_records_delivered_total",
            "counter",
            "Records written to clients.",
            c(&self.records_delivered),
        );
        metric("kafkasocks_data_frames_total", "counter", "Data frames written to clients.", c(&self.data_frames));
        metric(
            "kafkasocks_replay_records_total",
            "counter",
            "Records served to catching-up subscribers from memory.",
            c(&self.replay_served),
        );
        metric(
            "kafkasocks_catch_up_reads_total",
            "counter",
            "Records read from Kafka by catch-up readers.",
            c(&self.catch_up_reads),
        );
        metric(
            "kafkasocks_subscription_pauses_total",
            "counter",
            "Times a subscription paused (no credit or full send queue).",
            c(&self.paused),
        );
        metric("kafkasocks_publishes_total", "counter", "Publishes acknowledged.", c(&self.publishes));
        metric(
            "kafkasocks_publish_duplicates_total",
            "counter",
            "Publishes answered from the dedup window.",
            c(&self.publish_duplicates),
        );
        metric(
            "kafkasocks_publish_failures_total",
            "counter",
            "Publishes answered with an error.",
            c(&self.publish_failures),
        );
        metric(
            "kafkasocks_slow_consumer_disconnects_total",
            "counter",
            "Connections closed with 4008.",
            c(&self.slow_consumer_disconnects),
        );
        metric("kafkasocks_kafka_errors_total", "counter", "Errors reported by Kafka readers.", c(&self.kafka_errors));
        let _ = writeln!(
            out,
            "# HELP kafkasocks_errors_total Error frames sent, by code.\n# TYPE kafkasocks_errors_total counter"
        );
        for (code, n) in CODES.iter().zip(&self.errors) {
            let _ = writeln!(out, "kafkasocks_errors_total{{code=\"{code}\"}} {}", n.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP kafkasocks_subscription_lag_records Records a live subscription is behind the gateway's reader, per partition (the {MAX_LAG_SERIES} most lagging).\n# TYPE kafkasocks_subscription_lag_records gauge"
        );
        let mut lags: Vec<(String, String, u32, i32, i64)> = Vec::new();
        for hub in kafka.hubs() {
            for (session, id, p, lag) in hub.lag() {
                lags.push((hub.topic.clone(), session, id, p, lag));
            }
        }
        lags.sort_by_key(|l| std::cmp::Reverse(l.4));
        for (topic, session, id, p, lag) in lags.iter().take(MAX_LAG_SERIES) {
            let _ = writeln!(
                out,
                "kafkasocks_subscription_lag_records{{topic=\"{}\",session=\"{session}\",subscription=\"{id}\",partition=\"{p}\"}} {lag}",
                topic.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    kafka: Arc<Kafka>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        let kafka = kafka.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let kafka = kafka.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(req.uri().path(), &metrics, &kafka).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn respond(path: &str, metrics: &Metrics, kafka: &Kafka) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics.render(kafka)),
        "/healthz" => {
            if kafka.healthy().await {
                (StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "kafka unreachable\n".to_owned())
            }
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
