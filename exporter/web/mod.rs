//! The HTTP side: `/metrics`, `/probe`, the status page, debug views,
//! reload and health endpoints, behind optional TLS and basic auth.
//!
//! Routes:
//!
//! - `GET /metrics`: a snapshot of the configured targets under the scrape's
//!   own deadline. Prometheus sends its scrape timeout in
//!   `X-Prometheus-Scrape-Timeout-Seconds`; probes get that less
//!   [`SCRAPE_TIMEOUT_OFFSET`], so the answer arrives before Prometheus gives
//!   up even when every hop hangs. OpenMetrics or the classic text format,
//!   following `Accept`.
//! - `GET /probe?target=HOST[:PORT]&module=NAME[&debug=true]`: one fresh
//!   probe of an allowed target (the multi-target pattern); 403 for a target
//!   outside `allowed_targets`, 400 for an unknown module or a missing or
//!   malformed target, 503 when `probe.max_concurrent` probes are running
//!   until the deadline.
//! - `GET /`: the status page; `GET /debug?id=N`: one recorded probe's
//!   debug view.
//! - `POST /-/reload`: re-read the config (SIGHUP does the same);
//!   `GET /-/healthy`, `GET /-/ready`.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections are served at once (more
//! wait in the kernel's queue), a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit hyper's buffer, and request bodies are
//! never read.

pub mod status;
pub mod webconfig;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::collect::{Exporter, Shared};
use crate::config;
use crate::metrics::{self, Format};
use webconfig::WebConfig;

/// Taken off the scrape timeout Prometheus announces, to leave time for
/// rendering and sending the answer.
pub const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// A slow client gets this long to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

/// The largest request head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Why a reload failed; the previous configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Setup(#[from] crate::collect::SetupError),
}

struct ReloadState {
    last_ok: bool,
    last_success: SystemTime,
}

/// Everything the HTTP side serves from.
pub struct App {
    exporter: RwLock<Arc<Exporter>>,
    config_path: Option<PathBuf>,
    reload: Mutex<ReloadState>,
    web: WebConfig,
    probe_slots: Semaphore,
    /// Serialises reloads so two cannot interleave.
    reloading: tokio::sync::Mutex<()>,
}

impl App {
    /// Builds the app around a first, already loaded configuration.
    pub fn new(exporter: Exporter, config_path: Option<PathBuf>, web: WebConfig) -> Self {
        let probe_slots = Semaphore::new(exporter.config().probe.max_concurrent);
        App {
            exporter: RwLock::new(Arc::new(exporter)),
            config_path,
            reload: Mutex::new(ReloadState {
                last_ok: true,
                last_success: SystemTime::now(),
            }),
            web,
            probe_slots,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The exporter of the current configuration.
    pub fn exporter(&self) -> Arc<Exporter> {
        match self.exporter.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file. A bad file is rejected and the current
    /// configuration keeps serving; either way the reload metrics say so.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let shared: Shared = self.exporter().shared().clone();
        let path = self.config_path.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Exporter, ReloadError> {
            let config = config::load(path.as_deref())?;
            Ok(Exporter::with_shared(config, shared)?)
        })
        .await
        .unwrap_or_else(|join| {
            Err(ReloadError::Config(config::ConfigError::Syntax(format!(
                "reload task failed: {join}"
            ))))
        });

        let outcome = match result {
            Ok(exporter) => {
                match self.exporter.write() {
                    Ok(mut guard) => *guard = Arc::new(exporter),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(exporter),
                }
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "configuration reload failed; the previous one keeps serving");
                Err(error)
            }
        };
        if let Ok(mut state) = self.reload.lock() {
            state.last_ok = outcome.is_ok();
            if outcome.is_ok() {
                state.last_success = SystemTime::now();
            }
        }
        outcome
    }

