//! Confluent Schema Registry framing against the real (Apicurio) registry.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::{GatewayConfig, KafkaConfig, KeyField, RegistrySchema, Streams};
use kafkasocks_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_framed_with_the_registered_schema_and_subscribers_get_plain_messages() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let schema_text =
        format!("syntax = \"proto3\";\npackage test.v1;\nmessage Rec{n} {{ string key = 1; string body = 2; }}\n");
    // The default subject name strategy: <topic>-value.
    let subject = format!("{topic}-value");
    let streams = Streams::new().subscribe(SUBSCRIBE, &topic, KeyField::new(1)).publish_with_schema(
        PUBLISH,
        &topic,
        KeyField::new(1),
        RegistrySchema::protobuf(format!("test.v1.Rec{n}"), &schema_text, vec![0]),
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
            RegistrySchema::protobuf(format!("test.v1.A{n}"), schema(&format!("A{n}")), vec![0])
                .subject(format!("{topic}-a")),
        )
        .publish_with_schema(
            uncached,
            &topic,
            KeyField::new(1),
            RegistrySchema::protobuf(format!("test.v1.B{n}"), schema(&format!("B{n}")), vec![0])
                .subject(format!("{topic}-b")),
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
    // A second publish queued behind the stuck registration is answered within its own
    // timeout too, not after the first one's.
    let queued = tokio::spawn(publish(uncached));
    let (refused, took) = waiting.await?;
    let status = refused.expect_err("the registry never answered");
    assert_eq!(status.code(), kafkasocks::Code::Unavailable, "{status}");
    assert!(status.message().contains("no answer within"), "{status}");
    assert!(took >= timeout && took < timeout + Duration::from_secs(3), "timed out after {took:?}");
    let (refused, took) = queued.await?;
    assert_eq!(refused.expect_err("still no answer").code(), kafkasocks::Code::Unavailable);
    assert!(took < timeout + Duration::from_secs(1), "a queued publish waited {took:?}");
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
            RegistrySchema::protobuf(format!("test.v1.C{n}"), version, vec![0]),
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

/// The registry scripts/services runs, spoken to directly (as the services beside the
/// gateway would), to set up and check what the gateway did.
struct Registry {
    host: std::net::SocketAddr,
    path: String,
}

impl Registry {
    fn local() -> Registry {
        let url = registry_url();
        let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
        Registry { host: host.parse().unwrap(), path: format!("/{path}") }
    }

    async fn request(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            body.len()
        );
        let mut s = tokio::net::TcpStream::connect(self.host).await?;
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        let status = answer.get(9..12).unwrap_or("0").parse()?;
        Ok((status, answer.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default()))
    }

    /// Registers `schema` under `subject` (with these references), returning its id.
    async fn register(&self, subject: &str, schema: &str, references: serde_json::Value) -> anyhow::Result<u32> {
        let body = serde_json::json!({ "schema": schema, "schemaType": "PROTOBUF", "references": references });
        let (status, answer) =
            self.request("POST", &format!("/subjects/{subject}/versions"), Some(&body.to_string())).await?;
        anyhow::ensure!(status == 200, "registering {subject}: {status} {answer}");
        Ok(serde_json::from_str::<serde_json::Value>(&answer)?["id"].as_u64().unwrap() as u32)
    }

    /// The latest version's id under `subject`, if it has one.
    async fn latest_id(&self, subject: &str) -> anyhow::Result<Option<u32>> {
        let (status, answer) = self.request("GET", &format!("/subjects/{subject}/versions/latest"), None).await?;
        match status {
            200 => Ok(Some(serde_json::from_str::<serde_json::Value>(&answer)?["id"].as_u64().unwrap() as u32)),
            404 => Ok(None),
            _ => anyhow::bail!("latest of {subject}: {status} {answer}"),
        }
    }

    async fn versions(&self, subject: &str) -> anyhow::Result<usize> {
        let (status, answer) = self.request("GET", &format!("/subjects/{subject}/versions"), None).await?;
        match status {
            200 => Ok(serde_json::from_str::<Vec<u32>>(&answer)?.len()),
            404 => Ok(0),
            _ => anyhow::bail!("versions of {subject}: {status} {answer}"),
        }
    }

    async fn set_compatibility(&self, subject: &str, level: &str) -> anyhow::Result<()> {
        let body = format!("{{\"compatibility\":\"{level}\"}}");
        let (status, answer) = self.request("PUT", &format!("/config/{subject}"), Some(&body)).await?;
        anyhow::ensure!(status == 200, "{status} {answer}");
        Ok(())
    }
}

