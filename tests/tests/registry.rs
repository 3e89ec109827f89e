//! Confluent Schema Registry framing against the real (Apicurio) registry.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::{GatewayConfig, KafkaConfig, KeyField, RegistrySchema, Streams};
use kafkasocks_tests::*;

fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:18081/apis/ccompat/v7".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_framed_with_the_registered_schema_and_subscribers_get_plain_messages() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr");
    create_topic(&topic, 1).await?;
    let schema_text = format!(
        "syntax = \"proto3\";\npackage test.v1;\nmessage Rec{} {{ string key = 1; string body = 2; }}\n",
        rand::random::<u32>()
    );
    let subject = format!("{topic}-value");
    let streams = Streams::new().subscribe(SUBSCRIBE, &topic, KeyField::new(1)).publish_with_schema(
        PUBLISH,
        &topic,
        KeyField::new(1),
        RegistrySchema::protobuf(&subject, &schema_text, vec![0]),
    );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let receipt = client.publish(PUBLISH, message("a", "hello")).await?;

    // In Kafka: 0x00, the schema id, message index [0], then the message.
    let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!(value[0], 0, "magic byte");
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    assert_eq!(value[5], 0, "message indexes [0]");
    assert_eq!(&value[6..], &message("a", "hello")[..]);
    // The registry knows that id as our schema under our subject.
    let url = registry_url();
    let base = url.strip_prefix("http://").unwrap();
    let (host, path) = base.split_once('/').unwrap();
    let (status, body) = http_get(host.parse()?, &format!("/{path}/schemas/ids/{id}")).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PROTOBUF") || body.contains("Rec"), "{body}");
    let (status, body) = http_get(host.parse()?, &format!("/{path}/subjects")).await?;
    assert_eq!(status, 200);
    assert!(body.contains(&subject), "{body}");

    // Subscribers get the message without the framing, and the schema id beside it.
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await?.unwrap()?;
    assert_eq!(&d.payload[..], &message("a", "hello")[..]);
    assert_eq!(d.schema_id, id);
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// A proxy to the registry that can be switched to hang: it then stops forwarding on the
/// connections it has (holding them open) and accepts new ones without answering, as a
/// registry that is up but stuck would.
struct HangingProxy {
    addr: std::net::SocketAddr,
    hang: tokio::sync::watch::Sender<bool>,
}

impl HangingProxy {
    async fn start(target: std::net::SocketAddr) -> anyhow::Result<HangingProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (hang, hanging) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut hanging = hanging.clone();
                tokio::spawn(async move {
                    if !*hanging.borrow() {
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => return,
                            _ = hanging.wait_for(|h| *h) => {}
                        }
                    }
                    // Read nothing, answer nothing, hold the connection.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(inbound);
                });
            }
        });
        Ok(HangingProxy { addr, hang })
    }

    fn hang(&self) {
        let _ = self.hang.send(true);
    }
}

fn schema(name: &str) -> String {
    format!("syntax = \"proto3\";\npackage test.v1;\nmessage {name} {{ string key = 1; string body = 2; }}\n")
}

/// A registry that accepts connections and never answers: publishes whose schema id is
/// known are answered at once (they never wait on the registry, nor on another subject's
/// registration); one that needs a registration fails with UNAVAILABLE within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_registry_times_out_uncached_publishes_and_never_delays_cached_ones() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr-hang");
    create_topic(&topic, 1).await?;
    let url = registry_url();
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let proxy = HangingProxy::start(host.parse()?).await?;
    let n = rand::random::<u32>();
    let (cached, uncached) = ("test.v1.Hang/Cached", "test.v1.Hang/Uncached");
    let streams = Streams::new()
        .publish_with_schema(
            cached,
            &topic,
            KeyField::new(1),
            RegistrySchema::protobuf(format!("{topic}-a"), schema(&format!("A{n}")), vec![0]),
        )
        .publish_with_schema(
            uncached,
            &topic,
            KeyField::new(1),
            RegistrySchema::protobuf(format!("{topic}-b"), schema(&format!("B{n}")), vec![0]),
        );
    let timeout = Duration::from_secs(3);
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap()))
        .schema_registry(format!("http://{}/{path}", proxy.addr))
        .limits(kafkasocks::Limits::default().with_registry_timeout(timeout));
    let gw = TestGateway::start_with(config, streams, None).await?;
    let publish = |method: &'static str| {
        let local = gw.local.clone();
        async move {
            let started = std::time::Instant::now();
            let r =
                local.publish(kafkasocks::Principal::new("t"), method, message("k", "v"), bytes::Bytes::new()).await;
            (r, started.elapsed())
        }
    };
    let (first, _) = publish(cached).await;
    first?;
    proxy.hang();
    let waiting = tokio::spawn(publish(uncached));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (again, took) = publish(cached).await;
    again?;
    assert!(took < Duration::from_millis(500), "a cached publish waited {took:?}");
    if waiting.is_finished() {
        let (r, took) = waiting.await?;
        panic!("the uncached publish did not wait for the registry: {r:?} after {took:?}");
    }
    let (refused, took) = waiting.await?;
    let status = refused.expect_err("the registry never answered");
    assert_eq!(status.code(), kafkasocks::Code::Unavailable, "{status}");
    assert!(status.message().contains("no answer within"), "{status}");
    assert!(took >= timeout && took < timeout + Duration::from_secs(3), "timed out after {took:?}");
    delete_topic(&topic).await?;
    Ok(())
}

/// A schema the registry's compatibility rule refuses (HTTP 409) is FAILED_PRECONDITION,
/// which clients do not retry: retrying cannot make it compatible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_is_failed_precondition() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr-409");
    create_topic(&topic, 1).await?;
    let url = registry_url();
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let subject = format!("{topic}-value");
    // A backward-compatibility rule on the subject, and a first version.
    let put = format!(
        "PUT /{path}/config/{subject} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{{\"compatibility\":\"BACKWARD\"}}"
    );
    let mut s = tokio::net::TcpStream::connect(host).await?;
    tokio::io::AsyncWriteExt::write_all(&mut s, put.as_bytes()).await?;
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let n = rand::random::<u32>();
    let v1 = format!("syntax = \"proto3\";\npackage test.v1;\nmessage C{n} {{ string key = 1; string body = 2; }}\n");
    let v2 = format!("syntax = \"proto3\";\npackage test.v1;\nmessage C{n} {{ string key = 1; int64 body = 2; }}\n");
    for (version, expect_ok) in [(v1, true), (v2, false)] {
        let streams = Streams::new().publish_with_schema(
            PUBLISH,
            &topic,
            KeyField::new(1),
            RegistrySchema::protobuf(&subject, version, vec![0]),
        );
        let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
        let gw = TestGateway::start_with(config, streams, None).await?;
        let r =
            gw.local.publish(kafkasocks::Principal::new("t"), PUBLISH, message("k", "v"), bytes::Bytes::new()).await;
        if expect_ok {
            r?;
        } else {
            let status = r.expect_err("the registry refuses the changed field type");
            assert_eq!(status.code(), kafkasocks::Code::FailedPrecondition, "{status}");
            assert!(status.message().contains("incompatible"), "{status}");
        }
        gw.shutdown.shutdown();
    }
    delete_topic(&topic).await?;
    Ok(())
}
