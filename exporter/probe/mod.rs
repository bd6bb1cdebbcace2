//! The probe chain: the connector's update path, measured one step at a time.
//!
//! A probe runs the steps of one route in order under one deadline and stops
//! at the first that fails. The result is a plain [`ProbeReport`]: which steps
//! ran, how long each took, the first failure and its bounded reason, and what
//! was observed on the way (addresses, certificates, HTTP status). Rendering
//! it as metrics is [`crate::metrics`]'s job, never a step's.
//!
//! Steps, in the order the connector meets them: `dns`, `connect`,
//! `proxy_connect`, `proxy_auth`, `tls`, `revocation`, `download`. The
//! direct route skips the two proxy steps; the proxy route skips `dns` and
//! `connect`, since the proxy resolves and connects to the update server
//! itself.

pub mod connect;
pub mod dns;
pub mod download;
pub mod proxy;
pub mod revocation;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::Instant as TokioInstant;
use tracing::Instrument;

use crate::config::{Config, RevocationMode, ServerConfig};

/// One step of the update path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Dns,
    Connect,
    ProxyConnect,
    ProxyAuth,
    Tls,
    Revocation,
    Download,
}

impl Step {
    /// Every step, in chain order; metrics list all of them on every probe.
    pub const ALL: [Step; 7] = [
        Step::Dns,
        Step::Connect,
        Step::ProxyConnect,
        Step::ProxyAuth,
        Step::Tls,
        Step::Revocation,
        Step::Download,
    ];

    /// The step's label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::Connect => "connect",
            Step::ProxyConnect => "proxy_connect",
            Step::ProxyAuth => "proxy_auth",
            Step::Tls => "tls",
            Step::Revocation => "revocation",
            Step::Download => "download",
        }
    }
}

/// The way the probe reaches the update server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Straight from this machine to the update server.
    Direct,
    /// Through an HTTP proxy's `CONNECT` tunnel.
    Proxy,
}

impl Route {
    /// The route's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Proxy => "proxy",
        }
    }
}

/// A route with what it needs: the proxy, for the proxy route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSpec {
    Direct,
    Proxy(proxy::ProxySpec),
}

impl RouteSpec {
    /// The route's kind.
    pub fn route(&self) -> Route {
        match self {
            RouteSpec::Direct => Route::Direct,
            RouteSpec::Proxy(_) => Route::Proxy,
        }
    }
}

/// The connector's own error codes for a failure on the proxy route
/// (`lasterror` in `local.xml`), so that the exporter's observation can be
/// held against the connector's.
pub mod connector_codes {
    /// Could not connect to the proxy (-2103 as signed).
    pub const PROXY_UNREACHABLE: u32 = 4294965193;
    /// Could not authenticate to the proxy (-2100 as signed).
    pub const PROXY_AUTH_FAILED: u32 = 4294965196;
    /// Connected to the proxy but the download failed (-2109 as signed).
    pub const PROXY_DOWNLOAD_FAILED: u32 = 4294965187;
}

/// What the proxy steps saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyObservation {
    /// The proxy's `HOST:PORT`.
    pub proxy: String,
    /// Whether TCP to the proxy was opened.
    pub connect_ok: bool,
    /// The status of the proxy's answer to `CONNECT`, when one arrived.
    pub status: Option<u16>,
    /// The code the connector would record for what was seen; 0 when the
    /// whole route worked.
    pub connector_code: u32,
}

/// The first step that failed, why (a fixed snake_case reason, safe as a
/// label) and a human-readable detail for logs and debug pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub reason: &'static str,
    pub detail: String,
}

/// A step that ran, and how long it took: from the moment the step began
/// its first network operation to the moment its outcome was known.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    pub step: Step,
    pub duration: Duration,
}

