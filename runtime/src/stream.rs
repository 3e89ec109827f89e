//! Streams: RPC methods bound to Kafka topics, with the hooks that decide who may
//! subscribe or publish and what goes to Kafka. Generated server modules register
//! their services through this API; it is equally usable by hand.
//!
//! ```
//! use kafkasocks::{KeyField, Streams};
//!
//! let streams = Streams::new()
//!     .subscribe("chat.v1.ChatStreams/Messages", "chat.messages", KeyField::new(1))
//!     .publish("chat.v1.ChatStreams/Post", "chat.messages", KeyField::new(1));
//! assert_eq!(streams.len(), 2);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::Principal;
use crate::protocol::{Code, OutgoingRecord, RecordView, Status};
use crate::registry::{KeyMessage, RecordTypes, RegistrySchema};

/// What a hook knows about the caller.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestContext {
    /// The authenticated principal, with its claims.
    pub principal: Principal,
    /// The session id sent in Welcome (for gRPC and in-process calls, one per call).
    pub session_id: String,
    /// The TCP peer, when known (a load balancer, when there is one).
    pub remote_addr: Option<SocketAddr>,
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub client_ip: Option<IpAddr>,
    /// The fully-qualified method.
    pub method: String,
    /// The client's `Hello.instance_id`, when it sent a well-formed one.
    pub(crate) instance_id: Option<String>,
}

impl RequestContext {
    /// A context for `principal` calling `method` in process, with no network peer: for
    /// calling a hook directly, as its unit tests do. The session id is `"local"`.
    pub fn new(principal: Principal, method: impl Into<String>) -> RequestContext {
        RequestContext {
            principal,
            session_id: "local".to_owned(),
            remote_addr: None,
            client_ip: None,
            method: method.into(),
            instance_id: None,
        }
    }

    /// Whose idempotency keys these are: a principal's keys are its own on every
    /// connection; an anonymous client's are its own only (its instance id, which only it
    /// knows, or else its session), so no client can see or suppress another's publish by
    /// reusing its key.
    pub(crate) fn dedup_scope(&self) -> String {
        match (&self.instance_id, self.principal.is_anonymous()) {
            (_, false) => format!("principal:{}", self.principal.subject()),
            (Some(instance), true) => format!("instance:{instance}"),
            (None, true) => format!("session:{}", self.session_id),
        }
    }
}

/// A `Hello.instance_id` the gateway uses: 22-128 characters of `[A-Za-z0-9_-]` (128 bits
/// of base64url at least).
pub(crate) fn valid_instance_id(id: &str) -> Option<String> {
    let ok = (22..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| id.to_owned())
}

/// A per-record predicate applied after the key match.
pub type RecordFilter = Arc<dyn Fn(&RecordView<'_>) -> bool + Send + Sync>;

/// How a subscription selects records.
#[derive(Clone, Default)]
pub struct SubscriptionPlan {
    pub(crate) key: Option<Bytes>,
    pub(crate) filter: Option<RecordFilter>,
    /// Streams of several record types: how records are typed (set by the gateway from the
    /// stream, not by hooks).
    #[cfg(feature = "registry")]
    pub(crate) typed: Option<Arc<crate::registry::TypedRecords>>,
}

impl SubscriptionPlan {
    /// Every record of the topic.
    pub fn all() -> SubscriptionPlan {
        SubscriptionPlan::default()
    }

    /// Only records with exactly this Kafka key (served from the gateway's key index).
    pub fn key(key: impl Into<Bytes>) -> SubscriptionPlan {
        SubscriptionPlan { key: Some(key.into()), ..SubscriptionPlan::default() }
    }

    /// Adds a predicate on each record that passed the key match.
    pub fn filter(mut self, f: impl Fn(&RecordView<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
    }
}

impl fmt::Debug for SubscriptionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionPlan").field("key", &self.key).field("filter", &self.filter.is_some()).finish()
    }
}

/// A boxed future, the return type of async hooks.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides on subscriptions to a server-streaming method.
pub trait SubscribeHook: Send + Sync + 'static {
    /// Authorizes the request (the encoded request message) and says which records match.
    /// An error ends the subscription with it.
    fn plan(&self, ctx: &RequestContext, request: Bytes) -> BoxFuture<Result<SubscriptionPlan, Status>>;
}

/// Decides on publishes to a unary method: authorize, validate, enrich.
pub trait PublishHook: Send + Sync + 'static {
    /// Turns the request (encoded request message) into the record to produce.
    fn prepare(&self, ctx: &RequestContext, payload: Bytes) -> BoxFuture<Result<OutgoingRecord, Status>>;
}

/// The common hook: a key from a field of the request message, no other checks.
///
/// For a subscription the field's value selects records by key (an empty value selects
/// all); for a publish it becomes the record key. Strings and bytes are used as they
/// are; integer fields (varint) are written as decimal text.
#[derive(Debug, Clone, Copy)]
pub struct KeyField {
    field: u32,
}

