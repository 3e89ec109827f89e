//! `kafkasocks-gen`: the command-line front end of kafkasocks-build (its own crate, so that
//! build scripts using kafkasocks-build do not compile clap).
//!
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen --check   # CI: fails when stale
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen --runtime vendor   # no npm
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen --message-model protobuf-es
//!     kafkasocks-gen rust proto/chat.proto -I proto -o src/gen --grpc
//!     kafkasocks-gen registry check proto/chat.proto -I proto --registry https://sr.example.com
//!
//! Exit codes: 0 success (or up to date, or every schema fits the registry), 1 `--check`
//! found stale output, a file could not be read or written, or `registry check` found a
//! schema the registry would refuse (or could not ask it), 2 bad input (a .proto that does
//! not compile, a bad stream option, an unsupported RPC kind, bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kafkasocks_build::{Builder, Error, Output, STAMP_PREFIX, TsImportExtension, TsMessageModel, TsRuntime};

/// Generates typed KafkaSocks code from .proto files whose RPCs carry the
/// `(kafkasocks.stream)` option (import "kafkasocks/options.proto"; it is built in).
///
/// Exit codes: 0 success or up to date; 1 `--check` found stale output, or an I/O error;
/// 2 bad input (a .proto that does not parse, a bad stream option, an unsupported RPC
/// kind, bad arguments). Errors name the file and line and say what to do.
#[derive(Debug, Parser)]
#[command(name = "kafkasocks-gen", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes TypeScript: one NAME_kafkasocks.ts per NAME.proto (the inputs and every file whose
    /// types they use). Generated files import the npm package @kafkasocks/runtime (add it to
    /// the project's dependencies) and each other; with --runtime vendor, a copy of the runtime
    /// in OUTDIR/kafkasocks-runtime/ instead.
    ///
    /// Example: kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen
    Ts {
        #[command(flatten)]
        common: Common,
        /// Where generated files get the KafkaSocks runtime from: "package" imports the npm
        /// package @kafkasocks/runtime by name; "vendor" copies the runtime into
        /// OUTDIR/kafkasocks-runtime/ and imports it relatively (for projects without npm).
        #[arg(long, value_enum, value_name = "MODE", default_value_t = RuntimeMode::Package)]
        runtime: RuntimeMode,
        /// How messages are represented: "kafkasocks" generates an interface and binary and JSON
        /// codecs per message; "protobuf-es" generates only the typed service clients, over the
        /// message types and schemas protoc-gen-es (@bufbuild/protoc-gen-es v2) generates into
        /// NAME_pb.ts in the same OUTDIR (run it too; messages are encoded with @bufbuild/protobuf).
        #[arg(long = "message-model", value_enum, value_name = "MODEL", default_value_t = MessageModel::Kafkasocks)]
        message_model: MessageModel,
        /// With --message-model protobuf-es: the extension of imports of protoc-gen-es output
        /// (./chat_pb, ./chat_pb.js, ./chat_pb.ts); set it as protoc-gen-es's import_extension.
        #[arg(long = "import-extension", value_enum, value_name = "EXT")]
        import_extension: Option<ImportExtension>,
    },
    /// Writes the Rust a build script would (one PACKAGE.rs per protobuf package): prost messages,
    /// the hooks trait and server per stream service, and with --grpc the tonic service.
    /// Most projects call kafkasocks_build::compile_protos from build.rs instead.
    ///
    /// Example: kafkasocks-gen rust proto/chat.proto -I proto -o src/gen --grpc
    Rust {
        #[command(flatten)]
        common: Common,
        /// Also generate the tonic gRPC server and its implementation over LocalStreams.
        #[arg(long)]
        grpc: bool,
        /// Map a protobuf package or type to existing Rust types, as PROTO=RUST
        /// (e.g. .common.v1=::common::v1). Repeatable.
        #[arg(long = "extern-path", value_name = "PROTO=RUST")]
        extern_paths: Vec<String>,
        /// Use BTreeMap for map fields under this protobuf path ("." for all). Repeatable.
        #[arg(long = "btree-map", value_name = "PATH")]
        btree_map: Vec<String>,
    },
    /// Confluent Schema Registry tools.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Checks each publish stream's schema (the `schema` / `schema_subject` stream options)
    /// against the registry as a gateway in --mode would: auto-register, that it is
    /// registered or the registry's compatibility rule accepts it; lookup-only, that exactly
    /// it (with its references) is registered; use-latest, that the subject's latest version
    /// declares the record type and the registry finds the schema compatible. Registers
    /// nothing. Exit 1, with the stream, subject and reason, when one does not fit: a CI
    /// step before a deploy.
    ///
    /// Example: kafkasocks-gen registry check proto/chat.proto -I proto --registry https://sr.example.com
    Check(RegistryCheck),
}