/// The schema id and the message-index bytes of a framed value read back from Kafka.
fn framing(value: &[u8], indexes_len: usize) -> (u32, Vec<u8>) {
    assert_eq!(value[0], 0, "magic byte");
    (u32::from_be_bytes([value[1], value[2], value[3], value[4]]), value[5..5 + indexes_len].to_vec())
}

async fn publish_one(gw: &TestGateway, method: &str) -> Result<kafkasocks::Receipt, kafkasocks::Status> {
    gw.local.publish(kafkasocks::Principal::new("t"), method, message("k", "v"), bytes::Bytes::new()).await
}

/// TopicNameStrategy, RecordNameStrategy and TopicRecordNameStrategy, three record types
/// of one file on one topic: each registered under the subject its strategy names, each
/// record framed with that subject's id and the type's message indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subject_name_strategy_registers_under_the_subject_it_names() -> anyhow::Result<()> {
    use kafkasocks::SubjectNameStrategy as S;
    init_tracing();
    let topic = unique_topic("sr-strategy");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let package = format!("test.s{n}.v1");
    let file = format!(
        "syntax = \"proto3\";\npackage {package};\nmessage T {{ string key = 1; string body = 2; }}\n\
         message R {{ string key = 1; string body = 2; }}\nmessage TR {{ string key = 1; string body = 2; }}\n"
    );
    let cases = [
        ("test.v1.S/Topic", "T", 0, S::TopicName, format!("{topic}-value"), vec![0u8]),
        ("test.v1.S/Record", "R", 1, S::RecordName, format!("{package}.R"), vec![2, 2]),
        ("test.v1.S/TopicRecord", "TR", 2, S::TopicRecordName, format!("{topic}-{package}.TR"), vec![2, 4]),
    ];
    let mut streams = Streams::new();
    for (method, record, index, strategy, _, _) in &cases {
        let schema = RegistrySchema::protobuf(format!("{package}.{record}"), &file, vec![*index])
            .subject_name_strategy(*strategy);
        streams = streams.publish_with_schema(*method, &topic, KeyField::new(1), schema);
    }
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let registry = Registry::local();
    for (method, _, _, strategy, subject, index_bytes) in &cases {
        let receipt = publish_one(&gw, method).await?;
        let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
        let (id, indexes) = framing(&value, index_bytes.len());
        assert_eq!(&indexes, index_bytes, "{strategy:?}: message indexes");
        assert_eq!(&value[5 + index_bytes.len()..], &message("k", "v")[..]);
        assert_eq!(registry.latest_id(subject).await?, Some(id), "{strategy:?}: registered under {subject}");
    }
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// A file the record's file imports, registered as a reference in lookup-only mode too.
fn with_import(n: u32, body_type: &str) -> (String, String, String) {
    let import = format!("test/lookup{n}/common.proto");
    let common = format!("syntax = \"proto3\";\npackage test.lookup{n};\nmessage Meta {{ string origin = 1; }}\n");
    let main = format!(
        "syntax = \"proto3\";\npackage test.lookup{n};\nimport \"{import}\";\n\
         message Rec {{ string key = 1; {body_type} body = 2; Meta meta = 3; }}\n"
    );
    (import, common, main)
}

fn lookup_schema(n: u32, body_type: &str) -> RegistrySchema {
    let (import, common, main) = with_import(n, body_type);
    RegistrySchema::protobuf(format!("test.lookup{n}.Rec"), main, vec![0])
        .reference(kafkasocks::SchemaReference::new(&import, &import, common))
}

