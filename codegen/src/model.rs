//! Second layer: the small model both emitters read. Built from prost-reflect descriptors;
//! this is where the `(kafkasocks.stream)` options are read and checked, so every
//! generation-time error about streams comes from here, with file and line.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    Cardinality as PbCardinality, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ServiceDescriptor, Syntax as PbSyntax, Value,
};

use crate::error::{Error, Location};
use crate::load::Loaded;

/// Everything the emitters need.
#[derive(Debug, Clone)]
pub struct Model {
    /// Every file of the descriptor pool (requested ones and their imports), dependencies
    /// before the files that import them.
    pub files: Vec<ProtoFile>,
}

/// One `.proto` file.
#[derive(Debug, Clone)]
pub struct ProtoFile {
    /// The proto name ("chat/v1/chat.proto").
    pub name: String,
    /// The package ("chat.v1"; empty for none).
    pub package: String,
    /// proto2 or proto3.
    pub syntax: Syntax,
    /// Named on the command line / builder (not only imported).
    pub requested: bool,
    /// Files it imports (proto names).
    pub dependencies: Vec<String>,
    /// All messages, nested ones after their parent, map entries left out.
    pub messages: Vec<Message>,
    /// All enums, top-level and nested.
    pub enums: Vec<Enum>,
    /// Services with `(kafkasocks.stream)` methods (only for requested files).
    pub services: Vec<Service>,
    /// The source text, when compiled from source.
    pub source: Option<String>,
}

/// proto2 or proto3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `syntax = "proto2"` (or none).
    Proto2,
    /// `syntax = "proto3"`.
    Proto3,
}

/// Comments attached to a declaration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    /// The leading comment, one entry per line, without the comment markers.
    pub lines: Vec<String>,
}

impl Comments {
    /// True when there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }
}

/// A message type.
#[derive(Debug, Clone)]
pub struct Message {
    /// Fully-qualified name without the leading dot ("chat.v1.Outer.Inner").
    pub full_name: String,
    /// Names from the outermost message down ("Outer", "Inner").
    pub path: Vec<String>,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// Real oneofs (not proto3 `optional` ones), in declaration order.
    pub oneofs: Vec<Oneof>,
    /// Doc comments.
    pub comments: Comments,
}

/// A oneof.
#[derive(Debug, Clone)]
pub struct Oneof {
    /// The proto name.
    pub name: String,
    /// Doc comments.
    pub comments: Comments,
}

/// A field.
#[derive(Debug, Clone)]
pub struct Field {
    /// The proto name.
    pub name: String,
    /// lowerCamelCase (the proto JSON name).
    pub json_name: String,
    /// The field number.
    pub number: u32,
    /// The element type (value type for maps).
    pub ty: FieldType,
    /// Singular, repeated or map.
    pub label: Label,
    /// Index into [`Message::oneofs`] when the field is part of a real oneof.
    pub oneof: Option<usize>,
    /// The proto2 `[default = ...]`, as written.
    pub default: Option<String>,
    /// Doc comments.
    pub comments: Comments,
}

/// Scalar field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
}

impl Scalar {
    /// The proto keyword.
    pub fn proto_name(self) -> &'static str {
        match self {
            Scalar::Double => "double",
            Scalar::Float => "float",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Uint32 => "uint32",
            Scalar::Uint64 => "uint64",
            Scalar::Sint32 => "sint32",
            Scalar::Sint64 => "sint64",
            Scalar::Fixed32 => "fixed32",
            Scalar::Fixed64 => "fixed64",
            Scalar::Sfixed32 => "sfixed32",
            Scalar::Sfixed64 => "sfixed64",
            Scalar::Bool => "bool",
            Scalar::String => "string",
            Scalar::Bytes => "bytes",
        }
    }

    /// Integer types (valid Kafka keys, written as decimal text).
    pub fn is_integer(self) -> bool {
        !matches!(self, Scalar::Double | Scalar::Float | Scalar::Bool | Scalar::String | Scalar::Bytes)
    }

    /// Encoded as varint, fixed32 or fixed64 (so repeated fields of it can be packed).
    pub fn is_packable(self) -> bool {
        !matches!(self, Scalar::String | Scalar::Bytes)
    }
}

/// The type of a field's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A scalar.
    Scalar(Scalar),
    /// An enum, by full name (no leading dot).
    Enum(String),
    /// A message, by full name (no leading dot).
    Message(String),
    /// A proto2 group, by the full name of its message.
    Group(String),
}

