//! The revocation step: can the revocation status of the update server's
//! chain be checked, and is every certificate still good?
//!
//! Domain words: a *CRL* is a list of revoked serial numbers signed by the
//! issuing CA and fetched over HTTP from a URL in the certificate's CRL
//! Distribution Points; *OCSP* asks a responder named in the certificate's
//! Authority Information Access about one certificate. Both answers carry a
//! thisUpdate and a nextUpdate: past its nextUpdate an answer is *stale*.
//!
//! Every certificate of the presented chain whose issuer is known (found in
//! the presented chain, or among the trust anchors the tls step used) is
//! checked; a self-signed root is not. For each such certificate every OCSP
//! responder and every CRL URL the certificate names is fetched, at the same
//! time, and each outcome is reported. The verdict is taken the way Windows
//! takes it: OCSP first, the CRL when OCSP gave no good or revoked answer.
//! Fetches go over the `reqwest::Client` the chain hands in (the route the
//! probe uses), each inside the probe's deadline and under a size cap.
//!
//! A good, verified answer is kept in a [`cache::RevocationCache`] shared by
//! every probe, until its nextUpdate (never longer than
//! `revocation.max_cache_age`), and reported as cached with a duration of 0.
//!
//! Not done here: delta CRLs, indirect CRLs and Issuing Distribution Point
//! scopes are not interpreted (a full CRL from the issuer is expected); the
//! OCSP responder's own certificate is not checked for revocation; OCSP
//! stapled in the handshake is not read; LDAP URLs are skipped.

pub mod cache;
pub mod crl;
pub mod ocsp;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use der::Encode;
use rustls::pki_types::{CertificateDer, TrustAnchor};
use tokio::time::Instant as TokioInstant;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::StepError;
use crate::config::RevocationConfig;
use cache::RevocationCache;

/// Why the revocation status could not be established, or what it is when
/// it is bad. Used for one check and for the step's verdict alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("certificate at position {position} is revoked ({method})")]
    Revoked { position: usize, method: Method },
    #[error("OCSP responder unreachable: {0}")]
    ResponderUnreachable(String),
    #[error("CRL unreachable: {0}")]
    CrlUnreachable(String),
    #[error("answer is stale: {0}")]
    Stale(String),
    #[error("signature not valid or not from the issuer: {0}")]
    BadSignature(String),
    #[error("responder does not know the certificate: {0}")]
    UnknownStatus(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("answer larger than the {limit}-byte cap")]
    TooLarge { limit: u64 },
    #[error("no answer before the deadline")]
    Timeout,
    #[error("certificate at position {position} names no CRL or OCSP URL")]
    NoRevocationInfo { position: usize },
}

impl StepError for RevocationError {
    fn reason(&self) -> &'static str {
        match self {
            RevocationError::Revoked { .. } => "revoked",
            RevocationError::ResponderUnreachable(_) => "responder_unreachable",
            RevocationError::CrlUnreachable(_) => "crl_unreachable",
            RevocationError::Stale(_) => "stale",
            RevocationError::BadSignature(_) => "bad_signature",
            RevocationError::UnknownStatus(_) => "unknown_status",
            RevocationError::Malformed(_) => "malformed",
            RevocationError::TooLarge { .. } => "too_large",
            RevocationError::Timeout => "timeout",
            RevocationError::NoRevocationInfo { .. } => "no_revocation_info",
        }
    }
}

impl RevocationError {
    /// When no method gave a good or revoked answer, the step reports the
    /// most telling of the checks' failures: a problem of the CA's answer
    /// before one of the network, OCSP's network problem before the CRL's.
    fn rank(&self) -> u8 {
        match self {
            RevocationError::Revoked { .. } => 0,
            RevocationError::BadSignature(_) => 1,
            RevocationError::Stale(_) => 2,
            RevocationError::UnknownStatus(_) => 3,
            RevocationError::TooLarge { .. } => 4,
            RevocationError::Malformed(_) => 5,
            RevocationError::Timeout => 6,
            RevocationError::ResponderUnreachable(_) => 7,
            RevocationError::CrlUnreachable(_) => 8,
            RevocationError::NoRevocationInfo { .. } => 9,
        }
    }
}

/// How a status was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Ocsp,
    Crl,
}

impl Method {
    /// The method's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ocsp => "ocsp",
            Method::Crl => "crl",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate's revocation status as an answer states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked,
    Unknown,
}

