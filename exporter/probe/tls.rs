//! The tls step: does a validated TLS handshake with the update server
//! complete?
//!
//! The chain is validated with rustls against the platform's roots (or the
//! bundled Mozilla roots where the platform has none) plus the CA files the
//! config names. The presented chain is kept even when validation fails, so
//! that an intercepting proxy's certificate can be shown to the operator.
//!
//! Validation failures are told apart: an unknown issuer (a missing root or
//! a private CA), a certificate outside its validity, a name mismatch, and a
//! CA certificate presented as the leaf (what TLS-inspecting middleboxes
//! often do). Revocation is not checked here; it has its own step.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{CertSummary, StepError, TlsObservation};
use crate::config::TlsConfig;

/// Why the trust store could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("tls.ca_files: cannot read {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("tls.ca_files: {path} holds no PEM certificate")]
    CaFileEmpty { path: String },
    #[error("tls: cannot build the certificate verifier: {0}")]
    Verifier(String),
}

/// Why the handshake did not complete with a trusted chain.
#[derive(Debug, thiserror::Error)]
pub enum TlsStepError {
    #[error("certificate issued by an unknown CA (missing root, or TLS interception)")]
    UnknownIssuer,
    #[error("certificate expired")]
    Expired,
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("certificate not valid for the server's name")]
    NameMismatch,
    #[error("a CA certificate was presented as the server's certificate (TLS interception)")]
    CaUsedAsLeaf,
    #[error("certificate rejected: {0}")]
    BadCertificate(String),
    #[error("handshake failed: {0}")]
    HandshakeFailure(String),
    #[error("no handshake before the deadline")]
    Timeout,
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
}

impl StepError for TlsStepError {
    fn reason(&self) -> &'static str {
        match self {
            TlsStepError::UnknownIssuer => "unknown_issuer",
            TlsStepError::Expired => "expired",
            TlsStepError::NotYetValid => "not_yet_valid",
            TlsStepError::NameMismatch => "name_mismatch",
            TlsStepError::CaUsedAsLeaf => "ca_used_as_leaf",
            TlsStepError::BadCertificate(_) => "bad_certificate",
            TlsStepError::HandshakeFailure(_) | TlsStepError::BadName(_) => "handshake_failure",
            TlsStepError::Timeout => "timeout",
        }
    }
}

/// The trust store and verifier, built once per configuration.
pub struct TlsContext {
    verifier: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The certificates of the configured CA files, also trusted by the
    /// HTTP fetches beside the probe (versions document, CRLs, OCSP).
    configured: Vec<CertificateDer<'static>>,
}

/// The largest CA file read; a bundle of every public root is under 300 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

impl TlsContext {
    /// Loads the platform's roots (bundled roots when there are none) and the
    /// configured CA files.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();

        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "skipping an unreadable platform root");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }

        let mut configured = Vec::new();
        for path in &config.ca_files {
            let shown = path.display().to_string();
            let ca_error = |detail: String| TlsSetupError::CaFile {
                path: shown.clone(),
                detail,
            };
            let (bytes, _) = crate::files::read_capped(path, MAX_CA_FILE_BYTES)
                .map_err(|e| ca_error(e.to_string()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            configured.extend(certs.iter().cloned());
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError::CaFileEmpty { path: shown });
            }
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
        Ok(TlsContext {
            verifier,
            roots,
            provider,
            configured,
        })
    }

    /// The certificates of the configured CA files.
    pub fn configured_cas(&self) -> &[CertificateDer<'static>] {
        &self.configured
    }

    /// The trust anchors chains are validated against; the revocation step
    /// finds the issuer of a chain's last certificate among them.
    pub fn anchors(&self) -> &[rustls::pki_types::TrustAnchor<'static>] {
        &self.roots.roots
    }

    /// Runs the handshake over `tcp` (a socket or a proxy tunnel) for
    /// `server_name`. The observation
    /// carries the presented chain whatever the outcome.
    pub async fn handshake<S>(
        &self,
        tcp: S,
        server_name: &str,
        deadline: Instant,
    ) -> (Result<TlsStream<S>, TlsStepError>, TlsObservation)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut observation = TlsObservation::default();

        let name = match ServerName::try_from(server_name.to_string()) {
            Ok(name) => name,
            Err(_) => {
                return (
                    Err(TlsStepError::BadName(server_name.to_string())),
                    observation,
                )
            }
        };

        let recorder = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            presented: Mutex::new(Vec::new()),
        });
        let config = match rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth(),
            Err(e) => {
                return (
                    Err(TlsStepError::HandshakeFailure(e.to_string())),
                    observation,
                )
            }
        };
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = TlsConnector::from(Arc::new(config));

        let result = tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await;

        let presented = recorder.take();
        observation.chain = presented.iter().filter_map(|der| summarize(der)).collect();
        observation.chain_der = presented.clone();

        let stream = match result {
            Err(_elapsed) => return (Err(TlsStepError::Timeout), observation),
            Ok(Err(error)) => return (Err(classify(&error, &presented)), observation),
            Ok(Ok(stream)) => stream,
        };

        let (_, connection) = stream.get_ref();
        observation.handshake_ok = true;
        observation.version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        observation.cipher = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or_default()
            .to_string();
        tracing::debug!(version = %observation.version, cipher = %observation.cipher, "handshake done");
        (Ok(stream), observation)
    }
}

/// Validates with the real verifier and keeps a copy of what the server
/// presented, so that a rejected chain can still be reported.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    presented: Mutex<Vec<CertificateDer<'static>>>,
}

impl RecordingVerifier {
    fn take(&self) -> Vec<CertificateDer<'static>> {
        match self.presented.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|der| der.clone().into_owned())
            .collect();
        match self.presented.lock() {
            Ok(mut guard) => *guard = chain,
            Err(poisoned) => *poisoned.into_inner() = chain,
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Maps a failed handshake onto the step's reasons.
fn classify(error: &std::io::Error, presented: &[CertificateDer<'static>]) -> TlsStepError {
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsStepError::HandshakeFailure(error.to_string());
    };
    let rustls::Error::InvalidCertificate(cert_error) = rustls_error else {
        return TlsStepError::HandshakeFailure(rustls_error.to_string());
    };
    match cert_error {
        CertificateError::UnknownIssuer if presented_self_signed_leaf(presented) => {
            TlsStepError::CaUsedAsLeaf
        }
        CertificateError::UnknownIssuer => TlsStepError::UnknownIssuer,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            TlsStepError::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            TlsStepError::NotYetValid
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsStepError::NameMismatch
        }
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            TlsStepError::CaUsedAsLeaf
        }
        other => TlsStepError::BadCertificate(format!("{other:?}")),
    }
}

/// A single self-issued certificate presented as the server's: the shape of
/// an intercepting middlebox's own CA, or of a self-signed stand-in.
fn presented_self_signed_leaf(presented: &[CertificateDer<'static>]) -> bool {
    let Some(leaf) = presented.first() else {
        return false;
    };
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok(),
        Err(_) => false,
    }
}

/// Parses what metrics need from one DER certificate; an unparsable one is
/// skipped (the handshake then fails on it anyway).
fn summarize(der: &CertificateDer<'_>) -> Option<CertSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = |dn: &x509_parser::x509::X509Name<'_>| {
        dn.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| dn.to_string())
    };
    Some(CertSummary {
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        not_after: cert.validity().not_after.timestamp(),
    })
}
