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

/// The loaded web config.
pub struct WebConfig {
    /// Present when the endpoint serves TLS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    users: BTreeMap<String, Secret>,
}

impl WebConfig {
    /// No TLS, no authentication.
    pub fn open() -> Self {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
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
            // user; refuse it at load instead.
            if bcrypt::verify("", hash.expose()).is_err() {
                return Err(WebConfigError::Invalid {
                    field: "basic_auth_users",
                    message: format!("the hash for {user:?} is not a bcrypt hash"),
                });
            }
        }

        let tls = match &file.tls_server_config {
            None => None,
            Some(settings) => Some(acceptor(settings)?),
        };
        Ok(WebConfig {
            tls,
            users: file.basic_auth_users,
        })
    }

    /// Whether requests must authenticate.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header value against the users. bcrypt is
    /// slow by design: call this off the async threads.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = pair.split_once(':') else {
            return false;
        };
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash.expose()).unwrap_or(false),
            None => false,
        }
    }
}

fn acceptor(settings: &TlsServerConfig) -> Result<tokio_rustls::TlsAcceptor, WebConfigError> {
    let invalid = |field: &'static str, message: String| WebConfigError::Invalid { field, message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
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
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
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

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("right", 4).expect("hash");
        let config = load_yaml(&format!("basic_auth_users:\n  alice: '{hash}'\n")).expect("valid");
        let header = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(config.requires_auth());
        assert!(config.authorized(Some(&header("alice:right"))));
        assert!(!config.authorized(Some(&header("alice:wrong"))));
        assert!(!config.authorized(Some(&header("bob:right"))));
        assert!(!config.authorized(Some("Basic !!!")));
        assert!(!config.authorized(Some("Bearer x")));
        assert!(!config.authorized(None));
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
