//! Topic ids from Kafka's Metadata API (version 12), which librdkafka's public API does
//! not expose. A topic id is the topic's identity: it changes when the topic is deleted
//! and created again, which is how a resume cursor notices re-creation.
//!
//! One request on a fresh PLAINTEXT connection to a bootstrap server:
//!
//! ```text
//! request:  i32 size | i16 api_key=3 | i16 api_version=12 | i32 correlation_id
//!           | i16+bytes client_id | tags(0)                               (header v2)
//!           | compact_array topics [ uuid 0 | compact_string name | tags(0) ]
//!           | bool allow_auto_topic_creation=false | bool include_ops=false | tags(0)
//! response: i32 size | i32 correlation_id | tags                          (header v1)
//!           | i32 throttle | brokers[...] | cluster_id | i32 controller
//!           | topics [ i16 error | name | uuid topic_id | bool internal
//!                      | partitions [ i16 error | i32 index | i32 leader | i32 epoch
//!                                     | replicas[] | isr[] | offline[] | tags ]
//!                      | i32 authorized_ops | tags ] | tags
//! ```
//!
//! Clusters reached only over TLS or SASL are not asked: the caller then falls back to
//! librdkafka's metadata (partitions without an id).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the Metadata API says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMetadata {
    pub(crate) error_code: i16,
    pub(crate) topic_id: [u8; 16],
    pub(crate) partitions: Vec<i32>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error("connect/read: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("malformed metadata response")]
    Malformed,
}

pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub(crate) async fn fetch_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<TopicMetadata, MetadataError> {
    let mut last = MetadataError::Malformed;
    for server in bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match tokio::time::timeout(timeout, fetch_from(server, topic)).await {
            Ok(Ok(m)) => return Ok(m),
            Ok(Err(e)) => last = e,
            Err(_) => last = MetadataError::Timeout,
        }
    }
    Err(last)
}

async fn fetch_from(server: &str, topic: &str) -> Result<TopicMetadata, MetadataError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let req = encode_request(7, topic);
    stream.write_all(&req).await?;
    let size = stream.read_i32().await?;
    if !(4..=64 << 20).contains(&size) {
        return Err(MetadataError::Malformed);
    }
    let mut body = vec![0; size as usize];
    stream.read_exact(&mut body).await?;
    decode_response(&body, 7, topic)
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn encode_request(correlation_id: i32, topic: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + topic.len());
    b.extend_from_slice(&3i16.to_be_bytes());
    b.extend_from_slice(&12i16.to_be_bytes());
    b.extend_from_slice(&correlation_id.to_be_bytes());
    let client = b"kafkasocks";
    b.extend_from_slice(&(client.len() as i16).to_be_bytes());
    b.extend_from_slice(client);
    b.push(0); // header tags
    put_uvarint(&mut b, 2); // one topic
    b.extend_from_slice(&[0; 16]);
    put_uvarint(&mut b, topic.len() as u64 + 1);
    b.extend_from_slice(topic.as_bytes());
    b.push(0); // topic tags
    b.push(0); // allow_auto_topic_creation
    b.push(0); // include_topic_authorized_operations
    b.push(0); // body tags
    let mut out = Vec::with_capacity(b.len() + 4);
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(&b);
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MetadataError> {
        if self.0.len() < n {
            return Err(MetadataError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i16(&mut self) -> Result<i16, MetadataError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, MetadataError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uvarint(&mut self) -> Result<u64, MetadataError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(MetadataError::Malformed)
    }
    /// Compact arrays and strings: length + 1, 0 meaning null.
    fn compact_len(&mut self) -> Result<usize, MetadataError> {
        let n = self.uvarint()?;
        Ok(n.saturating_sub(1) as usize)
    }
    fn compact_string(&mut self) -> Result<&[u8], MetadataError> {
        let n = self.compact_len()?;
        self.take(n)
    }
    fn tags(&mut self) -> Result<(), MetadataError> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
    fn i32_array(&mut self) -> Result<(), MetadataError> {
        let n = self.compact_len()?;
        self.take(n.checked_mul(4).ok_or(MetadataError::Malformed)?)?;
        Ok(())
    }
}

pub(crate) fn decode_response(body: &[u8], correlation_id: i32, topic: &str) -> Result<TopicMetadata, MetadataError> {
    let mut r = Reader(body);
    if r.i32()? != correlation_id {
        return Err(MetadataError::Malformed);
    }
    r.tags()?;
    r.i32()?; // throttle
    for _ in 0..r.compact_len()? {
        r.i32()?;
        r.compact_string()?;
        r.i32()?;
        r.compact_string()?;
        r.tags()?;
    }
    r.compact_string()?; // cluster id
    r.i32()?; // controller
    let topics = r.compact_len()?;
    for _ in 0..topics {
        let error_code = r.i16()?;
        let name = r.compact_string()?.to_vec();
        let mut topic_id = [0u8; 16];
        topic_id.copy_from_slice(r.take(16)?);
        r.take(1)?; // is_internal
        let mut partitions = Vec::new();
        for _ in 0..r.compact_len()? {
            r.i16()?;
            partitions.push(r.i32()?);
            r.i32()?;
            r.i32()?;
            r.i32_array()?;
            r.i32_array()?;
            r.i32_array()?;
            r.tags()?;
        }
        r.i32()?; // authorized operations
        r.tags()?;
        if name == topic.as_bytes() {
            partitions.sort_unstable();
            return Ok(TopicMetadata { error_code, topic_id, partitions });
        }
    }
    Err(MetadataError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let req = encode_request(7, "t");
        // size, api key 3, version 12, correlation 7, client id "kafkasocks", no tags,
        // one topic (compact 2), zero uuid, name "t" (compact 2), flags, tags.
        let mut expected = vec![0, 3, 0, 12, 0, 0, 0, 7, 0, 10];
        expected.extend_from_slice(b"kafkasocks");
        expected.extend_from_slice(&[0, 2]);
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&[2, b't', 0, 0, 0, 0]);
        assert_eq!(&req[4..], &expected[..]);
        assert_eq!(i32::from_be_bytes([req[0], req[1], req[2], req[3]]) as usize, expected.len());
    }

    #[test]
    fn random_responses_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..96);
            let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if body.len() >= 4 {
                body[..4].copy_from_slice(&7i32.to_be_bytes());
            }
            let _ = decode_response(&body, 7, "t");
        }
    }

    #[test]
    fn truncated_response_is_an_error_not_a_panic() {
        let mut body = vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 2];
        for cut in 0..body.len() {
            assert!(decode_response(&body[..cut], 7, "t").is_err());
        }
        body.push(0xff);
        assert!(decode_response(&body, 7, "t").is_err());
    }
}
