//! The wire protocol: the message types of `proto/kafkasocks/v1/frame.proto` (prost),
//! and the few encodings the gateway does by hand on its hot path.
//!
//! A record is encoded once, as the bytes of a `Data.records` entry:
//!
//! ```text
//! +------+-----------+--------------------------------------------------------------+
//! | 0x12 | len (var) | Record { 1: partition, 2: offset, 3: timestamp_ms, 4: key,   |
//! |      |           |   5: headers..., 6: payload, 7: schema_id, 9: message indexes }|
//! +------+-----------+--------------------------------------------------------------+
//! ```
//!
//! and a subscriber's `Data` frame is a short header followed by those bytes, copied:
//!
//! ```text
//! 0x2a len(Data) 0x08 varint(subscription_id) [record bytes]...
//! ```
#![allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/kafkasocks.v1.rs"));

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::records::{Delivery, RecordView};

/// Encodes a frame.
pub(crate) fn encode(kind: frame::Kind) -> Bytes {
    Frame { kind: Some(kind) }.encode_to_vec().into()
}

fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_len(v: u64) -> usize {
    ((64 - (v | 1).leading_zeros() as usize) + 6) / 7
}

fn put_bytes_field(buf: &mut BytesMut, field: u32, data: &[u8]) {
    put_varint(buf, u64::from(field) << 3 | 2);
    put_varint(buf, data.len() as u64);
    buf.put_slice(data);
}

/// A message holding `data` in its length-delimited field `field`, and nothing else.
pub(crate) fn length_delimited(field: u32, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    put_bytes_field(&mut out, field, data);
    out.freeze()
}

/// A record read from Kafka, encoded once and shared by every subscriber it matches.
#[derive(Clone, Debug)]
pub(crate) struct SharedRecord {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Bytes,
    pub(crate) payload: Bytes,
    /// `0x12 len Record`: ready to splice into a Data frame.
    pub(crate) encoded: Bytes,
}