async fn start_in_mode(
    topic: &str,
    schema: RegistrySchema,
    mode: kafkasocks::RegistryMode,
) -> Result<TestGateway, kafkasocks::Error> {
    let streams = Streams::new().publish_with_schema(PUBLISH, topic, KeyField::new(1), schema);
    let registry = kafkasocks::RegistryConfig::new(registry_url()).mode(mode);
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry);
    TestGateway::start_with(config, streams, None).await.map_err(|e| match e.downcast::<kafkasocks::Error>() {
        Ok(e) => e,
        Err(other) => panic!("not a gateway error: {other:#}"),
    })
}

fn refusal(result: Result<TestGateway, kafkasocks::Error>) -> String {
    match result {
        Ok(_) => panic!("the gateway started"),
        Err(e @ kafkasocks::Error::Registry { .. }) => e.to_string(),
        Err(other) => panic!("not a registry error: {other:?}"),
    }
}

/// Lookup-only: nothing is ever registered; a schema that is not registered (exactly,
/// references included) stops the gateway from starting, with the stream, the subject and
/// the reason; one that is, is written with the id the registry has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_only_writes_with_registered_schemas_and_refuses_to_start_without_them() -> anyhow::Result<()> {
    use kafkasocks::RegistryMode;
    init_tracing();
    let topic = unique_topic("sr-lookup");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let subject = format!("{topic}-value");
    let registry = Registry::local();

    let why = refusal(start_in_mode(&topic, lookup_schema(n, "string"), RegistryMode::LookupOnly).await);
    assert!(why.contains(PUBLISH) && why.contains(&subject) && why.contains("not registered"), "{why}");
    assert_eq!(registry.versions(&subject).await?, 0, "lookup-only registered something");

    // Registered (here by a gateway in auto-register mode, as a deploy pipeline would).
    let dev = start_in_mode(&topic, lookup_schema(n, "string"), RegistryMode::AutoRegister).await?;
    publish_one(&dev, PUBLISH).await?;
    dev.shutdown.shutdown();
    let id = registry.latest_id(&subject).await?.expect("registered");

    let gw = start_in_mode(&topic, lookup_schema(n, "string"), RegistryMode::LookupOnly).await?;
    let receipt = publish_one(&gw, PUBLISH).await?;
    let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!(framing(&value, 1), (id, vec![0]));
    assert_eq!(registry.versions(&subject).await?, 1, "lookup-only registered a version");
    gw.shutdown.shutdown();

    // A schema the registry does not hold: a changed field type.
    let why = refusal(start_in_mode(&topic, lookup_schema(n, "int64"), RegistryMode::LookupOnly).await);
    assert!(why.contains(&subject) && why.contains("not registered"), "{why}");
    // An import that is not registered.
    let missing_ref = lookup_schema(n + 1, "string");
    let why = refusal(start_in_mode(&topic, missing_ref, RegistryMode::LookupOnly).await);
    assert!(why.contains("reference") && why.contains(&format!("test/lookup{}/common.proto", n + 1)), "{why}");
    assert_eq!(registry.versions(&subject).await?, 1);
    delete_topic(&topic).await?;
    Ok(())
}