/// How many values a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// proto3 singular without `optional`: absent means the default value.
    Implicit,
    /// Explicit presence: proto2 `optional`, proto3 `optional`, message fields, oneof members.
    Optional,
    /// proto2 `required`.
    Required,
    /// `repeated`; `packed` is how it is written (either form is accepted when read).
    Repeated {
        /// Written packed.
        packed: bool,
    },
    /// `map<key, value>`; the value type is [`Field::ty`].
    Map {
        /// The key type.
        key: Scalar,
    },
}

/// An enum type.
#[derive(Debug, Clone)]
pub struct Enum {
    /// Fully-qualified name without the leading dot.
    pub full_name: String,
    /// Names from the outermost message down to the enum.
    pub path: Vec<String>,
    /// Values in declaration order.
    pub values: Vec<EnumValue>,
    /// Doc comments.
    pub comments: Comments,
}

/// One enum value.
#[derive(Debug, Clone)]
pub struct EnumValue {
    /// The proto name.
    pub name: String,
    /// The number.
    pub number: i32,
    /// Doc comments.
    pub comments: Comments,
}

/// A service whose methods are bound to Kafka topics.
#[derive(Debug, Clone)]
pub struct Service {
    /// The proto name ("ChatStreams").
    pub name: String,
    /// "chat.v1.ChatStreams".
    pub full_name: String,
    /// The package.
    pub package: String,
    /// The methods, all with a `(kafkasocks.stream)` option.
    pub methods: Vec<Method>,
    /// Doc comments.
    pub comments: Comments,
    /// Where it is declared.
    pub location: Location,
}

/// The RPC kinds KafkaSocks serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// Publish: the request is produced, the answer is a `kafkasocks.Receipt`.
    Unary,
    /// Subscribe: records of the topic are streamed.
    ServerStreaming,
}

/// One RPC bound to a topic.
#[derive(Debug, Clone)]
pub struct Method {
    /// The proto name ("Messages").
    pub name: String,
    /// What the gateway routes on: "chat.v1.ChatStreams/Messages".
    pub route: String,
    /// Subscribe or publish.
    pub kind: RpcKind,
    /// The request message, full name.
    pub input: String,
    /// The response message, full name.
    pub output: String,
    /// The Kafka topic.
    pub topic: String,
    /// The request field that is (publish) or selects (subscribe) the record key.
    pub key: Option<KeyField>,
    /// Schema Registry settings, for publishes that set `schema` or `schema_subject`. Also
    /// `None` in a model built for TypeScript from descriptors without `.proto` sources
    /// (a descriptor set, a protoc plugin request): TypeScript does not use it, and the
    /// schema text cannot be known there.
    pub schema: Option<RegistrySchema>,
    /// Publishes: what happens to fields the request type does not declare.
    pub unknown_fields: UnknownFields,
    /// Subscriptions to a topic of several record types (`oneof_types`).
    pub record_types: Option<RecordTypes>,
    /// The topic's keys are Confluent-framed key messages (`key_message`). `None` without
    /// sources in a model for TypeScript, as for [`Method::schema`].
    pub key_message: Option<KeyMessage>,
    /// Doc comments.
    pub comments: Comments,
    /// Where it is declared.
    pub location: Location,
}

/// A subscription whose records are of several types, each delivered in its member of the
/// response message's oneof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTypes {
    /// The oneof's name.
    pub oneof: String,
    /// (member message full name, field number), in field order.
    pub members: Vec<(String, u32)>,
    /// Records of other types are skipped (`OTHER_TYPES_SKIP`) rather than failing the
    /// subscription.
    pub skip_others: bool,
}

/// Keys written and read as Confluent-framed protobuf key messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMessage {
    /// The key message's schema (its record is the key message type).
    pub schema: RegistrySchema,
    /// The field of the key message holding the key.
    pub field: u32,
}

/// The `unknown_fields` stream option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownFields {
    /// Produce the decoded message, without them.
    #[default]
    Drop,
    /// Refuse the publish.
    Reject,
    /// Produce the bytes as sent.
    Keep,
}

/// The key field of a request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyField {
    /// The proto field name.
    pub name: String,
    /// The field number.
    pub number: u32,
    /// Its type.
    pub ty: KeyType,
    /// Explicit presence (`optional`): an `Option` in Rust.
    pub optional: bool,
}

/// The types a key field may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `string`: used as its UTF-8 bytes.
    String,
    /// `bytes`: used as is.
    Bytes,
    /// An integer type: written as decimal text.
    Integer(Scalar),
}