impl SharedRecord {
    pub(crate) fn new(
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: &[u8],
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> SharedRecord {
        SharedRecord::build(partition, offset, timestamp_ms, key, 0, headers, value)
    }

    /// [`SharedRecord::new`] for a topic whose keys are Confluent-framed key messages, the
    /// key in their field `key_field`: the record's key is that field's value (the schema
    /// id kept beside it), as on any other topic. A key that is not such a message is kept
    /// as it is.
    pub(crate) fn with_framed_key(
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: &[u8],
        key_field: u32,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> SharedRecord {
        let (key_schema_id, _, message) = split_confluent_framing(key);
        match scan_field(message, key_field) {
            Ok(Some(inner)) if key_schema_id != 0 => {
                SharedRecord::build(partition, offset, timestamp_ms, &inner, key_schema_id, headers, value)
            }
            _ => SharedRecord::build(partition, offset, timestamp_ms, key, 0, headers, value),
        }
    }

    fn build(
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: &[u8],
        key_schema_id: u32,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> SharedRecord {
        let (schema_id, indexes, payload) = split_confluent_framing(value);
        // One allocation: the body is written after room for its prefix (the field tag and
        // the body's length, at most PREFIX bytes), which is then written right before it.
        const PREFIX: usize = 1 + 5;
        let headers_len: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        let mut body = BytesMut::with_capacity(PREFIX + 40 + key.len() + payload.len() + headers_len);
        body.put_bytes(0, PREFIX);
        if partition != 0 {
            put_varint(&mut body, 1 << 3);
            put_varint(&mut body, partition as u64);
        }
        if offset != 0 {
            put_varint(&mut body, 2 << 3);
            put_varint(&mut body, offset as u64);
        }
        if timestamp_ms != 0 {
            put_varint(&mut body, 3 << 3);
            put_varint(&mut body, timestamp_ms as u64);
        }
        let key_at = if key.is_empty() {
            None
        } else {
            put_varint(&mut body, 4 << 3 | 2);
            put_varint(&mut body, key.len() as u64);
            let at = body.len();
            body.put_slice(key);
            Some(at)
        };
        for (k, v) in headers {
            let mut h = BytesMut::new();
            put_bytes_field(&mut h, 1, k.as_bytes());
            put_bytes_field(&mut h, 2, v);
            put_bytes_field(&mut body, 5, &h);
        }
        let payload_at = if payload.is_empty() {
            None
        } else {
            put_varint(&mut body, 6 << 3 | 2);
            put_varint(&mut body, payload.len() as u64);
            let at = body.len();
            body.put_slice(payload);
            Some(at)
        };
        if schema_id != 0 {
            put_varint(&mut body, 7 << 3);
            put_varint(&mut body, u64::from(schema_id));
            // Packed, as prost decodes it; [0] (the common case, in either form) is left out.
            if indexes.count != 0 && !(indexes.count == 1 && indexes.bytes == [0]) {
                let mut packed = BytesMut::new();
                let mut rest = indexes.bytes;
                while let Some(v) = read_varint(&mut rest) {
                    put_varint(&mut packed, zigzag(v) as i32 as i64 as u64);
                }
                put_bytes_field(&mut body, 9, &packed);
            }
        }
        if key_schema_id != 0 {
            put_varint(&mut body, 10 << 3);
            put_varint(&mut body, u64::from(key_schema_id));
        }
        let body_len = body.len() - PREFIX;
        let start = fill_prefix::<PREFIX>(&mut body, |room| {
            put_varint(room, 2 << 3 | 2);
            put_varint(room, body_len as u64);
        });
        let whole = body.freeze();
        let key = key_at.map_or_else(Bytes::new, |at| whole.slice(at..at + key.len()));
        let payload = payload_at.map_or_else(Bytes::new, |at| whole.slice(at..at + payload.len()));
        SharedRecord { partition, offset, key, payload, encoded: whole.slice(start..) }
    }

    pub(crate) fn view(&self) -> RecordView<'_> {
        RecordView { partition: self.partition, offset: self.offset, key: &self.key, payload: &self.payload }
    }
}

impl From<Record> for Delivery {
    fn from(r: Record) -> Delivery {
        Delivery {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key,
            payload: r.payload,
            schema_id: r.schema_id,
            message_indexes: r.message_indexes,
            type_name: r.type_name,
            key_schema_id: r.key_schema_id,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        }
    }
}

/// Writes what `put` writes (at most `ROOM` bytes) at the end of the `ROOM` bytes left
/// free at the start of `buf`, so that it ends where the body starts; returns where it
/// begins. A message's length prefix, written once the body is: no second buffer, no copy.
fn fill_prefix<const ROOM: usize>(buf: &mut BytesMut, put: impl FnOnce(&mut &mut [u8])) -> usize {
    let mut prefix = [0u8; ROOM];
    let mut room = &mut prefix[..];
    put(&mut room);
    let n = ROOM - room.len();
    let start = ROOM - n;
    buf[start..ROOM].copy_from_slice(&prefix[..n]);
    start
}

/// Room a Data frame's prefix takes at the start of a [`DataFrame`]: the Frame's field
/// tag and length (1 + 5), the subscription id's tag and value (1 + 5).
const DATA_PREFIX: usize = 12;

/// A Data frame built in place: the records' encodings (`SharedRecord::encoded`) copied
/// one after another behind room for the prefix, which [`DataFrame::finish`] writes once
/// the frame's length is known. One allocation and one copy per record, and no
/// reference to the shared record kept while the frame waits to be written.
#[derive(Debug)]
pub(crate) struct DataFrame {
    buf: BytesMut,
    records: u32,
}

impl DataFrame {
    /// An empty frame with room for `capacity` bytes of records.
    pub(crate) fn with_capacity(capacity: usize) -> DataFrame {
        let mut buf = BytesMut::with_capacity(DATA_PREFIX + capacity);
        buf.put_bytes(0, DATA_PREFIX);
        DataFrame { buf, records: 0 }
    }

    pub(crate) fn push(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
        self.records += 1;
    }

    /// The records' bytes so far.
    pub(crate) fn records_len(&self) -> usize {
        self.buf.len() - DATA_PREFIX
    }

    pub(crate) fn records(&self) -> u32 {
        self.records
    }

    /// Each record's encoding (`0x12 len Record`), in order.
    pub(crate) fn encodings(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.buf[DATA_PREFIX..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut after_tag = &rest[1..];
            let len = read_varint(&mut after_tag)? as usize;
            let whole = rest.len() - after_tag.len() + len;
            let (one, next) = rest.split_at(whole.min(rest.len()));
            rest = next;
            Some(one)
        })
    }

    /// The encoded Frame, for subscription `subscription_id`.
    pub(crate) fn finish(mut self, subscription_id: u32) -> Bytes {
        let body_len = 1 + varint_len(u64::from(subscription_id)) + self.records_len();
        let start = fill_prefix::<DATA_PREFIX>(&mut self.buf, |room| {
            room.put_u8(5 << 3 | 2);
            put_varint(room, body_len as u64);
            room.put_u8(1 << 3);
            put_varint(room, u64::from(subscription_id));
        });
        // Not `freeze().slice(..)`: slicing a frozen buffer allocates its shared count.
        self.buf.advance(start);
        self.buf.freeze()
    }
}

/// The Confluent Schema Registry framing: `0x00`, a big-endian u32 schema id, then
/// (protobuf only) the message indexes: a zigzag varint count followed by that many
/// zigzag varints, with the single byte `0x00` standing for `[0]`.
///
/// A protobuf message never starts with `0x00` (field number 0 does not exist), so a
/// value starting with it is framed. Returns the schema id (0 if none) and the message.
#[cfg(any(test, fuzzing))]
pub(crate) fn strip_confluent_framing(value: &[u8]) -> (u32, &[u8]) {
    let (id, _, message) = split_confluent_framing(value);
    (id, message)
}

/// The message indexes of a framing, as they are on the wire (`count` zigzag varints).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawIndexes<'a> {
    pub(crate) count: i64,
    pub(crate) bytes: &'a [u8],
}

