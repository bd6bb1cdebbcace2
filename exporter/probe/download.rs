//! The download step: does an HTTP GET over the validated TLS connection
//! complete?
//!
//! One HTTP/1.1 request is sent on the connection the tls step opened (no
//! new connection, no redirects followed), the status is kept, and the body
//! is read up to a cap. The duration covers the request, the response head
//! and the whole body. The body's content is not inspected: the connector's
//! own definition files are not fetched, only the path the config names.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{DownloadObservation, StepError};

/// Why the download did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("server answered HTTP {status}")]
    HttpStatus { status: u16 },
    #[error("connection cut after {bytes} body bytes: {detail}")]
    Interrupted { bytes: u64, detail: String },
    #[error("no complete response before the deadline ({bytes} body bytes read)")]
    Timeout { bytes: u64 },
    #[error("body larger than the {limit}-byte cap")]
    TooLarge { limit: u64 },
    #[error("the proxy refused the tunnel (HTTP {status})")]
    TunnelRefused { status: u16 },
}

impl StepError for DownloadError {
    fn reason(&self) -> &'static str {
        match self {
            DownloadError::HttpStatus { .. } => "http_status",
            DownloadError::Interrupted { .. } => "interrupted",
            DownloadError::Timeout { .. } => "timeout",
            DownloadError::TooLarge { .. } => "too_large",
            DownloadError::TunnelRefused { .. } => "tunnel_refused",
        }
    }
}

/// GETs `path` from `host` (listening on `port`) over `stream`.
pub async fn download<S>(
    stream: S,
    host: &str,
    port: u16,
    path: &str,
    valid_status_codes: &[u16],
    max_bytes: u64,
    deadline: Instant,
) -> (Result<(), DownloadError>, DownloadObservation)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut observation = DownloadObservation::default();
    let outcome = tokio::time::timeout_at(
        deadline,
        fetch(
            stream,
            &host_header(host, port),
            path,
            valid_status_codes,
            max_bytes,
            &mut observation,
        ),
    )
    .await;
    // At the deadline the fetch is dropped; the observation it kept up to
    // date still says how far it got.
    let result = outcome.unwrap_or(Err(DownloadError::Timeout {
        bytes: observation.bytes,
    }));
    (result, observation)
}

/// The `Host` value for `host` on `port`: the port only when it is not
/// 443, IPv6 literals in brackets.
fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

async fn fetch<S>(
    stream: S,
    host: &str,
    path: &str,
    valid_status_codes: &[u16],
    max_bytes: u64,
    observation: &mut DownloadObservation,
) -> Result<(), DownloadError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let interrupted = |bytes, e: hyper::Error| DownloadError::Interrupted {
        bytes,
        detail: e.to_string(),
    };

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| interrupted(0, e))?;
    // The connection task ends when the response is complete or the step is
    // dropped at its deadline.
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "download connection ended with an error");
        }
    });

    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("tetra-exporter/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| DownloadError::Interrupted {
            bytes: 0,
            detail: e.to_string(),
        })?;

    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| interrupted(0, e))?;
        let status = response.status().as_u16();
        observation.status = Some(status);

        let accepted = if valid_status_codes.is_empty() {
            (200..300).contains(&status)
        } else {
            valid_status_codes.contains(&status)
        };
        if !accepted {
            return Err(DownloadError::HttpStatus { status });
        }

        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| interrupted(observation.bytes, e))?;
            if let Some(data) = frame.data_ref() {
                observation.bytes += data.len() as u64;
                if observation.bytes > max_bytes {
                    return Err(DownloadError::TooLarge { limit: max_bytes });
                }
            }
        }
        tracing::debug!(status, bytes = observation.bytes, "download done");
        Ok(())
    }
    .await;

    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_carries_a_port_other_than_443() {
        assert_eq!(
            host_header("tetra-defs.amp.cisco.com", 443),
            "tetra-defs.amp.cisco.com"
        );
        assert_eq!(host_header("mirror.example", 8443), "mirror.example:8443");
        assert_eq!(host_header("::1", 443), "[::1]");
        assert_eq!(host_header("::1", 8443), "[::1]:8443");
    }
}
