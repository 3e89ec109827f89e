//! The streams of a config: the `(kafkasocks.stream)` methods of its .proto files (read by
//! the generator's own loader, so the binary and `kafkasocks-gen` agree on every option),
//! served with hooks that handle the messages through their descriptors (prost-reflect):
//! the key fields, the declarative rules of `[streams."…"]`, filters, unknown fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use kafkasocks::{
    BoxFuture, KeyMessage, OtherTypes, OutgoingRecord, PublishHook, RecordTypes, RecordView, RegistrySchema,
    RequestContext, SchemaReference, Status, Streams, SubjectNameStrategy, SubscribeHook, SubscriptionPlan,
};
use kafkasocks_build::model::{self, KeyType, Model, RpcKind, Subject, UnknownFields};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use crate::settings::{FieldRule, Loaded, StreamRules};

/// The served methods, for the start-up log and `config check`.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) route: String,
    pub(crate) topic: String,
    pub(crate) kind: &'static str,
}

/// Loads the .proto files (or descriptor set) of `loaded` and builds the streams.
pub(crate) fn build(loaded: &Loaded) -> anyhow::Result<(Streams, Vec<Served>)> {
    let proto = &loaded.settings.proto;
    let mut builder = kafkasocks_build::configure().emit_rerun_if_changed(false);
    for service in &proto.services {
        builder = builder.service(service.clone());
    }
    let files: Vec<std::path::PathBuf> = match &proto.descriptor_set {
        Some(set) => {
            builder = builder.file_descriptor_set(loaded.path(set));
            // Proto names inside the set, not paths.
            proto.files.clone()
        }
        None => {
            if proto.files.is_empty() {
                bail!("[proto] names no files: give `files` (.proto paths) or a `descriptor_set`");
            }
            builder = builder.includes(proto.includes.iter().map(|i| loaded.path(i)));
            proto.files.iter().map(|f| loaded.path(f)).collect()
        }
    };
    let (model, descriptors) = builder.model_with_descriptors(&files).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool = DescriptorPool::decode(descriptors.as_slice()).context("reading the descriptors back")?;
    streams_from(&model, &pool, &loaded.settings.streams, loaded.settings.limits.max_message_bytes)
}

fn streams_from(
    model: &Model,
    pool: &DescriptorPool,
    rules: &BTreeMap<String, StreamRules>,
    max_message_bytes: usize,
) -> anyhow::Result<(Streams, Vec<Served>)> {
    let mut streams = Streams::new();
    let mut served = Vec::new();
    for file in model.files.iter().filter(|f| f.requested) {
        for service in &file.services {
            for m in &service.methods {
                let stream_rules = rules.get(&m.route).cloned().unwrap_or_default();
                streams = match hook(pool, m, &stream_rules, max_message_bytes)
                    .map_err(|e| e.context(format!("[streams.\"{}\"]", m.route)))?
                {
                    Hook::Subscribe(hook) => match &m.record_types {
                        Some(types) => streams.subscribe_with_types(&m.route, &m.topic, hook, record_types(types)),
                        None => streams.subscribe(&m.route, &m.topic, hook),
                    },
                    Hook::Publish(hook) => match &m.schema {
                        Some(schema) => streams.publish_with_schema(&m.route, &m.topic, hook, registry_schema(schema)),
                        None => streams.publish(&m.route, &m.topic, hook),
                    },
                };
                if let Some(k) = &m.key_message {
                    streams = streams.key_message(&m.route, KeyMessage::new(registry_schema(&k.schema), k.field));
                }
                served.push(Served {
                    route: m.route.clone(),
                    topic: m.topic.clone(),
                    kind: match m.kind {
                        RpcKind::ServerStreaming => "subscribe",
                        RpcKind::Unary => "publish",
                    },
                });
            }
        }
    }
    if served.is_empty() {
        bail!("the .proto files of [proto] have no method with a (kafkasocks.stream) option");
    }
    for route in rules.keys() {
        if !served.iter().any(|s| &s.route == route) {
            let known: Vec<&str> = served.iter().map(|s| s.route.as_str()).collect();
            bail!("[streams.\"{route}\"]: no such stream method (served: {})", known.join(", "));
        }
    }
    Ok((streams, served))
}

