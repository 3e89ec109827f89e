//! First layer: `.proto` files (protox) or a FileDescriptorSet -> a prost-reflect
//! [`DescriptorPool`] that keeps custom options, plus each file's source text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use miette::Diagnostic;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};

use crate::error::{Error, Location};

/// `proto/kafkasocks/options.proto` (`codegen/proto/` links to the repository's one, and
/// `cargo package` ships it as a file), so users' `import "kafkasocks/options.proto"` resolves
/// without a copy of it in their include path.
pub(crate) const OPTIONS_PROTO: &str = include_str!("../proto/kafkasocks/options.proto");
/// The import name of [`OPTIONS_PROTO`].
pub(crate) const OPTIONS_PROTO_NAME: &str = "kafkasocks/options.proto";

/// A source file as loaded.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The text, when compiled from source (not from a descriptor set).
    pub(crate) text: Option<String>,
    /// Where it is on disk, when it is on disk.
    pub(crate) path: Option<PathBuf>,
}

/// Descriptors and what is known about their files.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) pool: DescriptorPool,
    /// The files to generate code for (proto names), in the order given.
    pub(crate) requested: Vec<String>,
    /// Every file of the pool, by proto name.
    pub(crate) sources: BTreeMap<String, Source>,
    /// A schema binding whose `.proto` sources are not loaded is left out of the model
    /// instead of being an error: set for TypeScript, which does not use it.
    pub(crate) schema_sources_optional: bool,
}

impl Loaded {
    /// The location of a whole file, for errors.
    pub(crate) fn file_location(&self, name: &str) -> Location {
        Location::file(self.display_name(name))
    }

    /// The path on disk when known (what an editor opens), else the proto name.
    pub(crate) fn display_name(&self, name: &str) -> String {
        match self.sources.get(name).and_then(|s| s.path.as_ref()) {
            Some(p) => p.display().to_string(),
            None => name.to_owned(),
        }
    }
}

/// Serves the embedded `kafkasocks/options.proto`.
struct EmbeddedOptions;

impl FileResolver for EmbeddedOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            File::from_source(name, OPTIONS_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The embedded `kafkasocks/options.proto` compiled with its source info (comments and
/// locations), for descriptors that came without it (a protoc plugin request carries source
/// info only for the files to generate).
pub(crate) fn embedded_options_descriptor() -> Result<prost_types::FileDescriptorProto, Error> {
    let mut chain = ChainFileResolver::new();
    chain.add(EmbeddedOptions);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_source_info(true);
    compiler
        .open_file(OPTIONS_PROTO_NAME)
        .map_err(|e| Error::Codegen(format!("the embedded {OPTIONS_PROTO_NAME} does not compile: {e}")))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(OPTIONS_PROTO_NAME)
        .map(|f| f.file_descriptor_proto().clone())
        .ok_or_else(|| Error::Codegen(format!("the embedded {OPTIONS_PROTO_NAME} is missing")))
}

/// Remembers the source text and path of every file it opens.
struct Recording<R> {
    inner: R,
    seen: Arc<Mutex<BTreeMap<String, Source>>>,
}

impl<R: FileResolver> FileResolver for Recording<R> {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.inner.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self.inner.open_file(name)?;
        let source = Source { text: file.source().map(str::to_owned), path: file.path().map(Path::to_path_buf) };
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(name.to_owned(), source);
        }
        Ok(file)
    }
}

/// Compiles `.proto` files with protox. Without include directories, each file's own
/// directory is its include directory.
pub(crate) fn load_protos(files: &[PathBuf], includes: &[PathBuf]) -> Result<Loaded, Error> {
    if files.is_empty() {
        return Err(Error::Usage("no .proto files given".into()));
    }
    let includes: Vec<PathBuf> = if includes.is_empty() {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for f in files {
            let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
            let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    } else {
        includes.to_vec()
    };
    let mut chain = ChainFileResolver::new();
    for dir in &includes {
        chain.add(IncludeFileResolver::new(dir.clone()));
    }
    chain.add(EmbeddedOptions);
    chain.add(GoogleFileResolver::new());
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let mut compiler = protox::Compiler::with_file_resolver(Recording { inner: chain, seen: seen.clone() });
    compiler.include_source_info(true).include_imports(true);
    let mut requested = Vec::new();
    for file in files {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compiler.open_file(file).map(|_| ())));
        let Ok(opened) = opened else { return Err(descriptor_panic(&file.display().to_string())) };
        if let Err(e) = opened {
            let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
            return Err(proto_error(&e, file, &seen));
        }
        // The proto name of what was just opened: the last non-import file.
        if let Some(name) =
            compiler.files().filter(|f| !f.is_import()).map(|f| f.name().to_owned()).find(|n| !requested.contains(n))
        {
            requested.push(name);
        }
    }
    let pool = compiler.descriptor_pool();
    let mut sources = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for f in pool.files() {
        sources.entry(f.name().to_owned()).or_insert(Source { text: None, path: None });
    }
    Ok(Loaded { pool, requested, sources, schema_sources_optional: false })
}

