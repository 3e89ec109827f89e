//! The gateway on the local broker's secured listeners (scripts/services up): every SASL
//! mechanism and mTLS work, and every way it can go wrong has a clear answer: a refused
//! password or certificate is reported (at start, by /readyz and in the errors clients get)
//! instead of hanging, and what the gateway's principal may not do is PERMISSION_DENIED.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::{Code, GatewayConfig, KafkaConfig, KafkaTls, Limits, Sasl, Secret, wire};
use kafkasocks_tests::*;

/// Publishes one record through a gateway on `kafka` and checks that Kafka holds it where
/// the receipt says.
async fn publish_and_read_back(kafka: KafkaConfig, what: &str) -> anyhow::Result<()> {
    let topic = Listener::SaslSsl.topic(what);
    create_topic(&topic, 2).await?;
    let gw = TestGateway::start_with(GatewayConfig::new(kafka), streams(&topic), None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let receipt = tokio::time::timeout(Duration::from_secs(30), client.publish(PUBLISH, message("k", what))).await??;
    let (key, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!(key, b"k", "{what}");
    assert_eq!(value, message("k", what), "{what}");
    client.close();
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_and_mtls_publish_with_receipts() -> anyhow::Result<()> {
    init_tracing();
    publish_and_read_back(sasl_ssl_as("writer", Sasl::scram_sha256), "scram256").await?;
    publish_and_read_back(sasl_ssl_as("writer", Sasl::scram_sha512), "scram512").await?;
    publish_and_read_back(sasl_ssl_as("writer", Sasl::plain), "plain").await?;
    publish_and_read_back(Listener::Mtls.kafka(), "mtls").await
}

/// A gateway that Kafka does not accept: /readyz says why within a few seconds, and so do
/// the errors its clients get, at once; nothing hangs.
async fn refused(kafka: KafkaConfig, words: &[&str], at_once: bool) -> anyhow::Result<()> {
    let topic = Listener::SaslSsl.topic("refused");
    create_topic(&topic, 1).await?;
    let limits = Limits::default().with_publish_timeout(Duration::from_secs(3));
    let gw = TestGateway::start_with(GatewayConfig::new(kafka).limits(limits), streams(&topic), None).await?;
    let started = std::time::Instant::now();
    let (status, body) = http_get(gw.metrics.unwrap(), "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(words.iter().any(|w| body.contains(w)), "/readyz should say why ({words:?}): {body}");
    assert!(started.elapsed() < Duration::from_secs(10), "/readyz answered in {:?}", started.elapsed());
    // The gateway's answer to a publish (the Rust client would retry UNAVAILABLE until its
    // own deadline): UNAVAILABLE, saying why, and at once — Kafka has refused the gateway
    // already, and waiting out the 3 s publish timeout would only delay the same answer.
    let mut raw = RawClient::open(gw.addr).await?;
    let publish = wire::Publish { id: 7, method: PUBLISH.into(), payload: message("k", "v"), ..Default::default() };
    let asked = std::time::Instant::now();
    raw.send(wire::frame::Kind::Publish(publish)).await?;
    let answer = tokio::time::timeout(Duration::from_secs(20), raw.recv()).await??;
    // (A broker that drops a client without a certificate is reported by librdkafka as a
    // transport error, not as a refusal: that publish waits out its timeout.)
    assert!(
        !at_once || asked.elapsed() < Duration::from_secs(1),
        "the publish was answered after {:?}",
        asked.elapsed()
    );
    let Some(wire::frame::Kind::Error(e)) = answer else { panic!("expected an Error frame, got {answer:?}") };
    assert_eq!((e.publish_id, Code::from_grpc(e.code)), (7, Code::Unavailable), "{}", e.message);
    assert!(words.iter().any(|w| e.message.contains(w)), "the publish error should say why ({words:?}): {}", e.message);
    // And to a subscribe (which the Rust client would retry too).
    let subscribe =
        wire::Subscribe { id: 3, method: SUBSCRIBE.into(), request: message("", ""), start: None, credit: 0 };
    let asked = std::time::Instant::now();
    raw.send(wire::frame::Kind::Subscribe(subscribe)).await?;
    let answer = tokio::time::timeout(Duration::from_secs(20), raw.recv()).await??;
    assert!(
        !at_once || asked.elapsed() < Duration::from_secs(1),
        "the subscribe was answered after {:?}",
        asked.elapsed()
    );
    let Some(wire::frame::Kind::Error(e)) = answer else { panic!("expected an Error frame, got {answer:?}") };
    assert_eq!((e.subscription_id, Code::from_grpc(e.code)), (3, Code::Unavailable), "{}", e.message);
    assert!(
        words.iter().any(|w| e.message.contains(w)),
        "the subscribe error should say why ({words:?}): {}",
        e.message
    );
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_not_hung() -> anyhow::Result<()> {
    init_tracing();
    let kafka = KafkaConfig::new(sasl_ssl_bootstrap())
        .tls(KafkaTls::new().ca_file(secure_dir().join("ca.crt")))
        .sasl(Sasl::scram_sha512("writer", Secret::new("not-the-password")));
    refused(kafka, &["Authentication failed", "authentication"], true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_without_a_trusted_client_certificate_is_reported() -> anyhow::Result<()> {
    init_tracing();
    refused(mtls_as(None), &["SSL", "ssl", "handshake", "certificate"], false).await?;
    refused(mtls_as(Some("untrusted")), &["SSL", "ssl", "handshake", "certificate"], false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_reported() -> anyhow::Result<()> {
    init_tracing();
    // The system CA store does not know the test CA that signed the broker's certificate.
    let password = Secret::from_file(secure_dir().join("writer.password"));
    let kafka =
        KafkaConfig::new(sasl_ssl_bootstrap()).tls(KafkaTls::new()).sasl(Sasl::scram_sha512("writer", password));
    refused(kafka, &["certificate verify failed"], true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_principal_may_not_do_is_permission_denied() -> anyhow::Result<()> {
    init_tracing();
    // "reader" may read secure-* but not write.
    let topic = Listener::SaslSsl.topic("readonly");
    create_topic(&topic, 1).await?;
    let reader = sasl_ssl_as("reader", Sasl::scram_sha512);
    let gw = TestGateway::start_with(GatewayConfig::new(reader), streams(&topic), None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Latest);
    while sub.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err =
        tokio::time::timeout(Duration::from_secs(30), client.publish(PUBLISH, message("k", "v"))).await?.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    client.close();
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;

    // "writer" may not describe topics outside secure-*, nor read secure-noread-*.
    let private = unique_topic("private");
    let noread = Listener::SaslSsl.topic("noread");
    create_topic(&private, 1).await?;
    create_topic(&noread, 1).await?;
    let writer = Listener::SaslSsl.kafka();
    let streams = kafkasocks::Streams::new()
        .subscribe("t.v1.S/Private", &private, kafkasocks::KeyField::none())
        .subscribe("t.v1.S/NoRead", &noread, kafkasocks::KeyField::none())
        .publish("t.v1.S/PutPrivate", &private, kafkasocks::KeyField::none());
    let gw = TestGateway::start_with(GatewayConfig::new(writer), streams, None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    for method in ["t.v1.S/Private", "t.v1.S/NoRead"] {
        let mut sub = client.subscribe(method, Vec::<u8>::new(), StartAt::Earliest);
        let err = tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{method}: {err}");
    }
    let err = tokio::time::timeout(Duration::from_secs(30), client.publish("t.v1.S/PutPrivate", Vec::<u8>::new()))
        .await?
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    client.close();
    gw.shutdown.shutdown();
    delete_topic(&private).await?;
    delete_topic(&noread).await?;
    Ok(())
}