    fn reload_state(&self) -> (bool, SystemTime) {
        match self.reload.lock() {
            Ok(state) => (state.last_ok, state.last_success),
            Err(_) => (false, SystemTime::UNIX_EPOCH),
        }
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors must not end the server.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match app.web.tls.clone() {
                None => serve_connection(stream, peer, app).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, peer, app).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, app: Arc<App>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(request, app.clone(), peer));
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

async fn handle(
    request: Request<Incoming>,
    app: Arc<App>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    tracing::debug!(%peer, method = %request.method(), path = request.uri().path(), "request");

    if app.web.requires_auth() {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let authorized = app.web.authorized(header.as_deref()).await;
        if !authorized {
            let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n".to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"tetra-exporter\""),
            );
            return Ok(response);
        }
    }

    let get = matches!(request.method(), &Method::GET | &Method::HEAD);
    let response = match (request.uri().path(), get) {
        ("/metrics", true) => metrics_response(&request, &app).await,
        ("/probe", true) => probe_response(&request, &app).await,
        ("/", true) => status_page(&app).await,
        ("/debug", true) => debug_response(&request, &app),
        ("/-/healthy", true) | ("/-/ready", true) => text(StatusCode::OK, "OK\n".to_string()),
        ("/-/reload", _) if request.method() == Method::POST => match app.reload().await {
            Ok(()) => text(StatusCode::OK, "configuration reloaded\n".to_string()),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed: {error}\n"),
            ),
        },
        ("/-/reload", _) => not_allowed("POST"),
        ("/metrics" | "/probe" | "/" | "/debug" | "/-/healthy" | "/-/ready", _) => {
            not_allowed("GET, HEAD")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_string()),
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

fn request_deadline(request: &Request<Incoming>, exporter: &Exporter) -> Instant {
    let announced = request
        .headers()
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok());
    Instant::now() + scrape_deadline(announced, exporter.config().probe.timeout)
}

fn negotiated(request: &Request<Incoming>) -> Format {
    Format::negotiate(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}

fn encoded(registry: &prometheus_client::registry::Registry, format: Format) -> Response<Body> {
    match metrics::encode(registry, format) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding failed\n".to_string(),
        ),
    }
}

async fn metrics_response(request: &Request<Incoming>, app: &App) -> Response<Body> {
    let exporter = app.exporter();
    let deadline = request_deadline(request, &exporter);
    let snapshot = exporter.collect(deadline).await;
    let mut registry = metrics::render(&snapshot);
    let (last_ok, last_success) = app.reload_state();
    metrics::add_reload_state(&mut registry, last_ok, last_success);
    encoded(&registry, negotiated(request))
}