/// The hook of one method.
enum Hook {
    Subscribe(DynSubscribe),
    Publish(DynPublish),
}

/// The hook of method `m` under its rules, checked against its messages.
fn hook(
    pool: &DescriptorPool,
    m: &model::Method,
    rules: &StreamRules,
    max_message_bytes: usize,
) -> anyhow::Result<Hook> {
    let input = message(pool, &m.input)?;
    let output = message(pool, &m.output)?;
    let checks = Checks::new(&input, rules, m.kind)?;
    let key = m.key.as_ref().map(|k| Key::new(&input, k)).transpose()?;
    let max_request_bytes = rules.max_request_bytes.unwrap_or(max_message_bytes);
    Ok(match m.kind {
        RpcKind::ServerStreaming => {
            if rules.max_publishes_per_second.is_some() {
                bail!("max_publishes_per_second is for publish streams");
            }
            let filter = match &rules.filter {
                None => None,
                Some(_) if m.record_types.is_some() => {
                    bail!("a filter on a stream of several record types is not supported")
                }
                Some(f) => Some(RecordFilter::new(&input, &output, f)?),
            };
            Hook::Subscribe(DynSubscribe { input, key, checks, filter, max_request_bytes })
        }
        RpcKind::Unary => {
            if rules.filter.is_some() {
                bail!("a filter is for subscribe streams");
            }
            let rate = rules.max_publishes_per_second.map(|r| Arc::new(RateLimits::new(r)));
            Hook::Publish(DynPublish { input, key, checks, unknown: m.unknown_fields, max_request_bytes, rate })
        }
    })
}

fn message(pool: &DescriptorPool, name: &str) -> anyhow::Result<MessageDescriptor> {
    pool.get_message_by_name(name).with_context(|| format!("message {name} is not in the descriptors"))
}

fn registry_schema(s: &model::RegistrySchema) -> RegistrySchema {
    let mut schema = RegistrySchema::protobuf(&s.record, &s.schema, s.message_indexes.clone());
    schema = match &s.subject {
        Subject::TopicName => schema,
        Subject::RecordName => schema.subject_name_strategy(SubjectNameStrategy::RecordName),
        Subject::TopicRecordName => schema.subject_name_strategy(SubjectNameStrategy::TopicRecordName),
        Subject::Named(name) => schema.subject(name),
    };
    s.references.iter().fold(schema, |schema, r| schema.reference(reference(r)))
}

fn reference(r: &model::SchemaReference) -> SchemaReference {
    r.references.iter().fold(SchemaReference::new(&r.name, &r.name, &r.schema), |s, r| s.reference(reference(r)))
}

fn record_types(t: &model::RecordTypes) -> RecordTypes {
    let types = t.members.iter().fold(RecordTypes::new(), |types, (name, field)| types.member(name, *field));
    if t.skip_others { types.others(OtherTypes::Skip) } else { types }
}

/// The key field of a request, as the generated code reads it.
#[derive(Debug, Clone)]
struct Key {
    field: FieldDescriptor,
    ty: KeyType,
    optional: bool,
}

impl Key {
    fn new(input: &MessageDescriptor, k: &model::KeyField) -> anyhow::Result<Key> {
        let field =
            input.get_field(k.number).with_context(|| format!("key field {} of {}", k.name, input.full_name()))?;
        Ok(Key { field, ty: k.ty, optional: k.optional })
    }

