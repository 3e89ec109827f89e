//! In-process access to the streams a gateway serves, sharing its Kafka readers: what
//! the generated tonic services call, so gRPC clients and WebSocket clients are fed by
//! the same live reader per topic.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use prost::Message as _;

use crate::client::{Delivery, Receipt, StartAt};
use crate::connection::{Shared, publish};
use crate::outbox::{Item, Outbox};
use crate::stream::StreamKind;
use crate::subscription::{self, Start, SubCore};
use crate::wire::{self, frame::Kind};
use crate::{Code, Principal, RequestContext, Status};

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

struct Guard(Arc<SubCore>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.end();
        if let Some(hub) = self.0.hub.get() {
            hub.detach(&self.0);
        }
        self.0.metrics.subscription_closed();
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
    /// Subscribes as `principal` to a server-streaming method. The stream is paced by
    /// its consumer: credit is returned as records are taken, as a WebSocket client does.
    pub fn subscribe(
        &self,
        principal: Principal,
        method: &str,
        request: &[u8],
        start: StartAt,
    ) -> Result<RecordStream, Status> {
        let def = self
            .shared
            .streams
            .get(method)
            .ok_or_else(|| Status::new(Code::NotFound, format!("no stream {method:?}")))?;
        let StreamKind::Subscribe(hook) = &def.kind else {
            return Err(Status::invalid_argument(format!("{method:?} is a publish method")));
        };
        let plan = hook.plan(&context(principal, method), request)?;
        let limits = &self.shared.limits;
        let outbox = Outbox::new(limits.send_queue_bytes, limits.send_queue_frames);
        let credit = limits.default_credit;
        let core = SubCore::new(
            1,
            "local".into(),
            plan.key,
            plan.filter,
            outbox.clone(),
            self.shared.metrics.clone(),
            credit,
            limits.max_credit,
        );
        let start = match start {
            StartAt::Latest => Start::Latest,
            StartAt::Earliest => Start::Earliest,
            StartAt::Timestamp(t) => Start::Timestamp(t),
            StartAt::Cursor(c) => Start::Cursor(c.to_wire()),
        };
        self.shared.metrics.subscription_opened();
        tokio::spawn(subscription::run(self.shared.kafka.clone(), core.clone(), def.topic.clone(), start));
        let refill = (credit / 2).max(1);
        let state = (Guard(core), outbox, VecDeque::<Item>::new(), 0u32, false);
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
                                    guard.0.add_credit(taken);
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
        let def = self
            .shared
            .streams
            .get(method)
            .ok_or_else(|| Status::new(Code::NotFound, format!("no stream {method:?}")))?;
        let StreamKind::Publish(hook) = &def.kind else {
            return Err(Status::invalid_argument(format!("{method:?} is a subscribe method")));
        };
        let p = wire::Publish { id: 0, method: method.to_owned(), payload, idempotency_key };
        let topic = def.topic.clone();
        let result =
            publish(&self.shared, context(principal, method), &topic, hook.clone(), def.schema.as_ref(), p).await;
        match result {
            Ok((l, duplicate)) => {
                self.shared.metrics.published(duplicate);
                Ok(Receipt { topic, partition: l.partition, offset: l.offset, timestamp_ms: l.timestamp_ms, duplicate })
            }
            Err(s) => {
                self.shared.metrics.publish_failed();
                Err(s)
            }
        }
    }
}

/// Where the Record message starts inside `0x12 len Record`.
fn record_body(encoded: &[u8]) -> usize {
    1 + encoded[1..].iter().take_while(|b| **b >= 0x80).count() + 1
}
