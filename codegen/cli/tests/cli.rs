//! The `kafkasocks-gen` binary: `--check` drift reports, `--help`, and exit code 2 with
//! nothing written on bad input (the library's own errors are tested in kafkasocks-build).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The generator's test protos live with kafkasocks-build.
fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

fn every_proto() -> PathBuf {
    tests_dir().join("protos/every/v1/every.proto")
}

fn bad_dir() -> PathBuf {
    tests_dir().join("protos/bad")
}

/// (file, line) of bad protos: a parse error, a missing import, a bad stream option and an
/// unsupported RPC kind.
const CASES: &[(&str, u32)] =
    &[("unparsable.proto", 6), ("missing_import.proto", 3), ("missing_field.proto", 7), ("client_streaming.proto", 6)];

/// The first bytes of every generated file.
const STAMP_PREFIX: &str = kafkasocks_build::STAMP_PREFIX;

/// The CLI's `--check`: up to date, then changed, missing and orphaned files (with
/// `--runtime vendor`, so that the runtime copy is covered too).
#[test]
fn cli_check_reports_drift_and_writes_nothing() {
    let bin = env!("CARGO_BIN_EXE_kafkasocks-gen");
    let dir = std::env::temp_dir().join(format!("kafkasocks-gen-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |check: bool| {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("ts").arg(every_proto()).arg("-I").arg(tests_dir().join("protos")).arg("-o").arg(&dir);
        cmd.args(["--runtime", "vendor"]);
        if check {
            cmd.arg("--check");
        }
        cmd.output().unwrap()
    };
    let first = run(true);
    assert_eq!(first.status.code(), Some(1), "missing output is stale");
    assert!(!dir.exists(), "--check writes nothing");
    assert_eq!(run(false).status.code(), Some(0));
    assert_eq!(run(true).status.code(), Some(0), "{}", String::from_utf8_lossy(&run(true).stderr));

    let file = dir.join("every/v1/every_kafkasocks.ts");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("export", "export /* edited */", 1)).unwrap();
    std::fs::remove_file(dir.join("kafkasocks-runtime/wire.ts")).unwrap();
    std::fs::write(dir.join("old_kafkasocks.ts"), format!("{STAMP_PREFIX} v0 from old.proto. DO NOT EDIT.\n")).unwrap();
    std::fs::write(dir.join("mine.ts"), "// not generated\n").unwrap();
    let stale = run(true);
    let summary = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(stale.status.code(), Some(1), "{summary}");
    assert!(summary.contains("changed:  every/v1/every_kafkasocks.ts"), "{summary}");
    assert!(summary.contains("missing:  kafkasocks-runtime/wire.ts"), "{summary}");
    assert!(summary.contains("orphaned: old_kafkasocks.ts"), "{summary}");
    assert!(!summary.contains("mine.ts"), "files without the stamp are not ours: {summary}");
    // Regenerating repairs it, removes the orphan and keeps the user's file.
    assert_eq!(run(false).status.code(), Some(0));
    assert_eq!(run(true).status.code(), Some(0));
    assert!(!dir.join("old_kafkasocks.ts").exists());
    assert!(dir.join("mine.ts").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--runtime package` (the default) imports the npm package and writes no runtime copy;
/// switching a vendored output to it removes the copy (stamped files no longer generated).
#[test]
fn cli_runtime_modes() {
    let bin = env!("CARGO_BIN_EXE_kafkasocks-gen");
    let dir = std::env::temp_dir().join(format!("kafkasocks-gen-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |mode: Option<&str>, check: bool| {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("ts").arg(every_proto()).arg("-I").arg(tests_dir().join("protos")).arg("-o").arg(&dir);
        if let Some(mode) = mode {
            cmd.args(["--runtime", mode]);
        }
        if check {
            cmd.arg("--check");
        }
        cmd.output().unwrap()
    };
    assert_eq!(run(Some("vendor"), false).status.code(), Some(0));
    assert!(dir.join("kafkasocks-runtime/index.ts").exists());
    assert!(dir.join("kafkasocks-runtime/json.ts").exists());
    let every = std::fs::read_to_string(dir.join("every/v1/every_kafkasocks.ts")).unwrap();
    assert!(every.contains("import * as $ks from \"../../kafkasocks-runtime/index.js\";"), "{every}");

    let stale = run(None, true);
    assert_eq!(stale.status.code(), Some(1), "the vendored output is stale for package mode");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("orphaned: kafkasocks-runtime/index.ts"));
    assert_eq!(run(None, false).status.code(), Some(0));
    assert!(!dir.join("kafkasocks-runtime").join("index.ts").exists(), "the runtime copy is removed");
    let every = std::fs::read_to_string(dir.join("every/v1/every_kafkasocks.ts")).unwrap();
    assert!(every.contains("import * as $ks from \"@kafkasocks/runtime\";"), "{every}");
    assert!(every.contains("import * as $j from \"@kafkasocks/runtime/json\";"), "{every}");
    assert_eq!(run(Some("package"), true).status.code(), Some(0), "package is the default");

    let bad = run(Some("copy"), false);
    assert_eq!(bad.status.code(), Some(2), "an unknown mode is a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("vendor"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_help_documents_every_option() {
    let bin = env!("CARGO_BIN_EXE_kafkasocks-gen");
    let help = std::process::Command::new(bin).args(["ts", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--include", "--out", "--check", "--descriptor-set", "--service", "--runtime", "vendor", "Example"] {
        assert!(text.contains(flag), "ts --help lacks {flag}:\n{text}");
    }
    let top = std::process::Command::new(bin).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("Exit codes"), "{text}");
}

#[test]
fn cli_exits_2_and_writes_nothing() {
    let bin = env!("CARGO_BIN_EXE_kafkasocks-gen");
    for (file, line) in CASES {
        let out = std::env::temp_dir().join(format!("kafkasocks-bad-{}-{file}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        for lang in ["ts", "rust"] {
            let r = std::process::Command::new(bin)
                .arg(lang)
                .arg(bad_dir().join(file))
                .arg("-I")
                .arg(bad_dir())
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(2), "{lang} {file}: {stderr}");
            assert!(stderr.contains(&format!("{file}:{line}:")), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(!out.exists(), "{lang} {file}: nothing is written");
        }
    }
}

/// `--message-model protobuf-es` writes only the files with stream services;
/// `--import-extension` without it is a usage error (exit 2, nothing written).
#[test]
fn cli_message_model_protobuf_es() {
    let bin = env!("CARGO_BIN_EXE_kafkasocks-gen");
    let dir = std::env::temp_dir().join(format!("kafkasocks-gen-es-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("ts").arg(every_proto()).arg("-I").arg(tests_dir().join("protos")).arg("-o").arg(&dir);
        cmd.args(extra).output().unwrap()
    };
    let bad = run(&["--import-extension", "js"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--import-extension is for --message-model protobuf-es"));
    assert!(!dir.exists());
    let ok = run(&["--message-model", "protobuf-es", "--import-extension", "js"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = std::fs::read_to_string(dir.join("every/v1/every_kafkasocks.ts")).unwrap();
    assert!(text.contains("import * as every_v1_every_pb from \"./every_pb.js\";"));
    assert!(!dir.join("kafkasocks/options_kafkasocks.ts").exists(), "messages are protoc-gen-es's");
    std::fs::remove_dir_all(&dir).unwrap();
}
