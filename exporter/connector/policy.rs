//! Reads the connector's `policy.xml`: whether TETRA and its updater are
//! enabled, which update server the connector uses, and the proxy it goes
//! through.
//!
//! The file is an XML-DSig signed document whose settings sit under
//! `Signature/Object/config`, every element in the XML-DSig namespace. Only
//! local names are matched; the signature is not verified (the exporter
//! reads what the connector will act on, it does not judge the console).
//! Newer connectors may deny reading the file to users other than SYSTEM;
//! that is reported as a failed read.
//!
//! The policy's proxy password may be obfuscated by the console: it is kept
//! as a [`Secret`] and used only when the config names no password. A PAC
//! file location (`proxy/pacloc`) is read but PAC scripts are not evaluated.

use std::path::Path;

use serde::Deserialize;

use super::local_state;
use crate::secret::Secret;

/// The largest `policy.xml` read. Real files are tens of kilobytes.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// What the policy says, as far as the exporter cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `agent/scansettings/tetra/enable`.
    pub tetra_enabled: Option<bool>,
    /// `agent/scansettings/tetra/updater/enable`.
    pub updater_enabled: Option<bool>,
    /// `agent/scansettings/tetra/updater/server`.
    pub update_server: Option<String>,
    /// `agent/scansettings/tetra/updater/interval`, in seconds.
    pub update_interval_seconds: Option<u64>,
    /// The proxy, when the policy names a server.
    pub proxy: Option<PolicyProxy>,
}

impl Policy {
    /// TETRA and its updater are enabled (absent settings count as enabled,
    /// as the connector's defaults are).
    pub fn definitions_enabled(&self) -> bool {
        self.tetra_enabled.unwrap_or(true) && self.updater_enabled.unwrap_or(true)
    }
}

/// The proxy block of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProxy {
    pub server: String,
    pub port: Option<u16>,
    /// `proxy/type` as written (the console's numbering).
    pub kind: Option<u32>,
    /// `proxy/authtype` as written; 0 or absent means no authentication.
    pub auth_type: Option<u32>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `proxy/pacloc`: a PAC file location, not evaluated.
    pub pac_location: Option<String>,
}

/// Why `policy.xml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy.xml {0}")]
    Read(#[from] super::ReadError),
    #[error("policy.xml has a bad text encoding: {0}")]
    Encoding(String),
    #[error("policy.xml is not a well-formed policy document: {0}")]
    Malformed(String),
    #[error("policy.xml has an unusable <{element}> value {value:?}")]
    BadValue {
        element: &'static str,
        value: String,
    },
}

impl PolicyError {
    /// The fixed, bounded reason for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Read(super::ReadError::NotFound) => "not_found",
            PolicyError::Read(super::ReadError::TooLarge { .. }) => "too_large",
            PolicyError::Read(_) => "unreadable",
            PolicyError::Encoding(_) => "encoding",
            PolicyError::Malformed(_) => "malformed",
            PolicyError::BadValue { .. } => "bad_value",
        }
    }
}

/// Reads and parses the file at `path`.
pub fn read_policy(path: &Path) -> Result<Policy, PolicyError> {
    let (bytes, _modified) = super::read_capped(path, MAX_BYTES)?;
    parse_policy(&bytes)
}

