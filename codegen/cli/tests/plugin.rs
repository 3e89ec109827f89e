//! `protoc-gen-kafkasocks` under a real protoc: for the same input, the files it makes are
//! those of `kafkasocks-gen`, byte for byte (TypeScript in both message models and both
//! runtime modes, and Rust), and its errors reach protoc's output.
//!
//! protoc comes from `PROTOC`, else from the cache `codegen/tests/fetch-protoc` fills
//! (`${XDG_CACHE_HOME:-$HOME/.cache}/kafkasocks/protoc-<version>/bin/protoc`, with the
//! well-known types in `../include`). Without either the tests say how to get it and pass,
//! except under `CI=true`, where they fail. In-process requests (no protoc) are tested in
//! kafkasocks-build (`codegen/tests/plugin.rs`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn codegen_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn repo_dir() -> PathBuf {
    codegen_dir().join("..")
}

/// The protoc version `codegen/tests/fetch-protoc` fetches (its `PROTOC_VERSION=` line).
fn protoc_version() -> String {
    let script = std::fs::read_to_string(codegen_dir().join("tests/fetch-protoc")).unwrap();
    script.lines().find_map(|l| l.strip_prefix("PROTOC_VERSION=")).unwrap().trim().to_owned()
}

/// protoc from `PROTOC` or the fetch-protoc cache; `None` (after saying why) when there is none
/// outside CI.
fn protoc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROTOC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
    };
    let cached = cache.join(format!("kafkasocks/protoc-{}/bin/protoc", protoc_version()));
    if cached.is_file() {
        return Some(cached);
    }
    let message = format!(
        "no protoc: neither PROTOC is set nor {} exists; run codegen/tests/fetch-protoc (it downloads protoc {} \
         from Maven Central, checks it and caches it there) or set PROTOC=/path/to/protoc",
        cached.display(),
        protoc_version()
    );
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{message}");
    eprintln!("SKIPPED (not under CI=true): {message}");
    None
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kafkasocks-plugin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir`: relative path -> bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// protoc with our plugin: `opt` as `--kafkasocks_opt`, `protos` relative to the includes.
fn run_protoc(protoc: &Path, includes: &[PathBuf], protos: &[&str], opt: &str, out: &Path) -> Output {
    let mut cmd = Command::new(protoc);
    cmd.arg(format!("--plugin=protoc-gen-kafkasocks={}", env!("CARGO_BIN_EXE_protoc-gen-kafkasocks")));
    cmd.arg(format!("--kafkasocks_out={}", out.display()));
    if !opt.is_empty() {
        cmd.arg(format!("--kafkasocks_opt={opt}"));
    }
    for dir in includes {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(protos);
    cmd.output().unwrap()
}

/// kafkasocks-gen `args` with `-o out`.
fn run_cli(args: &[&str], includes: &[PathBuf], protos: &[PathBuf], out: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkasocks-gen"));
    cmd.arg(args[0]).args(protos);
    for dir in includes {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-o").arg(out).args(&args[1..]);
    cmd.output().unwrap()
}

struct Case {
    name: &'static str,
    /// Include directories for protoc (relative to the repository) and the proto names.
    includes: &'static [&'static str],
    protos: &'static [&'static str],
    opt: &'static str,
    /// The CLI: subcommand and flags, its include directories.
    cli: &'static [&'static str],
    cli_includes: &'static [&'static str],
}

const EVERY: &[&str] = &["every/v1/every.proto"];
const TESTS: &[&str] = &["codegen/tests/protos"];
/// protoc needs options.proto on its path (the CLI has it built in).
const TESTS_AND_OPTIONS: &[&str] = &["codegen/tests/protos", "proto"];

const CASES: &[Case] = &[
    Case { name: "ts", includes: TESTS_AND_OPTIONS, protos: EVERY, opt: "", cli: &["ts"], cli_includes: TESTS },
    Case {
        name: "ts-chat",
        includes: &["proto"],
        protos: &["chat/v1/chat.proto"],
        opt: "lang=ts",
        cli: &["ts"],
        cli_includes: &["proto"],
    },
    Case {
        name: "ts-vendor",
        includes: TESTS_AND_OPTIONS,
        protos: EVERY,
        opt: "runtime=vendor,service=every.v1.Sensors",
        cli: &["ts", "--runtime", "vendor", "--service", "every.v1.Sensors"],
        cli_includes: TESTS,
    },
    Case {
        name: "ts-protobuf-es",
        includes: &["codegen/tests/protos", "proto"],
        protos: &["every/v1/every.proto", "chat/v1/chat.proto"],
        opt: "model=protobuf-es",
        cli: &["ts", "--message-model", "protobuf-es"],
        cli_includes: &["codegen/tests/protos", "proto"],
    },
    Case {
        name: "ts-protobuf-es-js",
        includes: &["proto"],
        protos: &["chat/v1/chat.proto"],
        opt: "model=protobuf-es,import_extension=js",
        cli: &["ts", "--message-model", "protobuf-es", "--import-extension", "js"],
        cli_includes: &["proto"],
    },
    Case {
        name: "rust",
        includes: &["proto"],
        protos: &["chat/v1/chat.proto"],
        opt: "lang=rust,grpc=true,btree_map=.",
        cli: &["rust", "--grpc", "--btree-map", "."],
        cli_includes: &["proto"],
    },
];

#[test]
fn plugin_output_is_the_clis_byte_for_byte() {
    let Some(protoc) = protoc() else { return };
    let repo = repo_dir();
    for case in CASES {
        let plugin_out = temp_dir(&format!("{}-plugin", case.name));
        let cli_out = temp_dir(&format!("{}-cli", case.name));
        let includes: Vec<PathBuf> = case.includes.iter().map(|d| repo.join(d)).collect();
        let ran = run_protoc(&protoc, &includes, case.protos, case.opt, &plugin_out);
        assert!(ran.status.success(), "{}: protoc failed:\n{}", case.name, String::from_utf8_lossy(&ran.stderr));
        let cli_includes: Vec<PathBuf> = case.cli_includes.iter().map(|d| repo.join(d)).collect();
        // The CLI takes paths: each proto under the first include directory that has it.
        let protos: Vec<PathBuf> =
            case.protos.iter().map(|p| cli_includes.iter().map(|d| d.join(p)).find(|f| f.is_file()).unwrap()).collect();
        let ran = run_cli(case.cli, &cli_includes, &protos, &cli_out);
        assert!(
            ran.status.success(),
            "{}: kafkasocks-gen failed:\n{}",
            case.name,
            String::from_utf8_lossy(&ran.stderr)
        );
        let (from_plugin, from_cli) = (files(&plugin_out), files(&cli_out));
        assert!(!from_cli.is_empty(), "{}", case.name);
        assert_eq!(from_plugin.keys().collect::<Vec<_>>(), from_cli.keys().collect::<Vec<_>>(), "{}", case.name);
        for (path, bytes) in &from_cli {
            let theirs = &from_plugin[path];
            if theirs != bytes {
                let (a, b) = (String::from_utf8_lossy(theirs), String::from_utf8_lossy(bytes));
                let line = a.lines().zip(b.lines()).position(|(x, y)| x != y).map_or(0, |n| n + 1);
                panic!(
                    "{}: {path} differs from line {line}:\n  plugin: {:?}\n  cli:    {:?}",
                    case.name,
                    a.lines().nth(line.saturating_sub(1)),
                    b.lines().nth(line.saturating_sub(1))
                );
            }
        }
        if case.name == "ts" {
            // The comments of imported files (options.proto and legacy.proto) made it.
            let options = String::from_utf8_lossy(&from_plugin["kafkasocks/options_kafkasocks.ts"]).into_owned();
            assert!(options.contains("The Kafka topic the RPC reads"), "options.proto's comments are JSDoc");
        }
        std::fs::remove_dir_all(&plugin_out).unwrap();
        std::fs::remove_dir_all(&cli_out).unwrap();
    }
}

/// Errors come back to protoc, which prints them (file and line included) and fails; nothing
/// is written.
#[test]
fn plugin_errors_reach_protoc() {
    let Some(protoc) = protoc() else { return };
    let repo = repo_dir();
    let cases: &[(&[&str], &str, &str, &[&str])] = &[
        (&["proto"], "chat/v1/chat.proto", "colour=red", &["unknown parameter \"colour\""]),
        (&["proto"], "chat/v1/chat.proto", "lang=rust,runtime=vendor", &["runtime is for lang=ts"]),
        (&["proto"], "chat/v1/chat.proto", "service=chat.v1.Nope", &["no service \"chat.v1.Nope\""]),
        (&["codegen/tests/protos/bad", "proto"], "missing_field.proto", "", &["missing_field.proto:7:", "help:"]),
        (
            &["codegen/tests/protos/bad", "proto"],
            "client_streaming.proto",
            "",
            &["client_streaming.proto:6:", "client streaming"],
        ),
        // A schema binding registers the .proto source, which a plugin does not get.
        (TESTS_AND_OPTIONS, "every/v1/every.proto", "lang=rust", &["a schema needs the .proto source"]),
    ];
    for (includes, proto, opt, says) in cases {
        let out = temp_dir("errors");
        let includes: Vec<PathBuf> = includes.iter().map(|d| repo.join(d)).collect();
        let ran = run_protoc(&protoc, &includes, &[proto], opt, &out);
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert!(!ran.status.success(), "{proto} {opt}: protoc succeeded");
        for s in *says {
            assert!(stderr.contains(s), "{proto} {opt}: {s:?} not in:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(files(&out).is_empty(), "{proto} {opt}: nothing written");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Outside protoc: `--version`, and a clear message when stdin is not a request.
#[test]
fn plugin_binary_outside_protoc() {
    let bin = env!("CARGO_BIN_EXE_protoc-gen-kafkasocks");
    let version = Command::new(bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(kafkasocks_build::VERSION));
    let mut child =
        Command::new(bin).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"not a request \xff").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "errors go into the response");
    let response =
        <prost_types::compiler::CodeGeneratorResponse as prost::Message>::decode(out.stdout.as_slice()).unwrap();
    assert!(response.error.unwrap_or_default().contains("CodeGeneratorRequest"));
}
