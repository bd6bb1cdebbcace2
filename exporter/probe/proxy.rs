//! The proxy steps: reach the HTTP proxy, ask it for a tunnel to the update
//! server, and judge its answer the way the connector would.
//!
//! `proxy_connect` resolves the proxy's name, opens TCP to it and sends an
//! HTTP `CONNECT`; its duration ends when the response head has arrived.
//! `proxy_auth` then reads that head: 407 (or 401, which some proxies send)
//! is an authentication failure, told apart by whether credentials were sent
//! and by the schemes the proxy offers in `Proxy-Authenticate`. Any other
//! non-2xx answer is the proxy refusing the tunnel, which the connector
//! counts as a failed download.
//!
//! The `CONNECT` exchange runs on hyper: its parser reads the response head
//! exactly, and bytes after it (the start of the TLS stream) stay in the
//! upgraded connection. Only Basic authentication is sent; NTLM and
//! Negotiate are recognised in the proxy's offer but not spoken.

use std::net::SocketAddr;

use base64::Engine;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{connect, dns, StepError};
use crate::secret::Secret;

/// Where the proxy setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxySource {
    Config,
    Policy,
    Environment,
}

impl ProxySource {
    /// The `source` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxySource::Config => "config",
            ProxySource::Policy => "policy",
            ProxySource::Environment => "environment",
        }
    }
}

/// A proxy to probe through, with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub host: String,
    pub port: u16,
    pub source: ProxySource,
    /// User name and password for Basic authentication.
    pub credentials: Option<(String, Secret)>,
}

impl ProxySpec {
    /// `HOST:PORT`, the `proxy` label value; never carries credentials.
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `auth` label value.
    pub fn auth(&self) -> &'static str {
        if self.credentials.is_some() {
            "basic"
        } else {
            "none"
        }
    }

    /// The `Proxy-Authorization` value, when there are credentials.
    fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, password)| {
            let pair = format!("{user}:{}", password.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        })
    }
}

/// An HTTP client for the plain fetches that go over a route beside the
/// probe (CRLs, OCSP, the versions document): through `proxy` when given
/// (with its Basic credentials), directly otherwise, trusting the
/// configured CA certificates `extra_roots` beside the platform's roots.
/// The environment's proxy variables are never read here; the route is
/// decided by the caller.
pub fn http_client(
    proxy: Option<&ProxySpec>,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("tetra-exporter/", env!("CARGO_PKG_VERSION")));
    for root in extra_roots {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(root)?);
    }
    if let Some(spec) = proxy {
        let mut proxy = reqwest::Proxy::all(format!("http://{}", spec.label()))?;
        if let Some((user, password)) = &spec.credentials {
            proxy = proxy.basic_auth(user, password.expose());
        }
        builder = builder.proxy(proxy);
    }
    builder.build()
}

/// An error and every error it was caused by, as one line: HTTP clients keep
/// the useful part ("invalid HTTP version", "certificate unknown") in the
/// sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Why the proxy could not be reached, or did not answer the `CONNECT`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConnectError {
    #[error("the proxy's name {host} does not resolve: {detail}")]
    Dns { host: String, detail: String },
    #[error("proxy {addr} refused the connection")]
    Refused { addr: SocketAddr },
    #[error("proxy {proxy}: no connection or no CONNECT answer before the deadline")]
    Timeout { proxy: String },
    #[error("proxy {proxy} unreachable: {detail}")]
    Unreachable { proxy: String, detail: String },
    #[error("proxy {proxy} sent no valid HTTP answer to CONNECT: {detail}")]
    BadResponse { proxy: String, detail: String },
}

impl StepError for ProxyConnectError {
    fn reason(&self) -> &'static str {
        match self {
            ProxyConnectError::Dns { .. } => "dns",
            ProxyConnectError::Refused { .. } => "refused",
            ProxyConnectError::Timeout { .. } => "timeout",
            ProxyConnectError::Unreachable { .. } => "unreachable",
            ProxyConnectError::BadResponse { .. } => "bad_response",
        }
    }
}

/// Why the proxy did not accept us.
#[derive(Debug, thiserror::Error)]
pub enum ProxyAuthError {
    #[error("proxy asks for authentication (HTTP {status}) and none is configured")]
    AuthRequired { status: u16 },
    #[error("proxy rejected the credentials (HTTP {status})")]
    AuthRejected { status: u16 },
    #[error("proxy offers only {offered}, and Basic is configured")]
    SchemeUnsupported { offered: String },
}