/// Parses a policy document.
pub fn parse_policy(bytes: &[u8]) -> Result<Policy, PolicyError> {
    let text = local_state::decode(bytes).map_err(|e| match e {
        local_state::LocalStateError::Encoding(detail) => PolicyError::Encoding(detail),
        other => PolicyError::Encoding(other.to_string()),
    })?;
    if text.trim().is_empty() {
        return Err(PolicyError::Malformed("empty document".to_string()));
    }
    let document: Signature =
        quick_xml::de::from_str(&text).map_err(|e| PolicyError::Malformed(e.to_string()))?;

    let Some(config) = document
        .objects
        .into_iter()
        .find_map(|object| object.config)
    else {
        return Err(PolicyError::Malformed(
            "no Signature/Object/config element".to_string(),
        ));
    };

    let mut policy = Policy::default();
    let tetra = config
        .agent
        .and_then(|agent| agent.scansettings)
        .and_then(|settings| settings.tetra);
    if let Some(tetra) = tetra {
        policy.tetra_enabled = flag("tetra/enable", tetra.enable)?;
        if let Some(updater) = tetra.updater {
            policy.updater_enabled = flag("tetra/updater/enable", updater.enable)?;
            policy.update_server = host_of("tetra/updater/server", updater.server)?;
            policy.update_interval_seconds = number("tetra/updater/interval", updater.interval)?;
        }
    }

    if let Some(proxy) = config.proxy {
        if let Some(server) = host_of("proxy/server", proxy.server)? {
            let port = number::<u16>("proxy/port", proxy.port.clone())?;
            if port == Some(0) {
                return Err(PolicyError::BadValue {
                    element: "proxy/port",
                    value: "0".to_string(),
                });
            }
            policy.proxy = Some(PolicyProxy {
                server,
                port,
                kind: number("proxy/type", proxy.kind)?,
                auth_type: number("proxy/authtype", proxy.authtype)?,
                username: text_of(proxy.username),
                password: text_of(proxy.password).map(Secret::new),
                pac_location: text_of(proxy.pacloc),
            });
        }
    }
    Ok(policy)
}

/// A `HOST` or `HOST:PORT` element: checked as the config's hosts are, so
/// that nothing odd reaches a label, a log line or a request.
fn host_of(element: &'static str, value: Option<String>) -> Result<Option<String>, PolicyError> {
    match text_of(value) {
        None => Ok(None),
        Some(text) if crate::config::parse_host_port(&text).is_some() => Ok(Some(text)),
        Some(text) => Err(PolicyError::BadValue {
            element,
            value: text.chars().take(64).collect(),
        }),
    }
}

fn text_of(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn number<T: std::str::FromStr>(
    element: &'static str,
    value: Option<String>,
) -> Result<Option<T>, PolicyError> {
    match text_of(value) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| PolicyError::BadValue {
            element,
            value: text.chars().take(64).collect(),
        }),
    }
}

fn flag(element: &'static str, value: Option<String>) -> Result<Option<bool>, PolicyError> {
    Ok(number::<u64>(element, value)?.map(|n| n != 0))
}

// The document's shape, as far as it is read. Unknown elements are ignored:
// the policy holds far more than the exporter needs.

#[derive(Deserialize)]
struct Signature {
    #[serde(rename = "Object", default)]
    objects: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    config: Option<Config>,
}

#[derive(Deserialize)]
struct Config {
    agent: Option<Agent>,
    proxy: Option<ProxyXml>,
}

#[derive(Deserialize)]
struct Agent {
    scansettings: Option<ScanSettings>,
}

#[derive(Deserialize)]
struct ScanSettings {
    tetra: Option<Tetra>,
}

#[derive(Deserialize)]
struct Tetra {
    enable: Option<String>,
    updater: Option<Updater>,
}

#[derive(Deserialize)]
struct Updater {
    enable: Option<String>,
    server: Option<String>,
    interval: Option<String>,
}

