//! The `tetra-exporter` binary: flags, logging, the crypto provider, start.
//! Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tetra_exporter::web::{webconfig::WebConfig, App};
use tetra_exporter::{collect::Exporter, config, web};

/// The default listen port; not used by any well-known Prometheus exporter.
const DEFAULT_LISTEN_ADDRESS: &str = ":9697";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Tells why this machine can or cannot update its TETRA definitions, as
/// Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "tetra-exporter", version, about)]
struct Flags {
    /// YAML configuration; the embedded default is used when absent.
    #[arg(long = "config.file", value_name = "PATH")]
    config_file: Option<PathBuf>,

    /// Validate the configuration and exit (0 when valid).
    #[arg(long = "config.check")]
    config_check: bool,

    /// TLS and basic authentication for this endpoint, in the Prometheus
    /// exporter-toolkit's format.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<PathBuf>,

    /// Address to listen on, `[HOST]:PORT`.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = DEFAULT_LISTEN_ADDRESS)]
    listen_address: String,

    /// Least severe level logged.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    log_level: LogLevel,

    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(flags.log_level, flags.log_format);
    tetra_exporter::install_crypto_provider();

    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logged on standard error, like every other line.
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags) -> anyhow::Result<()> {
    let config = config::load(flags.config_file.as_deref())?;
    let web_config = match &flags.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::open(),
    };
    if flags.config_check {
        // Building the exporter also reads the CA files the config names.
        Exporter::new(config)?;
        println!("config is valid");
        return Ok(());
    }

    let listen = normalize_listen_address(&flags.listen_address);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async move {
        let app = Arc::new(App::new(
            Exporter::new(config)?,
            flags.config_file.clone(),
            web_config,
        ));
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(
            address = %listener.local_addr().map(|a| a.to_string()).unwrap_or(listen.clone()),
            version = tetra_exporter::VERSION,
            "listening"
        );
        spawn_reload_on_sighup(app.clone());
        tokio::select! {
            result = web::serve(listener, app) => result.context("server stopped"),
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    });
    // A read of a connector file stuck on a stalled share must not keep the
    // process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome
}

/// `:9697` means every interface, as in the Go exporters.
fn normalize_listen_address(address: &str) -> String {
    match address.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => address.to_string(),
    }
}

/// SIGHUP re-reads the config, as in the Prometheus exporters.
fn spawn_reload_on_sighup(app: Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the configuration");
                        // The outcome is logged and shown in the reload metrics.
                        let _ = app.reload().await;
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; use POST /-/reload"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = app;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(level: LogLevel, format: LogFormat) {
    use tracing_subscriber::prelude::*;

    let level = match level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    // Only the exporter's own events at the chosen level; the libraries'
    // chatter stays at warn.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("tetra_exporter", level);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}
