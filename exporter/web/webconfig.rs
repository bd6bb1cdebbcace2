//! `--web.config.file`: TLS and basic authentication for the exporter's own
//! endpoint, in the file format of the Prometheus exporter-toolkit, so that
//! an existing file drops in.
//!
//! Supported keys: `tls_server_config.cert_file` and `.key_file` (PEM; the
//! certificate file may hold the chain), `tls_server_config.min_version`
//! (`TLS12` or `TLS13`), and `basic_auth_users` (user name to bcrypt hash).
//! Other exporter-toolkit keys (client certificate authentication, cipher
//! selection, HTTP/2 and header settings) are rejected by name rather than
//! silently ignored. Every route, including the status page, requires the
//! credentials when users are configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::secret::Secret;

/// Why the web config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config {path} {error}")]
    Read {
        path: PathBuf,
        error: crate::files::ReadError,
    },
    #[error("invalid web config: {0}")]
    Syntax(String),
    #[error("invalid web config: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The largest web config file read.
const MAX_WEB_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    min_version: Option<String>,
}

/// The highest bcrypt cost accepted: each step doubles the work of every
/// check, and cost 14 already takes about a second.
pub const MAX_BCRYPT_COST: u32 = 14;

/// bcrypt checks run at once; more wait (up to [`AUTH_WAIT`]) or are denied.
const BCRYPT_SLOTS: usize = 2;

/// How long a request waits for a bcrypt slot before it is denied.
const AUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Credentials that passed, remembered (as SHA-256 digests) so that a
/// scraper's every request does not pay for bcrypt again.
const REMEMBERED: usize = 64;

/// The loaded web config.
pub struct WebConfig {
    /// Present when the endpoint serves TLS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    users: BTreeMap<String, Secret>,
    /// A hash of the same cost as the users' to check unknown names
    /// against, so that a wrong name costs as much as a wrong password.
    decoy: Option<Secret>,
    remembered: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
    bcrypt_slots: tokio::sync::Semaphore,
}

impl WebConfig {
    /// No TLS, no authentication.
    pub fn open() -> Self {
        Self::with(None, BTreeMap::new())
    }

    fn with(tls: Option<tokio_rustls::TlsAcceptor>, users: BTreeMap<String, Secret>) -> Self {
        let decoy = users.values().next().cloned();
        WebConfig {
            tls,
            users,
            decoy,
            remembered: std::sync::Mutex::new(std::collections::HashSet::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_SLOTS),
        }
    }

    /// Loads and checks the file (certificates, key and hashes are read and
    /// parsed now, never at request time).
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let read_error = |error| WebConfigError::Read {
            path: path.to_path_buf(),
            error,
        };
        let (bytes, _) =
            crate::files::read_capped(path, MAX_WEB_CONFIG_BYTES).map_err(read_error)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            read_error(crate::files::ReadError::Unreadable(std::io::Error::other(
                "not UTF-8 text",
            )))
        })?;
        // No source snippet in errors: hashes stay out of logs.
        let options = serde_saphyr::options! { with_snippet: false };
        let file: WebConfigFile = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| WebConfigError::Syntax(e.to_string()))?;

        for (user, hash) in &file.basic_auth_users {
            // A hash that does not parse would reject every request for the
            // user, and a very high cost would make every request slow:
            // refuse both at load, without computing any hash.
            let invalid = |message: String| WebConfigError::Invalid {
                field: "basic_auth_users",
                message,
            };
            let parts: bcrypt::HashParts = hash
                .expose()
                .parse()
                .map_err(|_| invalid(format!("the hash for {user:?} is not a bcrypt hash")))?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(invalid(format!(
                    "the hash for {user:?} has cost {}; at most {MAX_BCRYPT_COST} is accepted",
                    parts.get_cost()
                )));
            }
        }

        let tls = match &file.tls_server_config {
            None => None,
            Some(settings) => Some(acceptor(settings)?),
        };
        Ok(Self::with(tls, file.basic_auth_users))
    }

    /// Whether requests must authenticate.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header value against the users.
    ///
    /// Credentials that passed before are recognised by their digest,
    /// without bcrypt. Otherwise bcrypt runs off the async threads, at most
    /// [`BCRYPT_SLOTS`] at once: a flood of wrong passwords waits for a
    /// slot (and is denied after [`AUTH_WAIT`]) instead of taking every
    /// core, and a scraper with the right password is not slowed by it.
    pub async fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{user}\u{0}{password}").as_bytes(),
        )
        .as_ref()
        .to_vec();
        if self
            .remembered
            .lock()
            .is_ok_and(|remembered| remembered.contains(&digest))
        {
            return true;
        }

        // An unknown name is checked against a decoy of the same cost, so
        // that the answer's timing does not tell which names exist.
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => match &self.decoy {
                Some(decoy) => (decoy.clone(), false),
                None => return false,
            },
        };
        let Ok(Ok(_slot)) = tokio::time::timeout(AUTH_WAIT, self.bcrypt_slots.acquire()).await
        else {
            return false;
        };
        let matches = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password, hash.expose()).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let ok = matches && known;
        if ok {
            if let Ok(mut remembered) = self.remembered.lock() {
                if remembered.len() >= REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(digest);
            }
        }
        ok
    }
}

