//! What the benchmark reads from `/proc`: resident memory, CPU time, the machine, and the
//! file-descriptor limit.

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports today.
const TICKS_PER_SECOND: f64 = 100.0;

fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// `VmRSS` of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let v = field(&status, "VmRSS:").context("no VmRSS")?;
    v.trim_end_matches("kB").trim().parse().context("parsing VmRSS")
}

/// User + system CPU seconds this process has used (all threads, including exited ones).
pub(crate) fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// [`process_cpu_seconds`] of process `pid`.
pub(crate) fn pid_cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&pid.to_string())
}

fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// Busy and total CPU seconds of the whole machine since boot (`/proc/stat`).
pub(crate) fn machine_cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND)
}

/// CPU use over a stretch of the run: this process versus everything on the machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuWindow {
    own: f64,
    busy: f64,
    total: f64,
}

impl CpuWindow {
    pub(crate) fn start() -> CpuWindow {
        let (busy, total) = machine_cpu_seconds();
        CpuWindow { own: process_cpu_seconds(), busy, total }
    }

    /// `own_cpu_s`: this process; `machine_busy_cpu_s`: every process; `others_cpu_s`:
    /// the difference (other work on the machine, plus child processes of this one).
    pub(crate) fn end(&self) -> Value {
        let now = CpuWindow::start();
        let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
        let wall = (now.total - self.total) / cores;
        let own = now.own - self.own;
        let busy = now.busy - self.busy;
        json!({
            "wall_s": round(wall, 2),
            "own_cpu_s": round(own, 2),
            "machine_busy_cpu_s": round(busy, 2),
            "others_cpu_s": round((busy - own).max(0.0), 2),
        })
    }
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// The machine, as the README's table reports it.
pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": field(&cpuinfo, "model name").map(|v| v.trim_start_matches(':').trim().to_owned()),
        "mem_total": field(&meminfo, "MemTotal:"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

/// The soft limit on open files.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Fails with advice when fewer than `needed` file descriptors may be open.
pub(crate) fn require_open_files(needed: u64) -> Result<()> {
    match open_files_limit() {
        Some(n) if n < needed => anyhow::bail!(
            "this scenario needs about {needed} open files but the limit is {n}: run it as \
             `ulimit -n 65536 && cargo run --release -p kafkasocks-bench -- ...`"
        ),
        _ => Ok(()),
    }
}

/// Counters of this network namespace (`/proc/net/netstat`, `TcpExt`) that tell whether
/// connection attempts were dropped and retried: a full accept queue drops SYNs and the
/// client retransmits after 1 s, then 3 s.
const TCP_COUNTERS: [&str; 4] = ["ListenOverflows", "ListenDrops", "TCPSynRetrans", "SyncookiesSent"];

pub(crate) fn tcp_counters() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return vec![0; TCP_COUNTERS.len()];
    };
    let map: std::collections::HashMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    TCP_COUNTERS.iter().map(|k| map.get(k).copied().unwrap_or(0)).collect()
}

/// The change in [`tcp_counters`] since `before`, as JSON.
pub(crate) fn tcp_counters_since(before: &[u64]) -> Value {
    let now = tcp_counters();
    let map: serde_json::Map<String, Value> = TCP_COUNTERS
        .iter()
        .zip(now.iter().zip(before))
        .map(|(k, (n, b))| ((*k).to_owned(), json!(n.saturating_sub(*b))))
        .collect();
    Value::Object(map)
}