/// Use-latest: records are written with the subject's latest version (and the record
/// type's message indexes in that version, not in the stream's own file), provided that
/// version declares the type and the registry finds the stream's schema compatible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_latest_writes_with_the_latest_version_and_refuses_what_does_not_fit() -> anyhow::Result<()> {
    use kafkasocks::RegistryMode;
    init_tracing();
    let topic = unique_topic("sr-latest");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let subject = format!("{topic}-value");
    let registry = Registry::local();
    // The stream's own file declares Rec first (Apicurio finds removing a message
    // incompatible, so the stream's file has both).
    let ours = |body: &str| {
        let text = format!(
            "syntax = \"proto3\";\npackage test.l{n};\nmessage Rec {{ string key = 1; {body} body = 2; }}\n\
             message Audit {{ string who = 1; }}\n"
        );
        RegistrySchema::protobuf(format!("test.l{n}.Rec"), text, vec![0])
    };

    let why = refusal(start_in_mode(&topic, ours("string"), RegistryMode::UseLatest).await);
    assert!(why.contains(&subject) && why.contains("no version"), "{why}");

    // The latest version, registered by another team: Rec is its second message.
    let theirs = format!(
        "syntax = \"proto3\";\npackage test.l{n};\nmessage Audit {{ string who = 1; }}\n\
         message Rec {{ string key = 1; string body = 2; }}\n"
    );
    let id = registry.register(&subject, &theirs, serde_json::json!([])).await?;
    let gw = start_in_mode(&topic, ours("string"), RegistryMode::UseLatest).await?;
    let receipt = publish_one(&gw, PUBLISH).await?;
    let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!(framing(&value, 2), (id, vec![2, 2]), "the latest id, Rec at index [1] there");
    gw.shutdown.shutdown();
    assert_eq!(registry.versions(&subject).await?, 1, "use-latest registered a version");

    // A type the latest version does not declare.
    let other = RegistrySchema::protobuf(
        format!("test.l{n}.Gone"),
        format!("syntax = \"proto3\";\npackage test.l{n};\nmessage Gone {{ string key = 1; }}\n"),
        vec![0],
    );
    let why = refusal(start_in_mode(&topic, other, RegistryMode::UseLatest).await);
    assert!(why.contains("does not declare") && why.contains(&format!("test.l{n}.Gone")), "{why}");
    // A schema the subject's compatibility rule refuses against the latest version.
    registry.set_compatibility(&subject, "BACKWARD").await?;
    let why = refusal(start_in_mode(&topic, ours("int64"), RegistryMode::UseLatest).await);
    assert!(why.contains("incompatible"), "{why}");
    delete_topic(&topic).await?;
    Ok(())
}

/// A registry that stops answering fails readiness (`/readyz` 503, saying so) but not
/// liveness (`/healthz`): publishes with known ids and subscriptions go on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_registry_that_does_not_answer() -> anyhow::Result<()> {
    init_tracing();
    let url = registry_url();
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let proxy = HangingProxy::start(host.parse()?).await?;
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap()))
        .schema_registry(format!("http://{}/{path}", proxy.addr))
        .limits(
            kafkasocks::Limits::default()
                .with_registry_timeout(Duration::from_secs(1))
                .with_readiness_interval(Duration::from_millis(200)),
        );
    let gw = TestGateway::start_with(config, streams(&unique_topic("sr-ready")), None).await?;
    let admin = gw.metrics.unwrap();
    let (status, body) = http_get(admin, "/readyz").await?;
    assert_eq!((status, body.as_str()), (200, "kafka: ok\nschema registry: ok\n"));
    proxy.hang();
    // Readiness is checked every readiness_interval (here 200 ms), each check bounded.
    let hung = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = http_get(admin, "/readyz").await?;
        if status != 200 || hung.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka: ok\n") && body.contains("schema registry: not ready: no answer within 1s"), "{body}");
    assert_eq!(http_get(admin, "/healthz").await?.0, 200, "liveness does not depend on the registry");
    Ok(())
}