/// One presented certificate, as much of it as metrics and pages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's common name, or the whole subject when there is none.
    pub subject: String,
    /// The issuer's common name, or the whole issuer when there is none.
    pub issuer: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// What the tls step saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsObservation {
    /// Whether the handshake completed with a validated chain.
    pub handshake_ok: bool,
    /// Negotiated protocol, e.g. `TLS 1.3`; empty when the handshake failed.
    pub version: String,
    /// Negotiated cipher suite; empty when the handshake failed.
    pub cipher: String,
    /// The chain as the server presented it, leaf first, kept even when
    /// validation failed.
    pub chain: Vec<CertSummary>,
    /// The same chain in DER, for the revocation step.
    pub chain_der: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// What the download step saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DownloadObservation {
    /// HTTP status of the response, when one arrived.
    pub status: Option<u16>,
    /// Body bytes read (up to the cap).
    pub bytes: u64,
}

/// The plain result of one probe of one server over one route.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub server: String,
    pub route: Route,
    /// When the probe started, wall clock.
    pub started_at: SystemTime,
    /// The whole probe, from its start to its last step's outcome.
    pub duration: Duration,
    pub steps: Vec<StepTiming>,
    pub failure: Option<Failure>,
    /// Number of addresses the name resolved to, when the dns step ran.
    pub dns_addresses: Option<usize>,
    pub tls: Option<TlsObservation>,
    /// What the revocation step saw, when it ran.
    pub revocation: Option<revocation::RevocationObservation>,
    pub download: Option<DownloadObservation>,
    /// What the proxy steps saw, on the proxy route.
    pub proxy: Option<ProxyObservation>,
}

impl ProbeReport {
    /// Whether every step of the route passed.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }
}

/// What every probe shares: the configuration and what was built from it
/// once at load (the trust store, the revocation step's client and cache).
pub struct ProbeContext {
    pub config: Arc<Config>,
    pub tls: tls::TlsContext,
    pub revocation: revocation::RevocationContext,
}

/// Why the shared parts of the probes could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("revocation: cannot build the HTTP client: {0}")]
    RevocationClient(#[from] reqwest::Error),
}

impl ProbeContext {
    /// Builds the shared parts around a revocation cache that may come from
    /// an earlier configuration; fails when a configured CA file is
    /// unusable.
    pub fn new(
        config: Arc<Config>,
        revocation_cache: Arc<revocation::cache::RevocationCache>,
    ) -> Result<Self, ProbeSetupError> {
        let tls = tls::TlsContext::new(&config.tls)?;
        let revocation = revocation::RevocationContext::new(
            config.revocation.clone(),
            revocation_cache,
            tls.configured_cas(),
        )?;
        Ok(ProbeContext {
            config,
            tls,
            revocation,
        })
    }
}

/// Runs the chain for `server` over `route`, stopping at `deadline` at the
/// latest.
pub async fn probe(
    ctx: &ProbeContext,
    server: &ServerConfig,
    route: &RouteSpec,
    deadline: TokioInstant,
) -> ProbeReport {
    let span = tracing::info_span!(
        "probe",
        server = %server.host,
        route = route.route().as_str()
    );
    run(ctx, server, route, deadline).instrument(span).await
}

async fn run(
    ctx: &ProbeContext,
    server: &ServerConfig,
    route: &RouteSpec,
    deadline: TokioInstant,
) -> ProbeReport {
    let started = Instant::now();
    let mut report = ProbeReport {
        server: server.host.clone(),
        route: route.route(),
        started_at: SystemTime::now(),
        duration: Duration::ZERO,
        steps: Vec::new(),
        failure: None,
        dns_addresses: None,
        tls: None,
        revocation: None,
        download: None,
        proxy: None,
    };
    let mut run = ChainRun {
        report: &mut report,
    };

    match route {
        RouteSpec::Direct => {
            if let Some(tcp) = run.direct_socket(ctx, server, deadline).await {
                let client = &ctx.revocation.direct_client;
                run.through_tls(ctx, server, tcp, client, deadline).await;
            }
        }
        RouteSpec::Proxy(proxy) => {
            if let Some(tunnel) = run.proxy_tunnel(ctx, server, proxy, deadline).await {
                match proxy::http_client(Some(proxy), ctx.tls.configured_cas()) {
                    Ok(client) => {
                        run.through_tls(ctx, server, tunnel, &client, deadline)
                            .await
                    }
                    Err(error) => run.fail(
                        Step::Revocation,
                        "responder_unreachable",
                        format!("cannot build the HTTP client through the proxy: {error}"),
                    ),
                }
            }
            let code = proxy_connector_code(run.report.failure.as_ref());
            if let Some(observation) = run.report.proxy.as_mut() {
                observation.connector_code = code;
            }
        }
    }

    finish(report, started)
}

