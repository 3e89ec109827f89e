//! The gateway under test: in this process (fan-out, publish, storm) or as a child
//! process (memory), and its `/metrics` counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, Limits, ShutdownHandle, Streams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::kafka::bootstrap;

/// Streams every scenario serves: one subscribe and one publish method per topic.
pub(crate) fn streams(topics: &[(&str, &str)]) -> Streams {
    let mut s = Streams::new();
    for (name, topic) in topics {
        s = s.subscribe(subscribe_method(name), *topic, KeyField::new(1)).publish(
            publish_method(name),
            *topic,
            KeyField::new(1),
        );
    }
    s
}

pub(crate) fn subscribe_method(name: &str) -> String {
    format!("bench.v1.{name}/Watch")
}

pub(crate) fn publish_method(name: &str) -> String {
    format!("bench.v1.{name}/Put")
}

/// A gateway running in this process on port 0, with `/metrics`.
pub(crate) struct InProcess {
    pub(crate) addr: SocketAddr,
    metrics: Option<SocketAddr>,
    shutdown: ShutdownHandle,
    task: JoinHandle<Result<(), kafkasocks::Error>>,
}

/// The bench's clients come from 8-16 loopback addresses (for ephemeral ports), thousands
/// per address: the per-address bounds against abuse would measure themselves, so they are
/// lifted to the gateway-wide ones.
pub(crate) fn bench_limits(limits: Limits) -> Limits {
    let (connections, handshakes) = (limits.max_connections, limits.max_pending_handshakes);
    limits.with_max_connections_per_address(connections).with_max_pending_handshakes_per_address(handshakes)
}

impl InProcess {
    pub(crate) async fn start(streams: Streams, limits: Limits) -> Result<InProcess> {
        InProcess::start_with(streams, limits, &[]).await
    }

    /// With extra librdkafka options on every Kafka client the gateway makes.
    pub(crate) async fn start_with(
        streams: Streams,
        limits: Limits,
        kafka_options: &[(&str, &str)],
    ) -> Result<InProcess> {
        let mut kafka = KafkaConfig::new(bootstrap());
        for (k, v) in kafka_options {
            kafka = kafka.option(*k, *v);
        }
        InProcess::start_on(kafka, streams, limits).await
    }

    /// Connected to Kafka with these settings.
    pub(crate) async fn start_on(kafka: KafkaConfig, streams: Streams, limits: Limits) -> Result<InProcess> {
        InProcess::start_config(GatewayConfig::new(kafka), streams, limits).await
    }

    /// A node of this cluster (exactly-once publishes across nodes).
    pub(crate) async fn start_in_cluster(cluster: &str, streams: Streams, limits: Limits) -> Result<InProcess> {
        let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).cluster(kafkasocks::ClusterConfig::new(cluster));
        InProcess::start_config(config, streams, limits).await
    }

    /// Sharing its key index through `topic`.
    pub(crate) async fn start_sharing_key_index(topic: &str, streams: Streams, limits: Limits) -> Result<InProcess> {
        let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).key_index_topic(topic);
        InProcess::start_config(config, streams, limits).await
    }

    async fn start_config(config: GatewayConfig, streams: Streams, limits: Limits) -> Result<InProcess> {
        let config = config
            .listen("127.0.0.1:0".parse()?)
            .metrics_listen("127.0.0.1:0".parse()?)
            .limits(bench_limits(limits).with_drain_timeout(Duration::from_secs(1)));
        let gw = Gateway::builder(config).streams(streams).allow_anonymous().bind().await?;
        Ok(InProcess {
            addr: gw.local_addr(),
            metrics: gw.metrics_addr(),
            shutdown: gw.shutdown_handle(),
            task: tokio::spawn(gw.run()),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/streams", self.addr)
    }

    /// The gateway's counters (Prometheus text, unlabelled series only).
    pub(crate) async fn counters(&self) -> BTreeMap<String, f64> {
        let Some(addr) = self.metrics else { return BTreeMap::new() };
        scrape(addr).await.unwrap_or_default()
    }

    /// Shuts the gateway down and waits (bounded) for it.
    pub(crate) async fn stop(self) {
        self.shutdown.shutdown();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(20), &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1);
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.trim_start_matches("kafkasocks_").to_owned(), v.trim().parse().ok()?)))
        .collect())
}

/// The change in each counter between two scrapes, as JSON (non-zero ones).
pub(crate) fn counter_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d != 0.0 && k.ends_with("_total") {
            out.insert(k.clone(), json!(d));
        }
    }
    Value::Object(out)
}

/// A server in a child process (`kafkasocks-bench serve-gateway|serve-bare`), so that
/// its memory is measured without the clients'.
pub(crate) struct ChildServer {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl ChildServer {
    /// `$KAFKASOCKS_BENCH_CHILD_WRAPPER`, when set, prefixes the command (for example
    /// `heaptrack -o /tmp/gw` to see where the child's memory goes; its VmRSS is then
    /// the wrapper's, not the server's).
    pub(crate) async fn spawn(args: &[&str]) -> Result<ChildServer> {
        let exe = std::env::current_exe()?;
        let wrapper = std::env::var("KAFKASOCKS_BENCH_CHILD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    return Ok(addr.parse()?);
                }
            }
            bail!("the child server exited")
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .context("the child server did not start within 30 s")??;
        // Whatever else it prints (a wrapper's chatter) is drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ChildServer { child, addr })
    }

    pub(crate) fn pid(&self) -> Result<u32> {
        self.child.id().context("child exited")
    }

    /// Closes its stdin (it shuts down) and waits, killing it after 15 s.
    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Waits until stdin reaches EOF.
pub(crate) async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// `serve-gateway TOPIC MAX_CONNECTIONS [ADDR]`: a gateway with default limits except the
/// connection limit, serving the memory scenario's stream on ADDR (default 127.0.0.1:0);
/// prints `LISTENING addr`; stops on stdin EOF (GoAway to every client, then close).
pub(crate) async fn serve_child(topic: &str, max_connections: usize, listen: Option<SocketAddr>) -> Result<()> {
    let limits = bench_limits(Limits::default().with_max_connections(max_connections));
    let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).listen(listen).limits(limits);
    let gw = Gateway::builder(config).streams(streams(&[("Memory", topic)])).allow_anonymous().bind().await?;
    println!("LISTENING {}", gw.local_addr());
    let stop = gw.shutdown_handle();
    tokio::spawn(async move {
        stdin_closed().await;
        stop.shutdown();
    });
    gw.run().await?;
    Ok(())
}
