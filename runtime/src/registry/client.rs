//! The registry client: registration (auto-register mode) or verification at start
//! (lookup-only, use-latest), with ids cached so that publishes never wait on the network
//! once a stream's schema is known.
// Without `server`, only check_schema uses this client (for kafkasocks-gen): the gateway's
// parts (caches, typed streams, readiness) are unused there.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::FileDescriptorProto;
use tokio::sync::Notify;

use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, get_schema_by_subject_and_version, perform_sr_call, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SrCall, SuppliedReference, SuppliedSchema};

use super::{RegistryConfig, RegistryCredentials, RegistryMode, RegistrySchema, SchemaReference, descriptor};
use crate::error::Error;
use crate::protocol::{Code, Status};

/// (subject, schema text, record type): one registration, and where in it the record type
/// is (two record types of one file on one subject share the id, not the indexes).
type Key = (String, String, String);

/// A file found registered, (id, version); or why it (or one of its references) is not.
type Found = Result<(u32, u32), String>;

/// How a stream's records are framed: the schema id, and the message indexes of the
/// record type in that schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writer {
    pub(crate) id: u32,
    pub(crate) message_indexes: Vec<i32>,
}

/// Schemas read by id (for streams of several record types) kept at once; past it, the
/// oldest entry is dropped (and fetched again if a record names it again).
pub(crate) const MAX_SCHEMAS_BY_ID: usize = 10_000;
/// A failed fetch by id is answered from memory this long before it is tried again.
const FAILED_FETCH_MEMORY: Duration = Duration::from_secs(5);

/// A schema read by id.
enum ById {
    /// Being fetched; these subscribers are woken when it is known.
    Fetching(Vec<Arc<Notify>>),
    Known(Arc<FileDescriptorProto>, Instant),
    /// The registry has no schema with this id, or not a protobuf one the gateway reads:
    /// records naming it are of no type the stream accepts.
    Unusable(String, Instant),
    Failed(Status, Instant),
}

/// What [`SchemaRegistry::type_name`] knows now.
pub(crate) enum Lookup {
    /// The message name at those indexes (`None`: the schema has no message there).
    Known(Option<String>),
    /// No type can be known for the record: why.
    Unusable(String),
    /// Being fetched: the caller is woken when it is known.
    Pending,
    /// The registry could not say (the subscription ends; the client resumes later).
    Failed(Status),
}

/// A registry client. A known writer is answered from memory, never waiting on the
/// network; registrations are one at a time per (subject, schema) and bounded by the
/// registry timeout, so one slow subject holds up only the publishes that need it.
pub(crate) struct SchemaRegistry {
    settings: SrSettings,
    /// For the compatibility check, which schema_registry_converter gets wrong for subjects
    /// with a `/` (every reference subject: it does not escape it) and answers without the
    /// registry's reasons.
    http: reqwest::Client,
    base: String,
    auth: Option<Auth>,
    mode: RegistryMode,
    url: String,
    writers: Mutex<HashMap<Key, Writer>>,
    registering: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    by_id: Mutex<HashMap<u32, ById>>,
    timeout: Duration,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for the registry: its timeout a backstop behind each call's, and only
/// the configured CA's certificates trusted when there is one.
fn http_client(config: &RegistryConfig, timeout: Duration) -> Result<reqwest::ClientBuilder, Error> {
    let client = reqwest::Client::builder().timeout(timeout + Duration::from_secs(1));
    let Some(path) = &config.ca_file else { return Ok(client) };
    let pem = std::fs::read(path).map_err(|e| registry_error(format!("reading the CA file {}", path.display()), e))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| registry_error(format!("the CA file {} is not PEM certificates", path.display()), e))?;
    if roots.is_empty() {
        return Err(Error::Registry {
            what: format!("the CA file {} holds no certificate", path.display()),
            source: None,
        });
    }
    Ok(client.tls_certs_only(roots))
}

/// Credentials as sent.
enum Auth {
    Basic(String, String),
    Bearer(String),
}

fn registry_error(what: impl Into<String>, source: impl Into<crate::error::BoxError>) -> Error {
    Error::Registry { what: what.into(), source: Some(source.into()) }
}

