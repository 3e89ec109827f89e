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
use crate::auth::Principal;
use crate::fanout::outbox::{Item, Outbox};
use crate::fanout::subscriber::SubscriberSpec;
use crate::fanout::subscription::{Opening, SubscriptionHandle};
use crate::protocol::wire::{self, frame::Kind};
use crate::protocol::{Delivery, Receipt, StartAt, Status};
use crate::stream::RequestContext;

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

fn context(principal: Principal, method: &str) -> RequestContext {
    RequestContext {
        principal,
        session_id: format!("local-{:08x}", rand::random::<u32>()),
        remote_addr: None,
        method: method.to_owned(),
    }
}

impl LocalStreams {
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
        let (def, hook) = self.shared.streams.subscription(method)?;
        let plan = hook.plan(&context(principal, method), Bytes::copy_from_slice(request)).await?;
        let limits = &self.shared.limits;
        let outbox = Outbox::new(limits.send_queue_bytes, limits.send_queue_frames);
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
        let state = (handle, outbox, VecDeque::<Item>::new(), 0u32, false);
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            move |(guard, outbox, mut items, mut taken, done)| async move {
                if done {
                    return None;
                }
                loop {
                    while let Some(item) = items.pop_front() {
                        match item {
                            Item::Record(_, rec) => {
                                taken += 1;
                                if taken >= refill {
                                    guard.add_credit(taken);
                                    taken = 0;
                                }
                                let Ok(r) = wire::Record::decode(&rec.encoded[record_body(&rec.encoded)..]) else {
                                    continue;
                                };
                                return Some((Ok(Delivery::from(r)), (guard, outbox, items, taken, false)));
                            }
                            Item::Frame(b) => {
                                if let Ok(wire::Frame { kind: Some(Kind::Error(e)) }) = wire::Frame::decode(b) {
                                    return Some((Err(Status::from_wire(&e)), (guard, outbox, items, taken, true)));
                                }
                            }
                            Item::Close(..) => return None,
                        }
                    }
                    items = outbox.take().await;
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
        let (def, hook) = self.shared.streams.publication(method)?;
        let req = PublishRequest {
            ctx: context(principal, method),
            topic: &def.topic,
            hook: hook.clone(),
            schema: def.schema.as_ref(),
            publish: wire::Publish { id: 0, method: method.to_owned(), payload, idempotency_key },
        };
        publish(&self.shared, req).await
    }
}

/// Where the Record message starts inside `0x12 len Record`.
fn record_body(encoded: &[u8]) -> usize {
    1 + encoded[1..].iter().take_while(|b| **b >= 0x80).count() + 1
}