    /// The Kafka key: strings and bytes as they are (empty: none), integers as decimal text.
    fn of(&self, m: &DynamicMessage) -> Option<Bytes> {
        if self.optional && !m.has_field(&self.field) {
            return None;
        }
        let value = m.get_field(&self.field);
        match (self.ty, value.as_ref()) {
            (KeyType::String, Value::String(s)) => (!s.is_empty()).then(|| Bytes::copy_from_slice(s.as_bytes())),
            (KeyType::Bytes, Value::Bytes(b)) => (!b.is_empty()).then(|| b.clone()),
            (KeyType::Integer(_), v) => integer(v).map(|i| Bytes::from(i.to_string())),
            _ => None,
        }
    }
}

fn integer(v: &Value) -> Option<i128> {
    match v {
        Value::I32(i) => Some(i128::from(*i)),
        Value::I64(i) => Some(i128::from(*i)),
        Value::U32(i) => Some(i128::from(*i)),
        Value::U64(i) => Some(i128::from(*i)),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        // Integer bounds compared as f64: exact up to 2^53, enough for configured bounds.
        other => integer(other).map(|i| i as f64),
    }
}

fn decode(desc: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| Status::invalid_argument(format!("request does not decode as {}: {e}", desc.full_name())))
}

/// A compiled [`FieldRule`].
#[derive(Debug, Clone)]
struct FieldCheck {
    field: FieldDescriptor,
    rule: FieldRule,
    pattern: Option<regex::Regex>,
}

/// The rules of one stream, checked against its request message at start.
#[derive(Debug, Clone, Default)]
struct Checks {
    fields: Vec<FieldCheck>,
}

impl Checks {
    fn new(input: &MessageDescriptor, rules: &StreamRules, kind: RpcKind) -> anyhow::Result<Checks> {
        let mut fields = Vec::new();
        for (name, rule) in &rules.fields {
            let field = input
                .get_field_by_name(name)
                .with_context(|| format!("fields.{name}: {} has no field {name:?}", input.full_name()))?;
            let at = |what: &str| format!("fields.{name}: {what}");
            if field.is_list() || field.is_map() {
                bail!(at("rules apply to singular fields only"));
            }
            let kind_of = field.kind();
            let is_string = matches!(kind_of, Kind::String);
            let is_int = matches!(
                kind_of,
                Kind::Int32
                    | Kind::Int64
                    | Kind::Uint32
                    | Kind::Uint64
                    | Kind::Sint32
                    | Kind::Sint64
                    | Kind::Fixed32
                    | Kind::Fixed64
                    | Kind::Sfixed32
                    | Kind::Sfixed64
            );
            let is_number = is_int || matches!(kind_of, Kind::Float | Kind::Double);
            let string_rules = rule.trim
                || rule.min_chars.is_some()
                || rule.max_chars.is_some()
                || rule.pattern.is_some()
                || !rule.one_of.is_empty();
            if string_rules && !is_string {
                bail!(at("trim, min_chars, max_chars, pattern and one_of are for string fields"));
            }
            if (rule.min.is_some() || rule.max.is_some()) && !is_number {
                bail!(at("min and max are for number fields"));
            }
            if rule.from_claim.is_some() || rule.default_now_ms {
                if kind != RpcKind::Unary {
                    bail!(at("from_claim and default_now_ms change what is produced: publish streams only"));
                }
                if rule.from_claim.is_some() && !is_string {
                    bail!(at("from_claim sets string fields"));
                }
                if rule.default_now_ms
                    && !matches!(kind_of, Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64)
                {
                    bail!(at("default_now_ms sets 64-bit integer fields"));
                }
            }
            let pattern = match &rule.pattern {
                // Anchored: the whole value must match.
                Some(p) => {
                    Some(regex::Regex::new(&format!("^(?:{p})$")).with_context(|| at("pattern is not a valid regex"))?)
                }
                None => None,
            };
            fields.push(FieldCheck { field, rule: rule.clone(), pattern });
        }
        Ok(Checks { fields })
    }