/// The real registry behind a TLS front (a private CA's certificate for `localhost`) that
/// answers 401 unless the first request of a connection carries `authorization`.
struct GuardedRegistry {
    url: String,
    ca_pem: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl GuardedRegistry {
    async fn start(authorization: String) -> anyhow::Result<GuardedRegistry> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kafkasocks test registry CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&leaf_key, &issuer)?;
        let dir = std::env::temp_dir().join(format!("kafkasocks-sr-tls-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem())?;
        let tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let upstream = Registry::local();
        let expected = format!("authorization: {authorization}\r\n");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let expected = expected.clone();
                let target = upstream.host;
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                        if tls.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if !String::from_utf8_lossy(&head).to_ascii_lowercase().contains(&expected.to_ascii_lowercase()) {
                        let body = r#"{"error_code":40101,"message":"Unauthorized"}"#;
                        let answer = format!(
                            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        let _ = tls.shutdown().await;
                        return;
                    }
                    let Ok(mut up) = tokio::net::TcpStream::connect(target).await else { return };
                    if up.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        let url = format!("https://localhost:{port}{}", Registry::local().path);
        Ok(GuardedRegistry { url, ca_pem, dir })
    }
}

impl Drop for GuardedRegistry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Basic and bearer credentials (from a file and from a value) and a private CA reach a
/// registry behind TLS; wrong credentials and an unknown CA are clear errors, at start in
/// lookup-only mode and on the publish in auto-register mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_a_private_ca_reach_a_registry_behind_tls() -> anyhow::Result<()> {
    use base64::Engine as _;
    use kafkasocks::{RegistryConfig, RegistryMode, Secret};
    init_tracing();
    let topic = unique_topic("sr-auth");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let basic = base64::engine::general_purpose::STANDARD.encode("gateway:open-sesame");
    let guarded = GuardedRegistry::start(format!("Basic {basic}")).await?;
    let password = guarded.dir.join("password");
    std::fs::write(&password, "open-sesame\n")?;
    let schema = || RegistrySchema::protobuf(format!("test.v1.Auth{n}"), schema(&format!("Auth{n}")), vec![0]);
    let start = |registry: RegistryConfig| {
        let streams = Streams::new().publish_with_schema(PUBLISH, &topic, KeyField::new(1), schema());
        let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry);
        TestGateway::start_with(config, streams, None)
    };

    // The right password, read from a file, and the private CA: registered and written.
    let good =
        RegistryConfig::new(&guarded.url).basic_auth("gateway", Secret::from_file(&password)).ca_file(&guarded.ca_pem);
    let gw = start(good.clone()).await?;
    let receipt = publish_one(&gw, PUBLISH).await?;
    let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    let id = framing(&value, 1).0;
    assert_eq!(Registry::local().latest_id(&format!("{topic}-value")).await?, Some(id));
    gw.shutdown.shutdown();
    // The same in lookup-only mode: found at start through the front.
    let gw = start(good.mode(RegistryMode::LookupOnly)).await?;
    publish_one(&gw, PUBLISH).await?;
    gw.shutdown.shutdown();

    // A wrong password: lookup-only refuses to start, auto-register fails the publish.
    let wrong = RegistryConfig::new(&guarded.url).basic_auth("gateway", Secret::new("guess")).ca_file(&guarded.ca_pem);
    let why = match start(wrong.clone().mode(RegistryMode::LookupOnly)).await {
        Ok(_) => panic!("started with a wrong registry password"),
        Err(e) => format!("{e:#}"),
    };
    assert!(why.contains("refuses the gateway's credentials"), "{why}");
    let gw = start(wrong).await?;
    let status = publish_one(&gw, PUBLISH).await.expect_err("wrong password");
    assert_eq!(status.code(), kafkasocks::Code::Unavailable, "{status}");
    assert!(status.message().contains("refuses the gateway's credentials"), "{status}");
    gw.shutdown.shutdown();

    // Without the private CA the registry's certificate is not trusted.
    let untrusted = RegistryConfig::new(&guarded.url).basic_auth("gateway", Secret::from_file(&password));
    let gw = start(untrusted).await?;
    let status = publish_one(&gw, PUBLISH).await.expect_err("unknown CA");
    assert!(status.message().contains("certificate"), "{status}");
    assert_eq!(status.code(), kafkasocks::Code::Unavailable, "{status}");
    gw.shutdown.shutdown();