impl KeyField {
    /// Uses field number `field` of the request.
    pub fn new(field: u32) -> KeyField {
        KeyField { field }
    }

    /// No key: subscriptions get every record, publishes have no key.
    pub fn none() -> KeyField {
        KeyField { field: 0 }
    }

    fn extract(&self, message: &[u8]) -> Result<Option<Bytes>, Status> {
        if self.field == 0 {
            return Ok(None);
        }
        match crate::protocol::wire::scan_field(message, self.field) {
            Ok(v) => Ok(v.filter(|k| !k.is_empty())),
            Err(e) => Err(Status::invalid_argument(format!("request does not decode: {e}"))),
        }
    }
}

impl SubscribeHook for KeyField {
    fn plan(&self, _ctx: &RequestContext, request: Bytes) -> BoxFuture<Result<SubscriptionPlan, Status>> {
        let plan = self.extract(&request).map(|key| match key {
            Some(k) => SubscriptionPlan::key(k),
            None => SubscriptionPlan::all(),
        });
        Box::pin(std::future::ready(plan))
    }
}

impl PublishHook for KeyField {
    fn prepare(&self, _ctx: &RequestContext, payload: Bytes) -> BoxFuture<Result<OutgoingRecord, Status>> {
        let key = self.extract(&payload);
        Box::pin(async move { Ok(OutgoingRecord { key: key?, payload, headers: Vec::new() }) })
    }
}

#[derive(Clone)]
pub(crate) enum StreamKind {
    Subscribe(Arc<dyn SubscribeHook>),
    Publish(Arc<dyn PublishHook>),
}

#[derive(Clone)]
pub(crate) struct StreamDef {
    pub(crate) topic: String,
    pub(crate) kind: StreamKind,
    pub(crate) schema: Option<Arc<RegistrySchema>>,
    pub(crate) types: Option<RecordTypes>,
    pub(crate) key_message: Option<Arc<KeyMessage>>,
}

impl StreamDef {
    fn new(topic: impl Into<String>, kind: StreamKind) -> StreamDef {
        StreamDef { topic: topic.into(), kind, schema: None, types: None, key_message: None }
    }
}

/// The methods a gateway serves.
#[derive(Clone, Default)]
pub struct Streams {
    pub(crate) methods: HashMap<String, StreamDef>,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.methods.keys().collect();
        names.sort();
        f.debug_struct("Streams").field("methods", &names).finish()
    }
}

impl Streams {
    /// No streams.
    pub fn new() -> Streams {
        Streams::default()
    }

    /// Serves server-streaming `method` ("package.Service/Method") from `topic`.
    pub fn subscribe(self, method: impl Into<String>, topic: impl Into<String>, hook: impl SubscribeHook) -> Self {
        self.add(method, StreamDef::new(topic, StreamKind::Subscribe(Arc::new(hook))))
    }

    /// Serves server-streaming `method` from `topic`, whose records are of several types:
    /// each is delivered in the member of its type of the response message's oneof (see
    /// [`RecordTypes`]; needs [`GatewayConfig::schema_registry`](crate::GatewayConfig::schema_registry)).
    pub fn subscribe_with_types(
        self,
        method: impl Into<String>,
        topic: impl Into<String>,
        hook: impl SubscribeHook,
        types: RecordTypes,
    ) -> Self {
        let def = StreamDef { types: Some(types), ..StreamDef::new(topic, StreamKind::Subscribe(Arc::new(hook))) };
        self.add(method, def)
    }

    /// Declares that the records of `method`'s topic have Confluent-framed protobuf keys
    /// (see [`KeyMessage`]). Every stream of that topic must say so; the gateway refuses to
    /// start otherwise. For a method added before; others are left as they are.
    pub fn key_message(mut self, method: &str, key: KeyMessage) -> Self {
        if let Some(def) = self.methods.get_mut(method) {
            def.key_message = Some(Arc::new(key));
        }
        self
    }

    /// The topics whose keys are framed key messages, with the key's field, checked to be
    /// declared alike by every stream of each.
    pub(crate) fn framed_key_topics(&self) -> Result<std::collections::HashMap<String, u32>, String> {
        let mut methods: Vec<(&String, &StreamDef)> = self.methods.iter().collect();
        methods.sort_unstable_by_key(|(m, _)| *m);
        let mut framed = std::collections::HashMap::new();
        for (method, def) in &methods {
            if let Some(k) = &def.key_message
                && framed.insert(def.topic.clone(), (k.field, method.as_str())).is_some_and(|(f, _)| f != k.field)
            {
                return Err(format!(
                    "the streams of topic {:?} declare key messages with different key fields",
                    def.topic
                ));
            }
        }
        for (method, def) in &methods {
            if def.key_message.is_none()
                && let Some((_, declared)) = framed.get(&def.topic)
            {
                return Err(format!(
                    "the keys of topic {:?} are Confluent-framed key messages (stream {declared} says so), but \
                     stream {method} does not declare a key message: every stream of a topic must agree",
                    def.topic
                ));
            }
        }
        Ok(framed.into_iter().map(|(topic, (field, _))| (topic, field)).collect())
    }

