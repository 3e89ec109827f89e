//! Starting `kafkasocks serve` from a config written by the test.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$KAFKA_BOOTSTRAP`, default what `scripts/services up` starts.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The chat's `[proto]` section.
pub fn chat_proto() -> String {
    format!(
        "[proto]\nfiles = [{:?}]\nincludes = [{:?}]\n",
        root().join("proto/chat/v1/chat.proto"),
        root().join("proto")
    )
}

/// Creates `chat.messages` (3 partitions, as the chat example does) unless it exists, over
/// the plaintext listener (a super user there): the chat streams' topic, which the secured
/// users may use but not create, and which no test may assume an earlier one made.
pub async fn ensure_chat_topic() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("an admin client");
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let created = admin
        .create_topics(&[NewTopic::new("chat.messages", 3, TopicReplication::Fixed(1))], &opts)
        .await
        .expect("Kafka answers CreateTopics");
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => panic!("creating {topic}: {e}"),
        }
    }
}

/// A running `kafkasocks serve`; killed when dropped.
pub struct Serve {
    pub child: Child,
    /// The WebSocket listener, host:port.
    pub addr: String,
    /// The admin listener's base URL, when configured.
    pub admin: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

/// Writes `config` to a fresh folder and serves it; waits for the listening lines.
pub fn serve(config: &str, stderr: Stdio) -> Serve {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kafkasocks.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafkasocks"))
        .args(["serve", "--config", path.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("kafkasocks serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let addr = line.trim().strip_prefix("kafkasocks: listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    let admin = config.contains("admin_listen").then(|| {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the admin line");
        line.trim().strip_prefix("kafkasocks: admin on ").expect("admin on").to_owned()
    });
    Serve { child, addr, admin, _dir: dir }
}