    // A bearer token.
    let bearer = GuardedRegistry::start("Bearer tok-3f9a".to_owned()).await?;
    let with_token = RegistryConfig::new(&bearer.url).bearer_token(Secret::new("tok-3f9a")).ca_file(&bearer.ca_pem);
    let gw = start(with_token).await?;
    publish_one(&gw, PUBLISH).await?;
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// A topic of three record types (RecordNameStrategy) and unframed records, read by
/// streams that accept two of them: each accepted record arrives in its member with its
/// type name; the others end the subscription (default) or are skipped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_several_types_deliver_each_record_in_the_member_of_its_type() -> anyhow::Result<()> {
    use kafkasocks::{OtherTypes, RecordTypes, StartAt, SubjectNameStrategy};
    init_tracing();
    let topic = unique_topic("sr-typed");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let package = format!("test.typed{n}.v1");
    let file = format!(
        "syntax = \"proto3\";\npackage {package};\nmessage A {{ string key = 1; string body = 2; }}\n\
         message B {{ string key = 1; string body = 2; message Nested {{ string key = 1; string body = 2; }} }}\n\
         message C {{ string key = 1; string body = 2; }}\n"
    );
    let types = [("A", vec![0]), ("B.Nested", vec![1, 0]), ("C", vec![2])];
    let mut streams = Streams::new();
    for (name, indexes) in &types {
        let schema = RegistrySchema::protobuf(format!("{package}.{name}"), &file, indexes.clone())
            .subject_name_strategy(SubjectNameStrategy::RecordName);
        streams = streams.publish_with_schema(format!("test.v1.T/Put{name}"), &topic, KeyField::new(1), schema);
    }
    let accepted = || RecordTypes::new().member(format!("{package}.A"), 1).member(format!("{package}.B.Nested"), 7);
    streams = streams
        .subscribe_with_types("test.v1.T/Strict", &topic, KeyField::new(1), accepted())
        .subscribe_with_types("test.v1.T/Lenient", &topic, KeyField::new(1), accepted().others(OtherTypes::Skip));
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let put = |name: &'static str, body: &'static str| {
        let local = gw.local.clone();
        async move {
            local
                .publish(
                    kafkasocks::Principal::new("t"),
                    &format!("test.v1.T/Put{name}"),
                    message("k", body),
                    bytes::Bytes::new(),
                )
                .await
        }
    };
    let a = put("A", "first").await?;
    let b = put("B.Nested", "second").await?;
    let c = put("C", "third").await?;
    let (_, plain) = produce(&producer(), &topic, Some(0), b"k", &message("k", "unframed")).await?;
    // A schema id the registry does not have: of no type the stream accepts (not a
    // registry outage, which the client would retry for ever).
    let mut unknown_id = vec![0, 0x7f, 0xff, 0xff, 0x01, 0];
    unknown_id.extend_from_slice(&message("k", "unknown schema"));
    let (_, bogus) = produce(&producer(), &topic, Some(0), b"k", &unknown_id).await?;
    let d = put("A", "fifth").await?;

    let all = message("", "");
    let subscribe =
        |method: &'static str| gw.local.subscribe(kafkasocks::Principal::new("t"), method, &all, StartAt::Earliest);
    let mut strict = subscribe("test.v1.T/Strict").await?;
    for (receipt, field, type_name, body) in
        [(&a, 1, format!("{package}.A"), "first"), (&b, 7, format!("{package}.B.Nested"), "second")]
    {
        let got = next_local(&mut strict).await?;
        assert_eq!(got.offset, receipt.offset);
        assert_eq!(got.type_name, type_name);
        assert_eq!(member(&got.payload), (field, message("k", body).to_vec()));
    }
    let refused = next_local(&mut strict).await.expect_err("C is not accepted");
    assert_eq!(refused.code(), kafkasocks::Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains(&format!("offset {}", c.offset)) && refused.message().contains(".C,"),
        "{refused}"
    );

