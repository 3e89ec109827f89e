//! Writing generated files: everything is generated in memory first, then each file is
//! written to a temporary sibling and renamed over the target, so a failure never leaves a
//! half-written file. `check` compares without writing (for `--check` in CI).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Generated files: path relative to the output directory -> contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The files, by relative path ('/'-separated).
    pub files: BTreeMap<String, String>,
}

/// How an output directory differs from what would be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The file does not exist.
    Missing(String),
    /// The file exists with other contents; the first differing line (1-based).
    Changed {
        /// The relative path.
        path: String,
        /// First line that differs.
        line: usize,
    },
    /// A file stamped by this generator that it would no longer write.
    Orphaned(String),
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing(p) => write!(f, "missing:  {p}"),
            Drift::Changed { path, line } => write!(f, "changed:  {path} (from line {line})"),
            Drift::Orphaned(p) => write!(f, "orphaned: {p} (generated earlier, no longer produced)"),
        }
    }
}

impl Output {
    /// Writes every file under `dir` (created if needed), each atomically, and removes files
    /// that carry `owner_stamp` on their first line but are no longer generated. Files
    /// whose contents are already right are not touched (keeps mtimes stable for builds).
    pub fn write(&self, dir: &Path, owner_stamp: Option<&str>) -> Result<(), Error> {
        for (rel, contents) in &self.files {
            let path = dir.join(rel);
            if std::fs::read(&path).is_ok_and(|old| old == contents.as_bytes()) {
                continue;
            }
            write_atomic(&path, contents.as_bytes())?;
        }
        if let Some(stamp) = owner_stamp {
            for rel in self.orphans(dir, stamp)? {
                let path = dir.join(&rel);
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// What differs between `dir` and this output. Empty: up to date.
    pub fn check(&self, dir: &Path, owner_stamp: Option<&str>) -> Result<Vec<Drift>, Error> {
        let mut drift = Vec::new();
        for (rel, contents) in &self.files {
            let path = dir.join(rel);
            match std::fs::read(&path) {
                Ok(old) if old == contents.as_bytes() => {}
                Ok(old) => {
                    let old = String::from_utf8_lossy(&old);
                    let line = old
                        .lines()
                        .zip(contents.lines())
                        .position(|(a, b)| a != b)
                        .unwrap_or_else(|| old.lines().count().min(contents.lines().count()))
                        + 1;
                    drift.push(Drift::Changed { path: rel.clone(), line });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => drift.push(Drift::Missing(rel.clone())),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        if let Some(stamp) = owner_stamp {
            drift.extend(self.orphans(dir, stamp)?.into_iter().map(Drift::Orphaned));
        }
        Ok(drift)
    }

    /// `.ts`/`.rs` files under `dir` that start with `stamp` and are not in this output.
    fn orphans(&self, dir: &Path, stamp: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        if dir.is_dir() {
            walk(dir, dir, &mut |rel, path| {
                if self.files.contains_key(rel) || !(rel.ends_with(".ts") || rel.ends_with(".rs")) {
                    return Ok(());
                }
                let head = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                if head.starts_with(stamp.as_bytes()) {
                    out.push(rel.to_owned());
                }
                Ok(())
            })?;
        }
        out.sort();
        Ok(out)
    }
}

fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(&str, &Path) -> Result<(), Error>) -> Result<(), Error> {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "node_modules" || n.to_string_lossy().starts_with('.')) {
                continue;
            }
            walk(root, &path, f)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            f(&rel, &path)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
