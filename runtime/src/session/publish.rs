//! One publish, from any session or in process: dedup by idempotency key, the publish
//! hook, Schema Registry framing, the trace context ([`super::trace`]), the produce, and
//! the receipt.

use std::sync::Arc;

use tracing::Instrument as _;

use super::clients::BudgetKey;
use super::dedup::Claim;
use super::order::Turn;
use super::shared::Shared;
use super::trace::{PublishTrace, Untraced, add_trace_headers};
use crate::auth::Operation;
use crate::protocol::wire;
use crate::protocol::{Code, Receipt, Status};
use crate::registry::{KeyMessage, RegistrySchema};
use crate::stream::{PublishHook, RequestContext};

/// What one publish asks for.
pub(crate) struct PublishRequest<'a> {
    pub(crate) ctx: RequestContext,
    pub(crate) topic: &'a str,
    pub(crate) hook: Arc<dyn PublishHook>,
    pub(crate) schema: Option<&'a RegistrySchema>,
    /// The topic's keys are framed protobuf messages of this type.
    pub(crate) key_message: Option<&'a KeyMessage>,
    /// Its place in its connection's order (WebSocket publishes), kept until its record is
    /// queued in the producer.
    pub(crate) turn: Option<Turn>,
    /// [`admit`] said yes already (the WebSocket path admits before its own rate limit).
    pub(crate) admitted: bool,
    /// Where the publish is traced when it brings no trace context of its own.
    pub(crate) untraced: Untraced,
    pub(crate) publish: wire::Publish,
}

/// Checks the principal may publish here and has budget left, produces the publish (or
/// answers it from the dedup window), and counts the outcome.
pub(crate) async fn publish(shared: &Shared, req: PublishRequest<'_>) -> Result<Receipt, Status> {
    let started = std::time::Instant::now();
    let mut trace = PublishTrace::begin(&shared.metrics, &req.publish, req.topic, req.untraced);
    let trace_headers = trace.take_headers();
    let result = async {
        if !req.admitted {
            admit(shared, &req.ctx)?;
        }
        produce(shared, req, trace_headers).await
    }
    .instrument(trace.span().clone())
    .await;
    trace.finish(&result);
    match &result {
        Ok(r) => shared.metrics.published(r.duplicate, started.elapsed()),
        Err(status) => {
            shared.metrics.publish_failed();
            shared.metrics.error(status.code());
        }
    }
    result
}

/// The permission to publish on this stream, and the principal's publish budget (shared
/// by all its connections and its gRPC calls; anonymous clients': per address).
pub(crate) fn admit(shared: &Shared, ctx: &crate::stream::RequestContext) -> Result<(), Status> {
    shared.authorize(ctx, Operation::Publish)?;
    let key = if ctx.principal.is_anonymous() {
        BudgetKey::Anonymous(ctx.client_ip)
    } else {
        BudgetKey::Principal(ctx.principal.subject().to_owned())
    };
    shared.clients.take_publish(key).map_err(|wait| {
        Status::new(Code::ResourceExhausted, "publish rate limit of this principal").with_retry_after(wait)
    })
}

/// `trace_headers`: the record's `traceparent` and `tracestate` ([`PublishTrace`]).
async fn produce(
    shared: &Shared,
    req: PublishRequest<'_>,
    trace_headers: Vec<(String, bytes::Bytes)>,
) -> Result<Receipt, Status> {
    let PublishRequest { ctx, topic, hook, schema, key_message, turn, publish: p, .. } = req;
    let key = (!p.idempotency_key.is_empty()).then(|| (ctx.dedup_scope(), p.method.clone(), p.idempotency_key.clone()));
    let owner = match &key {
        Some(k) => match shared.dedup.claim(k).await? {
            Claim::Done(r) => return Ok(Receipt { duplicate: true, ..r }),
            Claim::Owner(tx) => Some(tx),
        },
        None => None,
    };
    let result = async {
        let mut record = hook.prepare(&ctx, p.payload).await?;
        shared.permissions.check_key(&ctx.principal, &ctx.method, record.key.as_deref())?;
        add_trace_headers(&mut record.headers, trace_headers);
        if let Some(schema) = schema {
            let (id, indexes) = schema_writer(shared, topic, schema).await?;
            record.payload = wire::add_confluent_framing(id, &indexes, &record.payload);
        }
        if let Some(key_message) = key_message {
            let key = record.key.as_deref().unwrap_or_default();
            let (id, indexes) = schema_writer(shared, topic, &key_message.schema).await?;
            record.key = Some(wire::add_confluent_framing(id, &indexes, &key_message.wrap(key)));
        }
        // In the connection's order: every publish read before this one is queued first.
        if let Some(turn) = &turn {
            turn.wait(shared.limits.publish_timeout).await;
        }
        let dedup = key.as_ref().map(dedup_bytes).unwrap_or_default();
        let produced = shared.kafka().enqueue(topic, &record, &p.idempotency_key, &dedup).await;
        drop(turn);
        produced?.receipt(shared.kafka()).await
    }
    .await;
    if let (Some(k), Some(tx)) = (&key, owner) {
        match &result {
            Ok(r) => shared.dedup.complete(k, tx, r.clone()),
            Err(_) => shared.dedup.abandon(k, tx),
        }
    }
    result
}

/// A dedup key as bytes, the same on every node: scope, method and idempotency key, each
/// length-delimited (a field of a protobuf message), so no two keys can run together.
fn dedup_bytes(key: &super::dedup::DedupKey) -> Vec<u8> {
    let (scope, method, idempotency_key) = key;
    let mut out = Vec::with_capacity(scope.len() + method.len() + idempotency_key.len() + 12);
    out.extend_from_slice(&wire::length_delimited(1, scope.as_bytes()));
    out.extend_from_slice(&wire::length_delimited(2, method.as_bytes()));
    out.extend_from_slice(&wire::length_delimited(3, idempotency_key));
    out
}

/// The schema id and message indexes records of `schema` on `topic` are framed with.
#[cfg(feature = "registry")]
async fn schema_writer(shared: &Shared, topic: &str, schema: &RegistrySchema) -> Result<(u32, Vec<i32>), Status> {
    let registry = shared.registry.as_ref().ok_or_else(|| {
        Status::new(Code::FailedPrecondition, "this stream has a schema but the gateway has no schema registry")
    })?;
    registry.writer(topic, schema).await.map(|w| (w.id, w.message_indexes))
}

#[cfg(not(feature = "registry"))]
async fn schema_writer(_shared: &Shared, _topic: &str, _schema: &RegistrySchema) -> Result<(u32, Vec<i32>), Status> {
    Err(Status::new(Code::FailedPrecondition, "this stream has a schema but kafkasocks was built without `registry`"))
}
