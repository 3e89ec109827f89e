//! Where a subscription starts and where it is: [`StartAt`] and the resume [`Cursor`]
//! (the Kafka topic id plus the next offset of every partition, docs/protocol.md §4).

use bytes::Bytes;
use prost::Message as _;

use super::wire;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// Records after the subscription starts.
    Latest,
    /// From the log start.
    Earliest,
    /// From the first record at or after this Unix time (ms).
    Timestamp(i64),
    /// Exactly after a saved cursor.
    Cursor(Cursor),
}

/// A resume position: the topic id and the next offset per partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The Kafka topic id (empty when the gateway could not learn it).
    pub topic_id: Bytes,
    /// (partition, next offset), ordered by partition.
    pub positions: Vec<(i32, i64)>,
}

impl Cursor {
    pub(crate) fn from_wire(c: &wire::Cursor) -> Cursor {
        Cursor {
            topic_id: c.topic_id.clone(),
            positions: c.positions.iter().map(|p| (p.partition, p.next_offset)).collect(),
        }
    }

    pub(crate) fn to_wire(&self) -> wire::Cursor {
        wire::Cursor {
            topic_id: self.topic_id.clone(),
            positions: self
                .positions
                .iter()
                .map(|&(partition, next_offset)| wire::PartitionOffset { partition, next_offset })
                .collect(),
        }
    }

    /// The next offset of `partition`.
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.positions.iter().find(|p| p.0 == partition).map(|p| p.1)
    }

    /// Moves `partition` forward to `next`; false when that would move it back.
    pub(crate) fn advance(&mut self, partition: i32, next: i64) -> bool {
        match self.positions.iter_mut().find(|p| p.0 == partition) {
            Some(p) if p.1 <= next => {
                p.1 = next;
                true
            }
            Some(_) => false,
            None => {
                self.positions.push((partition, next));
                self.positions.sort_unstable();
                true
            }
        }
    }

    /// The cursor as bytes (a protobuf `Cursor`), to store and restore.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// Reads bytes made by [`Cursor::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Cursor, CursorError> {
        wire::Cursor::decode(bytes).map(|c| Cursor::from_wire(&c)).map_err(|e| CursorError { source: e.into() })
    }
}

impl StartAt {
    /// The start a Subscribe frame asks for (absent: latest).
    pub(crate) fn from_wire(s: Option<wire::StartPosition>) -> StartAt {
        use wire::start_position::Position;
        match s.and_then(|s| s.position) {
            None | Some(Position::Latest(_)) => StartAt::Latest,
            Some(Position::Earliest(_)) => StartAt::Earliest,
            Some(Position::TimestampMs(t)) => StartAt::Timestamp(t),
            Some(Position::Cursor(c)) => StartAt::Cursor(Cursor::from_wire(&c)),
        }
    }
}

/// Bytes that are not a [`Cursor`] made by [`Cursor::to_bytes`].
#[derive(Debug, thiserror::Error)]
#[error("not a KafkaSocks cursor")]
pub struct CursorError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_a_cursor_error() {
        let c = Cursor { topic_id: Bytes::from_static(b"0123456789abcdef"), positions: vec![(0, 5), (1, 0), (2, 77)] };
        assert_eq!(Cursor::from_bytes(&c.to_bytes()).ok(), Some(c));
        let err = Cursor::from_bytes(&[0xff, 0xff]).err().map(|e| std::error::Error::source(&e).is_some());
        assert_eq!(err, Some(true), "the decode error is kept as the source");
    }
}