impl CertStatus {
    /// Every status, for the `status` label's fixed set.
    pub const ALL: [CertStatus; 3] = [CertStatus::Good, CertStatus::Revoked, CertStatus::Unknown];

    /// The status's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Good => "good",
            CertStatus::Revoked => "revoked",
            CertStatus::Unknown => "unknown",
        }
    }
}

/// A verified answer about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: CertStatus,
    pub this_update: SystemTime,
    /// When the answer expires; `None` when the answer does not say.
    pub next_update: Option<SystemTime>,
}

/// One fetch (or cache hit) for one certificate and one URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RevocationCheck {
    /// Position of the checked certificate in the presented chain, 0 being
    /// the leaf.
    pub position: usize,
    pub method: Method,
    pub url: String,
    /// The verified answer, or why there is none.
    pub outcome: Result<Answer, RevocationError>,
    /// The answer's nextUpdate, also when it was too old to be used.
    pub next_update: Option<SystemTime>,
    /// From the request's start to the verified answer or the failure; zero
    /// when served from the cache without asking the URL.
    pub duration: Duration,
    /// Whether the answer came from the cache.
    pub cached: bool,
    /// Whether the URL answered when it was last asked: on this probe when
    /// the cache was not fresh, else on the fetch the cached answer came from.
    pub fetch_ok: bool,
    /// Why the URL did not answer on this probe, when it did not but a
    /// cached answer was still valid and used instead.
    pub fetch_error: Option<RevocationError>,
    /// Until when the answer relied on may be used; `None` without one.
    pub valid_until: Option<SystemTime>,
    /// When the URL last gave a good answer for this certificate.
    pub last_fetch_success: Option<SystemTime>,
}

/// What the revocation step saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevocationObservation {
    pub checks: Vec<RevocationCheck>,
}

/// What every probe's revocation step shares: the limits, the direct HTTP
/// client and the answer cache (which outlives the configuration).
pub struct RevocationContext {
    pub config: RevocationConfig,
    /// The client for the direct route: no proxy, whatever the environment
    /// says.
    pub direct_client: reqwest::Client,
    pub cache: Arc<RevocationCache>,
}

impl RevocationContext {
    /// Builds the direct client once (trusting the configured CAs too, for
    /// `https` URLs), around a cache that may come from an earlier
    /// configuration.
    pub fn new(
        config: RevocationConfig,
        cache: Arc<RevocationCache>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, reqwest::Error> {
        let direct_client = super::proxy::http_client(None, extra_roots)?;
        Ok(RevocationContext {
            config,
            direct_client,
            cache,
        })
    }
}

/// The issuer of a checked certificate: its name and public key, in DER.
#[derive(Debug, Clone)]
pub(crate) struct IssuerKey {
    /// The issuer's subject, the whole `Name` element.
    pub name_der: Vec<u8>,
    /// The issuer's whole `SubjectPublicKeyInfo` element.
    pub spki_der: Vec<u8>,
}

impl IssuerKey {
    pub(crate) fn spki(&self) -> Result<SubjectPublicKeyInfo<'_>, RevocationError> {
        SubjectPublicKeyInfo::from_der(&self.spki_der)
            .map(|(_, spki)| spki)
            .map_err(|e| RevocationError::Malformed(format!("issuer key: {e}")))
    }
}

/// A certificate to check, with what is needed to ask about it.
struct Subject<'a> {
    position: usize,
    cert: X509Certificate<'a>,
    issuer: IssuerKey,
    ocsp_urls: Vec<String>,
    crl_urls: Vec<String>,
}

