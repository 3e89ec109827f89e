//! Confluent Schema Registry: publish streams that declare a schema write their records in
//! the Confluent wire format (see [`crate::protocol::wire`] for the bytes); subscriptions
//! remove the framing from whatever they read, whether or not their stream declares one.
//!
//! What is registered, and under which subject, follows Confluent's own serializer (so
//! that the services beside the gateway can read and write the same topics with their
//! registry clients): the record's `.proto` file verbatim, its imports registered first as
//! schema references named and subjected by their import paths (the well-known
//! `google/protobuf/*` files left out: registries have them built in), under the subject
//! the stream's [`SubjectNameStrategy`] names. [`RegistryMode`] says whether the gateway
//! may register, or only use what is there.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::secret::Secret;

#[cfg(feature = "registry")]
mod client;
#[cfg(feature = "registry")]
mod descriptor;
#[cfg(all(feature = "registry", feature = "server"))]
mod typed;

#[cfg(all(feature = "registry", feature = "server"))]
pub(crate) use client::SchemaRegistry;
#[cfg(feature = "registry")]
pub use client::{SchemaCheck, check_schema};
#[cfg(all(feature = "registry", feature = "server"))]
pub(crate) use typed::{Typed, TypedRecords};

/// How the subject of a record schema is named: Confluent's subject name strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SubjectNameStrategy {
    /// `<topic>-value`: one record type per topic (Confluent's default).
    #[default]
    TopicName,
    /// The record's fully-qualified message name: one type, on any topic.
    RecordName,
    /// `<topic>-<message name>`: several types per topic, each with its own history.
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The subject of record type `record` (fully qualified, `pkg.Message`) on `topic`.
    ///
    /// ```
    /// use kafkasocks::SubjectNameStrategy;
    /// assert_eq!(SubjectNameStrategy::TopicName.subject("chat.messages", "chat.v1.ChatMessage"), "chat.messages-value");
    /// assert_eq!(SubjectNameStrategy::RecordName.subject("chat.messages", "chat.v1.ChatMessage"), "chat.v1.ChatMessage");
    /// assert_eq!(
    ///     SubjectNameStrategy::TopicRecordName.subject("chat.messages", "chat.v1.ChatMessage"),
    ///     "chat.messages-chat.v1.ChatMessage"
    /// );
    /// ```
    pub fn subject(&self, topic: &str, record: &str) -> String {
        match self {
            SubjectNameStrategy::TopicName => format!("{topic}-value"),
            SubjectNameStrategy::RecordName => record.to_owned(),
            SubjectNameStrategy::TopicRecordName => format!("{topic}-{record}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    Strategy(SubjectNameStrategy),
    Named(String),
}

/// The schema a publish stream writes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySchema {
    pub(crate) record: String,
    pub(crate) schema: String,
    pub(crate) message_indexes: Vec<i32>,
    pub(crate) references: Vec<SchemaReference>,
    pub(crate) subject: Subject,
    /// A key schema: TopicNameStrategy names `<topic>-key`.
    pub(crate) key: bool,
}

impl RegistrySchema {
    /// Records of message type `record` (fully qualified: `pkg.Message`), declared in
    /// `schema` (the `.proto` source of its file) at `message_indexes` (Confluent's message
    /// indexes: `[0]` the first top-level message, `[1, 0]` the first message nested in the
    /// second). The subject is `<topic>-value` unless set otherwise.
    pub fn protobuf(record: impl Into<String>, schema: impl Into<String>, message_indexes: Vec<i32>) -> Self {
        RegistrySchema {
            record: record.into(),
            schema: schema.into(),
            message_indexes,
            references: Vec::new(),
            subject: Subject::Strategy(SubjectNameStrategy::TopicName),
            key: false,
        }
    }

    /// Names the subject with this strategy.
    pub fn subject_name_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.subject = Subject::Strategy(strategy);
        self
    }

    /// Uses this subject, whatever the topic and record.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Subject::Named(subject.into());
        self
    }

    /// A file the schema imports, registered first and referred to, as Confluent's
    /// serializer does, so that any registry-aware consumer can rebuild the schema.
    pub fn reference(mut self, reference: SchemaReference) -> Self {
        self.references.push(reference);
        self
    }

    /// The subject for records on `topic`.
    pub(crate) fn subject_for(&self, topic: &str) -> String {
        match &self.subject {
            Subject::Strategy(SubjectNameStrategy::TopicName) if self.key => format!("{topic}-key"),
            Subject::Strategy(s) => s.subject(topic, &self.record),
            Subject::Named(name) => name.clone(),
        }
    }
}

