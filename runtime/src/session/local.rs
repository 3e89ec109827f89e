//! In-process access to the streams a gateway serves, sharing its Kafka readers: what
//! the generated tonic services call, so gRPC clients and WebSocket clients are fed by
//! the same live reader per topic.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use prost::Message as _;

use super::publish::{PublishRequest, publish};
use super::shared::Shared;
use crate::auth::{Handshake, Operation, Principal};
use crate::fanout::outbox::{Item, Outbox};
use crate::fanout::subscriber::SubscriberSpec;
use crate::fanout::subscription::{Opening, SubscriptionHandle};
use crate::protocol::wire::{self, frame::Kind};
use crate::protocol::{Delivery, Receipt, StartAt, Status};
use crate::stream::{RequestContext, StreamDef};

/// Records of one in-process subscription; dropping it unsubscribes.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send>>;

/// A gateway's streams, in process. Get one from [`Gateway::local_streams`](crate::Gateway::local_streams).
#[derive(Clone)]
pub struct LocalStreams {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStreams").field("streams", &self.shared.streams).finish()
    }
}

fn context(principal: Principal, method: &str, handshake: Option<&Handshake>) -> RequestContext {
    RequestContext {
        principal,
        session_id: format!("local-{:016x}", rand::random::<u64>()),
        remote_addr: handshake.and_then(Handshake::peer),
        client_ip: handshake.and_then(Handshake::client_ip),
        method: method.to_owned(),
        instance_id: None,
    }
}

/// A subscribe hook's plan, then the key pins of the principal's permissions on it and,
/// for a stream of several record types, how its records are typed.
pub(crate) fn stream_plan(
    shared: &Arc<Shared>,
    ctx: &RequestContext,
    def: &StreamDef,
    plan: crate::stream::BoxFuture<Result<crate::stream::SubscriptionPlan, Status>>,
) -> crate::stream::BoxFuture<Result<crate::stream::SubscriptionPlan, Status>> {
    #[cfg(feature = "registry")]
    let typed = match (&def.types, &shared.registry) {
        (Some(types), Some(registry)) => {
            Some(Arc::new(crate::registry::TypedRecords::new(types.clone(), registry.clone())))
        }
        _ => None,
    };
    #[cfg(not(feature = "registry"))]
    let _ = def;
    let pins = shared.permissions.pins(&ctx.method);
    let (shared, principal, method) = (shared.clone(), ctx.principal.clone(), ctx.method.clone());
    Box::pin(async move {
        #[allow(unused_mut)]
        let mut plan = plan.await?;
        if pins {
            shared.permissions.check_key(&principal, &method, plan.key.as_deref())?;
        }

        #[cfg(feature = "registry")]
        {
            plan.typed = typed;
        }
        Ok(plan)
    })
}

impl LocalStreams {
    /// Checks a bearer token with the gateway's authenticator, as the WebSocket `Hello`
    /// does (within [`Limits::auth_timeout`](crate::Limits::auth_timeout)): what generated
    /// gRPC services call with the `authorization` metadata of each call.
    pub async fn authenticate(&self, token: &str, handshake: &Handshake) -> Result<Principal, Status> {
        self.shared.authenticate(token, handshake).await
    }

    /// The largest request or response message, as for WebSocket messages
    /// ([`Limits::max_message_bytes`](crate::Limits::max_message_bytes)).
    pub fn max_message_bytes(&self) -> usize {
        self.shared.limits.max_message_bytes
    }

