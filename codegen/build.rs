//! Embeds the TypeScript runtime (`ts-runtime/*.ts`, a symlink to `../ts-templates/src`, the
//! one copy in the repository; `cargo package` stores the files behind it, so the packaged
//! crate is self-contained) so that `kafkasocks-gen ts --runtime vendor` can copy it next to
//! the generated code and the generator knows the runtime's version: writes
//! `$OUT_DIR/ts_runtime.rs`, a slice of `(file name, include_str!(...))`, sorted by name.

use std::path::Path;

fn main() {
    // Read at run time: a build script binary may be reused by another checkout that
    // shares the target directory, and must not carry this one's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let dir = Path::new(&manifest_dir).join("ts-runtime");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ts") && !n.ends_with(".d.ts"))
            .collect(),
        Err(e) => panic!("kafkasocks-build: cannot read the TS runtime at {}: {e}", dir.display()),
    };
    names.sort();
    let mut out = String::from("&[\n");
    for n in &names {
        let path = dir.join(n);
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!("    ({n:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push(']');
    let Some(out_dir) = std::env::var_os("OUT_DIR") else { panic!("OUT_DIR is not set") };
    if let Err(e) = std::fs::write(Path::new(&out_dir).join("ts_runtime.rs"), out) {
        panic!("kafkasocks-build: writing ts_runtime.rs: {e}");
    }
}
