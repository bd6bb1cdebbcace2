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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The embedded default, used when no `--config.file` is given.
///
/// It names no server: the exporter then probes the update server and proxy
/// that the connector's `policy.xml` names, or, without a policy, the North
/// American update server ([`FALLBACK_UPDATE_SERVER`]) directly. It reads
/// the connector's files at the platform's default paths when they exist,
/// and takes the newest version from Cisco's public document.
pub const DEFAULT_CONFIG: &str = "{}\n";

/// The update server probed when neither the config nor a policy names one.
pub const FALLBACK_UPDATE_SERVER: &str = "tetra-defs.amp.cisco.com";

/// A configuration that failed to load or validate. The message names the
/// field and never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} {error}")]
    Read {
        path: PathBuf,
        error: crate::files::ReadError,
    },
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

/// The largest password file accepted.
pub const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// The largest config file accepted; a config is a few kilobytes at most.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Update servers to probe, each with its own chain. When empty, the
    /// policy's update server is probed, or [`FALLBACK_UPDATE_SERVER`].
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// The proxy route.
    #[serde(default)]
    pub proxy: ProxyConfig,
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
    /// Probe settings for `/probe?target=...&module=NAME`.
    #[serde(default = "default_modules")]
    pub modules: BTreeMap<String, ModuleConfig>,
    /// Targets `/probe` may be asked to probe (see [`target_allowed`]).
    #[serde(default = "default_allowed_targets")]
    pub allowed_targets: Vec<String>,
    /// Limits of the revocation step's fetches and of its cache.
    #[serde(default)]
    pub revocation: RevocationConfig,
}

/// How `/probe` probes a target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Path fetched by the download step.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP status codes that count as a successful download; empty means
    /// any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Which route: `auto` (through the proxy when one is in use, as the
    /// configured servers are), `direct` or `proxy`.
    #[serde(default)]
    pub route: RouteChoice,
    /// What the revocation step does: `require`, `report` or `off`.
    #[serde(default)]
    pub revocation: RevocationMode,
}

/// The route a module uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteChoice {
    #[default]
    Auto,
    Direct,
    Proxy,
}

/// One update server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// A cached answer older than this is asked for again on the next probe
    /// (and on every probe while that fails), so that a URL that stopped
    /// answering is noticed long before the cached answer expires.
    #[serde(
        default = "default_revocation_recheck_interval",
        with = "humantime_serde"
    )]
    pub recheck_interval: Duration,
}

fn default_revocation_recheck_interval() -> Duration {
    Duration::from_secs(3600)
}

/// How the dns step resolves names.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// A DNS server (`IP` or `IP:PORT`) asked over UDP, once, instead of the
    /// system resolver.
    #[serde(default)]
    pub server: Option<String>,
}

/// Extra trust for the tls step.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files whose certificates are trusted in addition to the platform's
    /// roots.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// Deadlines and reuse of probe results.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Probes run at once through `/probe`; further requests wait (up to
    /// their deadline) for a free slot, then get 503.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

/// Where the proxy comes from and how it is used.
///
/// The proxy is taken from the first of: `url` here; the connector's
/// `policy.xml` (when `from_policy`); the `HTTPS_PROXY` environment variable
/// honouring `NO_PROXY` (when `from_environment`). A password set here (in
/// any of its three forms) wins over the policy's, which may be obfuscated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `http://HOST:PORT` of an HTTP proxy, without credentials.
    #[serde(default)]
    pub url: Option<String>,
    /// User name for Basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, inline. Prefer `password_file` or `password_env`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Also probe the direct route when a proxy is in use.
    #[serde(default)]
    pub compare_direct: bool,
    /// Take the proxy from the connector's policy when `url` is absent.
    #[serde(default = "default_true")]
    pub from_policy: bool,
    /// Take the proxy from `HTTPS_PROXY`/`NO_PROXY` when neither `url` nor
    /// the policy names one.
    #[serde(default = "default_true")]
    pub from_environment: bool,
    /// The password, read once at load from whichever form was given.
    #[serde(skip)]
    pub resolved_password: Option<Secret>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            url: None,
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            compare_direct: false,
            from_policy: true,
            from_environment: true,
            resolved_password: None,
        }
    }
}