    /// The `Bearer` token of an `authorization` header or metadata value (empty when
    /// there is none or it is not a bearer token).
    pub fn bearer_token(authorization: Option<&str>) -> &str {
        authorization
            .and_then(|v| {
                let v = v.trim();
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .unwrap_or("")
    }

    /// Subscribes as `principal` to a server-streaming method, once the stream's subscribe
    /// hook accepted the request (its refusal is this call's error). The stream is paced by
    /// its consumer: credit is returned as records are taken, as a WebSocket client does.
    pub async fn subscribe(
        &self,
        principal: Principal,
        method: &str,
        request: &[u8],
        start: StartAt,
    ) -> Result<RecordStream, Status> {
        self.subscribe_from(principal, None, method, request, start).await
    }

    /// [`LocalStreams::subscribe`] for a request that came through `handshake` (a gRPC
    /// call's peer and metadata).
    pub async fn subscribe_from(
        &self,
        principal: Principal,
        handshake: Option<&Handshake>,
        method: &str,
        request: &[u8],
        start: StartAt,
    ) -> Result<RecordStream, Status> {
        let (def, hook) = self.shared.streams.subscription(method)?;
        let ctx = context(principal, method, handshake);
        self.shared.authorize(&ctx, Operation::Subscribe)?;
        let plan = stream_plan(&self.shared, &ctx, def, hook.plan(&ctx, Bytes::copy_from_slice(request))).await?;
        let limits = &self.shared.limits;
        let outbox = Outbox::new(limits.send_queue_bytes, limits.send_queue_frames, self.shared.send_budget.clone());
        let credit = limits.default_credit;
        let opening = Opening {
            spec: SubscriberSpec { id: 1, credit, max_credit: limits.max_credit },
            topic: def.topic.clone(),
            start,
            plan: Box::pin(std::future::ready(Ok(plan))),
        };
        let span = tracing::debug_span!("local subscription", method = %method, topic = %def.topic);
        let handle = SubscriptionHandle::open(&self.shared.hubs, outbox.clone(), opening, span);
        let refill = (credit / 2).max(1);
        // The queue's items, and the records of the Data frame taken last, still to be given.
        let state = (handle, outbox, VecDeque::<Item>::new(), VecDeque::<Delivery>::new(), 0u32, false);
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            move |(guard, outbox, mut items, mut records, mut taken, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(delivery) = records.pop_front() {
                        taken += 1;
                        if taken >= refill {
                            guard.add_credit(taken);
                            taken = 0;
                        }
                        return Some((Ok(delivery), (guard, outbox, items, records, taken, false)));
                    }
                    while records.is_empty()
                        && let Some(item) = items.pop_front()
                    {
                        match item {
                            Item::Records(_, data) => {
                                // A record that does not decode is not given (it is counted
                                // against the credit all the same).
                                for rec in data.encodings() {
                                    match wire::Record::decode(&rec[record_body(rec)..]) {
                                        Ok(r) => records.push_back(Delivery::from(r)),
                                        Err(_) => taken += 1,
                                    }
                                }
                            }
                            Item::Frame(b) => {
                                if let Ok(wire::Frame { kind: Some(Kind::Error(e)) }) = wire::Frame::decode(b) {
                                    return Some((
                                        Err(Status::from_wire(&e)),
                                        (guard, outbox, items, records, taken, true),
                                    ));
                                }
                            }
                            Item::Close(..) => return None,
                        }
                    }
                    if !records.is_empty() {
                        continue;
                    }
                    let (taken, bytes) = outbox.take().await;
                    // Decoded into deliveries below: their bytes leave the send budget now.
                    outbox.budget().release(bytes);
                    items = taken;
                }
            },
        )))
    }

    /// Publishes as `principal` to a unary method; resolves with the Kafka receipt.
    pub async fn publish(
        &self,
        principal: Principal,
        method: &str,
        payload: Bytes,
        idempotency_key: Bytes,
    ) -> Result<Receipt, Status> {
        self.publish_from(principal, None, method, payload, idempotency_key).await
    }

    /// [`LocalStreams::publish`] for a request that came through `handshake` (a gRPC
    /// call's peer and metadata). The handshake's `traceparent` and `tracestate` headers
    /// (W3C Trace Context; for gRPC, request metadata) are the publish's trace context, as
    /// `Publish.traceparent` and `Publish.tracestate` are a WebSocket publish's
    /// (docs/protocol.md, "Trace context").
    pub async fn publish_from(
        &self,
        principal: Principal,
        handshake: Option<&Handshake>,
        method: &str,
        payload: Bytes,
        idempotency_key: Bytes,
    ) -> Result<Receipt, Status> {
        let (def, hook) = self.shared.streams.publication(method)?;
        if payload.len() > self.shared.limits.max_message_bytes {
            return Err(Status::new(
                crate::protocol::Code::ResourceExhausted,
                format!("message too big: the limit is {} bytes", self.shared.limits.max_message_bytes),
            ));
        }
        let req = PublishRequest {
            ctx: context(principal, method, handshake),
            topic: &def.topic,
            hook: hook.clone(),
            schema: def.schema.as_deref(),
            key_message: def.key_message.as_deref(),
            turn: None,
            admitted: false,
            // Without a traceparent of its own, a publish is traced below the caller's span.
            untraced: super::trace::Untraced::CurrentSpan,
            publish: wire::Publish {
                id: 0,
                method: method.to_owned(),
                payload,
                idempotency_key,
                traceparent: header(handshake, crate::protocol::trace::TRACEPARENT),
                tracestate: header(handshake, crate::protocol::trace::TRACESTATE),
            },
        };
        publish(&self.shared, req).await
    }
}

/// A handshake's header, empty when there is none.
fn header(handshake: Option<&Handshake>, name: &str) -> String {
    handshake.and_then(|h| h.header(name)).unwrap_or_default().to_owned()
}

/// Where the Record message starts inside `0x12 len Record`.
fn record_body(encoded: &[u8]) -> usize {
    1 + encoded[1..].iter().take_while(|b| **b >= 0x80).count() + 1
}