/// How the subject of a publish's schema is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `<topic>-value` (`SCHEMA_TOPIC_NAME`).
    TopicName,
    /// The record's full message name (`SCHEMA_RECORD_NAME`).
    RecordName,
    /// `<topic>-<full message name>` (`SCHEMA_TOPIC_RECORD_NAME`).
    TopicRecordName,
    /// This subject (`schema_subject`).
    Named(String),
}

/// The Confluent Schema Registry binding of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySchema {
    /// How the subject is named.
    pub subject: Subject,
    /// The record message, full name.
    pub record: String,
    /// The schema text (the `.proto` source).
    pub schema: String,
    /// The record message's position in the schema (Confluent message indexes).
    pub message_indexes: Vec<i32>,
    /// The files it imports, registered first as schema references, as Confluent's
    /// serializer does: each named and subjected by its import path, with its own imports;
    /// the well-known `google/protobuf/*` files are left out (every registry and
    /// deserializer has them built in).
    pub references: Vec<SchemaReference>,
}

/// An imported file registered as a schema reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    /// The import path, which is also the reference's name and subject.
    pub name: String,
    /// The file's source.
    pub schema: String,
    /// Its own imports.
    pub references: Vec<SchemaReference>,
}

impl Model {
    /// The file with this proto name.
    pub fn file(&self, name: &str) -> Option<&ProtoFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The message with this full name (no leading dot), with its file.
    pub fn message(&self, full_name: &str) -> Option<(&ProtoFile, &Message)> {
        self.files.iter().find_map(|f| f.messages.iter().find(|m| m.full_name == full_name).map(|m| (f, m)))
    }

    /// The enum with this full name (no leading dot), with its file.
    pub fn enumeration(&self, full_name: &str) -> Option<(&ProtoFile, &Enum)> {
        self.files.iter().find_map(|f| f.enums.iter().find(|e| e.full_name == full_name).map(|e| (f, e)))
    }

    /// Builds the model and checks every stream definition of the requested files.
    /// `services` limits which services are kept (full names); empty keeps all.
    pub(crate) fn build(loaded: &Loaded, services: &[String]) -> Result<Model, Error> {
        let pool = &loaded.pool;
        let ext = pool.get_extension_by_name("kafkasocks.stream");
        let mut files = Vec::new();
        let mut matched = BTreeSet::new();
        for file in pool.files() {
            let requested = loaded.requested.iter().any(|r| r == file.name());
            let mut model_file = ProtoFile {
                name: file.name().to_owned(),
                package: file.package_name().to_owned(),
                syntax: match file.syntax() {
                    PbSyntax::Proto3 => Syntax::Proto3,
                    PbSyntax::Proto2 => Syntax::Proto2,
                },
                requested,
                dependencies: file.dependencies().map(|d| d.name().to_owned()).collect(),
                messages: Vec::new(),
                enums: Vec::new(),
                services: Vec::new(),
                source: loaded.sources.get(file.name()).and_then(|s| s.text.clone()),
            };
            let ctx = FileCtx { loaded, file: &file };
            for e in file.enums() {
                model_file.enums.push(ctx.enumeration(&e));
            }
            for m in file.messages() {
                ctx.collect_message(&m, &mut model_file);
            }
            if requested {
                if file.file_descriptor_proto().syntax() == "editions" {
                    return Err(Error::stream(
                        loaded.file_location(file.name()),
                        "protobuf editions are not supported yet",
                        "use syntax = \"proto3\" (or \"proto2\")",
                    ));
                }
                for s in file.services() {
                    if !services.is_empty() && !services.iter().any(|n| n == s.full_name()) {
                        continue;
                    }
                    matched.insert(s.full_name().to_owned());
                    if let Some(service) = ctx.service(&s, ext.as_ref())? {
                        model_file.services.push(service);
                    }
                }
            }
            files.push(model_file);
        }
        if let Some(missing) = services.iter().find(|s| !matched.contains(*s)) {
            return Err(Error::Usage(format!(
                "no service {missing:?} in the requested files (use the fully-qualified name, e.g. \"chat.v1.ChatStreams\")"
            )));
        }
        Ok(Model { files })
    }
}

struct FileCtx<'a> {
    loaded: &'a Loaded,
    file: &'a FileDescriptor,
}

/// Source paths: `MethodDescriptorProto.options` and our extension's number in it.
const OPTIONS: i32 = 4;
const STREAM_EXTENSION: i32 = 51234;