    let before = metric(&gw.metrics_text().await?, "kafkasocks_records_skipped_other_type_total");
    let mut lenient = subscribe("test.v1.T/Lenient").await?;
    let offsets: Vec<i64> =
        [next_local(&mut lenient).await?, next_local(&mut lenient).await?, next_local(&mut lenient).await?]
            .iter()
            .map(|d| d.offset)
            .collect();
    assert_eq!(offsets, [a.offset, b.offset, d.offset], "C ({}), the unframed {plain} and {bogus} skipped", c.offset);
    let after = metric(&gw.metrics_text().await?, "kafkasocks_records_skipped_other_type_total");
    assert_eq!(after - before, 3.0);
    // From just before the unknown id, the strict stream ends on it, saying so.
    let cursor = kafkasocks::Cursor { topic_id: bytes::Bytes::new(), positions: vec![(0, bogus)] };
    let mut strict =
        gw.local.subscribe(kafkasocks::Principal::new("t"), "test.v1.T/Strict", &all, StartAt::Cursor(cursor)).await?;
    let refused = next_local(&mut strict).await.expect_err("an unknown schema id is no accepted type");
    assert_eq!(refused.code(), kafkasocks::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("which the registry does not have"), "{refused}");
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// A typed stream whose registry stops answering: the record is neither delivered untyped
/// nor passed over; the subscription ends with UNAVAILABLE after the registry timeout, and
/// the client resumes from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_stream_waits_for_the_registry_and_ends_unavailable_when_it_hangs() -> anyhow::Result<()> {
    use kafkasocks::{RecordTypes, StartAt};
    init_tracing();
    let topic = unique_topic("sr-typed-hang");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let id =
        Registry::local().register(&format!("{topic}-value"), &schema(&format!("H{n}")), serde_json::json!([])).await?;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&id.to_be_bytes());
    framed.push(0);
    framed.extend_from_slice(&message("k", "v"));
    produce(&producer(), &topic, Some(0), b"k", &framed).await?;

    let url = registry_url();
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let proxy = HangingProxy::start(host.parse()?).await?;
    let timeout = Duration::from_secs(2);
    let streams = Streams::new().subscribe_with_types(
        SUBSCRIBE,
        &topic,
        KeyField::new(1),
        RecordTypes::new().member(format!("test.v1.H{n}"), 1),
    );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap()))
        .schema_registry(format!("http://{}/{path}", proxy.addr))
        .limits(kafkasocks::Limits::default().with_registry_timeout(timeout));
    let gw = TestGateway::start_with(config, streams, None).await?;
    proxy.hang();
    let started = std::time::Instant::now();
    let mut sub =
        gw.local.subscribe(kafkasocks::Principal::new("t"), SUBSCRIBE, &message("", ""), StartAt::Earliest).await?;
    let status = next_local(&mut sub).await.expect_err("no record without its type");
    let took = started.elapsed();
    assert_eq!(status.code(), kafkasocks::Code::Unavailable, "{status}");
    assert!(
        status.message().contains(&format!("reading schema {id}")) && status.message().contains("no answer"),
        "{status}"
    );
    assert!(took >= timeout && took < timeout + Duration::from_secs(5), "ended after {took:?}");
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// A reference the registry refuses (its subject's compatibility rule) is FAILED_PRECONDITION
/// like the schema itself, not a retryable UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reference_is_failed_precondition() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr-ref-409");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let registry = Registry::local();
    let (import, common, _) = with_import(n, "string");
    registry.set_compatibility(&import.replace('/', "%2F"), "BACKWARD").await?;
    registry.register(&import.replace('/', "%2F"), &common, serde_json::json!([])).await?;
    // The imported file changed incompatibly (a field's type).
    let changed = common.replace("string origin", "int64 origin");
    let main = with_import(n, "string").2;
    let schema = RegistrySchema::protobuf(format!("test.lookup{n}.Rec"), main, vec![0])
        .reference(kafkasocks::SchemaReference::new(&import, &import, changed));
    let streams = Streams::new().publish_with_schema(PUBLISH, &topic, KeyField::new(1), schema);
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let status = publish_one(&gw, PUBLISH).await.expect_err("the reference is refused");
    assert_eq!(status.code(), kafkasocks::Code::FailedPrecondition, "{status}");
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// A publish stream with a schema and no registry configured does not start (it could
/// publish nothing), as a typed stream without one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_streams_without_a_registry_do_not_start() -> anyhow::Result<()> {
    let schema = RegistrySchema::protobuf("test.v1.Rec", schema("Rec"), vec![0]);
    let streams = Streams::new().publish_with_schema(PUBLISH, "t", KeyField::new(1), schema);
    let started = TestGateway::start_with(GatewayConfig::new(KafkaConfig::new(bootstrap())), streams, None).await;
    let why = format!("{:#}", started.err().expect("started without a registry"));
    assert!(why.contains(PUBLISH) && why.contains("no schema registry is configured"), "{why}");
    let typed = Streams::new().subscribe_with_types(SUBSCRIBE, "t", KeyField::new(1), kafkasocks::RecordTypes::new());
    let started = TestGateway::start_with(GatewayConfig::new(KafkaConfig::new(bootstrap())), typed, None).await;
    let why = format!("{:#}", started.err().expect("started without a registry"));
    assert!(why.contains(SUBSCRIBE) && why.contains("needs a schema registry"), "{why}");
    Ok(())
}

