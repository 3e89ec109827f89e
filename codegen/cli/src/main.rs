//! `kafkasocks-gen`: the command-line front end of kafkasocks-build (its own crate, so that
//! build scripts using kafkasocks-build do not compile clap).
//!
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen --check   # CI: fails when stale
//!     kafkasocks-gen ts proto/chat.proto -I proto -o web/src/gen --runtime vendor   # no npm
//!     kafkasocks-gen rust proto/chat.proto -I proto -o src/gen --grpc
//!
//! Exit codes: 0 success (or up to date), 1 `--check` found stale output or a file could
//! not be read or written, 2 bad input (a .proto that does not compile, a bad stream
//! option, an unsupported RPC kind, bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kafkasocks_build::{Builder, Error, Output, STAMP_PREFIX, TsRuntime};

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
        Command::Ts { common, runtime } => {
            (common, common.builder().ts_runtime((*runtime).into()).generate_typescript(&common.protos)?)
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
