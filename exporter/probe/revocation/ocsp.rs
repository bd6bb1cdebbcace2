//! One OCSP check: POST a request for one certificate, verify the answer.
//!
//! The request names the certificate by a SHA-1 CertID (what responders
//! expect) and carries no nonce, so that answers can be cached as Windows
//! caches them. The response must be a successful basic response that
//! answers for this very CertID, signed by the issuer itself or by a
//! delegated responder whose certificate the issuer signed, that carries
//! the OCSP-signing extended key usage and that is inside its validity; and
//! it must be inside its thisUpdate and nextUpdate. The responder's own
//! certificate is not checked for revocation.

use std::time::SystemTime;

use der::{Decode, Encode, Reader};
use sha1::{Digest, Sha1};
use tokio::time::Instant;
use x509_ocsp::builder::OcspRequestBuilder;
use x509_ocsp::{BasicOcspResponse, CertId, OcspResponse, OcspResponseStatus, Request};
use x509_parser::asn1_rs::BitString;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::{check_freshness, fetch_capped, Answer, CertStatus, IssuerKey, RevocationError};

/// Largest OCSP response read; real ones are a few kilobytes.
pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Asks the responder at `url` about `cert`. The second value is the
/// answer's nextUpdate whenever a matching answer was read, even when
/// stale.
pub(crate) async fn check(
    client: &reqwest::Client,
    url: &str,
    cert: &X509Certificate<'_>,
    issuer: &IssuerKey,
    deadline: Instant,
) -> (Result<Answer, RevocationError>, Option<SystemTime>) {
    let (cert_id, request) = match build_request(cert, issuer) {
        Ok(built) => built,
        Err(error) => return (Err(error), None),
    };
    let body = match post(client, url, request, deadline).await {
        Ok(body) => body,
        Err(error) => return (Err(error), None),
    };
    evaluate(&body, &cert_id, issuer, SystemTime::now())
}

/// The CertID of `cert` and the DER request that asks about it.
fn build_request(
    cert: &X509Certificate<'_>,
    issuer: &IssuerKey,
) -> Result<(CertId, Vec<u8>), RevocationError> {
    let malformed = |e: der::Error| RevocationError::Malformed(format!("OCSP request: {e}"));
    let spki = issuer.spki()?;
    let cert_id = CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: <Sha1 as der::oid::AssociatedOid>::OID,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: der::asn1::OctetString::new(Sha1::digest(&issuer.name_der).to_vec())
            .map_err(malformed)?,
        issuer_key_hash: der::asn1::OctetString::new(
            Sha1::digest(&spki.subject_public_key.data).to_vec(),
        )
        .map_err(malformed)?,
        serial_number: x509_cert::serial_number::SerialNumber::new(cert.raw_serial())
            .map_err(malformed)?,
    };
    let request = OcspRequestBuilder::new(x509_ocsp::Version::V1)
        .with_request(Request::new(cert_id.clone()))
        .build()
        .to_der()
        .map_err(malformed)?;
    Ok((cert_id, request))
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    request: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, RevocationError> {
    let unreachable =
        |detail: String| RevocationError::ResponderUnreachable(format!("{url}: {detail}"));
    let request = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/ocsp-request")
        .header(http::header::ACCEPT, "application/ocsp-response")
        .body(request);
    fetch_capped(request, MAX_RESPONSE_BYTES, unreachable, deadline).await
}

