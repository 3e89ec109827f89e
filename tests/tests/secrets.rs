//! Secrets never reach logs, `Debug` output or metrics: a gateway configured with SASL
//! passwords (a wrong one, so that librdkafka logs its failures too), at debug level for
//! every target including librdkafka's own security debugging, leaves no trace of them.
//! Its own test binary: it installs a global log collector.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig};
use kafkasocks::{GatewayConfig, KafkaConfig, KafkaTls, Limits, Sasl, Secret};
use kafkasocks_tests::*;

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_debug_output_and_metrics() -> anyhow::Result<()> {
    let logs = Collected::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let wrong = "wrong-password-7f3a9c";
    let raw = "raw-option-secret-51d2";
    let kafka = KafkaConfig::new(sasl_ssl_bootstrap())
        .tls(KafkaTls::new().ca_file(secure_dir().join("ca.crt")))
        .sasl(Sasl::scram_sha512("writer", Secret::new(wrong)))
        .option("debug", "security,broker,protocol")
        .option("ssl.key.password", raw);
    let config = GatewayConfig::new(kafka).limits(Limits::default().with_publish_timeout(Duration::from_secs(2)));
    let debug = format!("{config:?}");
    let topic = Listener::SaslSsl.topic("secrets");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start_with(config, streams(&topic), None).await?;
    let (status, health) = http_get(gw.metrics.unwrap(), "/readyz").await?;
    assert_eq!(status, 503, "the password is wrong: {health}");
    let client = Client::connect(ClientConfig::new(gw.url()));
    let _ = tokio::time::timeout(Duration::from_secs(5), client.publish(PUBLISH, message("k", "v"))).await;
    let metrics = gw.metrics_text().await?;
    client.close();
    gw.shutdown.shutdown();

    // And with the right password, read from its file.
    let right = std::fs::read_to_string(secure_dir().join("writer.password"))?.trim().to_owned();
    let gw = TestGateway::start_on(Listener::SaslSsl, streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    tokio::time::timeout(Duration::from_secs(30), client.publish(PUBLISH, message("k", "v"))).await??;
    let metrics_ok = gw.metrics_text().await?;
    client.close();
    gw.shutdown.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    delete_topic(&topic).await?;

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.contains("SASL") && logs.contains("Authentication"), "librdkafka's logs were collected");
    for secret in [wrong, raw, right.as_str()] {
        for (what, text) in [
            ("logs", &logs),
            ("Debug output", &debug),
            ("/metrics", &metrics),
            ("/metrics", &metrics_ok),
            ("/readyz", &health),
        ] {
            assert!(!text.contains(secret), "a secret appears in the {what}");
        }
    }
    Ok(())
}
