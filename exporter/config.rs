//! The exporter's configuration: a YAML file, or the embedded default when no
//! file is given.
//!
//! Everything is checked once, at load: unknown keys are rejected, durations
//! are written as `30s` or `5m`, and every error names the field it is about.
//! A probe never re-validates its configuration; it trusts what [`load`] and
//! [`Config::from_yaml`] returned.
//!
//! This module only describes and validates; it does not open files named by
//! the configuration (CA bundles are read by [`crate::probe::tls`]) and does
//! not touch the network.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The embedded default, used when no `--config.file` is given.
///
/// It probes the North American update server directly, reads the
/// connector's `local.xml` at the platform's default path when that file
/// exists, and takes the newest version from Cisco's public document.
pub const DEFAULT_CONFIG: &str = r#"
servers:
  - host: tetra-defs.amp.cisco.com
"#;

/// A configuration that failed to load or validate. The message names the
/// field and never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("invalid config: {0}")]
    Syntax(String),
    #[error("invalid config: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The largest config file accepted; a config is a few kilobytes at most.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Update servers to probe, each with its own chain.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// How names are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Extra trust for the TLS step.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Deadlines and reuse of results.
    #[serde(default)]
    pub probe: ProbeConfig,
    /// The connector's files on this endpoint.
    #[serde(default)]
    pub connector: ConnectorConfig,
    /// Where the newest published version is read.
    #[serde(default)]
    pub versions: VersionsConfig,
    /// Limits of the revocation step's fetches and of its cache.
    #[serde(default)]
    pub revocation: RevocationConfig,
}

/// One update server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host name (or IP literal) as the connector uses it; also the TLS
    /// server name and the HTTP `Host`.
    pub host: String,
    /// TCP port, 443 unless said otherwise.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Path fetched by the download step.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP status codes that count as a successful download. Empty means
    /// any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// What the revocation step does for this server: `require` (the
    /// default, as Windows does), `report` or `off`.
    #[serde(default)]
    pub revocation: RevocationMode,
}

/// What the revocation step does for one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMode {
    /// Revocation that cannot be checked, or a revoked certificate, fails
    /// the probe: what Windows does.
    #[default]
    Require,
    /// Check and report, but never fail the probe.
    Report,
    /// Do not check.
    Off,
}

/// Limits of the revocation step, shared by every server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Largest CRL accepted; a larger one stops with `too_large`.
    #[serde(default = "default_crl_max_bytes")]
    pub crl_max_bytes: u64,
    /// A good answer is reused until its nextUpdate, but never longer than
    /// this.
    #[serde(default = "default_revocation_max_cache_age", with = "humantime_serde")]
    pub max_cache_age: Duration,
    /// Deadline of one CRL or OCSP fetch, within the probe's own deadline.
    #[serde(default = "default_revocation_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

/// How the dns step resolves names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// A DNS server (`IP` or `IP:PORT`) asked over UDP, once, instead of the
    /// system resolver.
    #[serde(default)]
    pub server: Option<String>,
}

/// Extra trust for the tls step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files whose certificates are trusted in addition to the platform's
    /// roots.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// Deadlines and reuse of probe results.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// The deadline of one whole probe, all steps together. A scrape's own
    /// timeout shortens it further.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A result younger than this is served again instead of probing, so
    /// that several Prometheus servers do not multiply the traffic.
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// The most body bytes the download step reads before it stops with
    /// `too_large`.
    #[serde(default = "default_download_max_bytes")]
    pub download_max_bytes: u64,
}