impl SchemaRegistry {
    pub(crate) fn new(config: &RegistryConfig, timeout: Duration) -> Result<SchemaRegistry, Error> {
        let url = config.redacted_url();
        // Each call is bounded by `timeout` below, with a clear message; the HTTP client's
        // own timeout is only a backstop behind it.
        let base = config.url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(base.clone());
        builder.set_timeout(timeout + Duration::from_secs(1));
        let auth = match &config.credentials {
            Some(RegistryCredentials::Basic { user, password }) => {
                let password = password.reveal()?;
                builder.set_basic_authorization(user, Some(&password));
                Some(Auth::Basic(user.clone(), password))
            }
            Some(RegistryCredentials::Bearer(token)) => {
                let token = token.reveal()?;
                builder.set_token_authorization(&token);
                Some(Auth::Bearer(token))
            }
            None => None,
        };
        let http = http_client(config, timeout)?.build().map_err(|e| registry_error(format!("client for {url}"), e))?;
        let settings = builder
            .build_with(http_client(config, timeout)?)
            .map_err(|e| registry_error(format!("client for {url}"), e))?;
        Ok(SchemaRegistry {
            settings,
            http,
            base,
            auth,
            mode: config.mode,
            url,
            writers: Mutex::default(),
            registering: Mutex::default(),
            by_id: Mutex::default(),
            timeout,
        })
    }