    /// Applies the changes (claims, clock, trim), then the checks, in field order.
    fn apply(&self, ctx: &RequestContext, m: &mut DynamicMessage) -> Result<(), Status> {
        for check in &self.fields {
            let rule = &check.rule;
            let field = &check.field;
            if let Some(claim) = &rule.from_claim {
                let value = claim_text(ctx, claim).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "the token has no {claim:?} claim, which {} comes from",
                        field.name()
                    ))
                })?;
                m.set_field(field, Value::String(value));
            }
            if rule.default_now_ms && (!m.has_field(field) || is_zero(&m.get_field(field))) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let value = match field.kind() {
                    Kind::Uint64 | Kind::Fixed64 => Value::U64(now as u64),
                    _ => Value::I64(now),
                };
                m.set_field(field, value);
            }
            if rule.trim
                && let Value::String(s) = m.get_field(field).as_ref()
            {
                let trimmed = s.trim().to_owned();
                if trimmed.len() != s.len() {
                    m.set_field(field, Value::String(trimmed));
                }
            }
            let fail = |default: String| Status::invalid_argument(rule.message.clone().unwrap_or(default));
            let value = m.get_field(field);
            let name = field.name();
            if rule.required && (is_zero(&value) || (field.supports_presence() && !m.has_field(field))) {
                return Err(fail(format!("{name} is required")));
            }
            if let Value::String(s) = value.as_ref() {
                let chars = s.chars().count();
                if let Some(min) = rule.min_chars
                    && chars < min
                {
                    return Err(fail(format!("{name} has fewer than {min} characters")));
                }
                if let Some(max) = rule.max_chars
                    && chars > max
                {
                    return Err(fail(format!("{name} has more than {max} characters")));
                }
                // An unset optional string is not checked against the pattern.
                let set = !s.is_empty() || rule.required;
                if let Some(p) = &check.pattern
                    && set
                    && !p.is_match(s)
                {
                    return Err(fail(format!("{name} does not match {}", rule.pattern.as_deref().unwrap_or(""))));
                }
                if !rule.one_of.is_empty() && set && !rule.one_of.iter().any(|o| o == s) {
                    return Err(fail(format!("{name} must be one of {}", rule.one_of.join(", "))));
                }
            }
            if let Some(n) = number(&value) {
                if let Some(min) = rule.min
                    && n < min
                {
                    return Err(fail(format!("{name} is below {min}")));
                }
                if let Some(max) = rule.max
                    && n > max
                {
                    return Err(fail(format!("{name} is above {max}")));
                }
            }
        }
        Ok(())
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::Bool(b) => !b,
        Value::EnumNumber(n) => *n == 0,
        other => number(other) == Some(0.0),
    }
}

/// A claim as text: `sub` is the principal's subject; other claims by path, strings as
/// they are and numbers and booleans as JSON writes them.
fn claim_text(ctx: &RequestContext, claim: &str) -> Option<String> {
    let principal = &ctx.principal;
    let value = if claim == "sub" {
        (!principal.is_anonymous()).then(|| principal.subject().to_owned())
    } else {
        let claims = principal.claims();
        claims
            .str(claim)
            .map(str::to_owned)
            .or_else(|| claims.json(claim).filter(|j| !j.starts_with('{') && !j.starts_with('[') && j != "null"))
    };
    value.filter(|v| !v.is_empty())
}

/// A subscription filter: the record's field equals the request's.
#[derive(Debug, Clone)]
struct RecordFilter {
    output: MessageDescriptor,
    record_field: FieldDescriptor,
    request_field: FieldDescriptor,
}

impl RecordFilter {
    fn new(
        input: &MessageDescriptor,
        output: &MessageDescriptor,
        f: &crate::settings::Filter,
    ) -> anyhow::Result<RecordFilter> {
        let record_field = output
            .get_field_by_name(&f.record_field)
            .with_context(|| format!("filter: {} has no field {:?}", output.full_name(), f.record_field))?;
        let request_field = input
            .get_field_by_name(&f.request_field)
            .with_context(|| format!("filter: {} has no field {:?}", input.full_name(), f.request_field))?;
        if record_field.kind() != request_field.kind() || record_field.is_list() || request_field.is_list() {
            bail!("filter: {} and {} are not of the same singular type", f.record_field, f.request_field);
        }
        Ok(RecordFilter { output: output.clone(), record_field, request_field })
    }

