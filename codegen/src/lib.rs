//! # kafkasocks-build
//!
//! The KafkaSocks code generator. From `.proto` files whose RPCs carry a
//! `(kafkasocks.stream)` option it generates
//!
//! * for Rust (this crate's builder, from `build.rs`): prost message types, per service a
//!   hooks trait (authorize, filter, validate/enrich, all with defaults; the async ones may
//!   be `async fn`) and a `<Service>Gateway` whose `streams()` mounts the service on a
//!   `kafkasocks::Gateway`, and optionally the tonic service for the same RPCs;
//! * for TypeScript (the `kafkasocks-gen ts` binary): interfaces, binary and proto3 JSON
//!   codecs and service descriptors for the KafkaSocks TS runtime, the npm package
//!   `@kafkasocks/runtime` (imported by name; or copied next to the generated code, see
//!   [`Builder::ts_runtime`]); or, with [`TsMessageModel::ProtobufEs`], typed clients over
//!   the message types protoc-gen-es generates.
//!
//! No `protoc` is needed: files are parsed with protox. For projects that run protoc or
//! buf anyway, [`plugin`] is the same generator as a protoc plugin (the
//! `protoc-gen-kafkasocks` binary of the kafkasocks-gen crate).
//!
//! # Example
//!
//! A `.proto` with one stream service, generated for both sides (this runs as a doc test):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("kafkasocks-build-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let proto = dir.join("chat.proto");
//! std::fs::write(&proto, r#"
//!     syntax = "proto3";
//!     package chat.v1;
//!     import "kafkasocks/options.proto";
//!     message RoomFilter { string room = 1; }
//!     message ChatMessage { string room = 1; string text = 2; }
//!     service ChatStreams {
//!       rpc Messages(RoomFilter) returns (stream ChatMessage) {
//!         option (kafkasocks.stream) = { topic: "chat.messages" key: "room" };
//!       }
//!       rpc Post(ChatMessage) returns (kafkasocks.Receipt) {
//!         option (kafkasocks.stream) = { topic: "chat.messages" key: "room" };
//!       }
//!     }
//! "#)?;
//! let builder = kafkasocks_build::configure().include(&dir);
//!
//! // The Rust server module: prost messages, the ChatStreamsHooks trait, ChatStreamsGateway.
//! let rust = builder.generate_rust(&[&proto])?;
//! assert!(rust.files["chat.v1.rs"].contains("pub struct ChatStreamsGateway"));
//!
//! // The typed TypeScript client (what `kafkasocks-gen ts` writes).
//! let ts = builder.generate_typescript(&[&proto])?;
//! assert!(ts.files["chat_kafkasocks.ts"].contains("export const ChatStreams"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! In a crate, `build.rs` writes the Rust module to `$OUT_DIR` and the crate includes it:
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     kafkasocks_build::compile_protos("proto/chat.proto")?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs
//! pub mod chat {
//!     kafkasocks::include_streams!("chat.v1");
//! }
//! let streams = chat::ChatStreamsGateway::new(chat::ChatStreamsDefaultHooks).streams();
//! let gateway = kafkasocks::Gateway::builder(config).streams(streams).allow_anonymous().bind().await?;
//! ```
//!
//! (`examples/chat` is that crate, compiled in the tests.)
//!
//! # Design
//!
//! Layers, each only talking to the next: `.proto` files or a FileDescriptorSet are loaded
//! into descriptors (protox, prost-reflect: `load`), read into a small [`model`] (services,
//! methods, topic, key field, RPC kind, comments, locations; all checks happen here), and
//! emitted by `rust` (a `prost_build::ServiceGenerator`: prost-build generates the messages
//! and hands each service over with the Rust paths it resolved; our module is built as
//! tokens via `quote!` and formatted with prettyplease; tonic-prost-build's generator runs
//! first when gRPC is on) and `ts`. The builder below and the
//! `kafkasocks-gen` binary are thin front ends over [`Builder::generate_rust`] and
//! [`Builder::generate_typescript`], and so is [`plugin`], which reads protoc's descriptors
//! as an in-memory FileDescriptorSet ([`Builder::file_descriptor_set_bytes`]).
//!
//! Output is deterministic: the same input gives the same bytes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod load;
pub mod model;
mod output;
pub mod plugin;
mod rust;
mod ts;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, Location};
pub use output::{Drift, Output};
/// prost-build, as this crate uses it: make the `Config` for [`Builder::compile_with_config`]
/// with it, so your build script needs no prost-build dependency of a matching version.
pub use prost_build;
pub use ts::{
    RUNTIME_DIR, RUNTIME_PACKAGE, TsImportExtension, TsMessageModel, TsRuntime,
    codegen_interface as ts_codegen_interface, output_path as ts_output_path, runtime_range as ts_runtime_range,
    runtime_version as ts_runtime_version,
};

