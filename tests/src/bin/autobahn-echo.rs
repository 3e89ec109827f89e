//! The gateway's own accept path as an echo server, for the Autobahn|Testsuite
//! (`scripts/autobahn` runs it; by hand:
//! `cargo run -p kafkasocks-tests --features autobahn --bin autobahn-echo -- --limits raised`).
//!
//! ```text
//! autobahn-echo [--port N] [--limits production|raised] [--tls CERT_PEM KEY_PEM]
//! ```
//!
//! Serves `GatewayBuilder::echo_for_conformance("/echo")` on 127.0.0.1 (port 0 unless
//! given), prints one line `autobahn-echo: ws://127.0.0.1:PORT/echo` (`wss://` with
//! `--tls`) on stdout once it accepts connections, and the limits it runs with on stderr.
//! Stops on SIGINT (Ctrl-C) or SIGTERM.
//!
//! `--limits production` (the default) is `Limits::default()`: the suite's 4 MiB to
//! 16 MiB messages (cases 9.x) must be refused with close 1009. `--limits raised` lifts
//! the message size (and the write buffer the echo needs for it) above the suite's
//! largest message, 16 MiB, so every case can pass.
//!
//! Kafka is not used by the echo and need not be reachable: the gateway still needs a
//! bootstrap address and one stream, so it takes `KAFKA_BOOTSTRAP` or `127.0.0.1:9`.

use anyhow::{Context, bail};
use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, Limits, Streams, TlsConfig};
use tokio::signal::unix::{SignalKind, signal};

/// The largest message in Autobahn cases 1 to 10 (9.1.6, 9.2.6), plus room.
const RAISED_MESSAGE_BYTES: usize = 17 << 20;

const USAGE: &str = "usage: autobahn-echo [--port N] [--limits production|raised] [--tls CERT_PEM KEY_PEM]";

struct Args {
    port: u16,
    raised: bool,
    tls: Option<(String, String)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { port: 0, raised: false, tls: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => args.port = it.next().context(USAGE)?.parse().context("--port: not a port number")?,
            "--limits" => match it.next().as_deref() {
                Some("production") => args.raised = false,
                Some("raised") => args.raised = true,
                _ => bail!("--limits takes production or raised\n{USAGE}"),
            },
            "--tls" => {
                let cert = it.next().context(USAGE)?;
                let key = it.next().context(USAGE)?;
                args.tls = Some((cert, key));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kafkasocks_tests::init_tracing();
    let args = parse_args()?;

    let limits = if args.raised {
        // The echo writes each message back whole: the write buffer must hold one too.
        Limits::default().with_max_message_bytes(RAISED_MESSAGE_BYTES).with_send_queue_bytes(RAISED_MESSAGE_BYTES)
    } else {
        Limits::default()
    };
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9".to_owned());
    let mut config = GatewayConfig::new(KafkaConfig::new(bootstrap))
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], args.port)))
        .limits(limits.clone());
    if let Some((cert, key)) = &args.tls {
        config = config.tls(TlsConfig::from_pem_files(cert, key));
    }
    // A gateway serves at least one stream; the echo does not use it.
    let streams = Streams::new().subscribe("autobahn.v1.Unused/Watch", "autobahn-unused", KeyField::none());
    let gw = Gateway::builder(config).streams(streams).allow_anonymous().echo_for_conformance("/echo").bind().await?;

    let scheme = if args.tls.is_some() { "wss" } else { "ws" };
    eprintln!(
        "autobahn-echo: limits {} (max_message_bytes {}, send_queue_bytes {})",
        if args.raised { "raised" } else { "production" },
        limits.max_message_bytes,
        limits.send_queue_bytes,
    );
    println!("autobahn-echo: {scheme}://{}/echo", gw.local_addr());

    let stop = gw.shutdown_handle();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        stop.shutdown();
    });
    gw.run().await?;
    Ok(())
}