/// The connector's files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Path of `local.xml`. When absent, the platform's default path is read
    /// if the file exists there, and nothing is reported if it does not.
    #[serde(default)]
    pub local_state: Option<PathBuf>,
    /// Set to false to never read the connector's files (a central
    /// exporter that only probes).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// The published-versions document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsConfig {
    /// URL of the document (`http` or `https`); the first `value` attribute
    /// is the newest version.
    #[serde(default = "default_versions_url")]
    pub url: String,
    /// How long a fetched version is reused before the document is fetched
    /// again.
    #[serde(default = "default_versions_cache", with = "humantime_serde")]
    pub cache_for: Duration,
    /// Deadline of one fetch.
    #[serde(default = "default_versions_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest document accepted.
    #[serde(default = "default_versions_max_bytes")]
    pub max_bytes: u64,
    /// Set to false to never fetch it (no lag is then reported).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_port() -> u16 {
    443
}
fn default_path() -> String {
    "/".to_string()
}
fn default_true() -> bool {
    true
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_download_max_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_versions_url() -> String {
    "http://update.amp.cisco.com/av64bit/versions.id".to_string()
}
fn default_versions_cache() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_versions_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_versions_max_bytes() -> u64 {
    1024 * 1024
}
fn default_crl_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_revocation_max_cache_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_revocation_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            crl_max_bytes: default_crl_max_bytes(),
            max_cache_age: default_revocation_max_cache_age(),
            fetch_timeout: default_revocation_fetch_timeout(),
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            timeout: default_probe_timeout(),
            min_interval: default_min_interval(),
            download_max_bytes: default_download_max_bytes(),
        }
    }
}

impl Default for VersionsConfig {
    fn default() -> Self {
        VersionsConfig {
            url: default_versions_url(),
            cache_for: default_versions_cache(),
            timeout: default_versions_timeout(),
            max_bytes: default_versions_max_bytes(),
            enabled: true,
        }
    }
}

/// Loads and validates the file at `path`, or the embedded default when
/// `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return Config::from_yaml(DEFAULT_CONFIG);
    };

    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    Config::from_yaml(&text)
}

impl Config {
    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The DNS server to ask instead of the system resolver, already parsed.
    pub fn dns_server(&self) -> Option<SocketAddr> {
        self.dns.server.as_deref().and_then(parse_dns_server)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::invalid(
                "servers",
                "at least one server is needed",
            ));
        }
        for (i, server) in self.servers.iter().enumerate() {
            let field = |name: &str| format!("servers[{i}].{name}");
            let odd = server.host.trim().is_empty() || server.host.contains(['/', ' ', ':']);
            if odd && server.host.parse::<IpAddr>().is_err() {
                return Err(ConfigError::invalid(
                    field("host"),
                    format!("{:?} is not a host name or IP address", server.host),
                ));
            }
            if server.port == 0 {
                return Err(ConfigError::invalid(
                    field("port"),
                    "must be between 1 and 65535",
                ));
            }
            if !server.path.starts_with('/') || server.path.parse::<http::Uri>().is_err() {
                return Err(ConfigError::invalid(
                    field("path"),
                    format!("{:?} is not an absolute path", server.path),
                ));
            }
            if let Some(code) = server
                .valid_status_codes
                .iter()
                .find(|c| !(100..=599).contains(*c))
            {
                return Err(ConfigError::invalid(
                    field("valid_status_codes"),
                    format!("{code} is not an HTTP status code"),
                ));
            }
            if self.servers[..i]
                .iter()
                .any(|s| s.host == server.host && s.port == server.port)
            {
                return Err(ConfigError::invalid(
                    field("host"),
                    format!("{}:{} is listed twice", server.host, server.port),
                ));
            }
        }

        if let Some(server) = &self.dns.server {
            if parse_dns_server(server).is_none() {
                return Err(ConfigError::invalid(
                    "dns.server",
                    format!("{server:?} is not an IP address or IP:PORT"),
                ));
            }
        }

        if self.probe.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "probe.timeout",
                "must be more than 0s",
            ));
        }
        if self.probe.download_max_bytes == 0 {
            return Err(ConfigError::invalid(
                "probe.download_max_bytes",
                "must be more than 0",
            ));
        }

        if self.revocation.crl_max_bytes == 0 {
            return Err(ConfigError::invalid(
                "revocation.crl_max_bytes",
                "must be more than 0",
            ));
        }
        if self.revocation.fetch_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "revocation.fetch_timeout",
                "must be more than 0s",
            ));
        }

        if self.versions.enabled {
            match self.versions.url.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "versions.url",
                        format!("{:?} is not an http or https URL", self.versions.url),
                    ))
                }
            }
            if self.versions.timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "versions.timeout",
                    "must be more than 0s",
                ));
            }
            if self.versions.max_bytes == 0 {
                return Err(ConfigError::invalid(
                    "versions.max_bytes",
                    "must be more than 0",
                ));
            }
        }
        Ok(())
    }
}