/// The generator version stamped into generated files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The first bytes of every file this generator writes (`// @generated by kafkasocks-gen`).
pub const STAMP_PREFIX: &str = ts::STAMP_PREFIX;

/// Compiles one `.proto` file for a build script, with every default of [`configure`]:
/// its directory as the include path, output to `$OUT_DIR`, every stream service, no gRPC.
///
/// ```no_run
/// kafkasocks_build::compile_protos("proto/chat.proto").expect("chat.proto");
/// ```
pub fn compile_protos(proto: impl AsRef<Path>) -> Result<(), Error> {
    configure().compile(&[proto])
}

/// A [`Builder`] with every option at its default.
pub fn configure() -> Builder {
    Builder::default()
}

/// Options of the generator. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct Builder {
    includes: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    services: Vec<String>,
    grpc: bool,
    extern_paths: Vec<(String, String)>,
    descriptor_set: Option<DescriptorSet>,
    btree_map: Vec<String>,
    bytes: Vec<String>,
    emit_rerun_if_changed: bool,
    ts_runtime: TsRuntime,
    ts_message_model: TsMessageModel,
    ts_import_extension: TsImportExtension,
}

/// Where [`Builder::file_descriptor_set`] / [`Builder::file_descriptor_set_bytes`] read from.
#[derive(Debug, Clone)]
enum DescriptorSet {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

/// How errors name an in-memory descriptor set.
const IN_MEMORY_SET: &str = "<FileDescriptorSet>";

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            includes: Vec::new(),
            out_dir: None,
            services: Vec::new(),
            grpc: false,
            extern_paths: Vec::new(),
            descriptor_set: None,
            btree_map: Vec::new(),
            bytes: Vec::new(),
            emit_rerun_if_changed: true,
            ts_runtime: TsRuntime::Package,
            ts_message_model: TsMessageModel::KafkaSocks,
            ts_import_extension: TsImportExtension::None,
        }
    }
}

impl Builder {
    /// Adds an include directory (where `import` statements are resolved, in order).
    /// Default: none given means each input file's own directory.
    /// `kafkasocks/options.proto` and the `google/protobuf/*.proto` files always resolve
    /// (embedded), after the include directories.
    pub fn include(mut self, dir: impl AsRef<Path>) -> Self {
        self.includes.push(dir.as_ref().to_path_buf());
        self
    }

    /// Adds several include directories; see [`Builder::include`].
    pub fn includes(mut self, dirs: impl IntoIterator<Item = impl AsRef<Path>>) -> Self {
        self.includes.extend(dirs.into_iter().map(|d| d.as_ref().to_path_buf()));
        self
    }

    /// Where `<package>.rs` files are written. Default: `$OUT_DIR` (set by Cargo for
    /// build scripts; [`Builder::compile`] fails without either).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Generates only this service (fully-qualified, e.g. `"chat.v1.ChatStreams"`); call
    /// again for more. Default: every service of the input files that has a method with a
    /// `(kafkasocks.stream)` option. Naming a service that does not exist is an error.
    pub fn service(mut self, full_name: impl Into<String>) -> Self {
        self.services.push(full_name.into());
        self
    }

    /// Also generates the tonic gRPC server for each service and its implementation over
    /// the gateway's `LocalStreams` (`<Service>Grpc`). Default: `false`. When on, the
    /// crate needs `tonic` (feature `codegen`) and `tonic-prost` as dependencies.
    pub fn grpc(mut self, enabled: bool) -> Self {
        self.grpc = enabled;
        self
    }

    /// Uses existing Rust types for a protobuf package or type instead of generating them,
    /// like prost-build's `extern_path` (e.g. `(".common.v1", "::common::v1")`).
    /// Default: only the built-in ones: `.google.protobuf` -> `::prost_types` and
    /// `.kafkasocks` -> `::kafkasocks::codegen::options`.
    pub fn extern_path(mut self, proto_path: impl Into<String>, rust_path: impl Into<String>) -> Self {
        self.extern_paths.push((proto_path.into(), rust_path.into()));
        self
    }