/// The query's parameters, decoded.
fn query_params(request: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Splits `HOST[:PORT]` (`[IPv6]:PORT` for IPv6) with 443 as the default;
/// the host must be a valid name or address, and is normalised (lower case,
/// no trailing dot) so that one target keeps one set of series.
pub fn parse_target(target: &str) -> Option<(String, u16)> {
    if target.contains(['/', '@', '?', '#', ' ', '\\']) {
        return None;
    }
    let (host, port) = config::parse_host_port(target)?;
    Some((host, port.unwrap_or(443)))
}

async fn probe_response(request: &Request<Incoming>, app: &App) -> Response<Body> {
    let params = query_params(request);
    let Some(target) = param(&params, "target") else {
        return text(
            StatusCode::BAD_REQUEST,
            "target parameter is missing\n".to_string(),
        );
    };
    let Some((host, port)) = parse_target(target) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("target {:?} is not HOST[:PORT]\n", status::escape(target)),
        );
    };
    let module = param(&params, "module").unwrap_or("tetra");
    let debug = param(&params, "debug") == Some("true");

    let exporter = app.exporter();
    let config = exporter.config();
    if !config.modules.contains_key(module) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown module {module:?}\n"),
        );
    }
    if !config::target_allowed(&config.allowed_targets, &host, port) {
        tracing::info!(%host, port, "refused /probe of a target outside allowed_targets");
        return text(
            StatusCode::FORBIDDEN,
            format!("target {host}:{port} is not in allowed_targets\n"),
        );
    }

    let deadline = request_deadline(request, &exporter);
    let budget = deadline.saturating_duration_since(Instant::now());
    let acquired = tokio::time::timeout_at(deadline, app.probe_slots.acquire()).await;
    // A probe left with less than half its time after waiting for a slot
    // would fail for want of time, and name a step that is not at fault.
    let enough_left = deadline.saturating_duration_since(Instant::now()) >= budget / 2;
    let _permit = match acquired {
        Ok(Ok(permit)) if enough_left => permit,
        _ => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many probes running; try again\n".to_string(),
            )
        }
    };
    match exporter
        .probe_on_demand(&host, port, module, deadline)
        .await
    {
        Ok((report, plan, _id)) if debug => {
            let settings = crate::debug::settings_yaml(&DebugSettings {
                module: config.modules.get(module),
                proxy: &config.proxy,
                probe: &config.probe,
            });
            text(
                StatusCode::OK,
                crate::debug::page(&report, &plan, &settings),
            )
        }
        Ok((report, plan, _id)) => {
            let snapshot = crate::collect::Snapshot {
                reports: vec![report],
                connector: crate::collect::FileReading::Absent,
                policy: crate::collect::FileReading::Absent,
                plan,
                versions: None,
            };
            encoded(&metrics::render_probe_only(&snapshot), negotiated(request))
        }
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// The settings a probe ran with, as the debug view shows them.
#[derive(serde::Serialize)]
struct DebugSettings<'a> {
    module: Option<&'a config::ModuleConfig>,
    proxy: &'a config::ProxyConfig,
    probe: &'a config::ProbeConfig,
}

fn debug_response(request: &Request<Incoming>, app: &App) -> Response<Body> {
    let params = query_params(request);
    let Some(id) = param(&params, "id").and_then(|id| id.parse::<u64>().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "id parameter is missing or not a number\n".to_string(),
        );
    };
    let exporter = app.exporter();
    let Some(entry) = exporter.shared().history.get(id) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("probe {id} is not (or no longer) in the history\n"),
        );
    };
    let config = exporter.config();
    let module = match &entry.origin {
        crate::history::Origin::OnDemand { module } => config.modules.get(module),
        crate::history::Origin::Scrape => None,
    };
    let settings = crate::debug::settings_yaml(&DebugSettings {
        module,
        proxy: &config.proxy,
        probe: &config.probe,
    });
    let plan = crate::targets::Plan::default();
    text(
        StatusCode::OK,
        crate::debug::page(&entry.report, &plan, &settings),
    )
}

async fn status_page(app: &App) -> Response<Body> {
    let exporter = app.exporter();
    let deadline = Instant::now() + exporter.config().probe.timeout;
    let snapshot = exporter.collect(deadline).await;
    let history = exporter.shared().history.entries();
    let (reload_ok, last_reload) = app.reload_state();
    let page = status::PageContext {
        version: crate::VERSION,
        revision: option_env!("TETRA_EXPORTER_REVISION").unwrap_or("unknown"),
        reload_ok,
        last_reload,
        history: &history,
    };
    let mut response = Response::new(Full::new(Bytes::from(status::render(&snapshot, &page))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed\n".to_string(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
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
        assert_eq!(scrape_deadline(Some("1e308"), probe), probe);
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

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("a.example"), Some(("a.example".into(), 443)));
        assert_eq!(
            parse_target("a.example:8443"),
            Some(("a.example".into(), 8443))
        );
        assert_eq!(parse_target("[::1]:443"), Some(("::1".into(), 443)));
        for bad in [
            "",
            "a.example:99999",
            "http://a.example",
            "u@a.example",
            "a b",
            "a.example/x",
        ] {
            assert_eq!(parse_target(bad), None, "{bad:?}");
        }
    }
}