impl StepError for ProxyAuthError {
    fn reason(&self) -> &'static str {
        match self {
            ProxyAuthError::AuthRequired { .. } => "auth_required",
            ProxyAuthError::AuthRejected { .. } => "auth_rejected",
            ProxyAuthError::SchemeUnsupported { .. } => "scheme_unsupported",
        }
    }
}

/// The proxy's answer to `CONNECT`.
pub struct ConnectAnswer {
    pub status: u16,
    /// The schemes offered in `Proxy-Authenticate` (and `WWW-Authenticate`
    /// on a 401), lower-cased.
    pub offered_schemes: Vec<String>,
    /// The tunnel, when the status was 2xx.
    pub tunnel: Option<TokioIo<hyper::upgrade::Upgraded>>,
}

/// Resolves the proxy and opens TCP to it.
pub async fn reach(
    proxy: &ProxySpec,
    dns_server: Option<SocketAddr>,
    deadline: Instant,
) -> Result<tokio::net::TcpStream, ProxyConnectError> {
    let addresses = dns::resolve(&proxy.host, dns_server, deadline)
        .await
        .map_err(|e| match e {
            dns::DnsStepError::Timeout { .. } => ProxyConnectError::Timeout {
                proxy: proxy.label(),
            },
            other => ProxyConnectError::Dns {
                host: proxy.host.clone(),
                detail: other.to_string(),
            },
        })?;
    connect::connect(&addresses, proxy.port, deadline)
        .await
        .map_err(|e| match e {
            connect::ConnectError::Refused { addr } => ProxyConnectError::Refused { addr },
            connect::ConnectError::Timeout { .. } => ProxyConnectError::Timeout {
                proxy: proxy.label(),
            },
            other => ProxyConnectError::Unreachable {
                proxy: proxy.label(),
                detail: other.to_string(),
            },
        })
}

/// Sends `CONNECT target_host:target_port` and reads the answer's head.
pub async fn request_tunnel(
    tcp: tokio::net::TcpStream,
    proxy: &ProxySpec,
    target_host: &str,
    target_port: u16,
    deadline: Instant,
) -> Result<ConnectAnswer, ProxyConnectError> {
    let bad = |detail: String| ProxyConnectError::BadResponse {
        proxy: proxy.label(),
        detail,
    };
    let authority = if target_host.contains(':') {
        format!("[{target_host}]:{target_port}")
    } else {
        format!("{target_host}:{target_port}")
    };

    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| bad(e.to_string()))?;
        // The connection task hands the socket over to the upgrade on 2xx,
        // and ends with the sender otherwise.
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "proxy connection ended with an error");
            }
        }));

        let mut request = http::Request::connect(authority.as_str())
            .header(http::header::HOST, authority.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("tetra-exporter/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(value) = proxy.authorization() {
            request = request.header(http::header::PROXY_AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| bad(format!("cannot build the request: {e}")))?;

        let response = sender
            .send_request(request)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let status = response.status().as_u16();
        let offered_schemes = offered_schemes(response.headers());
        tracing::debug!(status, ?offered_schemes, "proxy answered CONNECT");

        let tunnel = if response.status().is_success() {
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|e| bad(format!("tunnel not established: {e}")))?;
            Some(TokioIo::new(upgraded))
        } else {
            None
        };
        drop(driver);
        Ok(ConnectAnswer {
            status,
            offered_schemes,
            tunnel,
        })
    };

    tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or(Err(ProxyConnectError::Timeout {
            proxy: proxy.label(),
        }))
}

/// Judges the answer's authentication outcome; a 2xx or a non-auth refusal
/// passes this step.
pub fn check_auth(answer: &ConnectAnswer, proxy: &ProxySpec) -> Result<(), ProxyAuthError> {
    let status = answer.status;
    if status != 407 && status != 401 {
        return Ok(());
    }
    if proxy.credentials.is_none() {
        return Err(ProxyAuthError::AuthRequired { status });
    }
    let offers_basic = answer.offered_schemes.iter().any(|s| s == "basic");
    if !answer.offered_schemes.is_empty() && !offers_basic {
        return Err(ProxyAuthError::SchemeUnsupported {
            offered: answer.offered_schemes.join(", "),
        });
    }
    Err(ProxyAuthError::AuthRejected { status })
}

