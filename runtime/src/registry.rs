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
}

impl RegistrySchema {
    /// A protobuf schema (the `.proto` source) under `subject`; `message_indexes` locate
    /// the record's message type in it (`[0]`: the first top-level message).
    pub fn protobuf(subject: impl Into<String>, schema: impl Into<String>, message_indexes: Vec<i32>) -> Self {
        RegistrySchema { subject: subject.into(), schema: schema.into(), message_indexes }
    }
}

#[cfg(feature = "registry")]
mod client {
    use std::collections::HashMap;
    use std::fmt;

    use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
    use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
    use tokio::sync::Mutex;

    use super::RegistrySchema;
    use crate::protocol::{Code, Status};

    /// A registry client that registers each subject's schema once per process.
    pub(crate) struct SchemaRegistry {
        settings: SrSettings,
        ids: Mutex<HashMap<(String, String), u32>>,
    }

    impl fmt::Debug for SchemaRegistry {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SchemaRegistry").finish_non_exhaustive()
        }
    }

    impl SchemaRegistry {
        pub(crate) fn new(url: &str) -> SchemaRegistry {
            SchemaRegistry { settings: SrSettings::new(url.trim_end_matches('/').to_owned()), ids: Mutex::default() }
        }

        /// The schema id, registering the schema on first use. Registration is idempotent in
        /// the registry, so concurrent gateways agree on the id.
        pub(crate) async fn id_for(&self, schema: &RegistrySchema) -> Result<u32, Status> {
            let key = (schema.subject.clone(), schema.schema.clone());
            let mut ids = self.ids.lock().await;
            if let Some(id) = ids.get(&key) {
                return Ok(*id);
            }
            let supplied = SuppliedSchema::new(None, SchemaType::Protobuf, schema.schema.clone());
            let registered = post_schema(&self.settings, schema.subject.clone(), supplied).await.map_err(|e| {
                Status::new(Code::Unavailable, format!("schema registry: registering {:?}: {e}", schema.subject))
            })?;
            let id = registered.id;
            ids.insert(key, id);
            Ok(id)
        }
    }
}