#[derive(Debug, Args)]
struct RegistryCheck {
    /// The .proto files whose streams to check.
    #[arg(value_name = "PROTO", required = true)]
    protos: Vec<PathBuf>,
    /// An include directory for imports; repeatable (as for `ts` and `rust`).
    #[arg(short = 'I', long = "include", value_name = "DIR")]
    includes: Vec<PathBuf>,
    /// Only this service (fully-qualified); repeatable. Default: every stream service.
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// The registry's base URL (Confluent API), e.g. http://127.0.0.1:18081/apis/ccompat/v7.
    #[arg(long, value_name = "URL")]
    registry: String,
    /// The mode of the gateway to check for.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Mode::AutoRegister)]
    mode: Mode,
    /// HTTP basic authentication user (with --password-file).
    #[arg(long, value_name = "USER", requires = "password_file")]
    user: Option<String>,
    /// A file holding the basic authentication password.
    #[arg(long = "password-file", value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// A file holding a bearer token.
    #[arg(long = "token-file", value_name = "FILE", conflicts_with = "user")]
    token_file: Option<PathBuf>,
    /// Trust only the certificate authorities in this PEM file (https registries).
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds each registry call may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

/// `--mode`: see [`kafkasocks::RegistryMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The registry's compatibility rule decides (the gateway registers on first use).
    AutoRegister,
    /// Exactly this schema must be registered.
    LookupOnly,
    /// The subject's latest version must declare the record type and be compatible.
    UseLatest,
}

/// `--runtime`: see [`TsRuntime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeMode {
    /// Import the npm package @kafkasocks/runtime (the default).
    Package,
    /// Copy the runtime into OUTDIR/kafkasocks-runtime/.
    Vendor,
}

impl From<RuntimeMode> for TsRuntime {
    fn from(mode: RuntimeMode) -> TsRuntime {
        match mode {
            RuntimeMode::Package => TsRuntime::Package,
            RuntimeMode::Vendor => TsRuntime::Vendor,
        }
    }
}

/// `--message-model`: see [`TsMessageModel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MessageModel {
    /// Interfaces and codecs generated by kafkasocks-gen (the default).
    Kafkasocks,
    /// Clients over protoc-gen-es's message types (@bufbuild/protobuf v2).
    #[value(name = "protobuf-es")]
    ProtobufEs,
}

impl From<MessageModel> for TsMessageModel {
    fn from(model: MessageModel) -> TsMessageModel {
        match model {
            MessageModel::Kafkasocks => TsMessageModel::KafkaSocks,
            MessageModel::ProtobufEs => TsMessageModel::ProtobufEs,
        }
    }
}

/// `--import-extension`: see [`TsImportExtension`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ImportExtension {
    /// ./chat_pb (protoc-gen-es's default).
    None,
    /// ./chat_pb.js
    Js,
    /// ./chat_pb.ts
    Ts,
}

impl From<ImportExtension> for TsImportExtension {
    fn from(ext: ImportExtension) -> TsImportExtension {
        match ext {
            ImportExtension::None => TsImportExtension::None,
            ImportExtension::Js => TsImportExtension::Js,
            ImportExtension::Ts => TsImportExtension::Ts,
        }
    }
}