/// [`strip_confluent_framing`], with the message indexes.
pub(crate) fn split_confluent_framing(value: &[u8]) -> (u32, RawIndexes<'_>, &[u8]) {
    let none = RawIndexes { count: 0, bytes: &[] };
    if value.len() < 6 || value[0] != 0 {
        return (0, none, value);
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let mut rest = &value[5..];
    let Some(count) = read_varint(&mut rest).map(zigzag) else {
        return (0, none, value);
    };
    let start = rest;
    for _ in 0..count.max(0) {
        if read_varint(&mut rest).is_none() {
            return (0, none, value);
        }
    }
    let bytes = &start[..start.len() - rest.len()];
    (id, RawIndexes { count: count.max(0), bytes }, rest)
}

/// Prepends the Confluent framing for schema `id` and message indexes `indexes`.
pub(crate) fn add_confluent_framing(id: u32, indexes: &[i32], message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 8 + indexes.len() * 2);
    out.put_u8(0);
    out.put_u32(id);
    if indexes == [0] {
        out.put_u8(0);
    } else {
        put_varint(&mut out, unzigzag(indexes.len() as i64));
        for &i in indexes {
            put_varint(&mut out, unzigzag(i64::from(i)));
        }
    }
    out.put_slice(message);
    out.freeze()
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn unzigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Reads one protobuf varint from the front of `buf` and advances it; `None` when `buf`
/// ends first or the varint is longer than 10 bytes. For tools that walk frames without
/// decoding them (the benchmarks count records this way).
pub fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Why [`scan_field`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("truncated message")]
    Truncated,
    #[error("invalid wire type {0}")]
    WireType(u8),
}