/// A topic whose record keys are Confluent-framed protobuf messages (as Confluent's
/// `ProtobufSerializer` writes keys): a message of one string or bytes field, holding the
/// value of the stream's key field.
///
/// Publishes write the key as that message, framed with `schema` (registered under
/// `<topic>-key` by default, found or registered as value schemas are in each
/// [`RegistryMode`]). Reading the topic, the gateway takes each record's key out of its key
/// message (the schema id kept as `Delivery::key_schema_id`), so key filters and
/// deliveries see the key field's value as on any other topic. Every stream of the topic
/// must declare it.
///
/// ```
/// use kafkasocks::{KeyMessage, RegistrySchema};
/// // message SourceKey { string source_id = 1; }  (the first message of its file)
/// let key = KeyMessage::new(RegistrySchema::protobuf("telemetry.v1.SourceKey", "...", vec![0]), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMessage {
    pub(crate) schema: RegistrySchema,
    pub(crate) field: u32,
}

impl KeyMessage {
    /// Keys are message `schema` (its record type), the key value in its field `field`.
    pub fn new(mut schema: RegistrySchema, field: u32) -> KeyMessage {
        schema.key = true;
        KeyMessage { schema, field }
    }

    /// The key message's schema (for [`check_schema`](crate::check_schema) and the like).
    pub fn schema(&self) -> &RegistrySchema {
        &self.schema
    }

    /// The key message holding `value` (its one field, length-delimited).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn wrap(&self, value: &[u8]) -> bytes::Bytes {
        crate::protocol::wire::length_delimited(self.field, value)
    }
}

/// An imported `.proto` file, registered as a schema reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) schema: String,
    pub(crate) references: Vec<SchemaReference>,
}

impl SchemaReference {
    /// The file imported as `name` (its import path), registered under `subject`
    /// (Confluent's default: the import path too), with this source.
    pub fn new(name: impl Into<String>, subject: impl Into<String>, schema: impl Into<String>) -> Self {
        SchemaReference { name: name.into(), subject: subject.into(), schema: schema.into(), references: Vec::new() }
    }

    /// A file this one imports in turn.
    pub fn reference(mut self, reference: SchemaReference) -> Self {
        self.references.push(reference);
        self
    }
}

/// The record types of a subscribe stream whose topic carries several (as Confluent's
/// RecordNameStrategy and TopicRecordNameStrategy write them): its response message is a
/// wrapper with one oneof, a member per accepted type, and each record is delivered in the
/// member of its type, known from the record's schema id and message indexes (looked up in
/// the Schema Registry once per schema id, never per record).
///
/// ```
/// use kafkasocks::{OtherTypes, RecordTypes};
/// // message SourceEvent { oneof event { Reading reading = 1; Command command = 2; } }
/// let types = RecordTypes::new()
///     .member("telemetry.v1.Reading", 1)
///     .member("telemetry.v1.Command", 2)
///     .others(OtherTypes::Skip);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordTypes {
    pub(crate) members: HashMap<String, u32>,
    pub(crate) others: OtherTypes,
}

impl RecordTypes {
    /// No types yet.
    pub fn new() -> RecordTypes {
        RecordTypes::default()
    }

    /// Records of message type `type_name` (fully qualified) are delivered in the member
    /// with field number `field` of the wrapper's oneof.
    pub fn member(mut self, type_name: impl Into<String>, field: u32) -> RecordTypes {
        self.members.insert(type_name.into(), field);
        self
    }

    /// What happens to records of other types. Default [`OtherTypes::Fail`].
    pub fn others(mut self, others: OtherTypes) -> RecordTypes {
        self.others = others;
        self
    }
}

/// What a stream of several record types does with a record of a type it does not accept
/// (or one without the Schema Registry framing, or naming a schema id the registry does
/// not have, or a schema that is not protobuf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OtherTypes {
    /// End the subscription with `FAILED_PRECONDITION` naming the record (partition,
    /// offset) and its type: a record is never delivered as the wrong type. The cursor
    /// stays before it.
    #[default]
    Fail,
    /// Skip the record (the cursor moves past it) and count it in
    /// `kafkasocks_records_skipped_other_type_total`.
    Skip,
}

/// What the gateway may do in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RegistryMode {
    /// Register each publish stream's schema on its first publish (as Confluent's
    /// serializer does by default, `auto.register.schemas=true`). For development: a
    /// registry's compatibility rule is then the only check. Logged at start.
    #[default]
    AutoRegister,
    /// Never register: at start, look up each publish stream's exact schema under its
    /// subject (`POST /subjects/{subject}`), and refuse to start when one is not
    /// registered. For production registries with auto-registration off, or read-only
    /// credentials.
    LookupOnly,
    /// Never register: at start, take the latest version of each publish stream's subject
    /// and write with it (Confluent's `use.latest.version=true`), provided the record type
    /// is declared in it and the registry finds the stream's own schema compatible with
    /// it; otherwise refuse to start.
    UseLatest,
}