    /// Reads descriptors from an encoded `FileDescriptorSet` (e.g. `protoc --include_imports
    /// --descriptor_set_out=...` or `buf build -o`) instead of parsing `.proto` files; the
    /// paths given to [`Builder::compile`] then name the files of the set to generate
    /// (proto names; none: every file the set does not only import). Default: none (parse
    /// `.proto` files with protox). A Schema Registry binding (`schema`, `schema_subject`,
    /// `key_message`) registers the `.proto` source, so Rust refuses it with a descriptor
    /// set; [`Builder::generate_typescript`], which does not use the binding, accepts it.
    pub fn file_descriptor_set(mut self, path: impl AsRef<Path>) -> Self {
        self.descriptor_set = Some(DescriptorSet::File(path.as_ref().to_path_buf()));
        self
    }

    /// [`Builder::file_descriptor_set`] from memory: the bytes of an encoded
    /// `FileDescriptorSet` (extension options such as `(kafkasocks.stream)` are kept, as they
    /// are in the encoding), for tools that already hold descriptors, such as a protoc
    /// plugin ([`plugin`]). Errors name it `<FileDescriptorSet>`. Default: none.
    pub fn file_descriptor_set_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.descriptor_set = Some(DescriptorSet::Bytes(Arc::from(bytes.into())));
        self
    }

    /// Map fields under these protobuf paths become `BTreeMap`s (prost-build's
    /// `btree_map`; `"."` for all). Default: none (`HashMap`).
    pub fn btree_map(mut self, paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.btree_map.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Bytes fields under these protobuf paths become `bytes::Bytes` (prost-build's
    /// `bytes`; `"."` for all). Default: none (`Vec<u8>`).
    pub fn bytes(mut self, paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bytes.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Prints `cargo:rerun-if-changed` for every input file. Default: `true` (what a
    /// build script wants; the CLI turns it off).
    pub fn emit_rerun_if_changed(mut self, enabled: bool) -> Self {
        self.emit_rerun_if_changed = enabled;
        self
    }

    /// Where generated TypeScript gets the KafkaSocks runtime from. Default:
    /// [`TsRuntime::Package`]: generated files import the npm package `@kafkasocks/runtime`
    /// (and `@kafkasocks/runtime/json`) by name, so the project depends on
    /// `@kafkasocks/runtime@`[`ts_runtime_range()`]; one copy of the runtime per bundle, and
    /// the user's tsconfig and linters see only the generated files. [`TsRuntime::Vendor`]
    /// copies the runtime's sources (embedded in this crate) into `kafkasocks-runtime/` of the
    /// output and imports them relatively, for projects without npm dependencies.
    /// Only [`Builder::generate_typescript`] reads it.
    pub fn ts_runtime(mut self, runtime: TsRuntime) -> Self {
        self.ts_runtime = runtime;
        self
    }

    /// How generated TypeScript represents messages. Default: [`TsMessageModel::KafkaSocks`]:
    /// an interface, a binary codec and a proto3 JSON codec per message, generated here.
    /// [`TsMessageModel::ProtobufEs`] generates only the typed service clients, over the
    /// message types and schemas that protoc-gen-es (`@bufbuild/protoc-gen-es` v2) generates
    /// into `<name>_pb.ts` in the same output directory, encoded with `@bufbuild/protobuf`.
    /// Only [`Builder::generate_typescript`] reads it.
    pub fn ts_message_model(mut self, model: TsMessageModel) -> Self {
        self.ts_message_model = model;
        self
    }

    /// With [`TsMessageModel::ProtobufEs`]: the extension of the relative imports of
    /// protoc-gen-es output (`./chat_pb`, `./chat_pb.js`, `./chat_pb.ts`); set it as
    /// protoc-gen-es's `import_extension` option is set. Default: [`TsImportExtension::None`],
    /// protoc-gen-es v2's default.
    pub fn ts_import_extension(mut self, extension: TsImportExtension) -> Self {
        self.ts_import_extension = extension;
        self
    }

    fn load(&self, protos: &[PathBuf]) -> Result<load::Loaded, Error> {
        let names = || -> Vec<String> { protos.iter().map(|p| p.to_string_lossy().replace('\\', "/")).collect() };
        match &self.descriptor_set {
            Some(DescriptorSet::Bytes(bytes)) => load::load_descriptor_set(Path::new(IN_MEMORY_SET), bytes, &names()),
            Some(DescriptorSet::File(path)) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                if self.emit_rerun_if_changed {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
                load::load_descriptor_set(path, &bytes, &names())
            }
            None => {
                let loaded = load::load_protos(protos, &self.includes)?;
                if self.emit_rerun_if_changed {
                    for source in loaded.sources.values() {
                        if let Some(p) = &source.path {
                            println!("cargo:rerun-if-changed={}", p.display());
                        }
                    }
                }
                Ok(loaded)
            }
        }
    }

    /// Loads and checks the input; the model the emitters work from.
    pub fn model(&self, protos: &[impl AsRef<Path>]) -> Result<model::Model, Error> {
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let loaded = self.load(&protos)?;
        model::Model::build(&loaded, &self.services)
    }

    /// [`Builder::model`] with the descriptors it was read from: the encoded
    /// `FileDescriptorSet` of every file (imports included, custom options kept), for tools
    /// that handle the messages through descriptors, such as the `kafkasocks` gateway binary.
    pub fn model_with_descriptors(&self, protos: &[impl AsRef<Path>]) -> Result<(model::Model, Vec<u8>), Error> {
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let loaded = self.load(&protos)?;
        let model = model::Model::build(&loaded, &self.services)?;
        Ok((model, loaded.pool.encode_to_vec()))
    }

    /// Generates the Rust files in memory: `<package>.rs` -> contents.
    pub fn generate_rust(&self, protos: &[impl AsRef<Path>]) -> Result<Output, Error> {
        self.generate_rust_with_config(prost_build::Config::new(), protos)
    }

    /// [`Builder::generate_rust`] with prost-build settings of your own; see
    /// [`Builder::compile_with_config`].
    pub fn generate_rust_with_config(
        &self,
        config: prost_build::Config,
        protos: &[impl AsRef<Path>],
    ) -> Result<Output, Error> {
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let loaded = self.load(&protos)?;
        let model = model::Model::build(&loaded, &self.services)?;
        let opts = rust::RustOptions {
            grpc: self.grpc,
            extern_paths: self.extern_paths.clone(),
            btree_map: self.btree_map.clone(),
            bytes: self.bytes.clone(),
        };
        Ok(Output { files: rust::generate(&loaded, &model, &opts, config)? })
    }

    /// Generates the TypeScript files in memory: one `<name>_kafkasocks.ts` per `.proto`
    /// (the inputs and the files defining types they use), plus with
    /// [`TsRuntime::Vendor`] the runtime under `kafkasocks-runtime/`. With
    /// [`TsMessageModel::ProtobufEs`], one `<name>_kafkasocks.ts` per input that has stream
    /// services (the messages are protoc-gen-es's).
    pub fn generate_typescript(&self, protos: &[impl AsRef<Path>]) -> Result<Output, Error> {
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let mut loaded = self.load(&protos)?;
        loaded.schema_sources_optional = true;
        let model = model::Model::build(&loaded, &self.services)?;
        let options = ts::TsOptions {
            runtime: self.ts_runtime,
            messages: self.ts_message_model,
            import_extension: self.ts_import_extension,
        };
        Ok(Output { files: ts::generate(&model, &options) })
    }

    /// Generates the Rust files and writes them to the output directory (each file
    /// atomically, only when changed). Nothing is written when anything fails.
    pub fn compile(self, protos: &[impl AsRef<Path>]) -> Result<(), Error> {
        self.compile_with_config(prost_build::Config::new(), protos)
    }

    /// [`Builder::compile`] with prost-build settings of your own: the escape hatch for
    /// everything prost-build can do that this builder has no setter for, such as
    /// `type_attribute` (serde derives), `field_attribute`, `boxed`, `enable_type_names`.
    /// prost-build is re-exported as [`prost_build`], so no dependency of your own is needed.
    ///
    /// ```no_run
    /// let mut config = kafkasocks_build::prost_build::Config::new();
    /// config.type_attribute(".chat.v1.ChatMessage", "#[derive(serde::Serialize)]");
    /// kafkasocks_build::configure().grpc(true).compile_with_config(config, &["proto/chat/v1/chat.proto"])?;
    /// # Ok::<(), kafkasocks_build::Error>(())
    /// ```
    ///
    /// The builder's own settings are applied on top (`extern_path`, `btree_map`, `bytes`,
    /// and `.kafkasocks` -> `::kafkasocks::codegen::options`). The config's service
    /// generator is replaced by KafkaSocks' own (with tonic's when `grpc(true)`); settings
    /// about running protoc or writing files (`out_dir`, `protoc_arg`, `include_file`,
    /// `file_descriptor_set_path`) have no effect: this crate parses and writes itself.
    pub fn compile_with_config(self, config: prost_build::Config, protos: &[impl AsRef<Path>]) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| Error::Usage("OUT_DIR is not set: call out_dir(...) outside build scripts".into()))?,
        };
        let output = self.generate_rust_with_config(config, protos)?;
        output.write(&out_dir, None)
    }
}