/// Finds the last occurrence of field `number` in an encoded message without decoding
/// the rest: length-delimited values as they are, varints as decimal text.
pub(crate) fn scan_field(mut msg: &[u8], number: u32) -> Result<Option<Bytes>, ScanError> {
    let mut found = None;
    while !msg.is_empty() {
        let key = read_varint(&mut msg).ok_or(ScanError::Truncated)?;
        let field = key >> 3;
        let wire_type = (key & 7) as u8;
        match wire_type {
            0 => {
                let v = read_varint(&mut msg).ok_or(ScanError::Truncated)?;
                if field == u64::from(number) {
                    found = Some(Bytes::from((v as i64).to_string()));
                }
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                if msg.len() < n {
                    return Err(ScanError::Truncated);
                }
                msg = &msg[n..];
            }
            2 => {
                let len = read_varint(&mut msg).ok_or(ScanError::Truncated)?;
                let len = usize::try_from(len).map_err(|_| ScanError::Truncated)?;
                if msg.len() < len {
                    return Err(ScanError::Truncated);
                }
                if field == u64::from(number) {
                    found = Some(Bytes::copy_from_slice(&msg[..len]));
                }
                msg = &msg[len..];
            }
            other => return Err(ScanError::WireType(other)),
        }
    }
    Ok(found)
}

