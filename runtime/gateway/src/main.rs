//! `kafkasocks`: a KafkaSocks gateway from a config file and .proto files, no Rust to write.
//!
//! ```text
//! kafkasocks serve --config kafkasocks.toml [--log-format json]
//! kafkasocks config check --config kafkasocks.toml
//! kafkasocks config reference > docs/configuration.md
//! ```
//!
//! Every setting is documented in docs/configuration.md (generated from `settings`); the
//! chat example's config is `examples/chat/kafkasocks.toml`.

#![forbid(unsafe_code)]

mod assemble;
mod settings;
mod streams;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// A KafkaSocks gateway: Kafka topics to and from browsers over WebSockets, typed by .proto
/// files, configured by a TOML file and `KAFKASOCKS_*` environment variables.
#[derive(Debug, Parser)]
#[command(name = "kafkasocks", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the streams of the config until SIGTERM or SIGINT, then drains.
    Serve {
        /// The config file.
        #[arg(long, short, env = "KAFKASOCKS_CONFIG")]
        config: PathBuf,
        /// Log format (overrides `[log] format`).
        #[arg(long, value_enum, env = "KAFKASOCKS_LOG_FORMAT")]
        log_format: Option<LogFormat>,
    },
    /// Config file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validates a config (the environment applied, the .proto files loaded, every rule
    /// checked) and prints the effective settings, secrets redacted.
    Check {
        /// The config file.
        #[arg(long, short, env = "KAFKASOCKS_CONFIG")]
        config: PathBuf,
    },
    /// Prints the reference of every setting (docs/configuration.md).
    Reference,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One rustls provider for every TLS client of the process (JWKS, registry, OTLP over
    // https): ring, the one the runtime compiles.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Config { command: ConfigCommand::Check { config } } => check(config),
        Command::Config { command: ConfigCommand::Reference } => {
            print!("{}", settings::reference());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafkasocks: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &std::path::Path) -> anyhow::Result<settings::Loaded> {
    settings::load(config, std::env::vars())
}

fn check(config: PathBuf) -> anyhow::Result<()> {
    let loaded = load(&config)?;
    // Inside a runtime, as `serve` assembles (a JWKS authenticator starts its refresh task).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("the tokio runtime")?;
    let assembled = runtime.block_on(async { assemble::assemble(&loaded) })?;
    println!("# {}: valid. Effective settings (secrets redacted):\n", config.display());
    for var in &loaded.unknown_env {
        println!("# warning: {var} is set but names no setting (docs/configuration.md); ignored");
    }
    print!("{}", settings::redacted_toml(&loaded.settings)?);
    println!("\n# Streams:");
    for s in &assembled.served {
        println!("#   {} {} <- topic {}", s.kind, s.route, s.topic);
    }
    Ok(())
}

fn serve(config: PathBuf, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let loaded = load(&config)?;
    // Before the runtime, and dropped after it: the trace exporter flushes on its own thread.
    let _telemetry = telemetry::init(&loaded.settings, log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("the tokio runtime")?;
    runtime.block_on(async move {
        for var in &loaded.unknown_env {
            tracing::warn!(variable = %var, "set but names no setting (docs/configuration.md); ignored");
        }
        let assembled = assemble::assemble(&loaded)?;
        for s in &assembled.served {
            tracing::info!(stream = %s.route, topic = %s.topic, kind = s.kind, "serving");
        }
        let gateway = assembled.builder.bind().await?;
        // One line for scripts and tests that start the binary with port 0.
        println!("kafkasocks: listening on {}", gateway.local_addr());
        if let Some(admin) = gateway.metrics_addr() {
            println!("kafkasocks: admin on http://{admin}");
        }
        let stop = gateway.shutdown_handle();
        let grace = loaded.settings.server.shutdown_grace;
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(%signal, ?grace, "draining: GoAway to every client, in-flight publishes answered");
            stop.shutdown();
            // The drain is bounded by the limits; this bounds the process whatever happens.
            tokio::select! {
                _ = tokio::time::sleep(grace) => {
                    tracing::error!(?grace, "shutdown took longer than server.shutdown_grace: exiting");
                    std::process::exit(1);
                }
                again = shutdown_signal() => {
                    tracing::warn!(signal = %again, "second signal: exiting without finishing the drain");
                    std::process::exit(130);
                }
            }
        });
        gateway.run().await?;
        Ok(())
    })
}

/// The first SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "ctrl-c"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