#[derive(Deserialize)]
struct ProxyXml {
    server: Option<String>,
    port: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    authtype: Option<String>,
    username: Option<String>,
    password: Option<String>,
    pacloc: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/fixtures/connector/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("fixture")
    }

    #[test]
    fn shared_fixture_names_server_and_basic_proxy() {
        let policy = parse_policy(&shared("policy-proxy-basic.xml")).expect("parses");
        assert_eq!(policy.tetra_enabled, Some(true));
        assert_eq!(policy.updater_enabled, Some(true));
        assert!(policy.definitions_enabled());
        assert_eq!(
            policy.update_server.as_deref(),
            Some("tetra-defs.amp.cisco.com")
        );
        assert_eq!(policy.update_interval_seconds, Some(3600));
        let proxy = policy.proxy.expect("proxy");
        assert_eq!(proxy.server, "proxy.example.internal");
        assert_eq!(proxy.port, Some(3128));
        assert_eq!(proxy.auth_type, Some(1));
        assert_eq!(proxy.username.as_deref(), Some("svc-updates"));
        assert_eq!(
            proxy.password.as_ref().map(Secret::expose),
            Some("not-a-real-password")
        );
        assert!(!format!("{proxy:?}").contains("not-a-real-password"));
    }

    fn policy_with(inner: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\"?><Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">\
             <SignedInfo/><Object Id=\"p\"><config>{inner}</config></Object></Signature>"
        )
        .into_bytes()
    }

    #[test]
    fn tetra_disabled_and_no_proxy() {
        let policy = parse_policy(&policy_with(
            "<agent><scansettings><tetra><enable>0</enable><updater><enable>1</enable>\
             </updater></tetra></scansettings></agent>",
        ))
        .expect("parses");
        assert_eq!(policy.tetra_enabled, Some(false));
        assert!(!policy.definitions_enabled());
        assert_eq!(policy.proxy, None);

        let policy = parse_policy(&policy_with(
            "<agent><scansettings><tetra><enable>1</enable><updater><enable>0</enable>\
             </updater></tetra></scansettings></agent><proxy><server> </server></proxy>",
        ))
        .expect("parses");
        assert!(!policy.definitions_enabled());
        assert_eq!(policy.proxy, None, "a blank server is no proxy");
    }

    #[test]
    fn bad_documents_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "malformed"),
            (b"<Signature><Object><config><agent>", "malformed"),
            (b"<other/>", "malformed"),
            (b"\xff\xfe<", "encoding"),
            (&policy_with("<proxy><server>p</server><port>99999</port></proxy>"), "bad_value"),
            (
                &policy_with("<agent><scansettings><tetra><enable>yes</enable></tetra></scansettings></agent>"),
                "bad_value",
            ),
        ];
        for (bytes, reason) in cases {
            let error = parse_policy(bytes).expect_err("must fail");
            assert_eq!(error.reason(), reason, "{error}");
        }
    }

    fn own(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/connector/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("fixture")
    }

    #[test]
    fn own_fixtures() {
        let policy = parse_policy(&own("policy-tetra-disabled.xml")).expect("parses");
        assert!(!policy.definitions_enabled());
        assert_eq!(
            policy.update_server.as_deref(),
            Some("tetra-defs.eu.amp.cisco.com")
        );

        let policy = parse_policy(&own("policy-no-proxy.xml")).expect("parses");
        assert!(policy.definitions_enabled());
        assert_eq!(policy.proxy, None);
        assert_eq!(
            policy.update_server.as_deref(),
            Some("tetra-defs.apjc.amp.cisco.com")
        );
        assert_eq!(policy.update_interval_seconds, Some(1800));
    }

    #[test]
    fn odd_names_and_ports_are_bad_values() {
        for inner in [
            "<proxy><server>p</server><port>0</port></proxy>",
            "<proxy><server>user:pw@127.0.0.1</server></proxy>",
            "<proxy><server>&lt;script&gt;</server></proxy>",
            "<agent><scansettings><tetra><updater><server>localhost&#13;&#10;X: y</server></updater></tetra></scansettings></agent>",
            "<agent><scansettings><tetra><updater><server>a b</server></updater></tetra></scansettings></agent>",
        ] {
            let error = parse_policy(&policy_with(inner)).expect_err(inner);
            assert_eq!(error.reason(), "bad_value", "{inner}: {error}");
        }
    }

    #[test]
    fn truncated_shared_fixture_is_malformed() {
        let bytes = shared("policy-proxy-basic.xml");
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 20] {
            let error = parse_policy(&bytes[..cut]).expect_err("truncated");
            assert_eq!(error.reason(), "malformed", "cut at {cut}: {error}");
        }
    }
}