/// Checks the chain the tls step saw. `client` is the route's HTTP client;
/// `anchors` are the trust anchors the tls step validated against.
pub async fn check(
    ctx: &RevocationContext,
    client: &reqwest::Client,
    route: &str,
    chain_der: &[CertificateDer<'static>],
    anchors: &[TrustAnchor<'static>],
    deadline: TokioInstant,
) -> (Result<(), RevocationError>, RevocationObservation) {
    let mut observation = RevocationObservation::default();

    let parsed: Vec<X509Certificate<'_>> = match chain_der
        .iter()
        .map(|der| x509_parser::parse_x509_certificate(der).map(|(_, cert)| cert))
        .collect()
    {
        Ok(parsed) => parsed,
        Err(e) => {
            return (
                Err(RevocationError::Malformed(format!(
                    "presented certificate: {e}"
                ))),
                observation,
            )
        }
    };

    let mut subjects = Vec::new();
    for (position, cert) in parsed.iter().enumerate() {
        let Some(issuer) = find_issuer(cert, &parsed, anchors) else {
            continue;
        };
        // A certificate that names no URL is kept: its verdict is
        // no_revocation_info, and the others are still checked.
        let (ocsp_urls, crl_urls) = revocation_urls(cert);
        subjects.push(Subject {
            position,
            cert: cert.clone(),
            issuer,
            ocsp_urls,
            crl_urls,
        });
    }

    let mut fetches = Vec::new();
    for subject in &subjects {
        for url in &subject.ocsp_urls {
            fetches.push(one_check(
                ctx,
                client,
                route,
                subject,
                Method::Ocsp,
                url,
                deadline,
            ));
        }
        for url in &subject.crl_urls {
            fetches.push(one_check(
                ctx,
                client,
                route,
                subject,
                Method::Crl,
                url,
                deadline,
            ));
        }
    }
    observation.checks = futures_util::future::join_all(fetches).await;

    for check in &observation.checks {
        match &check.outcome {
            Ok(answer) => tracing::debug!(
                position = check.position,
                method = check.method.as_str(),
                url = %check.url,
                status = answer.status.as_str(),
                cached = check.cached,
                "revocation answer"
            ),
            Err(error) => tracing::info!(
                position = check.position,
                method = check.method.as_str(),
                url = %check.url,
                reason = error.reason(),
                %error,
                "revocation check failed"
            ),
        }
    }

    for subject in &subjects {
        if let Err(error) = verdict(subject.position, &observation.checks) {
            return (Err(error), observation);
        }
    }
    (Ok(()), observation)
}

/// The verdict for one certificate: OCSP's good or revoked answer first,
/// then the CRL's; otherwise the most telling failure.
fn verdict(position: usize, checks: &[RevocationCheck]) -> Result<(), RevocationError> {
    let mine = || checks.iter().filter(|c| c.position == position);
    for method in [Method::Ocsp, Method::Crl] {
        let decisive = mine().filter(|c| c.method == method).find_map(|c| {
            c.outcome
                .as_ref()
                .ok()
                .filter(|a| a.status != CertStatus::Unknown)
        });
        match decisive.map(|a| a.status) {
            Some(CertStatus::Revoked) => return Err(RevocationError::Revoked { position, method }),
            Some(_) => return Ok(()),
            None => {}
        }
    }
    let worst = mine()
        .map(|c| match &c.outcome {
            Ok(_) => RevocationError::UnknownStatus(format!("{} {}", c.method, c.url)),
            Err(error) => error.clone(),
        })
        .min_by_key(RevocationError::rank);
    Err(worst.unwrap_or(RevocationError::NoRevocationInfo { position }))
}

async fn one_check(
    ctx: &RevocationContext,
    client: &reqwest::Client,
    route: &str,
    subject: &Subject<'_>,
    method: Method,
    url: &str,
    deadline: TokioInstant,
) -> RevocationCheck {
    let key = cache::CacheKey {
        route: route.to_string(),
        method,
        url: url.to_string(),
        issuer_key: subject.issuer.spki_der.clone(),
        serial: subject.cert.raw_serial().to_vec(),
    };
    let mut check = RevocationCheck {
        position: subject.position,
        method,
        url: url.to_string(),
        outcome: Err(RevocationError::Timeout),
        next_update: None,
        duration: Duration::ZERO,
        cached: false,
        fetch_ok: false,
        fetch_error: None,
        valid_until: None,
        last_fetch_success: None,
    };

    let cached = ctx.cache.entry(&key);
    if let Some(entry) = &cached {
        check.last_fetch_success = Some(entry.fetched_at);
        if entry.is_fresh(SystemTime::now(), ctx.config.recheck_interval) {
            check.next_update = entry.answer.next_update;
            check.valid_until = Some(entry.valid_until);
            check.outcome = Ok(entry.answer.clone());
            check.cached = true;
            check.fetch_ok = true;
            return check;
        }
    }

    let began = Instant::now();
    let fetch_deadline = deadline.min(TokioInstant::now() + ctx.config.fetch_timeout);
    let work = async {
        match method {
            Method::Ocsp => {
                ocsp::check(client, url, &subject.cert, &subject.issuer, fetch_deadline).await
            }
            Method::Crl => {
                crl::check(
                    client,
                    url,
                    &subject.cert,
                    &subject.issuer,
                    ctx.config.crl_max_bytes,
                    fetch_deadline,
                )
                .await
            }
        }
    };
    let (outcome, next_update) = tokio::time::timeout_at(fetch_deadline, work)
        .await
        .unwrap_or((Err(RevocationError::Timeout), None));
    check.duration = began.elapsed();
    check.next_update = next_update;

    let now = SystemTime::now();
    match outcome {
        Ok(answer) => {
            ctx.cache
                .put(key.clone(), answer.clone(), now, ctx.config.max_cache_age);
            check.fetch_ok = true;
            check.last_fetch_success = Some(now);
            check.valid_until = ctx.cache.entry(&key).map(|entry| entry.valid_until);
            check.outcome = Ok(answer);
        }
        Err(error) => {
            ctx.cache.record_failure(&key);
            match cached.filter(|entry| entry.is_valid(now)) {
                // The URL stopped answering but the answer held is still
                // valid: the path lives on its cache, as Windows' does.
                Some(entry) => {
                    tracing::info!(
                        url,
                        reason = error.reason(),
                        valid_until = %humantime::format_rfc3339_seconds(entry.valid_until),
                        "revocation URL not answering; relying on the cached answer"
                    );
                    check.next_update = entry.answer.next_update;
                    check.valid_until = Some(entry.valid_until);
                    check.outcome = Ok(entry.answer);
                    check.cached = true;
                    check.fetch_error = Some(error);
                }
                None => check.outcome = Err(error),
            }
        }
    }
    check
}

/// The issuer of `cert`: a presented certificate whose subject is `cert`'s
/// issuer and whose key verifies `cert`'s signature, else such a trust
/// anchor. `None` for a self-signed certificate or an unknown issuer.
fn find_issuer(
    cert: &X509Certificate<'_>,
    chain: &[X509Certificate<'_>],
    anchors: &[TrustAnchor<'static>],
) -> Option<IssuerKey> {
    let issuer_raw = cert.issuer().as_raw();
    if cert.subject().as_raw() == issuer_raw && cert.verify_signature(None).is_ok() {
        return None;
    }
    for candidate in chain {
        if candidate.subject().as_raw() == issuer_raw
            && cert.verify_signature(Some(candidate.public_key())).is_ok()
        {
            return Some(IssuerKey {
                name_der: issuer_raw.to_vec(),
                spki_der: candidate.public_key().raw.to_vec(),
            });
        }
    }
    // Trust anchors hold the contents of the subject and key elements,
    // without their SEQUENCE header.
    let issuer_contents = der::asn1::AnyRef::try_from(issuer_raw).ok()?;
    for anchor in anchors {
        if anchor.subject.as_ref() != issuer_contents.value() {
            continue;
        }
        let Ok(spki_der) =
            der::asn1::AnyRef::new(der::Tag::Sequence, anchor.subject_public_key_info.as_ref())
                .and_then(|any| any.to_der())
        else {
            continue;
        };
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&spki_der) else {
            continue;
        };
        if cert.verify_signature(Some(&spki)).is_ok() {
            return Some(IssuerKey {
                name_der: issuer_raw.to_vec(),
                spki_der,
            });
        }
    }
    None
}

/// The most URLs of one method checked per certificate; real certificates
/// name one or two. The rest are ignored, so that a certificate cannot make
/// a probe fetch (and the metrics carry) an unbounded number of URLs.
pub const MAX_URLS_PER_METHOD: usize = 4;

/// The HTTP OCSP responders (Authority Information Access) and CRL URLs
/// (CRL Distribution Points) a certificate names, at most
/// [`MAX_URLS_PER_METHOD`] of each. Other schemes (LDAP) are skipped.
fn revocation_urls(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let http = |uri: &str| uri.starts_with("http://") || uri.starts_with("https://");
    let mut ocsp = Vec::new();
    let mut crl = Vec::new();
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for description in aia.iter() {
                    if description.access_method
                        != x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    {
                        continue;
                    }
                    if let GeneralName::URI(uri) = description.access_location {
                        if http(uri)
                            && !ocsp.iter().any(|u| u == uri)
                            && ocsp.len() < MAX_URLS_PER_METHOD
                        {
                            ocsp.push(uri.to_string());
                        }
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for point in points.iter() {
                    let Some(DistributionPointName::FullName(names)) = &point.distribution_point
                    else {
                        continue;
                    };
                    for name in names {
                        if let GeneralName::URI(uri) = name {
                            if http(uri)
                                && !crl.iter().any(|u| u == uri)
                                && crl.len() < MAX_URLS_PER_METHOD
                            {
                                crl.push(uri.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (ocsp, crl)
}

/// Clock skew tolerated on an answer's thisUpdate.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Checks an answer's validity period at `now`.
pub(crate) fn check_freshness(
    this_update: SystemTime,
    next_update: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), RevocationError> {
    if this_update > now + CLOCK_SKEW {
        return Err(RevocationError::Stale(
            "thisUpdate is in the future".to_string(),
        ));
    }
    if let Some(next) = next_update {
        if next < now {
            return Err(RevocationError::Stale(format!(
                "past its nextUpdate, {} s ago",
                now.duration_since(next).unwrap_or_default().as_secs()
            )));
        }
    }
    Ok(())
}

/// Reads a response body up to `limit` bytes.
/// Sends `request`, and reads a 2xx answer's body up to `limit` bytes, by
/// `deadline`. Network failures and other statuses become `unreachable`'s
/// error (the method decides which: responder or CRL).
pub(crate) async fn fetch_capped(
    request: reqwest::RequestBuilder,
    limit: u64,
    unreachable: impl Fn(String) -> RevocationError,
    deadline: TokioInstant,
) -> Result<Vec<u8>, RevocationError> {
    let work = async {
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(super::proxy::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unreachable(format!("HTTP {}", status.as_u16())));
        }
        read_capped(response, limit, &unreachable).await
    };
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(RevocationError::Timeout))
}

pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    unreachable: impl Fn(String) -> RevocationError,
) -> Result<Vec<u8>, RevocationError> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(RevocationError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(super::proxy::error_chain(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(RevocationError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_of(method: Method, outcome: Result<Answer, RevocationError>) -> RevocationCheck {
        RevocationCheck {
            position: 0,
            method,
            url: "http://x/".to_string(),
            outcome,
            next_update: None,
            duration: Duration::ZERO,
            cached: false,
            fetch_ok: true,
            fetch_error: None,
            valid_until: None,
            last_fetch_success: None,
        }
    }

    fn answer(status: CertStatus) -> Result<Answer, RevocationError> {
        Ok(Answer {
            status,
            this_update: SystemTime::UNIX_EPOCH,
            next_update: None,
        })
    }

    #[test]
    fn ocsp_decides_before_crl() {
        let checks = [
            check_of(Method::Crl, answer(CertStatus::Good)),
            check_of(Method::Ocsp, answer(CertStatus::Revoked)),
        ];
        let error = verdict(0, &checks).expect_err("revoked");
        assert_eq!(error.reason(), "revoked");
    }

    #[test]
    fn crl_decides_when_ocsp_has_no_answer() {
        let checks = [
            check_of(
                Method::Ocsp,
                Err(RevocationError::ResponderUnreachable("down".into())),
            ),
            check_of(Method::Crl, answer(CertStatus::Good)),
        ];
        assert!(verdict(0, &checks).is_ok());
        let checks = [
            check_of(Method::Ocsp, answer(CertStatus::Unknown)),
            check_of(Method::Crl, answer(CertStatus::Revoked)),
        ];
        assert_eq!(
            verdict(0, &checks).expect_err("revoked").reason(),
            "revoked"
        );
    }

    #[test]
    fn the_most_telling_failure_is_reported() {
        let checks = [
            check_of(
                Method::Ocsp,
                Err(RevocationError::ResponderUnreachable("down".into())),
            ),
            check_of(
                Method::Crl,
                Err(RevocationError::CrlUnreachable("down".into())),
            ),
        ];
        assert_eq!(
            verdict(0, &checks).expect_err("fails").reason(),
            "responder_unreachable"
        );
        let checks = [
            check_of(Method::Ocsp, answer(CertStatus::Unknown)),
            check_of(
                Method::Crl,
                Err(RevocationError::CrlUnreachable("down".into())),
            ),
        ];
        assert_eq!(
            verdict(0, &checks).expect_err("fails").reason(),
            "unknown_status"
        );
    }

    #[test]
    fn freshness() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(check_freshness(now - hour, Some(now + hour), now).is_ok());
        assert!(check_freshness(now - hour, None, now).is_ok());
        assert!(check_freshness(now - 2 * hour, Some(now - hour), now).is_err());
        assert!(check_freshness(now + hour, Some(now + 2 * hour), now).is_err());
    }
}
