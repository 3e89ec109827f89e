//! Delivery for streams of several record types: each record goes to the client in the
//! oneof member of its type, inside the stream's wrapper message. The type comes from the
//! record's Confluent framing (schema id and message indexes), resolved through the
//! registry client's schema cache: a schema is fetched once, and while it is being fetched
//! the subscriber waits (no record is passed over, none delivered as the wrong type).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use prost::Message as _;
use tokio::sync::Notify;

use super::client::Lookup;
use super::{OtherTypes, RecordTypes, SchemaRegistry};
use crate::protocol::wire::{Record, SharedRecord, length_delimited};
use crate::protocol::{Code, Status};

/// A typed stream's record types and the registry that names them.
pub(crate) struct TypedRecords {
    types: RecordTypes,
    registry: Arc<SchemaRegistry>,
}

/// What to do with one record.
pub(crate) enum Typed {
    /// Deliver this (the payload wrapped in the member of its type, the type name set).
    Deliver(SharedRecord),
    /// Not of an accepted type, and the stream skips those.
    Skip,
    /// End the subscription with this.
    Fail(Status),
    /// Its schema is being fetched; the subscriber is woken when it is known.
    Wait,
}

impl TypedRecords {
    pub(crate) fn new(types: RecordTypes, registry: Arc<SchemaRegistry>) -> TypedRecords {
        TypedRecords { types, registry }
    }

    pub(crate) fn prepare(&self, rec: &SharedRecord, wake: &Arc<Notify>) -> Typed {
        // `encoded` is `0x12 len Record`: the gateway's own encoding, so it decodes.
        let Ok(mut record) = rec.encoded.get(1..).map_or(Err(()), |b| Record::decode_length_delimited(b).map_err(drop))
        else {
            return Typed::Fail(Status::new(Code::Internal, "a record the gateway encoded does not decode"));
        };
        if record.schema_id == 0 {
            return self.other(rec, "has no Schema Registry framing, so its type is not known".to_owned());
        }
        let name = match self.registry.type_name(record.schema_id, &record.message_indexes, wake) {
            Lookup::Known(Some(name)) => name,
            Lookup::Known(None) => {
                return self.other(
                    rec,
                    format!(
                        "names message indexes {:?}, which schema {} does not have",
                        record.message_indexes, record.schema_id
                    ),
                );
            }
            Lookup::Unusable(why) => return self.other(rec, why),
            Lookup::Pending => return Typed::Wait,
            Lookup::Failed(status) => return Typed::Fail(status),
        };
        let Some(&field) = self.types.members.get(&name) else {
            return self.other(rec, format!("is a {name}, which this stream does not accept"));
        };
        let wrapped = length_delimited(field, &record.payload);
        record.payload = wrapped.clone();
        record.type_name = name;
        let mut encoded = BytesMut::with_capacity(record.encoded_len() + 6);
        encoded.put_u8(2 << 3 | 2);
        if record.encode_length_delimited(&mut encoded).is_err() {
            return Typed::Fail(Status::new(Code::Internal, "re-encoding a typed record"));
        }
        Typed::Deliver(SharedRecord {
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.clone(),
            payload: wrapped,
            encoded: encoded.freeze(),
        })
    }

    fn other(&self, rec: &SharedRecord, what: String) -> Typed {
        match self.types.others {
            OtherTypes::Skip => Typed::Skip,
            OtherTypes::Fail => Typed::Fail(Status::new(
                Code::FailedPrecondition,
                format!("the record at partition {} offset {} {what}", rec.partition, rec.offset),
            )),
        }
    }
}