#[derive(Debug, Args)]
struct Common {
    /// The .proto files to generate from (with --descriptor-set: proto names of files in
    /// the set; none = every file the set does not only import).
    #[arg(value_name = "PROTO")]
    protos: Vec<PathBuf>,
    /// An include directory for imports; repeatable, searched in order. Default: the
    /// directory of each PROTO. kafkasocks/options.proto and google/protobuf/*.proto are
    /// built in.
    #[arg(short = 'I', long = "include", value_name = "DIR")]
    includes: Vec<PathBuf>,
    /// The output directory (created if missing).
    #[arg(short = 'o', long = "out", value_name = "OUTDIR")]
    out: PathBuf,
    /// Write nothing; exit 1 with a short summary if OUTDIR differs from what would be
    /// generated (missing, changed or orphaned files). For CI.
    #[arg(long)]
    check: bool,
    /// Read descriptors from this encoded FileDescriptorSet (protoc --include_imports
    /// --descriptor_set_out=FILE) instead of parsing .proto files.
    #[arg(long = "descriptor-set", value_name = "FILE")]
    descriptor_set: Option<PathBuf>,
    /// Only this service (fully-qualified, e.g. chat.v1.ChatStreams); repeatable.
    /// Default: every service with (kafkasocks.stream) methods.
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
}