/// Reads an encoded FileDescriptorSet (as written by `protoc --include_imports
/// --descriptor_set_out` or `protox -o`). Custom options survive because prost-reflect
/// decodes them against the pool. Without `files`, every file that is not only imported is
/// generated; with them, only those (proto names).
pub(crate) fn load_descriptor_set(path: &Path, bytes: &[u8], files: &[String]) -> Result<Loaded, Error> {
    let bad = |message: String| Error::DescriptorSet { path: path.to_owned(), message };
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(bytes).map_err(|e| bad(e.to_string()))?;
    let mut pool = DescriptorPool::new();
    // Decode with the reflecting decoder so extension options (ours) are kept.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.decode_file_descriptor_set(bytes)));
    let Ok(decoded) = decoded else { return Err(descriptor_panic(&path.display().to_string())) };
    decoded.map_err(|e| bad(e.to_string()))?;
    if !set.file.iter().any(|f| f.name() == OPTIONS_PROTO_NAME) {
        // A set without our options file uses no stream option (using one imports it), but
        // the model looks the extension up: add ours after the set's files (which may hold
        // descriptor.proto, which ours imports).
        let mut c = protox::Compiler::with_file_resolver({
            let mut chain = ChainFileResolver::new();
            chain.add(EmbeddedOptions);
            chain.add(GoogleFileResolver::new());
            chain
        });
        c.include_imports(true);
        c.open_file(OPTIONS_PROTO_NAME).map_err(|e| bad(format!("embedded options.proto: {e}")))?;
        for f in c.descriptor_pool().file_descriptor_protos() {
            if pool.get_file_by_name(f.name()).is_none() {
                pool.add_file_descriptor_proto(f.clone()).map_err(|e| bad(e.to_string()))?;
            }
        }
    }
    let imported: std::collections::BTreeSet<&str> =
        set.file.iter().flat_map(|f| f.dependency.iter().map(String::as_str)).collect();
    let requested: Vec<String> = if files.is_empty() {
        set.file.iter().map(|f| f.name().to_owned()).filter(|n| !imported.contains(n.as_str())).collect()
    } else {
        for f in files {
            if !set.file.iter().any(|g| g.name() == f) {
                return Err(bad(format!("it has no file {f:?}")));
            }
        }
        files.to_vec()
    };
    let sources =
        pool.files().map(|f| (f.name().to_owned(), Source { text: None, path: None })).collect::<BTreeMap<_, _>>();
    Ok(Loaded { pool, requested, sources, schema_sources_optional: false })
}

/// prost-reflect (0.16) panics instead of failing when an option's value does not fit its
/// extension, as when two extensions of one options message share a number: an error saying
/// so instead (the panic message has been printed to stderr).
fn descriptor_panic(file: &str) -> Error {
    Error::Proto {
        location: Location::file(file),
        message: "the descriptors could not be built (prost-reflect panicked on an option value). A known \
                  cause: two extensions of one options message with the same number, such as another \
                  MethodOptions extension numbered 51234 besides (kafkasocks.stream)\n  help: see \"The \
                  extension number\" in docs/codegen-plugins.md"
            .to_owned(),
    }
}

/// A protox error with file, line and column.
fn proto_error(e: &protox::Error, opened: &Path, seen: &BTreeMap<String, Source>) -> Error {
    let file = e.file().map(str::to_owned);
    let display = match &file {
        Some(name) => match seen.get(name).and_then(|s| s.path.as_ref()) {
            Some(p) => p.display().to_string(),
            None if opened.to_string_lossy().replace('\\', "/").ends_with(name.as_str()) => {
                opened.display().to_string()
            }
            None => name.clone(),
        },
        None => opened.display().to_string(),
    };
    let mut location = Location::file(display);
    if let (Some(label), Some(code)) = (e.labels().and_then(|mut l| l.next()), e.source_code())
        && let Ok(span) = code.read_span(label.inner(), 0, 0)
    {
        location.line = u32::try_from(span.line() + 1).ok();
        location.column = u32::try_from(span.column() + 1).ok();
    }
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message.push_str(&format!("\n  help: {help}"));
    } else if e.is_file_not_found() {
        message.push_str("\n  help: check the path and the include directories (-I / .include(...))");
    }
    Error::Proto { location, message }
}