/// User and password of a `Basic` `Authorization` value (the scheme's case
/// does not matter).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, password) = pair.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn acceptor(settings: &TlsServerConfig) -> Result<tokio_rustls::TlsAcceptor, WebConfigError> {
    let invalid = |field: &'static str, message: String| WebConfigError::Invalid { field, message };
    let read = |field: &'static str, path: &Path| {
        crate::files::read_capped(path, MAX_PEM_BYTES)
            .map(|(bytes, _)| bytes)
            .map_err(|e| invalid(field, format!("{}: {e}", path.display())))
    };
    let cert_pem = read("tls_server_config.cert_file", &settings.cert_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            invalid(
                "tls_server_config.cert_file",
                format!("{}: {e}", settings.cert_file.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            "tls_server_config.cert_file",
            format!("{} holds no certificate", settings.cert_file.display()),
        ));
    }
    let key_pem = read("tls_server_config.key_file", &settings.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            "tls_server_config.key_file",
            format!("{}: {e}", settings.key_file.display()),
        )
    })?;

    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version.as_deref() {
        None | Some("TLS12") => rustls::ALL_VERSIONS,
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(invalid(
                "tls_server_config.min_version",
                format!("{other:?} is not TLS12 or TLS13"),
            ))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| invalid("tls_server_config", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid("tls_server_config", e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str) -> Result<WebConfig, WebConfigError> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("web.yml");
        std::fs::write(&path, yaml).expect("write");
        WebConfig::load(&path)
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("right", 4).expect("hash");
        let config = load_yaml(&format!("basic_auth_users:\n  alice: '{hash}'\n")).expect("valid");
        let header = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(config.requires_auth());
        assert!(config.authorized(Some(&header("alice:right"))).await);
        assert!(
            config.authorized(Some(&header("alice:right"))).await,
            "remembered"
        );
        let lower = header("alice:right").replacen("Basic", "basic", 1);
        assert!(
            config.authorized(Some(&lower)).await,
            "the scheme's case does not matter"
        );
        assert!(!config.authorized(Some(&header("alice:wrong"))).await);
        assert!(!config.authorized(Some(&header("bob:right"))).await);
        assert!(!config.authorized(Some("Basic !!!")).await);
        assert!(!config.authorized(Some("Bearer x")).await);
        assert!(!config.authorized(None).await);
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let cases = [
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "basic_auth_users",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
                "cert_file",
            ),
            (
                "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_auth_type",
            ),
            ("http_server_config:\n  http2: true\n", "http_server_config"),
        ];
        for (yaml, needle) in cases {
            let message = load_yaml(yaml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(needle), "{yaml:?}: {message:?}");
        }
    }
}