fn parse_dns_server(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The platform's default path of the connector's `local.xml`.
pub fn default_local_state_path() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(r"C:\Program Files\Cisco\AMP\local.xml")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Cisco/AMP for Endpoints Connector/local.xml")
    } else {
        PathBuf::from("/opt/cisco/amp/etc/local.xml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_loads() {
        let config = load(None).expect("default config");
        assert_eq!(config.servers.len(), 1);
        assert_eq!(config.servers[0].host, "tetra-defs.amp.cisco.com");
        assert_eq!(config.servers[0].port, 443);
        assert_eq!(config.versions.cache_for, Duration::from_secs(900));
        assert!(config.connector.local_state.is_none());
        assert_eq!(config.servers[0].revocation, RevocationMode::Require);
        assert_eq!(config.revocation.crl_max_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn revocation_mode_per_server() {
        let config = Config::from_yaml(
            "servers: [{host: a, revocation: report}, {host: b, revocation: off}]\n\
             revocation: {max_cache_age: 1h}",
        )
        .expect("valid");
        assert_eq!(config.servers[0].revocation, RevocationMode::Report);
        assert_eq!(config.servers[1].revocation, RevocationMode::Off);
        assert_eq!(config.revocation.max_cache_age, Duration::from_secs(3600));
    }

    #[test]
    fn durations_are_humantime() {
        let config = Config::from_yaml(
            "servers: [{host: a.example}]\nprobe: {timeout: 5s, min_interval: 2m}\n",
        )
        .expect("valid");
        assert_eq!(config.probe.timeout, Duration::from_secs(5));
        assert_eq!(config.probe.min_interval, Duration::from_secs(120));
    }

    fn error_of(yaml: &str) -> String {
        Config::from_yaml(yaml)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn invalid_configs_name_their_field() {
        let cases = [
            ("servers: []", "servers"),
            ("servers: [{host: a, port: 0}]", "servers[0].port"),
            ("servers: [{host: a, path: nope}]", "servers[0].path"),
            ("servers: [{host: 'a b'}]", "servers[0].host"),
            ("servers: [{host: a}, {host: a}]", "servers[1].host"),
            (
                "servers: [{host: a, valid_status_codes: [42]}]",
                "valid_status_codes",
            ),
            ("servers: [{host: a}]\ndns: {server: nowhere}", "dns.server"),
            (
                "servers: [{host: a}]\nprobe: {timeout: 0s}",
                "probe.timeout",
            ),
            ("servers: [{host: a}]\nprobe: {timeout: soon}", "timeout"),
            (
                "servers: [{host: a}]\nversions: {url: 'ftp://x/y'}",
                "versions.url",
            ),
            ("servers: [{host: a, colour: blue}]", "colour"),
            ("servers: [{host: a}]\nproxies: {}", "proxies"),
            ("servers: [{host: a, revocation: maybe}]", "revocation"),
            (
                "servers: [{host: a}]\nrevocation: {crl_max_bytes: 0}",
                "revocation.crl_max_bytes",
            ),
            (
                "servers: [{host: a}]\nrevocation: {fetch_timeout: 0s}",
                "revocation.fetch_timeout",
            ),
            ("servers: [{host: a}]\nrevocation: {ocsp: first}", "ocsp"),
        ];
        for (yaml, field) in cases {
            let message = error_of(yaml);
            assert!(
                message.contains(field),
                "{yaml:?} gave {message:?}, which does not name {field}"
            );
        }
    }

    #[test]
    fn dns_server_with_and_without_port() {
        let config = Config::from_yaml("servers: [{host: a}]\ndns: {server: '127.0.0.1:5353'}")
            .expect("valid");
        assert_eq!(
            config.dns_server(),
            Some("127.0.0.1:5353".parse().expect("addr"))
        );
        let config =
            Config::from_yaml("servers: [{host: a}]\ndns: {server: '::1'}").expect("valid");
        assert_eq!(config.dns_server(), Some("[::1]:53".parse().expect("addr")));
    }
}