impl FileCtx<'_> {
    fn location(&self, path: &[i32]) -> Location {
        let mut loc = self.loaded.file_location(self.file.name());
        if let Some(l) = self.source_location(path) {
            loc.line = l.span.first().and_then(|v| u32::try_from(v + 1).ok());
            loc.column = l.span.get(1).and_then(|v| u32::try_from(v + 1).ok());
        }
        loc
    }

    fn source_location(&self, path: &[i32]) -> Option<&prost_types::source_code_info::Location> {
        self.file.file_descriptor_proto().source_code_info.as_ref()?.location.iter().find(|l| l.path == path)
    }

    fn comments(&self, path: &[i32]) -> Comments {
        let Some(text) = self.source_location(path).and_then(|l| l.leading_comments.as_deref()) else {
            return Comments::default();
        };
        let mut lines: Vec<String> =
            text.lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end().to_owned()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        while lines.first().is_some_and(|l| l.is_empty()) {
            lines.remove(0);
        }
        Comments { lines }
    }

    fn collect_message(&self, m: &MessageDescriptor, out: &mut ProtoFile) {
        if m.is_map_entry() {
            return;
        }
        let oneofs: Vec<_> = m.oneofs().filter(|o| !o.is_synthetic()).collect();
        let fields = m
            .fields()
            .map(|f| Field {
                name: f.name().to_owned(),
                json_name: f.json_name().to_owned(),
                number: f.number(),
                ty: field_type(&f),
                label: label(&f),
                oneof: f
                    .containing_oneof()
                    .filter(|o| !o.is_synthetic())
                    .and_then(|o| oneofs.iter().position(|x| x.name() == o.name())),
                default: f.field_descriptor_proto().default_value.clone(),
                comments: self.comments(f.path()),
            })
            .collect();
        out.messages.push(Message {
            full_name: m.full_name().to_owned(),
            path: type_path(m.full_name(), m.package_name()),
            fields,
            oneofs: oneofs
                .iter()
                .map(|o| Oneof { name: o.name().to_owned(), comments: self.comments(o.path()) })
                .collect(),
            comments: self.comments(m.path()),
        });
        for e in m.child_enums() {
            out.enums.push(self.enumeration(&e));
        }
        for c in m.child_messages() {
            self.collect_message(&c, out);
        }
    }

    fn enumeration(&self, e: &EnumDescriptor) -> Enum {
        Enum {
            full_name: e.full_name().to_owned(),
            path: type_path(e.full_name(), e.package_name()),
            // Declaration order (prost-reflect's `values()` is sorted by number).
            values: e
                .enum_descriptor_proto()
                .value
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let path: Vec<i32> = e.path().iter().copied().chain([2, i as i32]).collect();
                    EnumValue { name: v.name().to_owned(), number: v.number(), comments: self.comments(&path) }
                })
                .collect(),
            comments: self.comments(e.path()),
        }
    }

    /// A service with stream options, `None` when none of its methods has one (a plain
    /// gRPC service, not ours).
    fn service(
        &self,
        s: &ServiceDescriptor,
        ext: Option<&prost_reflect::ExtensionDescriptor>,
    ) -> Result<Option<Service>, Error> {
        let options: Vec<_> = s.methods().map(|m| ext.and_then(|ext| stream_options(&m, ext))).collect();
        if options.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut methods = Vec::new();
        for (m, opts) in s.methods().zip(options) {
            methods.push(self.method(&m, opts)?);
        }
        Ok(Some(Service {
            name: s.name().to_owned(),
            full_name: s.full_name().to_owned(),
            package: s.package_name().to_owned(),
            methods,
            comments: self.comments(s.path()),
            location: self.location(s.path()),
        }))
    }

    fn method(&self, m: &MethodDescriptor, opts: Option<StreamOptions>) -> Result<Method, Error> {
        let location = self.location(m.path());
        let option_path: Vec<i32> = m.path().iter().copied().chain([OPTIONS, STREAM_EXTENSION]).collect();
        let option_location = match self.source_location(&option_path) {
            Some(_) => self.location(&option_path),
            None => location.clone(),
        };
        let service = m.parent_service().name();
        let Some(opts) = opts else {
            return Err(Error::stream(
                location,
                format!(
                    "rpc {}.{} has no (kafkasocks.stream) option, but other methods of {service} do",
                    service,
                    m.name()
                ),
                "bind it to a topic: option (kafkasocks.stream) = { topic: \"...\" }; or move it to a service \
                 without stream options",
            ));
        };
        let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => RpcKind::Unary,
            (false, true) => RpcKind::ServerStreaming,
            (true, server) => {
                let what = if server { "bidirectional streaming" } else { "client streaming" };
                return Err(Error::stream(
                    location,
                    format!("rpc {service}.{} is {what}, which KafkaSocks does not support", m.name()),
                    "use a server-streaming rpc to subscribe (rpc X(Req) returns (stream Rec)) and a unary rpc \
                     returning kafkasocks.Receipt to publish; send several records as several unary calls",
                ));
            }
        };
        if opts.topic.trim().is_empty() {
            return Err(Error::stream(
                option_location,
                format!("rpc {service}.{}: (kafkasocks.stream) has no topic", m.name()),
                "add the Kafka topic: option (kafkasocks.stream) = { topic: \"my.topic\" };",
            ));
        }
        if let Some(bad) = topic_problem(&opts.topic) {
            return Err(Error::stream(
                option_location,
                format!("rpc {service}.{}: topic {:?} is not a valid Kafka topic name: {bad}", m.name(), opts.topic),
                "Kafka topic names are 1-249 characters of [a-zA-Z0-9._-] and not \".\" or \"..\"",
            ));
        }
        let input = m.input();
        let output = m.output();
        if kind == RpcKind::Unary && output.full_name() != "kafkasocks.Receipt" {
            return Err(Error::stream(
                location,
                format!(
                    "rpc {service}.{} is unary (a publish) but returns {}; publishes answer with the Kafka receipt",
                    m.name(),
                    output.full_name()
                ),
                "declare it as: returns (kafkasocks.Receipt)",
            ));
        }
        let key =
            if opts.key.is_empty() { None } else { Some(self.key_field(m, &input, &opts.key, &option_location)?) };
        let subject = match (opts.schema, opts.schema_subject.trim()) {
            (0, "") => None,
            (0, named) => Some(Subject::Named(named.to_owned())),
            (strategy, "") => Some(match strategy {
                1 => Subject::TopicName,
                2 => Subject::RecordName,
                3 => Subject::TopicRecordName,
                n => {
                    return Err(Error::stream(
                        option_location,
                        format!("rpc {service}.{}: schema {n} is not a subject name strategy", m.name()),
                        "use SCHEMA_TOPIC_NAME, SCHEMA_RECORD_NAME or SCHEMA_TOPIC_RECORD_NAME",
                    ));
                }
            }),
            (_, _) => {
                return Err(Error::stream(
                    option_location,
                    format!("rpc {service}.{}: both schema and schema_subject are set", m.name()),
                    "name the subject one way: a strategy in schema, or a fixed subject in schema_subject",
                ));
            }
        };
        if kind != RpcKind::Unary && (opts.schema != 0 || !opts.schema_subject.trim().is_empty()) {
            return Err(Error::stream(
                option_location,
                format!("rpc {service}.{}: schema and schema_subject are for publishes (unary rpcs)", m.name()),
                "drop them here: subscriptions remove the Schema Registry framing from whatever they read \
                 (use oneof_types for a topic of several record types)",
            ));
        }
        if opts.other_types != 0 && !opts.oneof_types {
            return Err(Error::stream(
                option_location,
                format!("rpc {service}.{}: other_types is set without oneof_types", m.name()),
                "set oneof_types: true (a topic of several record types), or drop other_types",
            ));
        }
        let record_types = if opts.oneof_types {
            if kind != RpcKind::ServerStreaming {
                return Err(Error::stream(
                    option_location,
                    format!("rpc {service}.{}: oneof_types is for subscriptions (server-streaming rpcs)", m.name()),
                    "drop oneof_types here; publish each record type through its own unary rpc",
                ));
            }
            Some(record_types(service, m.name(), &output, opts.other_types == 1, &option_location)?)
        } else {
            None
        };
        let key_message = match opts.key_message.trim() {
            "" => None,
            name => {
                let key_subject = match opts.schema {
                    2 => Subject::RecordName,
                    3 => Subject::TopicRecordName,
                    _ => Subject::TopicName,
                };
                self.key_message(m, key.as_ref(), name, key_subject, &option_location)?
            }
        };
        let schema = match subject {
            Some(subject) if kind == RpcKind::Unary => self.registry_schema(m, &input, subject, &option_location)?,
            _ => None,
        };
        Ok(Method {
            name: m.name().to_owned(),
            route: format!("{}/{}", m.parent_service().full_name(), m.name()),
            kind,
            input: input.full_name().to_owned(),
            output: output.full_name().to_owned(),
            topic: opts.topic,
            key,
            schema,
            unknown_fields: opts.unknown_fields,
            record_types,
            key_message,
            comments: self.comments(m.path()),
            location,
        })
    }

    fn key_field(
        &self,
        m: &MethodDescriptor,
        input: &MessageDescriptor,
        key: &str,
        at: &Location,
    ) -> Result<KeyField, Error> {
        let what = format!("rpc {}.{}", m.parent_service().name(), m.name());
        let Some(f) = input.get_field_by_name(key) else {
            let names: Vec<_> = input.fields().map(|f| f.name().to_owned()).collect();
            return Err(Error::stream(
                at.clone(),
                format!("{what}: key {key:?} is not a field of its request message {}", input.full_name()),
                format!(
                    "set key to one of the request's fields ({}), or leave key out for no key",
                    if names.is_empty() { "it has none".to_owned() } else { names.join(", ") }
                ),
            ));
        };
        let unsupported = |why: &str| {
            Error::stream(
                at.clone(),
                format!("{what}: key field {}.{} {why}", input.full_name(), f.name()),
                "use a string, bytes or integer field as the key (integers are written as decimal text)",
            )
        };
        if f.is_map() {
            return Err(unsupported("is a map"));
        }
        if f.is_list() {
            return Err(unsupported("is repeated"));
        }
        if f.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: key field {}.{} is part of a oneof", input.full_name(), f.name()),
                "move the key out of the oneof into a plain field of the request",
            ));
        }
        let ty = match f.kind() {
            Kind::String => KeyType::String,
            Kind::Bytes => KeyType::Bytes,
            Kind::Double | Kind::Float => return Err(unsupported("is a floating-point number")),
            Kind::Bool => return Err(unsupported("is a bool")),
            Kind::Message(_) => return Err(unsupported("is a message")),
            Kind::Enum(_) => return Err(unsupported("is an enum")),
            k => match scalar(&k) {
                Some(s) if s.is_integer() => KeyType::Integer(s),
                _ => return Err(unsupported("has an unsupported type")),
            },
        };
        Ok(KeyField { name: f.name().to_owned(), number: f.number(), ty, optional: f.supports_presence() })
    }

    /// The `key_message` option: a message of one string or bytes field, for a string or
    /// bytes key field.
    fn key_message(
        &self,
        m: &MethodDescriptor,
        key: Option<&KeyField>,
        name: &str,
        subject: Subject,
        at: &Location,
    ) -> Result<Option<KeyMessage>, Error> {
        let what = format!("rpc {}.{}", m.parent_service().name(), m.name());
        let package = m.parent_file().package_name().to_owned();
        let pool = m.parent_pool();
        let found = pool.get_message_by_name(name).or_else(|| {
            (!package.is_empty()).then(|| pool.get_message_by_name(&format!("{package}.{name}"))).flatten()
        });
        let Some(message) = found else {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: key_message {name:?} is not a message of these files"),
                "name the key message type, e.g. key_message: \"my.v1.RoomKey\" (imported if in another file)",
            ));
        };
        let Some(key) = key else {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: key_message needs a key field"),
                "set key to the request field whose value the key message holds",
            ));
        };
        let fields: Vec<_> = message.fields().collect();
        let usable = matches!(key.ty, KeyType::String | KeyType::Bytes)
            && matches!(&fields[..], [f] if matches!(f.kind(), Kind::String | Kind::Bytes) && !f.is_list());
        if !usable {
            return Err(Error::stream(
                at.clone(),
                format!(
                    "{what}: key_message {} must have exactly one string or bytes field, for a string or bytes key",
                    message.full_name()
                ),
                "declare the key message as message RoomKey { string room = 1; } with a string or bytes key field",
            ));
        }
        let field = fields[0].number();
        Ok(self.registry_schema(m, &message, subject, at)?.map(|schema| KeyMessage { schema, field }))
    }

    /// The Schema Registry binding of a record type: `None` only when the sources are
    /// missing and the model is for TypeScript (`Loaded::schema_sources_optional`).
    fn registry_schema(
        &self,
        m: &MethodDescriptor,
        input: &MessageDescriptor,
        subject: Subject,
        at: &Location,
    ) -> Result<Option<RegistrySchema>, Error> {
        let what = format!("rpc {}.{}", m.parent_service().name(), m.name());
        let record_file = input.parent_file();
        if self.loaded.schema_sources_optional && !self.has_sources(&record_file) {
            return Ok(None);
        }
        let Some(schema) = self.loaded.sources.get(record_file.name()).and_then(|s| s.text.clone()) else {
            return Err(Error::stream(
                at.clone(),
                format!(
                    "{what}: a schema needs the .proto source of {} to register, but it was loaded from a \
                     descriptor set",
                    record_file.name()
                ),
                "generate from the .proto files (with -I include directories) instead of a descriptor set, or \
                 drop the schema option",
            ));
        };
        // Confluent message indexes: the position of the record message in the file,
        // outermost first.
        let mut indexes = Vec::new();
        let path = input.path();
        let mut i = 0;
        while i + 1 < path.len() {
            indexes.push(path[i + 1]);
            i += 2;
        }
        let references = self.schema_references(&record_file, &what, at)?;
        Ok(Some(RegistrySchema {
            subject,
            record: input.full_name().to_owned(),
            schema,
            message_indexes: indexes,
            references,
        }))
    }

    /// True when the source of `file` and of every file it imports (well-known types left
    /// out) is loaded: what a schema binding registers.
    fn has_sources(&self, file: &prost_reflect::FileDescriptor) -> bool {
        self.loaded.sources.get(file.name()).is_some_and(|s| s.text.is_some())
            && file.dependencies().filter(|d| !d.name().starts_with("google/protobuf/")).all(|d| self.has_sources(&d))
    }

    /// The imports of `file` as schema references, recursively, well-known types left out.
    fn schema_references(
        &self,
        file: &prost_reflect::FileDescriptor,
        what: &str,
        at: &Location,
    ) -> Result<Vec<SchemaReference>, Error> {
        let mut out = Vec::new();
        for dep in file.dependencies() {
            let name = dep.name().to_owned();
            if name.starts_with("google/protobuf/") {
                continue;
            }
            let Some(schema) = self.loaded.sources.get(&name).and_then(|s| s.text.clone()) else {
                return Err(Error::stream(
                    at.clone(),
                    format!(
                        "{what}: its schema registers {name} as a schema reference, but its .proto source is not loaded"
                    ),
                    "generate from the .proto files (with -I include directories) instead of a descriptor set",
                ));
            };
            let references = self.schema_references(&dep, what, at)?;
            out.push(SchemaReference { name, schema, references });
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct StreamOptions {
    topic: String,
    key: String,
    schema_subject: String,
    unknown_fields: UnknownFields,
    schema: i32,
    oneof_types: bool,
    other_types: i32,
    key_message: String,
}

fn stream_options(m: &MethodDescriptor, ext: &prost_reflect::ExtensionDescriptor) -> Option<StreamOptions> {
    let options = m.options();
    if !options.has_extension(ext) {
        return None;
    }
    let value = options.get_extension(ext);
    let Value::Message(msg) = value.as_ref() else {
        return None;
    };
    let text = |name: &str| match msg.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let unknown_fields = match msg.get_field_by_name("unknown_fields").as_deref() {
        Some(Value::EnumNumber(1)) => UnknownFields::Reject,
        Some(Value::EnumNumber(2)) => UnknownFields::Keep,
        _ => UnknownFields::Drop,
    };
    let schema = match msg.get_field_by_name("schema").as_deref() {
        Some(Value::EnumNumber(n)) => *n,
        _ => 0,
    };
    let number = |name: &str| match msg.get_field_by_name(name).as_deref() {
        Some(Value::EnumNumber(n)) => *n,
        _ => 0,
    };
    Some(StreamOptions {
        topic: text("topic"),
        key: text("key"),
        schema_subject: text("schema_subject"),
        unknown_fields,
        schema,
        oneof_types: matches!(msg.get_field_by_name("oneof_types").as_deref(), Some(Value::Bool(true))),
        other_types: number("other_types"),
        key_message: text("key_message"),
    })
}

/// The members of a `oneof_types` response message: one oneof holding every field, each
/// member a distinct message type.
fn record_types(
    service: &str,
    method: &str,
    output: &MessageDescriptor,
    skip_others: bool,
    at: &Location,
) -> Result<RecordTypes, Error> {
    let what = format!("rpc {service}.{method}");
    let wrapper = output.full_name();
    let help = "declare the response as a wrapper with one oneof of the record types, and nothing else: \
                message Event { oneof event { Reading reading = 1; Command command = 2; } }";
    let oneofs: Vec<_> = output.oneofs().filter(|o| !o.is_synthetic()).collect();
    let [oneof] = &oneofs[..] else {
        return Err(Error::stream(
            at.clone(),
            format!("{what}: oneof_types needs {wrapper} to have exactly one oneof; it has {}", oneofs.len()),
            help,
        ));
    };
    let mut members = Vec::new();
    for f in output.fields() {
        if f.containing_oneof().as_ref().map(|o| o.name()) != Some(oneof.name()) {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: oneof_types: field {wrapper}.{} is outside the oneof {}", f.name(), oneof.name()),
                help,
            ));
        }
        let Kind::Message(record) = f.kind() else {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: oneof_types: member {wrapper}.{} is not a message type", f.name()),
                help,
            ));
        };
        if members.iter().any(|(name, _): &(String, u32)| name == record.full_name()) {
            return Err(Error::stream(
                at.clone(),
                format!("{what}: oneof_types: {} is in the oneof twice", record.full_name()),
                "each record type can be delivered in one member only",
            ));
        }
        members.push((record.full_name().to_owned(), f.number()));
    }
    members.sort_by_key(|(_, n)| *n);
    Ok(RecordTypes { oneof: oneof.name().to_owned(), members, skip_others })
}

fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.len() > 249 {
        Some("longer than 249 characters")
    } else if topic == "." || topic == ".." {
        Some("\".\" and \"..\" are reserved")
    } else if !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Some("it contains a character other than [a-zA-Z0-9._-]")
    } else {
        None
    }
}

/// "pkg.Outer.Inner" in package "pkg" -> ["Outer", "Inner"].
fn type_path(full_name: &str, package: &str) -> Vec<String> {
    let rest = if package.is_empty() { full_name } else { &full_name[package.len() + 1..] };
    rest.split('.').map(str::to_owned).collect()
}

fn scalar(k: &Kind) -> Option<Scalar> {
    Some(match k {
        Kind::Double => Scalar::Double,
        Kind::Float => Scalar::Float,
        Kind::Int32 => Scalar::Int32,
        Kind::Int64 => Scalar::Int64,
        Kind::Uint32 => Scalar::Uint32,
        Kind::Uint64 => Scalar::Uint64,
        Kind::Sint32 => Scalar::Sint32,
        Kind::Sint64 => Scalar::Sint64,
        Kind::Fixed32 => Scalar::Fixed32,
        Kind::Fixed64 => Scalar::Fixed64,
        Kind::Sfixed32 => Scalar::Sfixed32,
        Kind::Sfixed64 => Scalar::Sfixed64,
        Kind::Bool => Scalar::Bool,
        Kind::String => Scalar::String,
        Kind::Bytes => Scalar::Bytes,
        Kind::Message(_) | Kind::Enum(_) => return None,
    })
}

