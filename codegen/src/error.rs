//! Errors of the generator. Every error about the input names the file and line and says
//! what to do; the CLI maps [`Error::is_input_error`] to exit code 2.

use std::fmt;
use std::path::PathBuf;

/// A place in a `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file as the user knows it: the path on disk when known, else the proto name.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
}

impl Location {
    pub(crate) fn file(file: impl Into<String>) -> Location {
        Location { file: file.into(), line: None, column: None }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// What went wrong while generating code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file does not parse, does not type-check, or an import is missing.
    #[error("{location}: error: {message}")]
    Proto {
        /// Where.
        location: Location,
        /// protox's description.
        message: String,
    },
    /// A stream definition cannot be generated: a missing or unsupported `(kafkasocks.stream)`
    /// option, a key naming a missing field or a field of an unsupported type, an RPC kind
    /// KafkaSocks does not support.
    #[error("{location}: error: {message}\n  help: {help}")]
    Stream {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: String,
    },
    /// A file descriptor set could not be read or decoded.
    #[error("{path}: error: not a usable FileDescriptorSet: {message}")]
    DescriptorSet {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The builder or CLI was used inconsistently (for example no input files).
    #[error("error: {0}")]
    Usage(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// prost-build failed on descriptors protox accepted: a setting of the
    /// `prost_build::Config` given to [`Builder::compile_with_config`](crate::Builder::compile_with_config)
    /// it refuses (such as a malformed extern path), else a bug (please report it).
    #[error("error: prost-build failed: {0}")]
    Prost(String),
    /// The generator produced Rust it cannot parse back, or found prost-build's or
    /// tonic-prost-build's output not as expected (a bug: please report it).
    #[error("error: kafkasocks-build generated invalid code (a bug, please report it): {0}")]
    Codegen(String),
}

impl Error {
    /// True when the input is at fault (bad `.proto`, options or descriptor set, or usage),
    /// as opposed to the file system: the CLI exits with code 2 for these.
    pub fn is_input_error(&self) -> bool {
        matches!(self, Error::Proto { .. } | Error::Stream { .. } | Error::DescriptorSet { .. } | Error::Usage(_))
    }

    pub(crate) fn stream(location: Location, message: impl Into<String>, help: impl Into<String>) -> Error {
        Error::Stream { location, message: message.into(), help: help.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