    fn cached(&self, key: &Key) -> Option<Writer> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn remember(&self, key: Key, writer: Writer) {
        self.writers.lock().unwrap_or_else(|p| p.into_inner()).insert(key, writer);
    }

    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = Result<T, SRCError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Registry(e)),
            Err(_) => Err(Failure::Timeout(format!("no answer within {:?} {}", self.timeout, what()))),
        }
    }

    /// At start: what the mode requires before any publish. Auto-register checks nothing
    /// (the first publish registers); lookup-only and use-latest find each publish
    /// stream's writer now, and an error names the stream, the subject and the reason.
    pub(crate) async fn prepare<'a>(
        &self,
        streams: impl Iterator<Item = (&'a str, &'a str, &'a RegistrySchema)>,
    ) -> Result<(), Error> {
        let mut count = 0;
        for (method, topic, schema) in streams {
            count += 1;
            if self.mode == RegistryMode::AutoRegister {
                continue;
            }
            let subject = schema.subject_for(topic);
            let writer = match self.mode {
                RegistryMode::UseLatest => self.latest(&subject, schema).await,
                _ => self.look_up(&subject, schema).await,
            };
            match writer {
                Ok(w) => {
                    tracing::info!(stream = method, subject, id = w.id, "schema registry: stream schema found");
                    self.remember((subject, schema.schema.clone(), schema.record.clone()), w);
                }
                Err(why) => {
                    return Err(Error::Registry {
                        what: format!("stream {method}: subject {subject:?} ({:?} mode): {why}", self.mode),
                        source: None,
                    });
                }
            }
        }
        match self.mode {
            RegistryMode::AutoRegister if count > 0 => tracing::warn!(
                registry = %self.url,
                "schema registry: auto-register mode: each publish stream's schema is registered on first use \
                 (for development; use lookup-only or use-latest against a production registry)"
            ),
            mode => tracing::info!(registry = %self.url, ?mode, streams = count, "schema registry ready"),
        }
        Ok(())
    }

    /// How to frame a record of `schema` on `topic`: from memory when known; in
    /// auto-register mode, registered on first use.
    pub(crate) async fn writer(&self, topic: &str, schema: &RegistrySchema) -> Result<Writer, Status> {
        let subject = schema.subject_for(topic);
        let key = (subject, schema.schema.clone(), schema.record.clone());
        if let Some(w) = self.cached(&key) {
            return Ok(w);
        }
        if self.mode != RegistryMode::AutoRegister {
            // Found at start for every stream the gateway serves; a stream added since
            // cannot be registered in these modes.
            return Err(Status::new(
                Code::FailedPrecondition,
                format!("schema registry ({:?} mode): no schema was found at start for subject {:?}", self.mode, key.0),
            ));
        }
        let gate = self.registering.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        // One deadline for waiting for another publish's registration and for our own: a
        // publish queued behind a stuck registration is answered within the timeout too.
        let register = async {
            let _turn = gate.lock().await;
            if let Some(w) = self.cached(&key) {
                return Ok(Ok(w));
            }
            let registered = post_schema(&self.settings, key.0.clone(), supplied(schema)).await?;
            Ok(Err(registered.id))
        };
        let id = match tokio::time::timeout(self.timeout, register).await {
            Ok(Ok(Ok(cached))) => return Ok(cached),
            Ok(Ok(Err(id))) => id,
            Ok(Err(e)) => return Err(Failure::Registry(e).status(&key.0, "registering")),
            Err(_) => {
                let why = format!("no answer within {:?} registering {:?}", self.timeout, key.0);
                return Err(Failure::Timeout(why).status(&key.0, "registering"));
            }
        };
        let writer = Writer { id, message_indexes: schema.message_indexes.clone() };
        self.remember(key, writer.clone());
        Ok(writer)
    }

    /// Lookup-only: the id of exactly this schema (its references looked up the same way)
    /// under `subject`, registering nothing.
    async fn look_up(&self, subject: &str, schema: &RegistrySchema) -> Result<Writer, String> {
        match self.look_up_file(subject, &schema.schema, &schema.references).await? {
            Ok((id, _)) => Ok(Writer { id, message_indexes: schema.message_indexes.clone() }),
            Err(missing) => Err(format!("{missing} (lookup-only mode registers nothing)")),
        }
    }

    /// `Ok(Ok((id, version)))`: registered; `Ok(Err(what))`: this file or one of its
    /// references is not; `Err`: the registry could not say.
    fn look_up_file<'a>(
        &'a self,
        subject: &'a str,
        text: &'a str,
        references: &'a [SchemaReference],
    ) -> futures_util::future::BoxFuture<'a, Result<Found, String>> {
        Box::pin(async move {
            let mut refs = Vec::new();
            for r in references {
                let version = match self.look_up_file(&r.subject, &r.schema, &r.references).await {
                    Ok(Ok((_, version))) => version,
                    Ok(Err(missing)) => {
                        return Ok(Err(format!("its reference {:?} (subject {:?}): {missing}", r.name, r.subject)));
                    }
                    Err(why) => return Err(format!("its reference {:?} (subject {:?}): {why}", r.name, r.subject)),
                };
                refs.push(serde_json::json!({ "name": r.name, "subject": r.subject, "version": version }));
            }
            let mut body = serde_json::json!({ "schema": text, "schemaType": "PROTOBUF" });
            if !refs.is_empty() {
                body["references"] = serde_json::Value::Array(refs);
            }
            let body = body.to_string();
            let found = self
                .bounded(
                    || format!("looking up {subject:?}"),
                    perform_sr_call(&self.settings, SrCall::PostForVersion(subject, &body)),
                )
                .await;
            match found {
                Ok(found) => match (found.id, found.version) {
                    (Some(id), Some(version)) => Ok(Ok((id, version))),
                    _ => Err("the registry's answer has no id and version".to_owned()),
                },
                Err(f) if f.http_status() == Some(404) => Ok(Err("this schema is not registered under it".to_owned())),
                Err(f) => Err(f.explain("")),
            }
        })
    }

    /// What a gateway in this client's mode would write `schema` with on `topic`, checked
    /// now; registers nothing.
    async fn check(&self, topic: &str, schema: &RegistrySchema) -> Result<SchemaCheck, String> {
        let subject = schema.subject_for(topic);
        match self.mode {
            RegistryMode::UseLatest => {
                self.latest(&subject, schema).await.map(|w| SchemaCheck::Latest { subject, id: w.id })
            }
            RegistryMode::LookupOnly => {
                self.look_up(&subject, schema).await.map(|w| SchemaCheck::Registered { subject, id: w.id })
            }
            _ => {
                if let Ok((id, _)) = self.look_up_file(&subject, &schema.schema, &schema.references).await? {
                    return Ok(SchemaCheck::Registered { subject, id });
                }
                let latest = self
                    .bounded(
                        || format!("reading the latest version of {subject:?}"),
                        get_schema_by_subject_and_version(&self.settings, &subject, None),
                    )
                    .await;
                let latest = match latest {
                    Ok(latest) => latest.id,
                    Err(f) if f.http_status() == Some(404) => {
                        return Ok(SchemaCheck::WouldRegister { subject, latest: None });
                    }
                    Err(f) => return Err(f.explain("")),
                };
                match self.compatible(&subject, schema).await? {
                    Ok(()) => Ok(SchemaCheck::WouldRegister { subject, latest: Some(latest) }),
                    Err(reasons) => Err(format!(
                        "the registry finds this schema incompatible with the latest version (id {latest}){reasons}: \
                         registering it would fail"
                    )),
                }
            }
        }
    }

    /// Whether the registry's compatibility rule for `subject` accepts `schema` against the
    /// subject's latest version (`Ok(Err(reasons))` when it does not). References are sent
    /// at their registered versions (the exact file when it is registered, else the
    /// reference subject's latest version).
    async fn compatible(&self, subject: &str, schema: &RegistrySchema) -> Result<Result<(), String>, String> {
        let mut refs = Vec::new();
        for r in &schema.references {
            let version = match self.look_up_file(&r.subject, &r.schema, &r.references).await? {
                Ok((_, version)) => version,
                Err(_) => match self
                    .bounded(
                        || format!("reading the latest version of {:?}", r.subject),
                        get_schema_by_subject_and_version(&self.settings, &r.subject, None),
                    )
                    .await
                {
                    Ok(latest) => latest.version.unwrap_or(1),
                    Err(f) => {
                        return Err(format!("its reference {:?} is not registered: {}", r.subject, f.explain("")));
                    }
                },
            };
            refs.push(serde_json::json!({ "name": r.name, "subject": r.subject, "version": version }));
        }
        let body = serde_json::json!({ "schema": schema.schema, "schemaType": "PROTOBUF", "references": refs });
        let url = format!("{}/compatibility/subjects/{}/versions/latest?verbose=true", self.base, escape(subject));
        let request = self.authorized(
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")
                .body(body.to_string()),
        );
        let call = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (status, text) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(causes(vec![e.to_string()], std::error::Error::source(&e))),
            Err(_) => {
                return Err(format!("no answer within {:?} checking compatibility with {subject:?}", self.timeout));
            }
        };
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if !status.is_success() {
            let message = answer["message"].as_str().unwrap_or(text.trim());
            return Err(format!("the registry cannot check compatibility: HTTP {}: {message}", status.as_u16()));
        }
        match answer["is_compatible"].as_bool() {
            Some(true) => Ok(Ok(())),
            Some(false) => {
                let reasons: Vec<&str> =
                    answer["messages"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
                Ok(Err(if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join("; ")) }))
            }
            None => Err(format!("the registry's compatibility answer is not understood: {}", text.trim())),
        }
    }

    /// Use-latest: the subject's latest version, provided it declares the record type and
    /// the registry finds the stream's schema compatible with it.
    async fn latest(&self, subject: &str, schema: &RegistrySchema) -> Result<Writer, String> {
        let latest = self
            .bounded(
                || format!("reading the latest version of {subject:?}"),
                get_schema_by_subject_and_version(&self.settings, subject, None),
            )
            .await
            .map_err(|f| f.explain("the subject has no version (use-latest mode registers nothing)"))?;
        let file = descriptor::parse(&latest.schema).map_err(|e| {
            format!("its latest version (id {}) is not a protobuf schema the gateway reads: {e}", latest.id)
        })?;
        let Some(message_indexes) = descriptor::indexes_of(&file, &schema.record) else {
            return Err(format!("its latest version (id {}) does not declare {}", latest.id, schema.record));
        };
        // A schema registered under the subject already fits it; others, the registry judges.
        if self.look_up_file(subject, &schema.schema, &schema.references).await?.is_err()
            && let Err(reasons) = self.compatible(subject, schema).await?
        {
            return Err(format!(
                "the registry finds this stream's schema incompatible with the latest version (id {}){reasons}",
                latest.id
            ));
        }
        Ok(Writer { id: latest.id, message_indexes })
    }

    /// The full name of the message at `indexes` in schema `id`, from memory; on a miss
    /// the schema is fetched (once, however many subscribers ask) and `wake` notified when
    /// it is known.
    pub(crate) fn type_name(self: &Arc<Self>, id: u32, indexes: &[i32], wake: &Arc<Notify>) -> Lookup {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match by_id.get_mut(&id) {
            Some(ById::Known(file, _)) => return Lookup::Known(descriptor::type_name(file, indexes)),
            Some(ById::Unusable(why, _)) => return Lookup::Unusable(why.clone()),
            Some(ById::Fetching(waiting)) => {
                if !waiting.iter().any(|w| Arc::ptr_eq(w, wake)) {
                    waiting.push(wake.clone());
                }
                return Lookup::Pending;
            }
            Some(ById::Failed(status, at)) if at.elapsed() < FAILED_FETCH_MEMORY => {
                return Lookup::Failed(status.clone());
            }
            _ => {}
        }
        if by_id.len() >= MAX_SCHEMAS_BY_ID {
            let oldest = by_id
                .iter()
                .filter_map(|(id, s)| match s {
                    ById::Known(_, at) | ById::Unusable(_, at) | ById::Failed(_, at) => Some((*at, *id)),
                    ById::Fetching(_) => None,
                })
                .min();
            if let Some((_, old)) = oldest {
                by_id.remove(&old);
            }
        }
        by_id.insert(id, ById::Fetching(vec![wake.clone()]));
        drop(by_id);
        let this = self.clone();
        tokio::spawn(async move {
            let fetched = this.bounded(|| format!("reading schema {id}"), get_schema_by_id(id, &this.settings)).await;
            let now = Instant::now();
            let entry = match fetched {
                Ok(registered) => match descriptor::parse(&registered.schema) {
                    Ok(file) => ById::Known(Arc::new(file), now),
                    Err(e) => ById::Unusable(format!("names schema {id}, which is not a protobuf schema: {e}"), now),
                },
                Err(f) if f.http_status() == Some(404) => {
                    ById::Unusable(format!("names schema {id}, which the registry does not have"), now)
                }
                Err(f) => {
                    let status =
                        Status::unavailable(format!("schema registry: reading schema {id}: {}", f.explain("")));
                    tracing::warn!(schema_id = id, %status, "schema registry: a record's schema could not be read");
                    ById::Failed(status, now)
                }
            };
            let waiting = this.by_id.lock().unwrap_or_else(|p| p.into_inner()).insert(id, entry);
            if let Some(ById::Fetching(waiting)) = waiting {
                waiting.iter().for_each(|w| w.notify_one());
            }
        });
        Lookup::Pending
    }

    /// Whether the registry answers (for readiness): `GET /schemas/types`, bounded by the
    /// timeout; refused credentials (401, 403) and 5xx answers count as not ready.
    pub(crate) async fn health(&self) -> Result<(), String> {
        // `GET /schemas/types`: a few bytes, whatever the registry holds, and readable with
        // any credentials a gateway has.
        let request = self.authorized(self.http.get(format!("{}/schemas/types", self.base)));
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => Err(causes(vec![e.to_string()], std::error::Error::source(&e))),
            Ok(Ok(r)) if matches!(r.status().as_u16(), 401 | 403) => {
                Err(format!("the registry refuses the gateway's credentials (HTTP {})", r.status().as_u16()))
            }
            Ok(Ok(r)) if r.status().is_server_error() => Err(format!("HTTP {}", r.status().as_u16())),
            Ok(Ok(r)) if r.status().as_u16() == 404 => Err(format!(
                "HTTP 404 for {}/schemas/types: is the URL the registry's Confluent API base?",
                self.url.trim_end_matches('/')
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(Auth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// What [`check_schema`] found: what a gateway would write a publish stream's records with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaCheck {
    /// Exactly this schema (with its references) is registered under `subject` as `id`.
    Registered {
        /// The subject.
        subject: String,
        /// The schema id.
        id: u32,
    },
    /// Auto-register mode: not registered yet, and the registry would accept it: the
    /// subject is new (`latest` none), or it finds the schema compatible with the latest
    /// version.
    WouldRegister {
        /// The subject.
        subject: String,
        /// The id of the subject's latest version, if it has one.
        latest: Option<u32>,
    },
    /// Use-latest mode: records would be written with the subject's latest version.
    Latest {
        /// The subject.
        subject: String,
        /// Its id.
        id: u32,
    },
}

/// Checks the schema of a publish stream on `topic` against the registry as a gateway in
/// `config.mode` would: in lookup-only and use-latest modes exactly as the gateway does at
/// start; in auto-register mode, whether it is registered already or the registry's
/// compatibility rule would let it be. Registers nothing; each call is bounded by
/// `timeout`. An [`Error::Registry`] says why not. What `kafkasocks-gen registry check`
/// runs, so a CI pipeline can gate a deploy.
pub async fn check_schema(
    config: &RegistryConfig,
    topic: &str,
    schema: &RegistrySchema,
    timeout: Duration,
) -> Result<SchemaCheck, Error> {
    // reqwest uses rustls without a built-in provider: ring is the one this crate compiles.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = SchemaRegistry::new(config, timeout)?;
    registry.check(topic, schema).await.map_err(|why| Error::Registry {
        what: format!("subject {:?} ({:?} mode): {why}", schema.subject_for(topic), config.mode),
        source: None,
    })
}

enum Failure {
    Registry(SRCError),
    Timeout(String),
}

impl Failure {
    /// The registry's HTTP status, wherever in the error it is said (a refused reference
    /// is an error about posting the reference, with the registry's answer as its cause).
    fn http_status(&self) -> Option<u16> {
        let Failure::Registry(e) = self else { return None };
        chain(e).split("status ").skip(1).find_map(|rest| rest.get(..3)?.parse().ok())
    }

    /// For start-up errors: what happened, with `not_found` for a 404.
    fn explain(&self, not_found: &str) -> String {
        match (self, self.http_status()) {
            (Failure::Timeout(why), _) => why.clone(),
            (Failure::Registry(e), Some(404)) if !not_found.is_empty() => {
                format!("{not_found} ({})", scrub(e.cause.as_deref().unwrap_or("404")))
            }
            (Failure::Registry(e), Some(401 | 403)) => {
                format!(
                    "the registry refuses the gateway's credentials: {}",
                    scrub(e.cause.as_deref().unwrap_or(&e.error))
                )
            }
            (Failure::Registry(e), _) => chain(e),
        }
    }

    /// What a publish is told: a schema the registry refuses (409: its compatibility rule;
    /// 422: not a valid schema) will not be accepted by retrying, so it is
    /// `FAILED_PRECONDITION`; anything else (unreachable, 5xx, a timeout) is `UNAVAILABLE`.
    fn status(&self, subject: &str, doing: &str) -> Status {
        let cause = match self {
            Failure::Registry(e) => scrub(e.cause.as_deref().unwrap_or("")),
            Failure::Timeout(_) => String::new(),
        };
        match self.http_status() {
            Some(409) => Status::new(
                Code::FailedPrecondition,
                format!("schema registry refuses this schema for {subject:?} (incompatible): {cause}"),
            ),
            Some(422) => Status::new(
                Code::FailedPrecondition,
                format!("schema registry: invalid schema for {subject:?}: {cause}"),
            ),
            _ => match self {
                Failure::Timeout(why) => Status::unavailable(format!("schema registry: {why}")),
                Failure::Registry(_) => {
                    Status::unavailable(format!("schema registry: {doing} {subject:?}: {}", self.explain("")))
                }
            },
        }
    }
}

/// The error and every cause under it, each once ("error sending request: invalid peer
/// certificate: UnknownIssuer" rather than only the first), without URL credentials.
fn chain(e: &SRCError) -> String {
    let mut parts = vec![e.error.clone()];
    parts.extend(e.cause.clone());
    causes(parts, std::error::Error::source(e))
}

/// `parts`, then each error down the `source` chain, each once, without URL credentials.
fn causes(parts: Vec<String>, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts = parts;
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        if !out.iter().any(|seen| seen.contains(&p)) {
            out.push(p);
        }
    }
    scrub(&out.join(": "))
}

/// A subject as one URL path segment (`kafkasocks/options.proto` -> `kafkasocks%2Foptions.proto`).
fn escape(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://user:password@host` -> `scheme://<redacted>@host`, wherever a URL appears.
fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after.find(|c: char| c == '/' || c == ')' || c.is_whitespace()).unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                out.push_str(&after[at..end]);
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn supplied(schema: &RegistrySchema) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Protobuf, schema.schema.clone())
        .with_references(schema.references.iter().map(supplied_reference).collect())
}

fn supplied_reference(r: &SchemaReference) -> SuppliedReference {
    SuppliedReference::new(r.name.clone(), r.subject.clone(), r.schema.clone())
        .with_references(r.references.iter().map(supplied_reference).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_never_carry_url_credentials() {
        assert_eq!(
            super::scrub("for url (https://key:s3cret@registry.example.com/apis/x) failed"),
            "for url (https://<redacted>@registry.example.com/apis/x) failed"
        );
        assert_eq!(super::scrub("http://h:1/x and http://u@h"), "http://h:1/x and http://<redacted>@h");
    }
}
