//! The Dockerfile and the Kubernetes example cannot be built or applied here (no Docker
//! engine, no cluster): this checks what can be checked, against the real binary. Every
//! `KAFKASOCKS_*` variable they set is a setting, the arguments they pass parse, the
//! ConfigMap's config passes `kafkasocks config check`, the probes use the admin paths, and
//! the shutdown timings fit inside each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kafkasocks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kafkasocks"))
}

/// Runs `kafkasocks args...` with `env`; (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = kafkasocks().args(args).envs(env.iter().cloned()).output().expect("running kafkasocks");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments parse: with a config that does not exist, the error is about the file
/// (exit 1), not about the command line (clap's exit 2).
fn assert_args_parse(args: &[&str]) {
    let mut args: Vec<&str> = args.to_vec();
    let at = args.iter().position(|a| *a == "--config").expect("--config") + 1;
    args[at] = "/nonexistent/kafkasocks.toml";
    let (code, _, stderr) = run(&args, &[]);
    assert_eq!(code, 1, "{args:?}: {stderr}");
    assert!(stderr.contains("reading /nonexistent/kafkasocks.toml"), "{args:?}: {stderr}");
}

/// Every `KAFKASOCKS_*` name in `text` is a setting of the reference (or the binary's own
/// KAFKASOCKS_CONFIG / KAFKASOCKS_LOG_FORMAT).
fn assert_known_variables(text: &str, what: &str) -> usize {
    let (_, reference, _) = run(&["config", "reference"], &[]);
    let re = regex::Regex::new(r"KAFKASOCKS_[A-Z0-9_]+").expect("regex");
    let mut n = 0;
    for m in re.find_iter(text) {
        let var = m.as_str();
        assert!(
            reference.contains(&format!("`{var}`")) || var == "KAFKASOCKS_CONFIG",
            "{what} sets {var}, which is not a setting (docs/configuration.md)"
        );
        n += 1;
    }
    n
}

fn seconds(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn the_dockerfile_uses_settings_and_arguments_the_binary_has() {
    let dockerfile = std::fs::read_to_string(root().join("runtime/gateway/Dockerfile")).expect("Dockerfile");
    assert!(assert_known_variables(&dockerfile, "the Dockerfile") >= 3);
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    assert_args_parse(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(dockerfile.contains("USER 10001"), "runs as a non-root user");
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"), "stops with the signal that drains");
}

#[test]
fn the_kubernetes_example_is_consistent_with_the_binary() {
    let text = std::fs::read_to_string(root().join("examples/kubernetes/kafkasocks.yaml")).expect("yaml");
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap_or_else(|| panic!("a {k}"));
    assert!(docs.iter().any(|d| d["kind"].as_str() == Some("PodDisruptionBudget")));
    let config_map = kind("ConfigMap");
    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The arguments and variables exist.
    let args: Vec<&str> = container["args"].as_vec().expect("args").iter().filter_map(Yaml::as_str).collect();
    assert_args_parse(&args);
    assert!(assert_known_variables(&text, "the Kubernetes example") >= 3);

    // The ConfigMap's config is valid with the pod's environment, its files beside it.
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in config_map["data"].as_hash().expect("data") {
        std::fs::write(dir.path().join(name.as_str().expect("name")), content.as_str().expect("text")).expect("write");
    }
    let env: Vec<(String, String)> = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e["value"].as_str().map(str::to_owned).unwrap_or_else(|| "from-the-downward-api".to_owned());
            (e["name"].as_str().expect("name").to_owned(), value)
        })
        .collect();
    let config = dir.path().join("kafkasocks.toml");
    let (code, stdout, stderr) = run(&["config", "check", "--config", config.to_str().expect("utf-8")], &env);
    assert_eq!(code, 0, "config check: {stderr}");
    assert!(stdout.contains("publish chat.v1.ChatStreams/Post"), "{stdout}");

    // The probes use the admin endpoint's paths, on its port.
    let admin = env.iter().find(|(k, _)| k == "KAFKASOCKS_SERVER_ADMIN_LISTEN").map(|(_, v)| v.clone()).expect("admin");
    let admin_port: i64 = admin.rsplit(':').next().and_then(|p| p.parse().ok()).expect("admin port");
    let port_of = |name: &str| {
        container["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| p["containerPort"].as_i64())
    };
    assert_eq!(port_of("admin"), Some(Some(admin_port)));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/livez"));

    // Shutdown: preStop + the binary's bound < the pod's grace; the binary's bound covers the
    // gateway's own drain (drain_timeout + close_timeout + 10 s).
    let effective: toml::Table = {
        let body: String = stdout.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        toml::from_str(&body).expect("check prints TOML")
    };
    let grace = seconds(effective["server"]["shutdown_grace"].as_str().expect("shutdown_grace"));
    let drain = seconds(effective["limits"]["drain_timeout"].as_str().expect("drain_timeout"));
    let close = seconds(effective["limits"]["close_timeout"].as_str().expect("close_timeout"));
    let pre_stop = Duration::from_secs(
        container["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().expect("preStop sleep") as u64,
    );
    let pod_grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_i64().expect("grace period") as u64);
    assert!(pre_stop + grace < pod_grace, "{pre_stop:?} + {grace:?} must stay under {pod_grace:?}");
    assert!(grace >= drain + close + Duration::from_secs(10), "{grace:?} must cover the drain");
}