/// The connector's files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Path of `local.xml`. When absent, the platform's default path is read
    /// if the file exists there, and nothing is reported if it does not.
    #[serde(default)]
    pub local_state: Option<PathBuf>,
    /// Path of `policy.xml`. When absent, `policy.xml` beside `local.xml` is
    /// read if it exists.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Set to false to never read the connector's files (a central
    /// exporter that only probes).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// The published-versions document.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
            recheck_interval: default_revocation_recheck_interval(),
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            timeout: default_probe_timeout(),
            min_interval: default_min_interval(),
            download_max_bytes: default_download_max_bytes(),
            max_concurrent: default_max_concurrent(),
        }
    }
}

fn default_max_concurrent() -> usize {
    32
}

fn default_modules() -> BTreeMap<String, ModuleConfig> {
    BTreeMap::from([(
        "tetra".to_string(),
        ModuleConfig {
            path: default_path(),
            valid_status_codes: Vec::new(),
            route: RouteChoice::Auto,
            revocation: RevocationMode::default(),
        },
    )])
}

/// Cisco's update servers, port 443.
fn default_allowed_targets() -> Vec<String> {
    [
        "tetra-defs.amp.cisco.com",
        "tetra-defs.eu.amp.cisco.com",
        "tetra-defs.apjc.amp.cisco.com",
    ]
    .map(String::from)
    .to_vec()
}

/// Whether `/probe` may probe `host:port`.
///
/// An entry is `HOST`, `HOST:PORT`, `*.DOMAIN` or `*.DOMAIN:PORT`; without a
/// port only 443 is allowed. Names compare case-insensitively and without a
/// trailing dot; `*.DOMAIN` matches names below DOMAIN, not DOMAIN itself.
/// IP literals match only an entry with the same literal. Nothing else is
/// allowed: a probe exporter that probes anything on request lets whoever
/// reaches it scan the networks it sits in.
pub fn target_allowed(allowed: &[String], host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (pattern, entry_port) = split_entry(&entry);
        if entry_port.unwrap_or(443) != port {
            return false;
        }
        let pattern = pattern.trim_end_matches('.');
        match pattern.strip_prefix("*.") {
            Some(domain) => {
                host.parse::<IpAddr>().is_err()
                    && host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => host == pattern,
        }
    })
}