/// Verifies a response and takes the answer for `cert_id` from it, at
/// `now`.
pub(crate) fn evaluate(
    body: &[u8],
    cert_id: &CertId,
    issuer: &IssuerKey,
    now: SystemTime,
) -> (Result<Answer, RevocationError>, Option<SystemTime>) {
    let malformed = |what: &str, e: der::Error| RevocationError::Malformed(format!("{what}: {e}"));

    let response = match OcspResponse::from_der(body) {
        Ok(response) => response,
        Err(e) => return (Err(malformed("OCSP response", e)), None),
    };
    match response.response_status {
        OcspResponseStatus::Successful => {}
        OcspResponseStatus::MalformedRequest => {
            return (
                Err(RevocationError::Malformed(
                    "responder says the request is malformed".to_string(),
                )),
                None,
            )
        }
        OcspResponseStatus::InternalError | OcspResponseStatus::TryLater => {
            return (
                Err(RevocationError::ResponderUnreachable(format!(
                    "responder answered {:?}",
                    response.response_status
                ))),
                None,
            )
        }
        OcspResponseStatus::SigRequired | OcspResponseStatus::Unauthorized => {
            return (
                Err(RevocationError::UnknownStatus(format!(
                    "responder answered {:?}",
                    response.response_status
                ))),
                None,
            )
        }
    }
    let Some(bytes) = response.response_bytes else {
        return (
            Err(RevocationError::Malformed(
                "successful response without a body".to_string(),
            )),
            None,
        );
    };
    if bytes.response_type != <BasicOcspResponse as der::oid::AssociatedOid>::OID {
        return (
            Err(RevocationError::Malformed(format!(
                "response type {} is not the basic one",
                bytes.response_type
            ))),
            None,
        );
    }
    let basic_der = bytes.response.as_bytes();
    let basic = match BasicOcspResponse::from_der(basic_der) {
        Ok(basic) => basic,
        Err(e) => return (Err(malformed("basic OCSP response", e)), None),
    };

    let Some(single) = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| same_cert(&single.cert_id, cert_id))
    else {
        return (
            Err(RevocationError::Malformed(
                "the response answers for another certificate".to_string(),
            )),
            None,
        );
    };
    let this_update = single.this_update.0.to_system_time();
    let next_update = single.next_update.map(|t| t.0.to_system_time());

    if let Err(error) = verify_signature(basic_der, &basic, issuer, now) {
        return (Err(error), next_update);
    }
    if let Err(error) = check_freshness(this_update, next_update, now) {
        return (Err(error), next_update);
    }

    let status = match single.cert_status {
        x509_ocsp::CertStatus::Good(_) => CertStatus::Good,
        x509_ocsp::CertStatus::Revoked(_) => CertStatus::Revoked,
        x509_ocsp::CertStatus::Unknown(_) => CertStatus::Unknown,
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

/// Whether a response's CertID names the certificate asked about.
fn same_cert(answered: &CertId, asked: &CertId) -> bool {
    answered.hash_algorithm.oid == asked.hash_algorithm.oid
        && answered.issuer_name_hash == asked.issuer_name_hash
        && answered.issuer_key_hash == asked.issuer_key_hash
        && answered.serial_number.as_bytes() == asked.serial_number.as_bytes()
}

/// Checks that the response was signed by the issuer, or by a delegated
/// responder the issuer authorised.
fn verify_signature(
    basic_der: &[u8],
    basic: &BasicOcspResponse,
    issuer: &IssuerKey,
    now: SystemTime,
) -> Result<(), RevocationError> {
    let bad = |detail: String| RevocationError::BadSignature(detail);

    // The signed bytes exactly as received: the first element of the
    // BasicOCSPResponse sequence.
    let tbs = der::SliceReader::new(basic_der)
        .and_then(|mut reader| {
            der::Header::decode(&mut reader)?;
            reader.tlv_bytes()
        })
        .map_err(|e| RevocationError::Malformed(format!("basic OCSP response: {e}")))?;
    let algorithm_der = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| RevocationError::Malformed(format!("signature algorithm: {e}")))?;
    let (_, algorithm) = AlgorithmIdentifier::from_der(&algorithm_der)
        .map_err(|e| RevocationError::Malformed(format!("signature algorithm: {e}")))?;
    let signature = BitString::new(0, basic.signature.raw_bytes());
    let verify = |key: &SubjectPublicKeyInfo<'_>| {
        x509_parser::verify::verify_signature(key, &algorithm, &signature, tbs).is_ok()
    };

    let issuer_spki = issuer.spki()?;
    if verify(&issuer_spki) {
        return Ok(());
    }

    let mut rejected = Vec::new();
    for responder in basic.certs.iter().flatten() {
        let Ok(responder_der) = responder.to_der() else {
            continue;
        };
        let Ok((_, responder)) = x509_parser::parse_x509_certificate(&responder_der) else {
            continue;
        };
        let subject = responder.subject().to_string();
        if responder.issuer().as_raw() != issuer.name_der.as_slice()
            || responder.verify_signature(Some(&issuer_spki)).is_err()
        {
            rejected.push(format!("{subject}: not signed by the issuer"));
            continue;
        }
        let ocsp_signing = matches!(
            responder.extended_key_usage(),
            Ok(Some(eku)) if eku.value.ocsp_signing
        );
        if !ocsp_signing {
            rejected.push(format!("{subject}: no OCSP-signing usage"));
            continue;
        }
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let validity = responder.validity();
        if now_secs < validity.not_before.timestamp() || now_secs > validity.not_after.timestamp() {
            rejected.push(format!("{subject}: outside its validity"));
            continue;
        }
        if verify(responder.public_key()) {
            return Ok(());
        }
        rejected.push(format!("{subject}: signature does not verify"));
    }
    Err(bad(if rejected.is_empty() {
        "OCSP response not signed by the issuer, and no responder certificate".to_string()
    } else {
        format!(
            "OCSP response not signed by an authorised responder ({})",
            rejected.join("; ")
        )
    }))
}