    /// Whether a record (its value) has `wanted` in the record field; one that does not
    /// decode does not match.
    fn matches(&self, wanted: &Value, payload: &[u8]) -> bool {
        DynamicMessage::decode(self.output.clone(), payload)
            .is_ok_and(|r| r.get_field(&self.record_field).as_ref() == wanted)
    }
}

struct DynSubscribe {
    input: MessageDescriptor,
    key: Option<Key>,
    checks: Checks,
    filter: Option<RecordFilter>,
    max_request_bytes: usize,
}

impl SubscribeHook for DynSubscribe {
    fn plan(&self, ctx: &RequestContext, request: Bytes) -> BoxFuture<Result<SubscriptionPlan, Status>> {
        let plan = (|| {
            if request.len() > self.max_request_bytes {
                return Err(Status::invalid_argument(format!(
                    "the request has {} bytes; this stream takes at most {}",
                    request.len(),
                    self.max_request_bytes
                )));
            }
            let mut m = decode(&self.input, &request)?;
            self.checks.apply(ctx, &mut m)?;
            let mut plan = match self.key.as_ref().and_then(|k| k.of(&m)) {
                Some(key) => SubscriptionPlan::key(key),
                None => SubscriptionPlan::all(),
            };
            if let Some(f) = &self.filter
                && !is_zero(&m.get_field(&f.request_field))
            {
                let wanted = m.get_field(&f.request_field).into_owned();
                let f = f.clone();
                plan = plan.filter(move |record: &RecordView<'_>| f.matches(&wanted, record.payload));
            }
            Ok(plan)
        })();
        Box::pin(std::future::ready(plan))
    }
}

struct DynPublish {
    input: MessageDescriptor,
    key: Option<Key>,
    checks: Checks,
    unknown: UnknownFields,
    max_request_bytes: usize,
    rate: Option<Arc<RateLimits>>,
}

impl PublishHook for DynPublish {
    fn prepare(&self, ctx: &RequestContext, payload: Bytes) -> BoxFuture<Result<OutgoingRecord, Status>> {
        let record = (|| {
            if payload.len() > self.max_request_bytes {
                return Err(Status::invalid_argument(format!(
                    "the request has {} bytes; this stream takes at most {}",
                    payload.len(),
                    self.max_request_bytes
                )));
            }
            if let Some(rate) = &self.rate {
                rate.take(&ctx.principal_key())?;
            }
            let original = decode(&self.input, &payload)?;
            let mut m = original.clone();
            if self.unknown != UnknownFields::Keep {
                let had_unknown = drop_unknown(&mut m);
                if self.unknown == UnknownFields::Reject && (had_unknown || m.encoded_len() != payload.len()) {
                    return Err(Status::invalid_argument(format!(
                        "the request has fields {} does not declare (or is not encoded canonically); this stream \
                         refuses them",
                        self.input.full_name()
                    )));
                }
            }
            self.checks.apply(ctx, &mut m)?;
            let key = self.key.as_ref().and_then(|k| k.of(&m));
            let produced = if self.unknown == UnknownFields::Keep && m == original {
                payload.clone()
            } else {
                Bytes::from(m.encode_to_vec())
            };
            Ok(OutgoingRecord { key, payload: produced, headers: Vec::new() })
        })();
        Box::pin(std::future::ready(record))
    }
}

/// Removes unknown fields at every depth; true when there were any.
fn drop_unknown(m: &mut DynamicMessage) -> bool {
    let mut had = m.take_unknown_fields().count() > 0;
    for (_, value) in m.fields_mut() {
        had |= drop_unknown_value(value);
    }
    had
}

fn drop_unknown_value(v: &mut Value) -> bool {
    match v {
        Value::Message(m) => drop_unknown(m),
        Value::List(items) => items.iter_mut().fold(false, |had, i| drop_unknown_value(i) | had),
        Value::Map(entries) => entries.values_mut().fold(false, |had, i| drop_unknown_value(i) | had),
        _ => false,
    }
}

/// Whose budget a request spends.
trait PrincipalKey {
    fn principal_key(&self) -> String;
}

impl PrincipalKey for RequestContext {
    fn principal_key(&self) -> String {
        if self.principal.is_anonymous() {
            format!("ip:{}", self.client_ip.map(|ip| ip.to_string()).unwrap_or_default())
        } else {
            format!("sub:{}", self.principal.subject())
        }
    }
}

/// Most principals whose per-stream budget is tracked; when full, idle ones are dropped
/// (a full bucket carries no state worth keeping).
const MAX_TRACKED: usize = 100_000;

/// Token buckets per principal for one stream's `max_publishes_per_second`.
struct RateLimits {
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimits {
    fn new(per_second: u32) -> RateLimits {
        RateLimits { per_second: f64::from(per_second.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    fn take(&self, who: &str) -> Result<(), Status> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(who) {
            let per_second = self.per_second;
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < per_second);
            if buckets.len() >= MAX_TRACKED {
                return Err(Status::new(
                    kafkasocks::Code::ResourceExhausted,
                    "too many publishers on this stream; retry later",
                ));
            }
        }
        let (tokens, at) = buckets.entry(who.to_owned()).or_insert((self.per_second, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.per_second);
        *at = now;
        if *tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - *tokens) / self.per_second);
            // With retry_after, clients wait and send again (the TS client does on its own).
            return Err(Status::new(
                kafkasocks::Code::ResourceExhausted,
                format!("this stream takes {} publishes per second from one principal", self.per_second),
            )
            .with_retry_after(wait.max(Duration::from_millis(1))));
        }
        *tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafkasocks::{Code, Principal};

    /// The model and descriptors of the generator's test protos and the chat's.
    fn load(file: &str) -> (Model, DescriptorPool) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (model, bytes) = kafkasocks_build::configure()
            .emit_rerun_if_changed(false)
            .include(root.join("codegen/tests/protos"))
            .include(root.join("proto"))
            .model_with_descriptors(&[root.join(file)])
            .expect("the test protos load");
        (model, DescriptorPool::decode(bytes.as_slice()).expect("descriptors"))
    }