/// `PATTERN[:PORT]`, with IPv6 literals in brackets.
pub(crate) fn split_entry(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((ip, tail)) = rest.split_once(']') {
            return (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match entry.rsplit_once(':') {
        Some((pattern, port)) if !pattern.contains(':') => (pattern, port.parse().ok()),
        _ => (entry, None),
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

    let (bytes, _) =
        crate::files::read_capped(path, MAX_CONFIG_BYTES).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
        path: path.to_path_buf(),
        error: crate::files::ReadError::Unreadable(std::io::Error::other("not UTF-8 text")),
    })?;
    Config::from_yaml(&text)
}

impl Config {
    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        // No source snippet in errors: the lines around a mistake can hold a
        // password, and errors reach logs. The field's path is named instead.
        let options = serde_saphyr::options! { with_snippet: false };
        let mut path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        });
        let mut config = parsed.map_err(|e| match path.as_str() {
            "" | "." => ConfigError::Syntax(e.to_string()),
            field => ConfigError::Syntax(format!("{field}: {e}")),
        })?;
        config.validate()?;
        config.proxy.resolved_password = config.proxy.read_password()?;
        Ok(config)
    }

    /// The configured proxy as host and port, when `proxy.url` is set.
    pub fn proxy_address(&self) -> Option<(String, u16)> {
        self.proxy
            .url
            .as_deref()
            .and_then(|u| parse_proxy_url(u).ok())
    }

    /// The DNS server to ask instead of the system resolver, already parsed.
    pub fn dns_server(&self) -> Option<SocketAddr> {
        self.dns.server.as_deref().and_then(parse_dns_server)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, server) in self.servers.iter().enumerate() {
            let field = |name: &str| format!("servers[{i}].{name}");
            if !valid_host(&server.host) {
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
            check_download(&field, &server.path, &server.valid_status_codes)?;
            // The `server` label is the host name: one entry per host, or
            // two entries would share (and mix) their series.
            if self.servers[..i].iter().any(|s| s.host == server.host) {
                return Err(ConfigError::invalid(
                    field("host"),
                    format!(
                        "{} is listed twice (the server label is the host name)",
                        server.host
                    ),
                ));
            }
        }

        if let Some(url) = &self.proxy.url {
            if let Err(message) = parse_proxy_url(url) {
                return Err(ConfigError::invalid("proxy.url", message));
            }
        }
        let password_forms = [
            self.proxy.password.is_some(),
            self.proxy.password_file.is_some(),
            self.proxy.password_env.is_some(),
        ];
        if password_forms.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::invalid(
                "proxy.password",
                "give only one of password, password_file and password_env",
            ));
        }

        if let Some(server) = &self.dns.server {
            if parse_dns_server(server).is_none_or(|addr| addr.port() == 0) {
                return Err(ConfigError::invalid(
                    "dns.server",
                    format!("{server:?} is not an IP address or IP:PORT"),
                ));
            }
        }

        for (name, module) in &self.modules {
            let field = |f: &str| format!("modules.{name}.{f}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::invalid(
                    format!("modules.{name:?}"),
                    "module names are letters, digits, '_' and '-'",
                ));
            }
            check_download(&field, &module.path, &module.valid_status_codes)?;
        }
        for (i, entry) in self.allowed_targets.iter().enumerate() {
            let (pattern, _) = split_entry(entry.trim());
            let bare = pattern.strip_prefix("*.").unwrap_or(pattern);
            if bare.is_empty() || bare.contains(['*', '/', ' ', '@', '#', '?']) {
                return Err(ConfigError::invalid(
                    format!("allowed_targets[{i}]"),
                    format!("{entry:?} is not HOST[:PORT] or *.DOMAIN[:PORT]"),
                ));
            }
        }
        if self.probe.max_concurrent == 0 {
            return Err(ConfigError::invalid(
                "probe.max_concurrent",
                "must be at least 1",
            ));
        }

        let hour = Duration::from_secs(3600);
        let day = 24 * hour;
        for (field, value, max) in [
            ("probe.timeout", self.probe.timeout, hour),
            ("probe.min_interval", self.probe.min_interval, day),
            ("versions.timeout", self.versions.timeout, hour),
            ("versions.cache_for", self.versions.cache_for, 7 * day),
            (
                "revocation.fetch_timeout",
                self.revocation.fetch_timeout,
                hour,
            ),
            (
                "revocation.max_cache_age",
                self.revocation.max_cache_age,
                366 * day,
            ),
            (
                "revocation.recheck_interval",
                self.revocation.recheck_interval,
                30 * day,
            ),
        ] {
            // Deadlines are added to the clock: a bound keeps that sum
            // meaningful, and no probe should wait longer anyway.
            if value > max {
                return Err(ConfigError::invalid(
                    field,
                    format!("must be at most {}", humantime::format_duration(max)),
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

impl ProxyConfig {
    /// Reads the password from whichever form was given, once, at load.
    fn read_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        if let Some(path) = &self.password_file {
            let (bytes, _) =
                crate::files::read_capped(path, MAX_PASSWORD_FILE_BYTES).map_err(|e| {
                    ConfigError::invalid("proxy.password_file", format!("{}: {e}", path.display()))
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ConfigError::invalid(
                    "proxy.password_file",
                    format!("{} is not UTF-8 text", path.display()),
                )
            })?;
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            return Ok(Some(Secret::new(trimmed)));
        }
        if let Some(name) = &self.password_env {
            return match std::env::var(name) {
                Ok(value) => Ok(Some(Secret::new(value))),
                Err(_) => Err(ConfigError::invalid(
                    "proxy.password_env",
                    format!("the environment variable {name} is not set"),
                )),
            };
        }
        Ok(None)
    }
}

/// Parses `http://HOST[:PORT]` into host and port (80 when absent). The URL
/// must not carry credentials: those belong in `username` and a password
/// field, where they are kept out of logs.
pub fn parse_proxy_url(text: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "scheme {:?} is not supported: only http:// proxies are",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials do not belong in the URL: use proxy.username and \
                    proxy.password_file"
                .to_string(),
        );
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err("no host".to_string()),
    };
    Ok((host, url.port_or_known_default().unwrap_or(80)))
}

/// Parses `HOST` or `HOST:PORT` (`[IPv6]:PORT`), the host normalised to
/// lower case without a trailing dot; `None` unless the host is a valid
/// name or address and the port, when given, is 1 to 65535.
pub fn parse_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (ip, tail) = rest.split_once(']')?;
            (ip, tail)
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port),
            _ => (text, ""),
        },
    };
    let port = match port.strip_prefix(':').unwrap_or(port) {
        "" if !text.ends_with(':') => None,
        digits => Some(digits.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    valid_host(&host).then_some((host, port))
}

/// A DNS name a resolver and a TLS client accept, or an IP literal.
pub(crate) fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    // rustls's name rules are the ones the tls step applies; labels must
    // also be plain ASCII letters, digits and hyphens for the resolver.
    let labels_ok = host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    labels_ok
        && host.len() <= 253
        && rustls::pki_types::ServerName::try_from(host.to_string()).is_ok()
}

