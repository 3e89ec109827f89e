//! The generated streams against the real broker: a hand-written implementation of the
//! generated hooks trait (its async hooks as `async fn`), the generated
//! `ChatStreamsGateway`/`SensorsGateway` mounted on a real `kafkasocks::Gateway`, publishes through the WebSocket client and through
//! `LocalStreams`, subscriptions through both, and the generated tonic service called in
//! process. Needs Kafka (`KAFKA_BOOTSTRAP`, default 127.0.0.1:19092) and the Schema Registry
//! (`SCHEMA_REGISTRY_URL`), as started by `scripts/services up`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::{Code, Gateway, GatewayConfig, KafkaConfig, Principal, RequestContext, Status};
use kafkasocks_golden_rust::every::v1 as every;
use prost::Message as _;
use tonic::codegen::tokio_stream::StreamExt as _;

/// Hooks with a rule of each kind; the async ones are `async fn`s that really wait.
struct ChatRules;

impl every::ChatStreamsHooks for ChatRules {
    async fn authorize_messages(&self, _ctx: &RequestContext, request: &every::RoomFilter) -> Result<(), Status> {
        tokio::task::yield_now().await;
        if request.room == "forbidden" { Err(Status::permission_denied("room is closed")) } else { Ok(()) }
    }

    fn filter_messages(
        &self,
        _ctx: &RequestContext,
        _request: &every::RoomFilter,
    ) -> Option<every::chat_streams_kafkasocks::MessageFilter<every::ChatMessage>> {
        Some(Arc::new(|m: &every::ChatMessage| !m.text.contains("[hidden]")))
    }

    async fn prepare_post(
        &self,
        ctx: &RequestContext,
        mut request: every::ChatMessage,
    ) -> Result<every::ChatMessage, Status> {
        // A timer, not readiness: the hook's future really is pending once, on the gateway's runtime.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if request.text.is_empty() {
            return Err(Status::invalid_argument("empty message"));
        }
        if request.user.is_empty() {
            request.user = format!("guest{}", ctx.principal.subject());
        }
        Ok(request)
    }
}

async fn ensure_topic(name: &str) {
    if kafkasocks_tests::create_topic(name, 2).await.is_err() {
        // It exists (an earlier run): fine, every test uses fresh keys.
    }
}

fn recent() -> StartAt {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    StartAt::Timestamp(now - 5_000)
}

