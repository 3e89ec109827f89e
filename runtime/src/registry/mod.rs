//! Confluent Schema Registry: publish streams that declare a subject write their records
//! in the Confluent wire format (see [`crate::protocol::wire`] for the bytes); subscriptions remove
//! the framing from whatever they read, whether or not their stream declares a subject.

#[cfg(feature = "registry")]
pub(crate) use client::SchemaRegistry;

/// The schema a publish stream writes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySchema {
    pub(crate) subject: String,
    pub(crate) schema: String,
    pub(crate) message_indexes: Vec<i32>,
    pub(crate) references: Vec<SchemaReference>,
}

impl RegistrySchema {
    /// A protobuf schema (the `.proto` source) under `subject`; `message_indexes` locate
    /// the record's message type in it (`[0]`: the first top-level message).
    pub fn protobuf(subject: impl Into<String>, schema: impl Into<String>, message_indexes: Vec<i32>) -> Self {
        RegistrySchema { subject: subject.into(), schema: schema.into(), message_indexes, references: Vec::new() }
    }

    /// A file the schema imports, registered first and referred to, as Confluent's
    /// serializer does, so that any registry-aware consumer can rebuild the schema.
    pub fn reference(mut self, reference: SchemaReference) -> Self {
        self.references.push(reference);
        self
    }
}

/// An imported `.proto` file, registered as a schema reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) schema: String,
    pub(crate) references: Vec<SchemaReference>,
}

impl SchemaReference {
    /// The file imported as `name` (its import path), registered under `subject`
    /// (Confluent's default: the import path too), with this source.
    pub fn new(name: impl Into<String>, subject: impl Into<String>, schema: impl Into<String>) -> Self {
        SchemaReference { name: name.into(), subject: subject.into(), schema: schema.into(), references: Vec::new() }
    }

    /// A file this one imports in turn.
    pub fn reference(mut self, reference: SchemaReference) -> Self {
        self.references.push(reference);
        self
    }
}

#[cfg(feature = "registry")]
mod client {
    use std::collections::HashMap;
    use std::fmt;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
    use schema_registry_converter::error::SRCError;
    use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedReference, SuppliedSchema};

    use super::{RegistrySchema, SchemaReference};
    use crate::error::Error;
    use crate::protocol::{Code, Status};

    type Key = (String, String);

    /// A registry client that registers each subject's schema once per process. A known id
    /// is answered from memory, never waiting on the network; registrations are one at a
    /// time per (subject, schema) and bounded by the registry timeout, so one slow subject
    /// holds up only the publishes that need it.
    pub(crate) struct SchemaRegistry {
        settings: SrSettings,
        ids: Mutex<HashMap<Key, u32>>,
        registering: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
        timeout: Duration,
    }

    impl fmt::Debug for SchemaRegistry {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SchemaRegistry").field("timeout", &self.timeout).finish_non_exhaustive()
        }
    }

    impl SchemaRegistry {
        pub(crate) fn new(url: &str, timeout: Duration) -> Result<SchemaRegistry, Error> {
            // Each call is bounded by `timeout` below, with a clear message; the HTTP client's
            // own timeout is only a backstop behind it.
            let settings = SrSettings::new_builder(url.trim_end_matches('/').to_owned())
                .set_timeout(timeout + Duration::from_secs(1))
                .build()
                .map_err(|e| Error::Config(format!("schema registry {url:?}: {e}")))?;
            Ok(SchemaRegistry { settings, ids: Mutex::default(), registering: Mutex::default(), timeout })
        }

        fn cached(&self, key: &Key) -> Option<u32> {
            self.ids.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
        }

        /// The schema id, registering the schema on first use. Registration is idempotent in
        /// the registry, so concurrent gateways agree on the id.
        pub(crate) async fn id_for(&self, schema: &RegistrySchema) -> Result<u32, Status> {
            let key = (schema.subject.clone(), schema.schema.clone());
            if let Some(id) = self.cached(&key) {
                return Ok(id);
            }
            let gate =
                self.registering.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
            let _turn = gate.lock().await;
            if let Some(id) = self.cached(&key) {
                return Ok(id);
            }
            let supplied = SuppliedSchema::new(None, SchemaType::Protobuf, schema.schema.clone())
                .with_references(schema.references.iter().map(supplied_reference).collect());
            let posted =
                tokio::time::timeout(self.timeout, post_schema(&self.settings, schema.subject.clone(), supplied));
            let registered = match posted.await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(refusal(&schema.subject, &e)),
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "schema registry: no answer within {:?} registering {:?}",
                        self.timeout, schema.subject
                    )));
                }
            };
            self.ids.lock().unwrap_or_else(|p| p.into_inner()).insert(key, registered.id);
            Ok(registered.id)
        }
    }

    fn supplied_reference(r: &SchemaReference) -> SuppliedReference {
        SuppliedReference::new(r.name.clone(), r.subject.clone(), r.schema.clone())
            .with_references(r.references.iter().map(supplied_reference).collect())
    }

    /// What a registry error means for the client: a schema the registry refuses (409: its
    /// compatibility rule; 422: not a valid schema) will not be accepted by retrying, so it
    /// is `FAILED_PRECONDITION`; anything else (unreachable, 5xx, a timeout) is
    /// `UNAVAILABLE`.
    fn refusal(subject: &str, e: &SRCError) -> Status {
        let cause = e.cause.as_deref().unwrap_or("");
        if e.error.contains("status 409") {
            Status::new(
                Code::FailedPrecondition,
                format!("schema registry refuses this schema for {subject:?} (incompatible): {cause}"),
            )
        } else if e.error.contains("status 422") {
            Status::new(Code::FailedPrecondition, format!("schema registry: invalid schema for {subject:?}: {cause}"))
        } else {
            Status::unavailable(format!("schema registry: registering {subject:?}: {e}"))
        }
    }
}