/// The connector's code for the first failure on the proxy route.
fn proxy_connector_code(failure: Option<&Failure>) -> u32 {
    match failure.map(|f| f.step) {
        None => 0,
        Some(Step::ProxyConnect) => connector_codes::PROXY_UNREACHABLE,
        Some(Step::ProxyAuth) => connector_codes::PROXY_AUTH_FAILED,
        // Past the proxy's answer, whatever fails, the connector records a
        // download through the proxy that did not complete.
        Some(_) => connector_codes::PROXY_DOWNLOAD_FAILED,
    }
}

fn finish(mut report: ProbeReport, started: Instant) -> ProbeReport {
    report.duration = started.elapsed();
    match &report.failure {
        None => tracing::info!(
            duration_ms = report.duration.as_millis() as u64,
            "probe succeeded"
        ),
        // A failing update path is what the exporter measures, not an error
        // of the exporter itself: it is logged at info.
        Some(failure) => tracing::info!(
            step = failure.step.as_str(),
            reason = failure.reason,
            detail = %failure.detail,
            "probe failed"
        ),
    }
    report
}

/// Records steps into a report as they run.
struct ChainRun<'a> {
    report: &'a mut ProbeReport,
}

/// A step's error: its fixed reason and a human-readable detail.
pub trait StepError: std::fmt::Display {
    fn reason(&self) -> &'static str;
}