/// The crate-private parsers above, for the fuzz targets in `fuzz/` only: cargo fuzz builds
/// everything with `--cfg fuzzing`, and no other build has this module.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use bytes::Bytes;

    /// [`super::scan_field`], its error as text.
    pub fn scan_field(msg: &[u8], number: u32) -> Result<Option<Bytes>, String> {
        super::scan_field(msg, number).map_err(|e| e.to_string())
    }

    /// [`super::strip_confluent_framing`].
    pub fn strip_confluent_framing(value: &[u8]) -> (u32, &[u8]) {
        super::strip_confluent_framing(value)
    }

    /// [`super::add_confluent_framing`].
    pub fn add_confluent_framing(id: u32, indexes: &[i32], message: &[u8]) -> Bytes {
        super::add_confluent_framing(id, indexes, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_record_decodes_as_prost_record() {
        let r = SharedRecord::new(2, 41, 1_700_000_000_000, b"room", &[("h", b"v")], b"\x0a\x02hi");
        let mut slice = &r.encoded[..];
        assert_eq!(read_varint(&mut slice), Some(0x12));
        let len = read_varint(&mut slice).unwrap_or(0) as usize;
        assert_eq!(len, slice.len());
        let rec = Record::decode(slice).expect("decodes");
        assert_eq!((rec.partition, rec.offset, rec.timestamp_ms), (2, 41, 1_700_000_000_000));
        assert_eq!(&rec.key[..], b"room");
        assert_eq!(&rec.payload[..], b"\x0a\x02hi");
        assert_eq!(rec.headers.len(), 1);
        assert_eq!(&r.key[..], b"room");
        assert_eq!(&r.payload[..], b"\x0a\x02hi");
    }

    #[test]
    fn a_data_frame_built_in_place_decodes_with_all_records() {
        let a = SharedRecord::new(0, 0, 0, b"", &[], b"");
        let b = SharedRecord::new(1, 300, 5, b"k", &[], b"\x08\x01");
        let mut data = DataFrame::with_capacity(0);
        data.push(&a.encoded);
        data.push(&b.encoded);
        assert_eq!(data.encodings().collect::<Vec<_>>(), [&a.encoded[..], &b.encoded[..]]);
        assert_eq!(data.records(), 2);
        let frame = Frame::decode(data.finish(70_000)).expect("decodes");
        let Some(frame::Kind::Data(d)) = frame.kind else { panic!("not data: {frame:?}") };
        assert_eq!(d.subscription_id, 70_000);
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[1].offset, 300);
        assert_eq!(&d.records[1].payload[..], b"\x08\x01");
    }

    #[test]
    fn confluent_framing_round_trip() {
        for indexes in [vec![0], vec![1, 3], vec![0, 0, 2]] {
            let framed = add_confluent_framing(77, &indexes, b"\x0a\x01x");
            assert_eq!(strip_confluent_framing(&framed), (77, &b"\x0a\x01x"[..]));
        }
        // [0] is the single byte 0, as Confluent's serializers write it.
        assert_eq!(&add_confluent_framing(1, &[0], b"\x08\x01")[..], b"\x00\x00\x00\x00\x01\x00\x08\x01");
        // Unframed protobuf is left alone.
        assert_eq!(strip_confluent_framing(b"\x08\x01"), (0, &b"\x08\x01"[..]));
        // A SharedRecord strips it and reports the id.
        let r = SharedRecord::new(0, 1, 1, b"", &[], &add_confluent_framing(9, &[0], b"\x08\x07"));
        assert_eq!(&r.payload[..], b"\x08\x07");
        let rec = Record::decode(&r.encoded[2..]).expect("decodes");
        assert_eq!(rec.schema_id, 9);
        assert!(rec.message_indexes.is_empty(), "[0] is left out");
        // Other message indexes travel with the record, for clients and typed streams.
        let r = SharedRecord::new(0, 1, 1, b"", &[], &add_confluent_framing(9, &[1, 0], b"\x08\x07"));
        assert_eq!(&r.payload[..], b"\x08\x07");
        let rec = Record::decode(&r.encoded[2..]).expect("decodes");
        assert_eq!((rec.schema_id, rec.message_indexes), (9, vec![1, 0]));
        // [0] written in the long form (count 1, index 0) is [0] too: left out.
        let r = SharedRecord::new(0, 1, 1, b"", &[], b"\x00\x00\x00\x00\x09\x02\x00\x08\x07");
        let rec = Record::decode(&r.encoded[2..]).expect("decodes");
        assert_eq!((rec.schema_id, rec.message_indexes.len(), &r.payload[..]), (9, 0, &b"\x08\x07"[..]));
        // Framed keys lose their framing too, on topics that say their keys are framed.
        let framed_key = add_confluent_framing(4, &[0], b"\x0a\x03s-1");
        let r = SharedRecord::with_framed_key(0, 1, 1, &framed_key, 1, &[], b"\x08\x07");
        assert_eq!(&r.key[..], b"s-1", "the key field's value, as on other topics");
        assert_eq!(Record::decode(&r.encoded[2..]).expect("decodes").key_schema_id, 4);
        assert_eq!(&SharedRecord::new(0, 1, 1, &framed_key, &[], b"").key[..], &framed_key[..], "others keep theirs");
        let (id, indexes, message) = split_confluent_framing(b"\x00\x00\x00\x00\x05\x04\x02\x00\x08\x01");
        assert_eq!((id, indexes.count, indexes.bytes, message), (5, 2, &b"\x02\x00"[..], &b"\x08\x01"[..]));
    }

    #[test]
    fn scan_field_finds_strings_and_ints() {
        let msg =
            Hello { protocol_version: 1, token: "t".into(), client: "c".into(), ..Default::default() }.encode_to_vec();
        assert_eq!(scan_field(&msg, 2), Ok(Some(Bytes::from_static(b"t"))));
        assert_eq!(scan_field(&msg, 1), Ok(Some(Bytes::from_static(b"1"))));
        assert_eq!(scan_field(&msg, 9), Ok(None));
        assert_eq!(scan_field(&msg[..msg.len() - 1], 3), Err(ScanError::Truncated));
        assert_eq!(scan_field(&[0x0f], 1), Err(ScanError::WireType(7)));
    }
}