/// The download settings a server and a module share: an absolute path and
/// real HTTP status codes. `field` names a key below the entry.
fn check_download(
    field: &dyn Fn(&str) -> String,
    path: &str,
    valid_status_codes: &[u16],
) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
        return Err(ConfigError::invalid(
            field("path"),
            format!("{path:?} is not an absolute path"),
        ));
    }
    if let Some(code) = valid_status_codes
        .iter()
        .find(|c| !(100..=599).contains(*c))
    {
        return Err(ConfigError::invalid(
            field("valid_status_codes"),
            format!("{code} is not an HTTP status code"),
        ));
    }
    Ok(())
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
        assert!(
            config.servers.is_empty(),
            "servers come from the policy or the fallback"
        );
        assert!(config.proxy.from_policy && config.proxy.from_environment);
        assert_eq!(config.versions.cache_for, Duration::from_secs(900));
        assert!(config.connector.local_state.is_none());
        assert_eq!(config.modules["tetra"].revocation, RevocationMode::Require);
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
            ("proxy: {url: 'https://p.example:3128'}", "proxy.url"),
            ("modules: {tetra: {path: x}}", "modules.tetra.path"),
            ("modules: {tetra: {route: sideways}}", "route"),
            ("modules: {'a b': {}}", "modules"),
            ("allowed_targets: ['*']", "allowed_targets[0]"),
            ("allowed_targets: ['a/b']", "allowed_targets[0]"),
            ("probe: {max_concurrent: 0}", "probe.max_concurrent"),
            ("proxy: {url: 'http://u:pw@p.example:3128'}", "proxy.url"),
            ("proxy: {url: 'not a url'}", "proxy.url"),
            ("proxy: {password: a, password_env: B}", "proxy.password"),
            (
                "proxy: {password_env: TETRA_TEST_SURELY_UNSET_VARIABLE}",
                "proxy.password_env",
            ),
            (
                "proxy: {password_file: /nonexistent/pw}",
                "proxy.password_file",
            ),
            ("servers: [{host: a, port: 0}]", "servers[0].port"),
            ("servers: [{host: a, path: nope}]", "servers[0].path"),
            ("servers: [{host: 'a b'}]", "servers[0].host"),
            ("servers: [{host: a}, {host: a}]", "servers[1].host"),
            (
                "servers: [{host: a}, {host: a, port: 8443}]",
                "servers[1].host",
            ),
            ("servers: [{host: 'bücher.example'}]", "servers[0].host"),
            ("servers: [{host: under_score.example}]", "servers[0].host"),
            ("servers: [{host: -lead.example}]", "servers[0].host"),
            ("servers: [{host: 'a..b'}]", "servers[0].host"),
            ("servers: [{host: \"a\\nb\"}]", "servers[0].host"),
            ("servers: [{host: a, port: 70000}]", "servers[0].port"),
            ("servers: {host: a}", "servers"),
            ("probe: {timeout: 10000000000000000000s}", "probe.timeout"),
            ("probe: {timeout: 2h}", "probe.timeout"),
            ("versions: {timeout: 1000000000000h}", "versions.timeout"),
            ("dns: {server: '127.0.0.1:0'}", "dns.server"),
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
    fn errors_quote_no_line_of_the_file() {
        let error = Config::from_yaml("proxy:\n  password: \"hunter2-secret\"\n  bogus: x\n")
            .expect_err("unknown key");
        let message = error.to_string();
        assert!(message.contains("bogus"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn proxy_password_forms() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let yaml = format!(
            "proxy: {{url: 'http://p.example', password_file: '{}'}}",
            path.display()
        );
        let config = Config::from_yaml(&yaml).expect("valid");
        assert_eq!(
            config.proxy.resolved_password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert_eq!(config.proxy_address(), Some(("p.example".to_string(), 80)));
        assert!(!format!("{config:?}").contains("s3cret"));

        let config = Config::from_yaml("proxy: {password: inline-pw}").expect("valid");
        assert_eq!(
            config.proxy.resolved_password.as_ref().map(Secret::expose),
            Some("inline-pw")
        );
        assert!(!format!("{config:?}").contains("inline-pw"));
    }

    #[test]
    fn allowlist_refuses_what_an_attacker_would_try() {
        let allowed: Vec<String> = [
            "tetra-defs.amp.cisco.com",
            "*.mirror.example:8443",
            "10.1.2.3",
        ]
        .map(String::from)
        .to_vec();
        let ok = |host, port| target_allowed(&allowed, host, port);
        assert!(ok("tetra-defs.amp.cisco.com", 443));
        assert!(ok("TETRA-DEFS.amp.cisco.com.", 443));
        assert!(ok("a.mirror.example", 8443));
        assert!(ok("10.1.2.3", 443));
        assert!(!ok("tetra-defs.amp.cisco.com", 22));
        assert!(!ok("tetra-defs.amp.cisco.com.evil.example", 443));
        assert!(!ok("eviltetra-defs.amp.cisco.com", 443));
        assert!(!ok("mirror.example", 8443), "*.DOMAIN is below DOMAIN only");
        assert!(!ok("a.badmirror.example", 8443));
        assert!(!ok("a.mirror.example", 443));
        for host in [
            "localhost",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.4",
            "",
        ] {
            assert!(!ok(host, 443), "{host}");
        }
    }

    #[test]
    fn host_and_port_parse_strictly() {
        let parse = |text| parse_host_port(text);
        assert_eq!(
            parse("Tetra-Defs.amp.cisco.com."),
            Some(("tetra-defs.amp.cisco.com".into(), None))
        );
        assert_eq!(
            parse("proxy.corp:3128"),
            Some(("proxy.corp".into(), Some(3128)))
        );
        assert_eq!(parse("[::1]:8443"), Some(("::1".into(), Some(8443))));
        assert_eq!(parse("10.1.2.3"), Some(("10.1.2.3".into(), None)));
        for bad in [
            "",
            "proxy:0",
            "proxy:99999",
            "proxy:",
            "user:pw@proxy",
            "<script>",
            "a b",
            "localhost\r\nX-Injected: yes",
            "*.localhost",
            "..localhost",
            "[::1",
            "bücher.example",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
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