/// How the gateway authenticates to the registry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryCredentials {
    /// HTTP basic authentication (Confluent Cloud: the API key and secret).
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryCredentials::Basic { user, password } => {
                f.debug_struct("Basic").field("user", user).field("password", password).finish()
            }
            RegistryCredentials::Bearer(token) => f.debug_tuple("Bearer").field(token).finish(),
        }
    }
}

/// A Confluent-compatible Schema Registry.
///
/// ```
/// use kafkasocks::{RegistryConfig, RegistryMode, Secret};
/// let registry = RegistryConfig::new("https://registry.example.com")
///     .mode(RegistryMode::LookupOnly)
///     .basic_auth("gateway", Secret::from_file("/run/secrets/registry-password"))
///     .ca_file("/etc/kafkasocks/registry-ca.pem");
/// assert!(!format!("{registry:?}").contains("registry-password\")"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Base URL (for example `http://127.0.0.1:18081/apis/ccompat/v7`). Credentials in it
    /// (`https://user:password@host`) are used, and never logged.
    pub url: String,
    /// What the gateway may do there. Default [`RegistryMode::AutoRegister`].
    pub mode: RegistryMode,
    /// Default none (or those in the URL).
    pub credentials: Option<RegistryCredentials>,
    /// PEM file of the certificate authorities an `https` registry's certificate must chain
    /// to, instead of the system's. Default none: the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl RegistryConfig {
    /// The registry at `url`, in auto-register mode, without credentials.
    pub fn new(url: impl Into<String>) -> RegistryConfig {
        RegistryConfig { url: url.into(), mode: RegistryMode::default(), credentials: None, ca_file: None }
    }

    /// Sets what the gateway may do there.
    pub fn mode(mut self, mode: RegistryMode) -> RegistryConfig {
        self.mode = mode;
        self
    }

    /// Authenticates with HTTP basic authentication.
    pub fn basic_auth(mut self, user: impl Into<String>, password: Secret) -> RegistryConfig {
        self.credentials = Some(RegistryCredentials::Basic { user: user.into(), password });
        self
    }

    /// Authenticates with a bearer token.
    pub fn bearer_token(mut self, token: Secret) -> RegistryConfig {
        self.credentials = Some(RegistryCredentials::Bearer(token));
        self
    }

    /// Trusts only the certificate authorities in this PEM file for an `https` registry.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> RegistryConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// The URL as it may be logged: without the credentials it may carry.
    pub(crate) fn redacted_url(&self) -> String {
        let Some(start) = self.url.find("://").map(|i| i + 3) else { return self.url.clone() };
        let end = self.url[start..].find('/').map_or(self.url.len(), |i| start + i);
        match self.url[start..end].rfind('@') {
            Some(at) => format!("{}<redacted>@{}", &self.url[..start], &self.url[start + at + 1..]),
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.redacted_url())
            .field("mode", &self.mode)
            .field("credentials", &self.credentials)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl From<&str> for RegistryConfig {
    fn from(url: &str) -> RegistryConfig {
        RegistryConfig::new(url)
    }
}

impl From<String> for RegistryConfig {
    fn from(url: String) -> RegistryConfig {
        RegistryConfig::new(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_credentials() {
        let c = RegistryConfig::new("https://key:s3cret@registry.example.com:8443/apis/ccompat/v7");
        assert_eq!(c.redacted_url(), "https://<redacted>@registry.example.com:8443/apis/ccompat/v7");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(RegistryConfig::new("http://u:p@h").redacted_url(), "http://<redacted>@h");
        assert_eq!(RegistryConfig::new("http://h:1/x").redacted_url(), "http://h:1/x");
        let bearer = RegistryConfig::new("http://h").bearer_token(Secret::new("tok-123"));
        assert!(!format!("{bearer:?}").contains("tok-123"));
    }

    #[test]
    fn subjects_follow_the_strategy_or_the_name_given() {
        let s = RegistrySchema::protobuf("a.v1.Rec", "", vec![0]);
        assert_eq!(s.subject_for("t"), "t-value");
        let s = s.subject_name_strategy(SubjectNameStrategy::TopicRecordName);
        assert_eq!(s.subject_for("t"), "t-a.v1.Rec");
        assert_eq!(s.clone().subject("fixed").subject_for("t"), "fixed");
        // Key schemas: <topic>-key under the topic strategy, the others as for values.
        let key = KeyMessage::new(RegistrySchema::protobuf("a.v1.Key", "", vec![0]), 1);
        assert_eq!(key.schema.subject_for("t"), "t-key");
        let key = KeyMessage::new(s, 1);
        assert_eq!(key.schema.subject_for("t"), "t-a.v1.Rec");
        assert_eq!(&key.wrap(b"s-1")[..], b"\x0a\x03s-1");
    }
}