/// A topic whose keys are Confluent-framed protobuf messages (`SourceKey { string
/// source_id = 1; }`): the gateway writes its keys so, registered under `<topic>-key`, and
/// reads every record's key (its own, and one framed as Confluent's serializer frames
/// keys) out of its key message, so key filters and deliveries see the key's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_protobuf_keys_are_written_and_read_as_key_messages() -> anyhow::Result<()> {
    use kafkasocks::{KeyMessage, StartAt};
    init_tracing();
    let topic = unique_topic("sr-keys");
    create_topic(&topic, 1).await?;
    let n = rand::random::<u32>();
    let file = format!(
        "syntax = \"proto3\";\npackage test.keys{n};\nmessage Rec {{ string key = 1; string body = 2; }}\n\
         message SourceKey {{ string source_id = 1; }}\n"
    );
    let key = || KeyMessage::new(RegistrySchema::protobuf(format!("test.keys{n}.SourceKey"), &file, vec![1]), 1);
    let value = RegistrySchema::protobuf(format!("test.keys{n}.Rec"), &file, vec![0]);
    let streams = Streams::new()
        .publish_with_schema(PUBLISH, &topic, KeyField::new(1), value)
        .key_message(PUBLISH, key())
        .subscribe(SUBSCRIBE, &topic, KeyField::new(1))
        .key_message(SUBSCRIBE, key());
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let publish = |key: &'static str, body: &'static str| {
        gw.local.publish(kafkasocks::Principal::new("t"), PUBLISH, message(key, body), bytes::Bytes::new())
    };
    let first = publish("s-1", "one").await?;
    publish("s-2", "two").await?;

    // In Kafka: the key message SourceKey{source_id: "s-1"}, framed with the key schema's
    // id and SourceKey's indexes [1], registered under <topic>-key.
    let (raw_key, _) = read_back(&topic, first.partition, first.offset).await?;
    let (key_id, indexes) = framing(&raw_key, 2);
    assert_eq!(indexes, [2, 2], "SourceKey is [1]");
    assert_eq!(&raw_key[7..], b"\x0a\x03s-1");
    assert_eq!(Registry::local().latest_id(&format!("{topic}-key")).await?, Some(key_id));
    // A record keyed as Confluent's serializer keys it, by another producer.
    let mut theirs = vec![0];
    theirs.extend_from_slice(&key_id.to_be_bytes());
    theirs.extend_from_slice(&[2, 2, 0x0a, 3]);
    theirs.extend_from_slice(b"s-1");
    let (_, third) = produce(&producer(), &topic, Some(0), &theirs, &message("s-1", "three")).await?;

    let mut sub =
        gw.local.subscribe(kafkasocks::Principal::new("t"), SUBSCRIBE, &message("s-1", ""), StartAt::Earliest).await?;
    for (offset, body) in [(first.offset, "one"), (third, "three")] {
        let d = next_local(&mut sub).await?;
        assert_eq!((d.offset, &d.key[..], d.key_schema_id), (offset, &b"s-1"[..], key_id));
        assert_eq!(&d.payload[..], &message("s-1", body)[..]);
    }
    gw.shutdown.shutdown();

    // Every stream of the topic must say its keys are framed.
    let mixed = Streams::new().publish(PUBLISH, &topic, KeyField::new(1)).key_message(PUBLISH, key()).subscribe(
        SUBSCRIBE,
        &topic,
        KeyField::new(1),
    );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let why = format!("{:#}", TestGateway::start_with(config, mixed, None).await.err().expect("mixed keys started"));
    assert!(why.contains(SUBSCRIBE) && why.contains("every stream of a topic must agree"), "{why}");
    delete_topic(&topic).await?;
    Ok(())
}
