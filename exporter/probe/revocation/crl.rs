//! One CRL check: GET the list, verify it came from the issuer, look the
//! serial up.
//!
//! The list is read up to `revocation.crl_max_bytes` (a larger one stops
//! with `too_large` without being read to its end), in DER or PEM. It must
//! name the certificate's issuer, carry the issuer's signature, and be
//! inside its thisUpdate and nextUpdate. Scope extensions (Issuing
//! Distribution Point, delta CRLs) are not interpreted.

use std::time::SystemTime;

use tokio::time::Instant;
use x509_parser::certificate::X509Certificate;

use super::{check_freshness, fetch_capped, Answer, CertStatus, IssuerKey, RevocationError};

/// Fetches the CRL at `url` and answers for `cert`. The second value is the
/// list's nextUpdate whenever the list could be read, even when stale.
pub(crate) async fn check(
    client: &reqwest::Client,
    url: &str,
    cert: &X509Certificate<'_>,
    issuer: &IssuerKey,
    max_bytes: u64,
    deadline: Instant,
) -> (Result<Answer, RevocationError>, Option<SystemTime>) {
    let body = match fetch(client, url, max_bytes, deadline).await {
        Ok(body) => body,
        Err(error) => return (Err(error), None),
    };
    evaluate(&body, cert, issuer, SystemTime::now())
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    max_bytes: u64,
    deadline: Instant,
) -> Result<Vec<u8>, RevocationError> {
    let unreachable = |detail: String| RevocationError::CrlUnreachable(format!("{url}: {detail}"));
    fetch_capped(client.get(url), max_bytes, unreachable, deadline).await
}

/// Verifies a fetched list and looks `cert` up in it, at `now`.
pub(crate) fn evaluate(
    body: &[u8],
    cert: &X509Certificate<'_>,
    issuer: &IssuerKey,
    now: SystemTime,
) -> (Result<Answer, RevocationError>, Option<SystemTime>) {
    let pem;
    let der: &[u8] = if body.starts_with(b"-----BEGIN") {
        match x509_parser::pem::parse_x509_pem(body) {
            Ok((_, parsed)) if parsed.label == "X509 CRL" => {
                pem = parsed;
                &pem.contents
            }
            Ok((_, parsed)) => {
                return (
                    Err(RevocationError::Malformed(format!(
                        "PEM block {:?} is not a CRL",
                        parsed.label
                    ))),
                    None,
                )
            }
            Err(e) => return (Err(RevocationError::Malformed(format!("PEM: {e}"))), None),
        }
    } else {
        body
    };

    let crl = match x509_parser::parse_x509_crl(der) {
        Ok((_, crl)) => crl,
        Err(e) => return (Err(RevocationError::Malformed(format!("CRL: {e}"))), None),
    };
    let next_update = crl.next_update().map(|t| to_system_time(t.timestamp()));
    let this_update = to_system_time(crl.last_update().timestamp());

    if crl.issuer().as_raw() != issuer.name_der.as_slice() {
        return (
            Err(RevocationError::BadSignature(format!(
                "CRL issued by {}, not by the certificate's issuer",
                crl.issuer()
            ))),
            next_update,
        );
    }
    let spki = match issuer.spki() {
        Ok(spki) => spki,
        Err(error) => return (Err(error), next_update),
    };
    if let Err(e) = crl.verify_signature(&spki) {
        return (
            Err(RevocationError::BadSignature(format!("CRL: {e}"))),
            next_update,
        );
    }
    if let Err(error) = check_freshness(this_update, next_update, now) {
        return (Err(error), next_update);
    }

    let serial = cert.raw_serial();
    let revoked = crl
        .iter_revoked_certificates()
        .any(|entry| entry.raw_serial() == serial);
    let status = if revoked {
        CertStatus::Revoked
    } else {
        CertStatus::Good
    };
    (
        Ok(Answer {
            status,
            this_update,
            next_update,
        }),
        next_update,
    )
}

fn to_system_time(seconds: i64) -> SystemTime {
    let magnitude = std::time::Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}