    fn method<'m>(model: &'m Model, route: &str) -> &'m model::Method {
        model
            .files
            .iter()
            .flat_map(|f| &f.services)
            .flat_map(|s| &s.methods)
            .find(|m| m.route == route)
            .expect("the method")
    }

    fn rules(toml_text: &str) -> StreamRules {
        toml::from_str(toml_text).expect("rules")
    }

    fn publish(pool: &DescriptorPool, m: &model::Method, r: &StreamRules) -> DynPublish {
        match hook(pool, m, r, 1 << 20).expect("hook") {
            Hook::Publish(p) => p,
            Hook::Subscribe(_) => panic!("a publish method"),
        }
    }

    fn encode(pool: &DescriptorPool, name: &str, fields: &[(&str, Value)]) -> Bytes {
        let mut m = DynamicMessage::new(pool.get_message_by_name(name).expect("message"));
        for (field, value) in fields {
            m.set_field_by_name(field, value.clone());
        }
        Bytes::from(m.encode_to_vec())
    }

    fn run<T>(f: BoxFuture<T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    fn ctx(principal: Principal) -> RequestContext {
        RequestContext::new(principal, "test")
    }

    #[test]
    fn the_chats_rules_set_the_author_stamp_the_time_and_refuse_bad_text() {
        let (model, pool) = load("proto/chat/v1/chat.proto");
        let m = method(&model, "chat.v1.ChatStreams/Post");
        let hook = publish(
            &pool,
            m,
            &rules(
                "[fields.user]\nfrom_claim = \"sub\"\n[fields.text]\ntrim = true\nrequired = true\nmax_chars = 5\n\
                 [fields.sent_at_ms]\ndefault_now_ms = true\n[fields.room]\npattern = '[a-z]+'\n",
            ),
        );
        let ada = || ctx(Principal::new("ada"));
        let post = |room: &str, user: &str, text: &str| {
            encode(
                &pool,
                "chat.v1.ChatMessage",
                &[
                    ("room", Value::String(room.into())),
                    ("user", Value::String(user.into())),
                    ("text", Value::String(text.into())),
                ],
            )
        };
        let record = run(hook.prepare(&ada(), post("lobby", "mallory", "  hi "))).expect("accepted");
        assert_eq!(record.key.as_deref(), Some(&b"lobby"[..]));
        let m = DynamicMessage::decode(pool.get_message_by_name("chat.v1.ChatMessage").expect("m"), record.payload)
            .expect("decodes");
        assert_eq!(m.get_field_by_name("user").expect("user").as_str(), Some("ada"));
        assert_eq!(m.get_field_by_name("text").expect("text").as_str(), Some("hi"));
        assert!(m.get_field_by_name("sent_at_ms").and_then(|v| v.as_i64()).is_some_and(|t| t > 1_600_000_000_000));
        for (room, text, why) in
            [("lobby", "   ", "required"), ("lobby", "toolong", "more than 5"), ("Lobby!", "hi", "match")]
        {
            let err = run(hook.prepare(&ada(), post(room, "x", text))).expect_err(why);
            assert_eq!(err.code(), Code::InvalidArgument, "{why}");
            assert!(err.message().contains(why), "{why}: {}", err.message());
        }
        let anonymous = run(hook.prepare(&ctx(Principal::anonymous()), post("lobby", "x", "hi"))).expect_err("no sub");
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        let garbage = run(hook.prepare(&ada(), Bytes::from_static(&[0xff, 0xff, 0xff]))).expect_err("garbage");
        assert_eq!(garbage.code(), Code::InvalidArgument);
    }

    #[test]
    fn unknown_fields_are_dropped_refused_or_kept_as_the_stream_says_and_integer_keys_are_decimal() {
        let (model, pool) = load("codegen/tests/protos/every/v1/every.proto");
        let reading = |extra: bool| {
            let mut bytes =
                encode(&pool, "every.v1.Reading", &[("sensor_id", Value::I64(-42)), ("value", Value::F64(1.5))])
                    .to_vec();
            if extra {
                // Field 99, varint 7: not declared by Reading.
                bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
            }
            Bytes::from(bytes)
        };
        let none = StreamRules::default();
        let ada = ctx(Principal::new("ada"));
        let drop = publish(&pool, method(&model, "every.v1.Sensors/Record"), &none);
        let dropped = run(drop.prepare(&ada, reading(true))).expect("dropped");
        assert_eq!(dropped.payload, reading(false), "what reaches Kafka is the declared type");
        assert_eq!(dropped.key.as_deref(), Some(&b"-42"[..]));
        let strict = publish(&pool, method(&model, "every.v1.Sensors/RecordStrict"), &none);
        assert_eq!(run(strict.prepare(&ada, reading(true))).expect_err("refused").code(), Code::InvalidArgument);
        assert!(run(strict.prepare(&ada, reading(false))).is_ok());
        let keep = publish(&pool, method(&model, "every.v1.Sensors/RecordRaw"), &none);
        assert_eq!(run(keep.prepare(&ada, reading(true))).expect("kept").payload, reading(true));
        // Per-stream bounds: size, and publishes per second per principal.
        let small = publish(
            &pool,
            method(&model, "every.v1.Sensors/Record"),
            &rules("max_request_bytes = 4\nmax_publishes_per_second = 2\n"),
        );
        assert_eq!(run(small.prepare(&ada, reading(false))).expect_err("too big").code(), Code::InvalidArgument);
        let limited =
            publish(&pool, method(&model, "every.v1.Sensors/Record"), &rules("max_publishes_per_second = 2\n"));
        assert!(run(limited.prepare(&ada, reading(false))).is_ok());
        assert!(run(limited.prepare(&ada, reading(false))).is_ok());
        let third = run(limited.prepare(&ada, reading(false))).expect_err("over the limit");
        assert_eq!(third.code(), Code::ResourceExhausted);
        assert!(third.retry_after().is_some(), "the client is told when to retry");
        assert!(run(limited.prepare(&ctx(Principal::new("bob")), reading(false))).is_ok(), "per principal");
    }

    #[test]
    fn rules_that_do_not_fit_the_message_are_refused_at_start() {
        let (model, pool) = load("proto/chat/v1/chat.proto");
        let post = method(&model, "chat.v1.ChatStreams/Post");
        let messages = method(&model, "chat.v1.ChatStreams/Messages");
        for (m, text, why) in [
            (post, "[fields.nope]\nrequired = true\n", "no field"),
            (post, "[fields.sent_at_ms]\npattern = 'x'\n", "string fields"),
            (post, "[fields.text]\nmin = 1.0\n", "number fields"),
            (post, "[fields.room]\npattern = '('\n", "not a valid regex"),
            (post, "[fields.text]\ndefault_now_ms = true\n", "64-bit"),
            (messages, "[fields.room]\nfrom_claim = \"sub\"\n", "publish streams only"),
            (messages, "max_publishes_per_second = 3\n", "publish streams"),
            (post, "[filter]\nrecord_field = \"user\"\nrequest_field = \"user\"\n", "subscribe streams"),
            (messages, "[filter]\nrecord_field = \"sent_at_ms\"\nrequest_field = \"room\"\n", "same singular type"),
        ] {
            let err = hook(&pool, m, &rules(text), 1 << 20).err().unwrap_or_else(|| panic!("{text} accepted"));
            assert!(format!("{err:#}").contains(why), "{text}: {err:#}");
        }
        let mut unknown = BTreeMap::new();
        unknown.insert("chat.v1.ChatStreams/Nope".to_owned(), StreamRules::default());
        let err = streams_from(&model, &pool, &unknown, 1 << 20).expect_err("unknown stream");
        assert!(err.to_string().contains("no such stream method"), "{err}");
    }

    #[test]
    fn a_filter_delivers_only_matching_records() {
        let (model, pool) = load("proto/chat/v1/chat.proto");
        let m = method(&model, "chat.v1.ChatStreams/Messages");
        let input = pool.get_message_by_name("chat.v1.RoomFilter").expect("input");
        let output = pool.get_message_by_name("chat.v1.ChatMessage").expect("output");
        let f = crate::settings::Filter { record_field: "user".into(), request_field: "room".into() };
        let filter = RecordFilter::new(&input, &output, &f).expect("string fields both");
        let by = |user: &str| encode(&pool, "chat.v1.ChatMessage", &[("user", Value::String(user.into()))]);
        let ada = Value::String("ada".into());
        assert!(filter.matches(&ada, &by("ada")));
        assert!(!filter.matches(&ada, &by("bob")));
        assert!(!filter.matches(&ada, &[0xff, 0xff]), "a record that does not decode is not delivered");
        let Hook::Subscribe(hook) =
            hook(&pool, m, &rules("[filter]\nrecord_field = \"user\"\nrequest_field = \"room\"\n"), 1 << 20)
                .expect("hook")
        else {
            panic!("a subscribe method")
        };
        let request = encode(&pool, "chat.v1.RoomFilter", &[("room", Value::String("lobby".into()))]);
        let plan = run(hook.plan(&ctx(Principal::new("ada")), request)).expect("plan");
        assert!(format!("{plan:?}").contains("filter: true"), "{plan:?}");
        let unfiltered = run(hook.plan(&ctx(Principal::new("ada")), Bytes::new())).expect("plan");
        assert!(format!("{unfiltered:?}").contains("filter: false"), "an unset request field filters nothing");
    }
}