fn msg(room: &str, text: &str) -> every::ChatMessage {
    every::ChatMessage { room: room.into(), user: String::new(), text: text.into(), sent_at: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_server_runs_on_a_real_gateway_and_broker() -> anyhow::Result<()> {
    kafkasocks_tests::init_tracing();
    for t in ["every.chat", "every.readings", "every.all"] {
        ensure_topic(t).await;
    }
    let streams = every::ChatStreamsGateway::new(ChatRules)
        .streams()
        .merge(every::SensorsGateway::new(every::SensorsDefaultHooks).streams());
    assert_eq!(streams.len(), 9);
    let config = GatewayConfig::new(KafkaConfig::new(kafkasocks_tests::bootstrap()))
        .schema_registry(kafkasocks_tests::registry_url())
        .listen("127.0.0.1:0".parse()?);
    // A test authenticator: the token is the subject (none: anonymous). The gRPC service
    // below is authenticated by the same one, from its `authorization` metadata.
    let auth = |token: &str, _: &kafkasocks::Handshake| -> Result<Principal, Status> {
        Ok(if token.is_empty() { Principal::anonymous() } else { Principal::new(token) })
    };
    let gateway = Gateway::builder(config).streams(streams).authenticator(auth).bind().await?;
    let local = gateway.local_streams();
    let url = format!("ws://{}/streams", gateway.local_addr());
    let shutdown = gateway.shutdown_handle();
    let task = tokio::spawn(gateway.run());

    // --- WebSocket client: publish (hooks enrich / refuse), subscribe (hooks filter) -------
    let room = format!("room-{:x}", rand::random::<u64>());
    let client = Client::connect(ClientConfig::new(url));
    let mut sub = client.subscribe(
        "every.v1.ChatStreams/Messages",
        every::RoomFilter { room: room.clone() }.encode_to_vec(),
        recent(),
    );
    let first = client.publish("every.v1.ChatStreams/Post", msg(&room, "hello").encode_to_vec()).await?;
    assert_eq!(first.topic, "every.chat");
    client.publish("every.v1.ChatStreams/Post", msg(&room, "[hidden] not for you").encode_to_vec()).await?;
    let refused = client.publish("every.v1.ChatStreams/Post", msg(&room, "").encode_to_vec()).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let other_room = client.publish("every.v1.ChatStreams/Post", msg("elsewhere", "not this room").encode_to_vec());
    other_room.await?;
    client.publish("every.v1.ChatStreams/Post", msg(&room, "bye").encode_to_vec()).await?;

    let d = tokio::time::timeout(Duration::from_secs(20), sub.next()).await?.unwrap()?;
    assert_eq!((d.partition, d.offset), (first.partition, first.offset));
    assert_eq!(&d.key[..], room.as_bytes(), "the key field is the Kafka key");
    assert!(d.schema_id > 0, "schema: written in the Confluent framing");
    // Registered as Confluent's serializer would: the imports as references (by import
    // path), so a registry-aware consumer can rebuild the schema from the registry alone.
    let url = kafkasocks_tests::registry_url();
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let (status, body) =
        kafkasocks_tests::http_get(host.parse()?, &format!("/{path}/schemas/ids/{}", d.schema_id)).await?;
    assert_eq!(status, 200, "{body}");
    let schema: serde_json::Value = serde_json::from_str(&body)?;
    let refs: Vec<&str> =
        schema["references"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(refs, ["kafkasocks/options.proto", "every/v1/legacy.proto"], "{body}");
    let (_, subjects) = kafkasocks_tests::http_get(host.parse()?, &format!("/{path}/subjects")).await?;
    assert!(
        subjects.contains("\"kafkasocks/options.proto\"") && subjects.contains("\"every/v1/legacy.proto\""),
        "{subjects}"
    );
    // SCHEMA_TOPIC_NAME: the subject is <topic>-value; the registry holds this id there.
    let (status, body) =
        kafkasocks_tests::http_get(host.parse()?, &format!("/{path}/subjects/every.chat-value/versions/latest"))
            .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body)?["id"], d.schema_id, "{body}");
    let hello = every::ChatMessage::decode(&d.payload[..])?;
    assert_eq!(hello.text, "hello");
    assert_eq!(hello.user, "guest", "prepare_post enriched the record");
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next()).await?.unwrap()?;
    assert_eq!(every::ChatMessage::decode(&d.payload[..])?.text, "bye", "the filter hook hid one record");

    // --- authorize refuses, through LocalStreams ---------------------------------------------
    // The hook is async; LocalStreams::subscribe waits for its answer, so the refusal is the
    // call's error (a gRPC call fails with it, before any stream).
    let forbidden = every::RoomFilter { room: "forbidden".into() }.encode_to_vec();
    let refused =
        local.subscribe(Principal::anonymous(), "every.v1.ChatStreams/Messages", &forbidden, StartAt::Latest).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::PermissionDenied));

    // --- integer keys (Sensors), through LocalStreams ----------------------------------------
    let sensor = rand::random::<i64>() >> 1;
    let reading = every::Reading { sensor_id: sensor, value: 21.5, device: Some(b"dev-1".to_vec()) };
    let receipt = local
        .publish(Principal::anonymous(), "every.v1.Sensors/Record", reading.encode_to_vec().into(), Default::default())
        .await?;
    let filter = every::SensorFilter { sensor_id: sensor }.encode_to_vec();
    let mut readings = local.subscribe(Principal::anonymous(), "every.v1.Sensors/Watch", &filter, recent()).await?;
    let d = tokio::time::timeout(Duration::from_secs(20), readings.next()).await?.unwrap()?;
    assert_eq!((d.partition, d.offset), (receipt.partition, receipt.offset));
    assert_eq!(d.key, sensor.to_string().as_bytes(), "integer keys are decimal text");
    assert_eq!(every::Reading::decode(&d.payload[..])?, reading, "unchanged requests are produced as sent");

    // --- fields the request type does not declare: dropped (default), refused, or kept ------
    let mut bloated = reading.encode_to_vec();
    let unknown = vec![b'x'; 300_000];
    bloated.push((99 << 3 | 2) as u8 | 0x80); // field 99, length-delimited: tag 0x9a 0x06
    bloated.push(6);
    prost::encoding::encode_varint(unknown.len() as u64, &mut bloated);
    bloated.extend_from_slice(&unknown);
    let dropped = local
        .publish(Principal::anonymous(), "every.v1.Sensors/Record", bloated.clone().into(), Default::default())
        .await?;
    let strict = local
        .publish(Principal::anonymous(), "every.v1.Sensors/RecordStrict", bloated.clone().into(), Default::default())
        .await;
    let status = strict.expect_err("REJECT refuses undeclared fields");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("does not declare"), "{status}");
    local
        .publish(
            Principal::anonymous(),
            "every.v1.Sensors/RecordStrict",
            reading.encode_to_vec().into(),
            Default::default(),
        )
        .await?;
    let kept = local
        .publish(Principal::anonymous(), "every.v1.Sensors/RecordRaw", bloated.clone().into(), Default::default())
        .await?;
    let (_, produced) = kafkasocks_tests::read_back("every.readings", dropped.partition, dropped.offset).await?;
    assert_eq!(produced, reading.encode_to_vec(), "DROP produced exactly the declared Reading");
    let (_, produced) = kafkasocks_tests::read_back("every.readings", kept.partition, kept.offset).await?;
    assert_eq!(produced, bloated, "KEEP produced the bytes as sent");

    // --- the generated tonic service, in process ----------------------------------------------
    use every::chat_streams_server::ChatStreams as _;
    let grpc = every::ChatStreamsGrpc::new(local.clone());
    let grpc_room = format!("grpc-{:x}", rand::random::<u64>());
    let mut request = tonic::Request::new(every::RoomFilter { room: grpc_room.clone() });
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 5_000;
    request.metadata_mut().insert("kafkasocks-start", format!("ts:{start_ms}").parse()?);
    let mut stream = grpc.messages(request).await?.into_inner();
    let mut post = tonic::Request::new(msg(&grpc_room, "over grpc"));
    post.metadata_mut().insert("authorization", "Bearer -ada".parse()?);
    post.metadata_mut().insert("kafkasocks-idempotency-key", "post-1".parse()?);
    let receipt = grpc.post(post).await?.into_inner();
    assert_eq!(receipt.topic, "every.chat");
    let mut again = tonic::Request::new(msg(&grpc_room, "over grpc"));
    again.metadata_mut().insert("authorization", "Bearer -ada".parse()?);
    again.metadata_mut().insert("kafkasocks-idempotency-key", "post-1".parse()?);
    let duplicate = grpc.post(again).await?.into_inner();
    assert!(duplicate.duplicate && duplicate.offset == receipt.offset, "same idempotency key: one record");
    let got = tokio::time::timeout(Duration::from_secs(20), stream.next()).await?.unwrap()?;
    assert_eq!(got.text, "over grpc");
    assert_eq!(got.user, "guest-ada", "the gRPC principal reached the hooks");
    let bad = tonic::Request::new(every::RoomFilter { room: grpc_room });
    let mut bad = bad;
    bad.metadata_mut().insert("kafkasocks-start", "yesterday".parse()?);
    let status = grpc.messages(bad).await.err().unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let forbidden = grpc.messages(tonic::Request::new(every::RoomFilter { room: "forbidden".into() })).await;
    assert_eq!(
        forbidden.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied),
        "the hook's refusal fails the call"
    );

    client.close();
    shutdown.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    Ok(())
}