impl Common {
    fn builder(&self) -> Builder {
        let mut b = kafkasocks_build::configure().emit_rerun_if_changed(false).includes(&self.includes);
        if let Some(set) = &self.descriptor_set {
            b = b.file_descriptor_set(set);
        }
        for s in &self.services {
            b = b.service(s);
        }
        b
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            let input = e.downcast_ref::<Error>().is_some_and(Error::is_input_error);
            ExitCode::from(if input { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (common, output) = match &cli.command {
        Command::Registry { command: RegistryCommand::Check(check) } => return registry_check(check),
        Command::Ts { common, runtime, message_model, import_extension } => {
            if import_extension.is_some() && *message_model != MessageModel::ProtobufEs {
                return Err(Error::Usage(
                    "--import-extension is for --message-model protobuf-es (imports of protoc-gen-es output)".into(),
                )
                .into());
            }
            let builder = common
                .builder()
                .ts_runtime((*runtime).into())
                .ts_message_model((*message_model).into())
                .ts_import_extension(import_extension.map(Into::into).unwrap_or_default());
            (common, builder.generate_typescript(&common.protos)?)
        }
        Command::Rust { common, grpc, extern_paths, btree_map } => {
            let mut b = common.builder().grpc(*grpc).btree_map(btree_map.iter().cloned());
            for e in extern_paths {
                let Some((proto, rust)) = e.split_once('=') else {
                    return Err(Error::Usage(format!("--extern-path wants PROTO=RUST, got {e:?}")).into());
                };
                b = b.extern_path(proto, rust);
            }
            (common, b.generate_rust(&common.protos)?)
        }
    };
    finish(common, &output)
}

fn finish(common: &Common, output: &Output) -> anyhow::Result<ExitCode> {
    if common.check {
        let drift = output.check(&common.out, Some(STAMP_PREFIX))?;
        if drift.is_empty() {
            eprintln!("kafkasocks-gen: {} is up to date ({} files)", common.out.display(), output.files.len());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "kafkasocks-gen: {} is stale ({} of {} files differ):",
            common.out.display(),
            drift.len(),
            output.files.len()
        );
        for d in drift.iter().take(20) {
            eprintln!("  {d}");
        }
        if drift.len() > 20 {
            eprintln!("  ... and {} more", drift.len() - 20);
        }
        eprintln!("regenerate: run the same command without --check");
        return Ok(ExitCode::from(1));
    }
    output.write(&common.out, Some(STAMP_PREFIX))?;
    eprintln!("kafkasocks-gen: wrote {} files to {}", output.files.len(), common.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `registry check`: one line per publish stream with a schema; exit 1 if one does not fit.
fn registry_check(args: &RegistryCheck) -> anyhow::Result<ExitCode> {
    use kafkasocks::{KeyMessage, RegistryConfig, RegistryMode, SchemaCheck, Secret};
    let mut b = kafkasocks_build::configure().emit_rerun_if_changed(false).includes(&args.includes);
    for s in &args.services {
        b = b.service(s);
    }
    let model = b.model(&args.protos)?;
    let mode = match args.mode {
        Mode::AutoRegister => RegistryMode::AutoRegister,
        Mode::LookupOnly => RegistryMode::LookupOnly,
        Mode::UseLatest => RegistryMode::UseLatest,
    };
    let mut config = RegistryConfig::new(&args.registry).mode(mode);
    if let (Some(user), Some(file)) = (&args.user, &args.password_file) {
        config = config.basic_auth(user, Secret::from_file(file));
    }
    if let Some(file) = &args.token_file {
        config = config.bearer_token(Secret::from_file(file));
    }
    if let Some(file) = &args.ca_file {
        config = config.ca_file(file);
    }
    let streams: Vec<_> = model
        .files
        .iter()
        .filter(|f| f.requested)
        .flat_map(|f| &f.services)
        .flat_map(|s| &s.methods)
        .filter(|m| m.kind == kafkasocks_build::model::RpcKind::Unary)
        .flat_map(|m| {
            let value = m.schema.as_ref().map(|schema| (m, runtime_schema(schema)));
            let key = m
                .key_message
                .as_ref()
                .map(|k| (m, KeyMessage::new(runtime_schema(&k.schema), k.field).schema().clone()));
            value.into_iter().chain(key)
        })
        .collect();
    if streams.is_empty() {
        eprintln!("kafkasocks-gen: no publish stream in these files has a schema (schema / schema_subject)");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let timeout = Duration::from_secs(args.timeout);
    let mut failed = 0;
    for (m, schema) in &streams {
        match runtime.block_on(kafkasocks::check_schema(&config, &m.topic, schema, timeout)) {
            Ok(SchemaCheck::Registered { subject, id }) => {
                println!("ok    {}  subject {subject:?}: registered, id {id}", m.route);
            }
            Ok(SchemaCheck::WouldRegister { subject, latest: None }) => {
                println!("ok    {}  subject {subject:?}: new subject; registered on first publish", m.route);
            }
            Ok(SchemaCheck::WouldRegister { subject, latest: Some(id) }) => println!(
                "ok    {}  subject {subject:?}: compatible with the latest version (id {id}); registered on first \
                 publish",
                m.route
            ),
            Ok(SchemaCheck::Latest { subject, id }) => {
                println!("ok    {}  subject {subject:?}: written with the latest version, id {id}", m.route);
            }
            Ok(other) => println!("ok    {}  {other:?}", m.route),
            Err(e) => {
                failed += 1;
                println!("FAIL  {}  {e}", m.route);
            }
        }
    }
    if failed > 0 {
        eprintln!("kafkasocks-gen: {failed} of {} streams do not fit the registry ({:?} mode)", streams.len(), mode);
        return Ok(ExitCode::from(1));
    }
    eprintln!("kafkasocks-gen: {} streams fit the registry ({mode:?} mode)", streams.len());
    Ok(ExitCode::SUCCESS)
}

/// The runtime's form of a stream's schema, as generated code builds it.
fn runtime_schema(s: &kafkasocks_build::model::RegistrySchema) -> kafkasocks::RegistrySchema {
    use kafkasocks::SubjectNameStrategy;
    use kafkasocks_build::model::Subject;
    let mut schema = kafkasocks::RegistrySchema::protobuf(&s.record, &s.schema, s.message_indexes.clone());
    schema = match &s.subject {
        Subject::TopicName => schema,
        Subject::RecordName => schema.subject_name_strategy(SubjectNameStrategy::RecordName),
        Subject::TopicRecordName => schema.subject_name_strategy(SubjectNameStrategy::TopicRecordName),
        Subject::Named(name) => schema.subject(name),
    };
    s.references.iter().fold(schema, |schema, r| schema.reference(runtime_reference(r)))
}

fn runtime_reference(r: &kafkasocks_build::model::SchemaReference) -> kafkasocks::SchemaReference {
    let reference = kafkasocks::SchemaReference::new(&r.name, &r.name, &r.schema);
    r.references.iter().fold(reference, |reference, nested| reference.reference(runtime_reference(nested)))
}