fn field_type(f: &FieldDescriptor) -> FieldType {
    let kind = if f.is_map() {
        match f.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            k => k,
        }
    } else {
        f.kind()
    };
    match kind {
        Kind::Message(m) if f.is_group() => FieldType::Group(m.full_name().to_owned()),
        Kind::Message(m) => FieldType::Message(m.full_name().to_owned()),
        Kind::Enum(e) => FieldType::Enum(e.full_name().to_owned()),
        k => FieldType::Scalar(scalar(&k).unwrap_or(Scalar::Bytes)),
    }
}

fn label(f: &FieldDescriptor) -> Label {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let key = scalar(&entry.map_entry_key_field().kind()).unwrap_or(Scalar::String);
        return Label::Map { key };
    }
    match f.cardinality() {
        PbCardinality::Repeated => Label::Repeated { packed: is_packed(f) },
        PbCardinality::Required => Label::Required,
        PbCardinality::Optional if f.supports_presence() => Label::Optional,
        PbCardinality::Optional => Label::Implicit,
    }
}

/// Whether a repeated field is written packed: `[packed = ...]` when given, else packed in
/// proto3 and unpacked in proto2 (for numeric and enum fields). Read from the options
/// themselves: prost-reflect's `is_packed` ignores an explicit `[packed = false]` on
/// descriptors compiled by protox.
fn is_packed(f: &FieldDescriptor) -> bool {
    let packable = !matches!(f.kind(), Kind::String | Kind::Bytes | Kind::Message(_));
    if !packable {
        return false;
    }
    let explicit = f.field_descriptor_proto().options.as_ref().and_then(|o| o.packed).or_else(|| {
        match f.options().get_field_by_name("packed").as_deref() {
            Some(Value::Bool(b)) if f.options().has_field_by_name("packed") => Some(*b),
            _ => None,
        }
    });
    explicit.unwrap_or(f.parent_file().syntax() == PbSyntax::Proto3)
}

/// Full names of every type a message's fields refer to.
pub(crate) fn referenced_types(m: &Message) -> BTreeSet<String> {
    m.fields
        .iter()
        .filter_map(|f| match &f.ty {
            FieldType::Enum(n) | FieldType::Message(n) | FieldType::Group(n) => Some(n.clone()),
            FieldType::Scalar(_) => None,
        })
        .collect()
}

/// Which file defines each type (full name -> proto file name).
pub(crate) fn type_files(model: &Model) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in &model.files {
        for m in &f.messages {
            out.insert(m.full_name.clone(), f.name.clone());
        }
        for e in &f.enums {
            out.insert(e.full_name.clone(), f.name.clone());
        }
    }
    out
}
