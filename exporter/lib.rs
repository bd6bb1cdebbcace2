//! tetra-exporter: measures, step by step, whether this machine can update
//! the TETRA antivirus definitions of Cisco Secure Endpoint, and renders what
//! it measured as Prometheus metrics.
//!
//! Layout, one line per module:
//!
//! - [`config`]: the YAML configuration, its defaults and its validation.
//! - [`probe`]: the probe chain, one module per step (dns, connect, proxy,
//!   tls, revocation, download), run in order under one deadline.
//! - [`connector`]: the connector's own files (`local.xml`, `policy.xml`).
//! - [`definitions`]: the newest published definition version and the lag.
//! - [`targets`]: which servers to probe over which route (config, policy,
//!   environment).
//! - [`collect`]: runs probes on scrape, reuses recent results, single flight.
//! - [`secret`]: values kept out of logs, metrics and pages.
//! - [`files`]: reading local files with a size cap, regular files only.
//! - [`history`]: recent probes, failures kept longer, for the status page.
//! - [`debug`]: the debug view of one probe.
//! - [`metrics`]: turns plain reports into metric families; every metric name
//!   lives there.
//! - [`web`]: the HTTP server: `/metrics`, `/probe`, the status page,
//!   reload, and its own TLS and basic authentication.

pub mod collect;
pub mod config;
pub mod connector;
pub mod debug;
pub mod definitions;
pub mod files;
pub mod history;
pub mod metrics;
pub mod probe;
pub mod secret;
pub mod targets;
pub mod web;

/// The exporter's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the process-wide rustls crypto provider (ring). Idempotent:
/// call it at the start of `main` and of every test binary, before any TLS
/// client is built.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