    /// Every schema the registry must know before publishes: (method, topic, schema) for
    /// each publish stream's value schema and key schema.
    pub(crate) fn publish_schemas(&self) -> Vec<(&str, &str, &RegistrySchema)> {
        let mut out = Vec::new();
        for (method, def) in &self.methods {
            if matches!(def.kind, StreamKind::Publish(_)) {
                let key = def.key_message.as_deref().map(|k| &k.schema);
                for schema in def.schema.as_deref().into_iter().chain(key) {
                    out.push((method.as_str(), def.topic.as_str(), schema));
                }
            }
        }
        out.sort_by_key(|(method, _, s)| (*method, s.key));
        out
    }

    /// The publish methods with a Schema Registry schema (of the value or of the key).
    pub(crate) fn with_schema(&self) -> impl Iterator<Item = &str> {
        let mut methods: Vec<&str> = self.publish_schemas().into_iter().map(|(m, _, _)| m).collect();
        methods.dedup();
        methods.into_iter()
    }

    /// The subscribe methods with several record types.
    pub(crate) fn with_record_types(&self) -> impl Iterator<Item = &str> {
        let mut methods: Vec<&str> =
            self.methods.iter().filter(|(_, d)| d.types.is_some()).map(|(m, _)| m.as_str()).collect();
        methods.sort_unstable();
        methods.into_iter()
    }

    /// Serves unary `method` by producing to `topic`.
    pub fn publish(self, method: impl Into<String>, topic: impl Into<String>, hook: impl PublishHook) -> Self {
        self.add(method, StreamDef::new(topic, StreamKind::Publish(Arc::new(hook))))
    }

    /// Serves unary `method` by producing to `topic` in the Confluent wire format with
    /// `schema` (registered on first use in auto-register mode, found at start in the
    /// others: see [`RegistryMode`](crate::RegistryMode); the gateway needs
    /// [`GatewayConfig::schema_registry`](crate::GatewayConfig::schema_registry) to start).
    pub fn publish_with_schema(
        self,
        method: impl Into<String>,
        topic: impl Into<String>,
        hook: impl PublishHook,
        schema: RegistrySchema,
    ) -> Self {
        let def =
            StreamDef { schema: Some(Arc::new(schema)), ..StreamDef::new(topic, StreamKind::Publish(Arc::new(hook))) };
        self.add(method, def)
    }

    fn add(mut self, method: impl Into<String>, def: StreamDef) -> Self {
        self.methods.insert(method.into(), def);
        self
    }

    /// Adds every method of `other`.
    pub fn merge(mut self, other: Streams) -> Streams {
        self.methods.extend(other.methods);
        self
    }

    /// The Schema Registry subject publish `method` registers (or finds) its schema under,
    /// if it has one.
    pub fn schema_subject(&self, method: &str) -> Option<String> {
        let def = self.methods.get(method)?;
        def.schema.as_ref().map(|s| s.subject_for(&def.topic))
    }

    /// The record types of subscribe `method`, if its topic carries several.
    pub fn record_types(&self, method: &str) -> Option<&RecordTypes> {
        self.methods.get(method)?.types.as_ref()
    }

    /// How many methods.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    /// The server-streaming `method` and its hook: `NOT_FOUND` when there is none,
    /// `INVALID_ARGUMENT` when it is a publish method.
    pub(crate) fn subscription(&self, method: &str) -> Result<(&StreamDef, &Arc<dyn SubscribeHook>), Status> {
        let def = self.find(method)?;
        match &def.kind {
            StreamKind::Subscribe(hook) => Ok((def, hook)),
            StreamKind::Publish(_) => Err(Status::invalid_argument(format!("{method:?} is a publish method"))),
        }
    }

    /// The unary `method` and its hook: `NOT_FOUND` when there is none, `INVALID_ARGUMENT`
    /// when it is a subscribe method.
    pub(crate) fn publication(&self, method: &str) -> Result<(&StreamDef, &Arc<dyn PublishHook>), Status> {
        let def = self.find(method)?;
        match &def.kind {
            StreamKind::Publish(hook) => Ok((def, hook)),
            StreamKind::Subscribe(_) => Err(Status::invalid_argument(format!("{method:?} is a subscribe method"))),
        }
    }

    fn find(&self, method: &str) -> Result<&StreamDef, Status> {
        self.methods.get(method).ok_or_else(|| Status::new(Code::NotFound, format!("no stream {method:?}")))
    }
}