/// The scheme names in every `Proxy-Authenticate` and `WWW-Authenticate`
/// header. One header may hold several challenges separated by commas
/// (`NTLM, Basic realm="x"`); a comma-separated item whose first word holds
/// no `=` starts a challenge, and that word is its scheme (items with `=`
/// are the previous challenge's parameters).
fn offered_schemes(headers: &http::HeaderMap) -> Vec<String> {
    let mut schemes: Vec<String> = Vec::new();
    let values = headers
        .get_all(http::header::PROXY_AUTHENTICATE)
        .iter()
        .chain(headers.get_all(http::header::WWW_AUTHENTICATE).iter())
        .filter_map(|value| value.to_str().ok());
    for value in values {
        for item in value.split(',') {
            let Some(word) = item.split_whitespace().next() else {
                continue;
            };
            if word.contains('=') || word.contains('"') {
                continue;
            }
            let scheme = word.to_ascii_lowercase();
            if !schemes.contains(&scheme) {
                schemes.push(scheme);
            }
        }
    }
    schemes
}

/// Aborts a spawned task when dropped, so that a probe cut at its deadline
/// leaves no connection behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // After a successful upgrade the task has finished already; aborting
        // a finished task does nothing.
        if !self.0.is_finished() {
            self.0.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(credentials: bool) -> ProxySpec {
        ProxySpec {
            host: "proxy.example".to_string(),
            port: 3128,
            source: ProxySource::Config,
            credentials: credentials.then(|| ("u".to_string(), Secret::new("p"))),
        }
    }

    fn answer(status: u16, schemes: &[&str]) -> ConnectAnswer {
        ConnectAnswer {
            status,
            offered_schemes: schemes.iter().map(|s| s.to_string()).collect(),
            tunnel: None,
        }
    }

    #[test]
    fn auth_outcomes() {
        let reason = |a: &ConnectAnswer, creds| check_auth(a, &spec(creds)).map_err(|e| e.reason());
        assert_eq!(reason(&answer(200, &[]), true), Ok(()));
        assert_eq!(
            reason(&answer(403, &[]), true),
            Ok(()),
            "a refusal is not an auth failure"
        );
        assert_eq!(
            reason(&answer(407, &["basic"]), false),
            Err("auth_required")
        );
        assert_eq!(reason(&answer(407, &["basic"]), true), Err("auth_rejected"));
        assert_eq!(reason(&answer(401, &[]), true), Err("auth_rejected"));
        assert_eq!(
            reason(&answer(407, &["ntlm", "negotiate"]), true),
            Err("scheme_unsupported")
        );
        assert_eq!(reason(&answer(407, &["ntlm"]), false), Err("auth_required"));
        assert_eq!(
            reason(&answer(407, &["negotiate", "basic"]), true),
            Err("auth_rejected")
        );
    }

    #[test]
    fn schemes_from_headers() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::PROXY_AUTHENTICATE,
            "NTLM".parse().expect("value"),
        );
        headers.append(
            http::header::PROXY_AUTHENTICATE,
            "Basic realm=\"squid\"".parse().expect("value"),
        );
        assert_eq!(offered_schemes(&headers), vec!["ntlm", "basic"]);

        let mut one = http::HeaderMap::new();
        one.append(
            http::header::PROXY_AUTHENTICATE,
            "NTLM, Basic realm=\"x\", Negotiate".parse().expect("value"),
        );
        assert_eq!(offered_schemes(&one), vec!["ntlm", "basic", "negotiate"]);

        let mut params = http::HeaderMap::new();
        params.append(
            http::header::PROXY_AUTHENTICATE,
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth\""
                .parse()
                .expect("value"),
        );
        assert_eq!(offered_schemes(&params), vec!["digest"]);
    }

    #[test]
    fn label_and_authorization_keep_the_password_out_of_labels() {
        let proxy = spec(true);
        assert_eq!(proxy.label(), "proxy.example:3128");
        assert_eq!(proxy.authorization().as_deref(), Some("Basic dTpw"));
        assert!(!format!("{proxy:?}").contains("\"p\""));
    }
}
