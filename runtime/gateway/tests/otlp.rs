//! `[telemetry] otlp_endpoint`: the binary exports its spans over OTLP/HTTP. A collector in
//! this test (an HTTP endpoint decoding `ExportTraceServiceRequest`s as the OpenTelemetry
//! collector does) receives the spans of a real session that publishes to the real broker;
//! SIGTERM flushes them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// What the collector received: (path, body) of each request.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP requests; keeps each (path, body).
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().expect("lock").push((path, body));
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_session_are_exported_over_otlp_and_flushed_on_sigterm() {
    common::ensure_chat_topic().await;
    let (endpoint, got) = collector();
    let serve = common::serve(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap = {:?}\n[auth]\nanonymous = true\n{}\
             [log]\nfilter = \"info,kafkasocks=debug\"\n\
             [telemetry]\notlp_endpoint = {endpoint:?}\nservice_name = \"otlp-test\"\n",
            common::bootstrap(),
            common::chat_proto(),
        ),
        Stdio::null(),
    );
    let addr = serve.addr.clone();

    let client =
        kafkasocks::client::Client::connect(kafkasocks::client::ClientConfig::new(format!("ws://{addr}/streams")));
    // A chat message (room "otlp"): field 1 room, field 3 text.
    let message = [b"\x0a\x04otlp".as_slice(), b"\x1a\x02hi"].concat();
    let receipt = tokio::time::timeout(Duration::from_secs(30), client.publish("chat.v1.ChatStreams/Post", message))
        .await
        .expect("the publish is answered")
        .expect("the publish is accepted");
    assert_eq!(receipt.topic, "chat.messages");
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;

    serve.terminate();
    let mut serve = serve;
    let exit = tokio::task::spawn_blocking(move || serve.child.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "a drained gateway exits 0: {exit:?}");

    let got = got.lock().expect("lock").clone();
    assert!(!got.is_empty(), "the collector received nothing");
    let mut names = Vec::new();
    let mut services = Vec::new();
    for (path, body) in &got {
        assert_eq!(path, "/v1/traces");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP trace export");
        for rs in request.resource_spans {
            for attr in rs.resource.iter().flat_map(|r| &r.attributes) {
                if attr.key == "service.name"
                    && let Some(Value::StringValue(s)) = attr.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    services.push(s.clone());
                }
            }
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                names.push(span.name.clone());
            }
        }
    }
    assert!(services.iter().all(|s| s == "otlp-test") && !services.is_empty(), "{services:?}");
    assert!(names.iter().any(|n| n == "connection"), "the session's span: {names:?}");
    assert!(names.iter().any(|n| n.contains("publish")), "the publish's span: {names:?}");
}
