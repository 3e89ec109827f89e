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
                let input = message(pool, &m.input)?;
                let output = message(pool, &m.output)?;
                let stream_rules = rules.get(&m.route).cloned().unwrap_or_default();
                let context = |e: anyhow::Error| e.context(format!("[streams.\"{}\"]", m.route));
                let checks = Checks::new(&input, &stream_rules, m.kind).map_err(context)?;
                let key = m.key.as_ref().map(|k| Key::new(&input, k)).transpose()?;
                let max_request_bytes = stream_rules.max_request_bytes.unwrap_or(max_message_bytes);
                match m.kind {
                    RpcKind::ServerStreaming => {
                        if stream_rules.max_publishes_per_second.is_some() {
                            bail!("[streams.\"{}\"]: max_publishes_per_second is for publish streams", m.route);
                        }
                        let filter = match &stream_rules.filter {
                            None => None,
                            Some(_) if m.record_types.is_some() => bail!(
                                "[streams.\"{}\"]: a filter on a stream of several record types is not supported",
                                m.route
                            ),
                            Some(f) => Some(RecordFilter::new(&input, &output, f).map_err(context)?),
                        };
                        let hook = DynSubscribe { input, key, checks, filter, max_request_bytes };
                        streams = match &m.record_types {
                            Some(types) => streams.subscribe_with_types(&m.route, &m.topic, hook, record_types(types)),
                            None => streams.subscribe(&m.route, &m.topic, hook),
                        };
                    }
                    RpcKind::Unary => {
                        if stream_rules.filter.is_some() {
                            bail!("[streams.\"{}\"]: a filter is for subscribe streams", m.route);
                        }
                        let rate = stream_rules.max_publishes_per_second.map(|r| Arc::new(RateLimits::new(r)));
                        let hook =
                            DynPublish { input, key, checks, unknown: m.unknown_fields, max_request_bytes, rate };
                        streams = match &m.schema {
                            Some(schema) => {
                                streams.publish_with_schema(&m.route, &m.topic, hook, registry_schema(schema))
                            }
                            None => streams.publish(&m.route, &m.topic, hook),
                        };
                    }
                }
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
                let (output, field) = (f.output.clone(), f.record_field.clone());
                plan = plan.filter(move |record: &RecordView<'_>| {
                    DynamicMessage::decode(output.clone(), record.payload)
                        .is_ok_and(|r| r.get_field(&field).as_ref() == &wanted)
                });
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
