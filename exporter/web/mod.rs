//! The HTTP side: `/metrics` and a landing page at `/`.
//!
//! `/metrics` gathers a snapshot (see [`crate::collect`]) under the scrape's
//! own deadline: Prometheus sends its scrape timeout in
//! `X-Prometheus-Scrape-Timeout-Seconds`, and the probes are given that less
//! [`SCRAPE_TIMEOUT_OFFSET`] so that the answer arrives before Prometheus
//! gives up, even when every hop hangs. The response format follows the
//! `Accept` header (OpenMetrics or the classic text format).
//!
//! Requests with a body are not read: no route takes one, and the header
//! size is bounded by hyper. Serving stops when the returned future is
//! dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::collect::Exporter;
use crate::metrics::{self, Format};

/// Taken off the scrape timeout Prometheus announces, to leave time for
/// rendering and sending the answer.
pub const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// A slow client gets this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors must not end the server.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, exporter.clone(), peer));
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    exporter: Arc<Exporter>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tracing::debug!(%peer, method = %request.method(), path = request.uri().path(), "request");
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => metrics_response(&request, &exporter).await,
        (&Method::GET | &Method::HEAD, "/") => landing_page(),
        (_, "/metrics" | "/") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// The deadline of one scrape: the configured probe timeout, shortened to
/// the scraper's own timeout less the offset when it announces one.
pub fn scrape_deadline(announced: Option<&str>, probe_timeout: Duration) -> Duration {
    let announced = announced
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)));
    match announced {
        Some(timeout) => {
            let usable = timeout.saturating_sub(SCRAPE_TIMEOUT_OFFSET);
            // A scrape timeout at or below the offset still gets a sliver
            // of time rather than none.
            usable.max(timeout / 2).min(probe_timeout)
        }
        None => probe_timeout,
    }
}

async fn metrics_response(
    request: &Request<Incoming>,
    exporter: &Exporter,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let announced = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok());
    let budget = scrape_deadline(announced, exporter.config().probe.timeout);
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));

    let snapshot = exporter.collect(Instant::now() + budget).await;
    let registry = metrics::render(&snapshot);
    match metrics::encode(&registry, format) {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, format.content_type())
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

fn landing_page() -> Response<Full<Bytes>> {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>tetra-exporter</title></head>\n\
         <body>\n<h1>tetra-exporter</h1>\n<p>Version {}.</p>\n\
         <p>Why this machine can or cannot update its TETRA definitions, step by step.</p>\n\
         <ul><li><a href=\"/metrics\">Metrics</a></li></ul>\n</body>\n</html>\n",
        crate::VERSION
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "\n"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_deadline_follows_the_announced_timeout() {
        let probe = Duration::from_secs(10);
        assert_eq!(scrape_deadline(None, probe), probe);
        assert_eq!(
            scrape_deadline(Some("4"), probe),
            Duration::from_millis(3500)
        );
        assert_eq!(scrape_deadline(Some("30"), probe), probe);
        assert_eq!(
            scrape_deadline(Some("0.6"), probe),
            Duration::from_millis(300)
        );
        assert_eq!(scrape_deadline(Some("nonsense"), probe), probe);
        assert_eq!(scrape_deadline(Some("-1"), probe), probe);
        assert_eq!(scrape_deadline(Some("NaN"), probe), probe);
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
