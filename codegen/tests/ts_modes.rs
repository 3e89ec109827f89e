//! The TypeScript runtime modes, type-checked with the real compiler: `--runtime vendor`
//! output (generated into a temporary folder, not checked in) passes a strict user tsconfig
//! (`golden-ts/tsconfig.strict-user.json`), and generated code against a runtime of another
//! code generation interface fails to type-check with a message saying what to do. (Package
//! mode, the default, is the checked-in golden: `npm run typecheck` in `tests/golden-ts`.)
//!
//! Needs Node; runs `npm ci` in `ts-templates/` when its `node_modules` is missing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kafkasocks_build::{STAMP_PREFIX, TsRuntime};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// ts-templates' TypeScript compiler, installed on first use.
fn tsc() -> PathBuf {
    static INSTALLED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tsc = repo().join("ts-templates/node_modules/.bin/tsc");
    if !tsc.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(repo().join("ts-templates"))
            .status()
            .expect("running npm ci in ts-templates (needs Node and npm)");
        assert!(status.success(), "npm ci in ts-templates failed");
    }
    tsc
}

/// Writes the vendor-mode output of every.proto into a fresh folder `dir/gen`, plus a
/// tsconfig that is the strict user one for it and a package.json.
fn vendored(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kafkasocks-ts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = kafkasocks_build::configure()
        .emit_rerun_if_changed(false)
        .include(tests_dir().join("protos"))
        .ts_runtime(TsRuntime::Vendor)
        .generate_typescript(&[tests_dir().join("protos/every/v1/every.proto")])
        .unwrap();
    out.write(&dir.join("gen"), Some(STAMP_PREFIX)).unwrap();
    let strict = tests_dir().join("golden-ts/tsconfig.strict-user.json");
    let config = format!(
        "{{ \"extends\": {:?}, \"include\": [\"gen\"] }}\n",
        strict.canonicalize().unwrap().display().to_string()
    );
    std::fs::write(dir.join("tsconfig.json"), config).unwrap();
    // What the README asks of a project using the output: ES modules.
    std::fs::write(dir.join("package.json"), "{ \"type\": \"module\" }\n").unwrap();
    dir
}

fn typecheck(dir: &Path) -> (bool, String) {
    let out = Command::new(tsc()).arg("-p").arg(dir).arg("--pretty").arg("false").output().expect("running tsc");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn vendor_mode_output_passes_a_strict_user_tsconfig() {
    let dir = vendored("vendor");
    assert!(dir.join("gen/kafkasocks-runtime/json.ts").exists());
    let (ok, log) = typecheck(&dir);
    assert!(ok, "vendor-mode output fails a strict user tsconfig:\n{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_runtime_of_another_codegen_interface_fails_to_type_check_with_a_clear_message() {
    let dir = vendored("mismatch");
    let version = dir.join("gen/kafkasocks-runtime/version.ts");
    let text = std::fs::read_to_string(&version).unwrap();
    let current = format!("export const CODEGEN_INTERFACE = {};", kafkasocks_build::ts_codegen_interface());
    assert!(text.contains(&current), "{text}");
    std::fs::write(&version, text.replace(&current, "export const CODEGEN_INTERFACE = 999;")).unwrap();
    let (ok, log) = typecheck(&dir);
    assert!(!ok, "a mismatching runtime type-checks:\n{log}");
    for file in ["every/v1/every_kafkasocks.ts", "google/protobuf/timestamp_kafkasocks.ts"] {
        assert!(log.contains(file), "every generated file checks the interface ({file}):\n{log}");
    }
    assert!(log.contains("regenerate it with the kafkasocks-gen that matches your runtime"), "{log}");
    assert!(log.contains("or upgrade @kafkasocks/runtime"), "{log}");
    assert!(log.contains("$KafkaSocksRuntimeCheck") || log.contains("does not satisfy the constraint 'true'"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The vendored runtime has no package.json to declare `sideEffects: false`; its pure
/// annotations are enough for esbuild to drop the JSON mapping from a page that never uses it.
#[test]
fn vendor_mode_pages_without_json_bundle_none_of_it() {
    let dir = vendored("treeshake");
    let esbuild = tsc().with_file_name("esbuild");
    let page = dir.join("page.ts");
    std::fs::write(
        &page,
        "import { connect, createClient } from \"./gen/kafkasocks-runtime/index.js\";\n\
         import { ChatStreams } from \"./gen/every/v1/every_kafkasocks.js\";\n\
         const chat = createClient(ChatStreams, connect({ url: \"ws://127.0.0.1:1/\" }));\n\
         chat.messages({ room: \"r\" }).on(\"record\", (r) => console.log(r.value.text));\n",
    )
    .unwrap();
    let out = dir.join("page.js");
    let status = Command::new(esbuild)
        .arg(&page)
        .args(["--bundle", "--minify", "--format=esm", "--log-level=warning"])
        .arg(format!("--outfile={}", out.display()))
        .status()
        .expect("running esbuild");
    assert!(status.success());
    let js = std::fs::read_to_string(&out).unwrap();
    assert!(js.contains("every.v1.ChatStreams/Messages"), "the client is bundled");
    for word in ["toJson", "fromJson", "JsonError"] {
        assert!(!js.contains(word), "{word} is in a page that uses no JSON");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
