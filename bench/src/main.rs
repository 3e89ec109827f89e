//! `kafkasocks-bench`: the benchmark of issue 2 §5. Measures the gateway on loopback
//! against a bare tokio-tungstenite baseline measured in the same run, and prints one
//! JSON document on stdout (progress goes to stderr). See bench/README.md.
//!
//! ```text
//! ulimit -n 65536
//! cargo run --release -p kafkasocks-bench -- [fanout|publish|memory|storm|deploy|paced|fresh|keyjoin|all] [--quick]
//! ```

mod bare;
mod fanout;
mod fresh;
mod gateway;
mod kafka;
mod keyjoin;
mod memory;
mod net;
mod paced;
mod procfs;
mod protocol;
mod publish;
mod stats;
mod storm;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const USAGE: &str = "usage: kafkasocks-bench [fanout|publish|memory|storm|deploy|paced|fresh|keyjoin|all] [--quick] [--clients N,N,...]";
const SCENARIOS: [&str; 8] = ["fanout", "publish", "memory", "storm", "deploy", "paced", "fresh", "keyjoin"];

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Child processes of the memory scenario.
    match args.first().map(String::as_str) {
        Some("serve-gateway") => {
            let topic = args.get(1).context("serve-gateway TOPIC MAX_CONNECTIONS [ADDR]")?;
            let max = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
            let listen = args.get(3).map(|a| a.parse()).transpose()?;
            return gateway::serve_child(topic, max, listen).await;
        }
        Some("serve-paced-bare") => {
            let arg = |i: usize| args.get(i).context("serve-paced-bare CLIENTS RATE TOTAL");
            return paced::serve_paced_bare_child(arg(1)?.parse()?, arg(2)?.parse()?, arg(3)?.parse()?).await;
        }
        Some("serve-live-bare") => {
            let arg = |i: usize| args.get(i).context("serve-live-bare ADDR FIRST_SEQ INTERVAL_MS BYTES");
            let interval = std::time::Duration::from_millis(arg(3)?.parse()?);
            return bare::serve_live_child(arg(1)?.parse()?, arg(2)?.parse()?, interval, arg(4)?.parse()?).await;
        }
        Some("serve-bare") => {
            let replies = args.get(1).map_or(Ok(3), |s| s.parse())?;
            return bare::serve_idle_child(replies).await;
        }
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut chosen: Vec<&str> = Vec::new();
    let mut clients: Option<Vec<usize>> = None;
    let mut rest = args.iter().filter(|a| *a != "--quick");
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--clients" => {
                let list = rest.next().context("--clients needs a list such as 1,100")?;
                clients = Some(list.split(',').map(str::parse).collect::<Result<_, _>>()?);
            }
            "all" => chosen.extend(SCENARIOS),
            s if SCENARIOS.contains(&s) => chosen.push(SCENARIOS[SCENARIOS.iter().position(|x| *x == s).unwrap_or(0)]),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if chosen.is_empty() {
        chosen.extend(SCENARIOS);
    }
    chosen.dedup();

    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let load = procfs::CpuWindow::start();
    let mut doc = json!({
        "benchmark": "kafkasocks-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::iter::once("kafkasocks-bench".to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>(),
        "quick": quick,
        "started_unix_s": started,
        "machine": procfs::machine(),
        "kafka_bootstrap": kafka::bootstrap(),
        "note": "clients and servers share this machine's cores; each ratio compares figures measured in this \
                 same run, under the same conditions. `load.others_cpu_s` is CPU used meanwhile by other \
                 processes (including this run's child servers and the Kafka broker).",
    });
    let mut failed = false;
    for name in chosen {
        eprintln!("== {name}{}", if quick { " (quick)" } else { "" });
        let result = match name {
            "fanout" => fanout::run(quick, clients.clone()).await,
            "publish" => publish::run(quick).await,
            "memory" => memory::run(quick).await,
            "fresh" => fresh::run(quick).await,
            "keyjoin" => keyjoin::run(quick).await,
            "paced" => paced::run(quick, clients.as_ref().and_then(|c| c.first().copied())).await,
            "deploy" => storm::deploy(quick).await,
            _ => storm::run(quick).await,
        };
        doc[name] = match result {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{name} failed: {e:#}");
                failed = true;
                json!({ "error": format!("{e:#}") })
            }
        };
    }
    doc["load"] = load.end();
    doc["summary"] = summary(&doc);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// The ratio of each scenario against its target, in one place.
fn summary(doc: &Value) -> Value {
    let f = &doc["fanout"]["targets"];
    json!({
        "fanout_ring_to_ceiling_at_100": f["ring_to_ceiling_at_100"],
        "fanout_ring_to_ceiling_at_1000": f["ring_to_ceiling_at_1000"],
        "fanout_single_subscriber_cold_to_consumer_alone": f["single_subscriber_cold_to_consumer_alone"],
        "fanout_cold_to_bare_at_1000": f["cold_to_bare_at_1000"],
        "fanout_cold_at_1000_every_client_complete": f["cold_at_1000_every_client_complete"],
        "publish_p99_ratio": doc["publish"]["ratio_p99"],
        "publish_sasl_ssl_p99_ratio": doc["publish"]["sasl_ssl"]["ratio_p99"],
        "publish_cluster_p99_ratio_to_single_node": doc["publish"]["cluster"]["ratio_p99_to_single_node"],
        "publish_tls_cost_gateway_p50": doc["publish"]["sasl_ssl"]["tls_cost_gateway_p50"],
        "publish_target": "<= 1.5",
        "memory_bytes_per_connection": doc["memory"]["gateway"]["bytes_per_connection"],
        "memory_bare_bytes_per_connection": doc["memory"]["bare"]["bytes_per_connection"],
        "memory_target": "<= 8192",
        "storm_all_resumed_ms": doc["storm"]["gateway"]["all_resumed_ms"],
        "deploy_all_resumed_ms": doc["deploy"]["gateway"]["all_resumed_ms"],
        "deploy_bare_all_resumed_ms": doc["deploy"]["bare"]["all_resumed_ms"],
        "deploy_ratio_to_bare": doc["deploy"]["ratio_all_resumed_gateway_to_bare"],
        "deploy_target": "<= 2",
        "paced_p99_ms": doc["paced"]["gateway"]["latency"]["p99_ms"],
        "paced_bare_p99_ms": doc["paced"]["bare"]["latency"]["p99_ms"],
        "paced_target_met": doc["paced"]["target"]["met"],
        "memory_idle_cpu_us_per_connection_per_s": doc["memory"]["gateway"]["idle_cpu"]["cpu_us_per_connection_per_s"],
        "storm_bare_all_resumed_ms": doc["storm"]["bare"]["all_resumed_ms"],
        "storm_bare_accept_queue_4096_all_resumed_ms": doc["storm"]["bare_accept_queue_4096"]["all_resumed_ms"],
        "keyjoin_1m_caught_up_ms_no_index_vs_indexed": [
            doc["keyjoin"]["sizes"][0]["no_index"]["caught_up_ms"],
            doc["keyjoin"]["sizes"][0]["indexed"]["caught_up_ms"]
        ],
        "keyjoin_10m_caught_up_ms_no_index_vs_indexed": [
            doc["keyjoin"]["sizes"][1]["no_index"]["caught_up_ms"],
            doc["keyjoin"]["sizes"][1]["indexed"]["caught_up_ms"]
        ],
    })
}
