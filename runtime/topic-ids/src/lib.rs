//! Kafka topic ids through librdkafka's `DescribeTopics`, for clients of the `rdkafka`
//! crate (whose safe API lacks that call).
//!
//! The call is made on an existing client (`rd_kafka_t`), on a queue of its own, and blocks
//! until librdkafka answers or the timeout passes: run it on a blocking thread
//! (`tokio::task::spawn_blocking`) from async code.
//!
//! # Example
//!
//! Runs as a doc test against the Kafka of `KAFKA_BOOTSTRAP` (default `127.0.0.1:19092`,
//! what `scripts/services up` starts): a topic that does not exist is an error of that
//! topic, not of the call; one that exists has its id.
//!
//! ```
//! use std::time::Duration;
//! use rdkafka::ClientConfig;
//! use rdkafka::consumer::{BaseConsumer, Consumer};
//!
//! # let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
//! let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
//! let found = kafkasocks_topic_ids::describe(client.client(), &["no-such-topic"], Duration::from_secs(10))?;
//! assert_eq!(found[0].name, "no-such-topic");
//! assert!(found[0].error.is_some());
//! assert_eq!(found[0].id, [0; 16]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic name.
    pub name: String,
    /// The broker's error for this topic (unknown topic, not authorized, ...), if any.
    pub error: Option<TopicError>,
    /// The topic id: the most significant 8 bytes then the least significant 8, big-endian
    /// (the bytes of Kafka's `Uuid` on the wire). All zero when the broker did not say.
    pub id: [u8; 16],
    /// The number of partitions.
    pub partitions: usize,
}

/// A per-topic error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    /// librdkafka's error code.
    pub code: RDKafkaErrorCode,
    /// Its message.
    pub message: String,
}

/// Why a describe call failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic name contains a NUL byte.
    #[error("topic name {0:?} contains a NUL byte")]
    BadName(String),
    /// No answer within the timeout.
    #[error("no answer to DescribeTopics within {0:?}")]
    Timeout(Duration),
    /// librdkafka or the broker refused the request.
    #[error("DescribeTopics failed: {message} ({code:?})")]
    Request {
        /// librdkafka's error code.
        code: RDKafkaErrorCode,
        /// Its message.
        message: String,
    },
}

/// Describes `topics` (names) through `client`, waiting at most `timeout`.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<TopicDescription>, Error> {
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(*t).map_err(|_| Error::BadName((*t).to_owned())))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    let rk = client.native_ptr();

    // SAFETY: `rk` is the live client `client` borrows for this whole call; `pointers` holds
    // `names.len()` pointers to NUL-terminated strings that outlive the call (librdkafka copies
    // them into the collection). Every object created here is destroyed by its guard below,
    // after the last use of anything borrowed from it.
    unsafe {
        let queue = Guard(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let collection = Guard(
            rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len()),
            rd::rd_kafka_TopicCollection_destroy,
        );
        let options = Guard(
            rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS),
            rd::rd_kafka_AdminOptions_destroy,
        );
        let mut errstr = [0 as c_char; 256];
        // A timeout that does not fit is clamped above; the call only fails for out-of-range values.
        let _ = rd::rd_kafka_AdminOptions_set_request_timeout(options.0, timeout_ms, errstr.as_mut_ptr(), errstr.len());
        rd::rd_kafka_DescribeTopics(rk, collection.0, options.0, queue.0);
        let event = Guard(rd::rd_kafka_queue_poll(queue.0, timeout_ms), rd::rd_kafka_event_destroy);
        if event.0.is_null() {
            return Err(Error::Timeout(timeout));
        }
        let err = rd::rd_kafka_event_error(event.0);
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(Error::Request { code: err.into(), message: text(rd::rd_kafka_event_error_string(event.0)) });
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err(Error::Request {
                code: RDKafkaErrorCode::Fail,
                message: "the answer was not a DescribeTopics result".into(),
            });
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let d = *descriptions.add(i);
            let error = rd::rd_kafka_TopicDescription_error(d);
            let error = (!error.is_null()
                && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                .then(|| TopicError {
                    code: rd::rd_kafka_error_code(error).into(),
                    message: text(rd::rd_kafka_error_string(error)),
                });
            let uuid = rd::rd_kafka_TopicDescription_topic_id(d);
            let mut id = [0u8; 16];
            if !uuid.is_null() {
                id[..8].copy_from_slice(&rd::rd_kafka_Uuid_most_significant_bits(uuid).to_be_bytes());
                id[8..].copy_from_slice(&rd::rd_kafka_Uuid_least_significant_bits(uuid).to_be_bytes());
            }
            let mut partitions = 0usize;
            let _ = rd::rd_kafka_TopicDescription_partitions(d, &mut partitions);
            out.push(TopicDescription { name: text(rd::rd_kafka_TopicDescription_name(d)), error, id, partitions });
        }
        drop(names);
        Ok(out)
    }
}

/// A librdkafka string as an owned `String` (empty for NULL).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the duration of the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated, per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Destroys a librdkafka object when dropped (NULL is left alone).
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor, is owned by
            // this guard alone and is destroyed once.
            unsafe { (self.1)(self.0) }
        }
    }
}