impl ChainRun<'_> {
    /// The direct route's first steps: resolve the update server and open
    /// TCP to it.
    async fn direct_socket(
        &mut self,
        ctx: &ProbeContext,
        server: &ServerConfig,
        deadline: TokioInstant,
    ) -> Option<tokio::net::TcpStream> {
        let addresses = self
            .step(
                Step::Dns,
                dns::resolve(&server.host, ctx.config.dns_server(), deadline),
            )
            .await?;
        self.report.dns_addresses = Some(addresses.len());

        self.step(
            Step::Connect,
            connect::connect(&addresses, server.port, deadline),
        )
        .await
    }

    /// The proxy route's first steps: reach the proxy, ask for a tunnel,
    /// judge the answer.
    async fn proxy_tunnel(
        &mut self,
        ctx: &ProbeContext,
        server: &ServerConfig,
        spec: &proxy::ProxySpec,
        deadline: TokioInstant,
    ) -> Option<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
        self.report.proxy = Some(ProxyObservation {
            proxy: spec.label(),
            connect_ok: false,
            status: None,
            connector_code: 0,
        });

        // proxy_connect covers the proxy's name, TCP, and the CONNECT
        // exchange up to the answer's head.
        let began = Instant::now();
        let reached = proxy::reach(spec, ctx.config.dns_server(), deadline).await;
        let tcp = match reached {
            Ok(tcp) => tcp,
            Err(error) => {
                self.record(Step::ProxyConnect, began.elapsed());
                self.fail(Step::ProxyConnect, error.reason(), error.to_string());
                return None;
            }
        };
        if let Some(observation) = self.report.proxy.as_mut() {
            observation.connect_ok = true;
        }
        let answer = proxy::request_tunnel(tcp, spec, &server.host, server.port, deadline).await;
        self.record(Step::ProxyConnect, began.elapsed());
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                self.fail(Step::ProxyConnect, error.reason(), error.to_string());
                return None;
            }
        };
        if let Some(observation) = self.report.proxy.as_mut() {
            observation.status = Some(answer.status);
        }

        let began = Instant::now();
        let auth = proxy::check_auth(&answer, spec);
        self.record(Step::ProxyAuth, began.elapsed());
        if let Err(error) = auth {
            self.fail(Step::ProxyAuth, error.reason(), error.to_string());
            return None;
        }

        match answer.tunnel {
            Some(tunnel) => Some(tunnel),
            None => {
                // The proxy answered, accepted us, and refused the tunnel:
                // for the connector that is a failed download.
                let error = download::DownloadError::TunnelRefused {
                    status: answer.status,
                };
                self.record(Step::Download, Duration::ZERO);
                self.fail(Step::Download, error.reason(), error.to_string());
                None
            }
        }
    }

    /// The steps every route shares once a byte stream to the update server
    /// exists: TLS, revocation, download. `client` fetches CRLs and OCSP
    /// answers over the same route.
    async fn through_tls<S>(
        &mut self,
        ctx: &ProbeContext,
        server: &ServerConfig,
        stream: S,
        client: &reqwest::Client,
        deadline: TokioInstant,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let began = Instant::now();
        let (result, observation) = ctx.tls.handshake(stream, &server.host, deadline).await;
        self.record(Step::Tls, began.elapsed());
        self.report.tls = Some(observation);
        let stream = match result {
            Ok(stream) => stream,
            Err(error) => {
                self.fail(Step::Tls, error.reason(), error.to_string());
                return;
            }
        };

        if server.revocation != RevocationMode::Off {
            let chain = self.report.tls.as_ref().map(|t| t.chain_der.clone());
            let began = Instant::now();
            let route = match &self.report.proxy {
                Some(proxy) => format!("proxy {}", proxy.proxy),
                None => "direct".to_string(),
            };
            let (result, observation) = revocation::check(
                &ctx.revocation,
                client,
                &route,
                chain.as_deref().unwrap_or_default(),
                ctx.tls.anchors(),
                deadline,
            )
            .await;
            self.record(Step::Revocation, began.elapsed());
            self.report.revocation = Some(observation);
            match result {
                Ok(()) => {}
                Err(error) if server.revocation == RevocationMode::Require => {
                    self.fail(Step::Revocation, error.reason(), error.to_string());
                    return;
                }
                // Report mode: measured and shown, never a failure.
                Err(error) => tracing::info!(
                    reason = error.reason(),
                    %error,
                    "revocation would fail; the server's mode is report"
                ),
            }
        }

        let began = Instant::now();
        let (result, observation) = download::download(
            stream,
            &server.host,
            server.port,
            &server.path,
            &server.valid_status_codes,
            ctx.config.probe.download_max_bytes,
            deadline,
        )
        .await;
        self.record(Step::Download, began.elapsed());
        self.report.download = Some(observation);
        if let Err(error) = result {
            self.fail(Step::Download, error.reason(), error.to_string());
        }
    }

    /// Runs one step, records its duration, and on failure records the
    /// failure and returns `None`.
    async fn step<T, E: StepError>(
        &mut self,
        step: Step,
        future: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let began = Instant::now();
        let result = future.await;
        self.record(step, began.elapsed());
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail(step, error.reason(), error.to_string());
                None
            }
        }
    }

    fn record(&mut self, step: Step, duration: Duration) {
        tracing::debug!(
            step = step.as_str(),
            duration_ms = duration.as_millis() as u64,
            "step done"
        );
        self.report.steps.push(StepTiming { step, duration });
    }

    fn fail(&mut self, step: Step, reason: &'static str, detail: String) {
        self.report.failure = Some(Failure {
            step,
            reason,
            detail,
        });
    }
}
