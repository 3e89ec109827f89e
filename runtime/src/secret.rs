//! [`Secret`]: a password, token or key that must never reach a log, a `Debug` output or a
//! metric. It is read from where the configuration says (a value, an environment variable or
//! a file) when it is needed, and shown as `Secret(<redacted>)`.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;

/// A secret value, or where to read it when the gateway starts.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Source);

#[derive(Clone, PartialEq, Eq)]
enum Source {
    Value(String),
    File(PathBuf),
}

impl Secret {
    /// This value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Source::Value(value.into()))
    }

    /// The contents of this file, read when the gateway starts, without a trailing newline.
    pub fn from_file(path: impl Into<PathBuf>) -> Secret {
        Secret(Source::File(path.into()))
    }

    /// The value of environment variable `name`, read now; an error when it is unset or not
    /// UTF-8.
    pub fn from_env(name: &str) -> Result<Secret, Error> {
        std::env::var(name).map(Secret::new).map_err(|_| Error::Config(format!("${name} is not set (or not UTF-8)")))
    }

    /// The secret itself.
    pub(crate) fn reveal(&self) -> Result<String, Error> {
        match &self.0 {
            Source::Value(v) => Ok(v.clone()),
            Source::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| Error::Config(format!("reading the secret in {}: {e}", path.display()))),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Value(_) => f.write_str("Secret(<redacted>)"),
            Source::File(path) => write!(f, "Secret(from {})", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.reveal().ok().as_deref(), Some("hunter2-very-secret"));
        let dir = std::env::temp_dir().join(format!("ks-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-a-file\n").expect("write");
        let f = Secret::from_file(&dir);
        assert!(!format!("{f:?}").contains("from-a-file"));
        assert_eq!(f.reveal().ok().as_deref(), Some("from-a-file"));
        let _ = std::fs::remove_file(&dir);
        let missing = Secret::from_file("/nonexistent/secret").reveal();
        assert!(missing.is_err());
    }
}
