//! Rendering a [`Snapshot`] as Prometheus metric families.
//!
//! Every metric name and label of the exporter is written in this file and
//! nowhere else; the README's metric contract lists them. Rendering is a
//! pure function of the snapshot: a fresh registry per scrape, so a server
//! removed from the config or a file that stopped parsing leaves no stale
//! series behind.
//!
//! Conventions: base units, points in time end in `_timestamp_seconds`,
//! strings only in `_info` series, and states as label values with a fixed
//! set of values.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::collect::{FileReading, Snapshot};
use crate::connector::local_state::LastErrorMeaning;
use crate::definitions;
use crate::probe::revocation::CertStatus;
use crate::probe::{ProbeReport, Step};

type Labels = Vec<(&'static str, String)>;
type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;

/// The two text formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// Picks the format from an `Accept` header: OpenMetrics when the
    /// scraper lists it, the classic format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Collects families by name while rendering, then registers them in a
/// fixed order.
struct Families {
    registry: Registry,
}

impl Families {
    fn gauge(&mut self, name: &'static str, help: &'static str) -> GaugeFamily {
        let family = GaugeFamily::default();
        self.registry.register(name, help, family.clone());
        family
    }
}

fn set(family: &GaugeFamily, labels: Labels, value: f64) {
    family.get_or_create(&labels).set(value);
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The build's version and source revision.
pub fn build_labels() -> Labels {
    vec![
        ("version", crate::VERSION.to_string()),
        (
            "revision",
            option_env!("TETRA_EXPORTER_REVISION")
                .unwrap_or("unknown")
                .to_string(),
        ),
    ]
}

/// Renders a snapshot into a fresh registry.
pub fn render(snapshot: &Snapshot) -> Registry {
    let mut f = Families {
        registry: Registry::default(),
    };

    let build_info = f.gauge(
        "tetra_exporter_build_info",
        "Build of the exporter, always 1",
    );
    set(&build_info, build_labels(), 1.0);

    render_probes(&mut f, &snapshot.reports);
    render_proxies(&mut f, snapshot);
    render_revocation(&mut f, &snapshot.reports);
    render_connector(&mut f, snapshot);
    f.registry
}

/// Renders only the probes of a snapshot (and their proxies): what
/// `/probe` answers, with no connector or exporter state.
pub fn render_probe_only(snapshot: &Snapshot) -> Registry {
    let mut f = Families {
        registry: Registry::default(),
    };
    render_probes(&mut f, &snapshot.reports);
    render_proxies(&mut f, snapshot);
    f.registry
}

/// The state of the exporter's own configuration, added to a rendered
/// registry.
pub fn add_reload_state(registry: &mut Registry, last_ok: bool, last_success: SystemTime) {
    let mut f = Families {
        registry: std::mem::take(registry),
    };
    let successful = f.gauge(
        "tetra_exporter_config_last_reload_successful",
        "Whether the last configuration reload succeeded",
    );
    let at = f.gauge(
        "tetra_exporter_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully",
    );
    set(&successful, Vec::new(), if last_ok { 1.0 } else { 0.0 });
    set(&at, Vec::new(), seconds_since_epoch(last_success));
    *registry = f.registry;
}

fn render_probes(f: &mut Families, reports: &[ProbeReport]) {
    let success = f.gauge(
        "tetra_probe_success",
        "Whether every step of the update path passed",
    );
    let duration = f.gauge(
        "tetra_probe_duration_seconds",
        "Whole probe, from its start to the outcome of its last step",
    );
    let started = f.gauge(
        "tetra_probe_started_timestamp_seconds",
        "When the reported probe started; older than the scrape when a recent result was reused",
    );
    let step_duration = f.gauge(
        "tetra_probe_step_duration_seconds",
        "Duration of each step that ran, from its first network operation to its outcome",
    );
    let failed_step = f.gauge(
        "tetra_probe_failed_step",
        "1 on the first failing step, 0 on every other step",
    );
    let failure_info = f.gauge(
        "tetra_probe_failure_info",
        "The failing step's reason, from a fixed set; 1 when present",
    );
    let dns_addresses = f.gauge(
        "tetra_dns_addresses",
        "Addresses the update server's name resolved to",
    );
    let tls_success = f.gauge(
        "tetra_tls_handshake_success",
        "Whether the TLS handshake completed with a validated chain",
    );
    let not_after = f.gauge(
        "tetra_tls_cert_not_after_timestamp_seconds",
        "Expiry of each presented certificate, position 0 being the leaf",
    );
    let tls_info = f.gauge(
        "tetra_tls_info",
        "Negotiated TLS version and cipher and the leaf's issuer; version and cipher are empty when the handshake failed",
    );
    let http_status = f.gauge(
        "tetra_download_http_status_code",
        "HTTP status of the download's response",
    );
    let body_bytes = f.gauge(
        "tetra_download_body_bytes",
        "Body bytes read by the download step",
    );

    for report in reports {
        let base = || -> Labels {
            vec![
                ("server", report.server.clone()),
                ("route", report.route.as_str().to_string()),
            ]
        };
        let with = |extra: &[(&'static str, &str)]| -> Labels {
            let mut labels = base();
            labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            labels
        };

        set(&success, base(), if report.success() { 1.0 } else { 0.0 });
        set(&duration, base(), report.duration.as_secs_f64());
        set(&started, base(), seconds_since_epoch(report.started_at));

        for timing in &report.steps {
            set(
                &step_duration,
                with(&[("step", timing.step.as_str())]),
                timing.duration.as_secs_f64(),
            );
        }

        let failing = report.failure.as_ref().map(|failure| failure.step);
        for step in Step::ALL {
            let value = if failing == Some(step) { 1.0 } else { 0.0 };
            set(&failed_step, with(&[("step", step.as_str())]), value);
        }
        if let Some(failure) = &report.failure {
            set(
                &failure_info,
                with(&[("step", failure.step.as_str()), ("reason", failure.reason)]),
                1.0,
            );
        }

        if let Some(count) = report.dns_addresses {
            set(
                &dns_addresses,
                vec![("server", report.server.clone())],
                count as f64,
            );
        }

        if let Some(tls) = &report.tls {
            set(
                &tls_success,
                base(),
                if tls.handshake_ok { 1.0 } else { 0.0 },
            );
            for (position, cert) in tls.chain.iter().enumerate() {
                set(
                    &not_after,
                    with(&[("position", &position.to_string())]),
                    cert.not_after as f64,
                );
            }
            if let Some(leaf) = tls.chain.first() {
                set(
                    &tls_info,
                    with(&[
                        ("version", &tls.version),
                        ("cipher", &tls.cipher),
                        ("leaf_issuer", &leaf.issuer),
                    ]),
                    1.0,
                );
            }
        }

        if let Some(download) = &report.download {
            if let Some(status) = download.status {
                set(&http_status, base(), f64::from(status));
            }
            set(&body_bytes, base(), download.bytes as f64);
        }
    }
}

/// The path of a file that was (or failed to be) read, and whether it was.
fn file_outcome<T>(reading: &FileReading<T>) -> Option<(String, bool)> {
    match reading {
        FileReading::Absent => None,
        FileReading::Read { path, .. } => Some((path.display().to_string(), true)),
        FileReading::Failed { path, .. } => Some((path.display().to_string(), false)),
    }
}

fn render_proxies(f: &mut Families, snapshot: &Snapshot) {
    let connect_success = f.gauge(
        "tetra_proxy_connect_success",
        "Whether TCP to the proxy was opened",
    );
    let status = f.gauge(
        "tetra_proxy_connect_status_code",
        "HTTP status of the proxy's answer to CONNECT",
    );
    let error_code = f.gauge(
        "tetra_proxy_error_code",
        "The connector's error code for what the probe saw through the proxy; 0 when none",
    );
    let info = f.gauge(
        "tetra_proxy_info",
        "The proxy in use, where its setting came from and the authentication sent; 1",
    );

    for proxy in &snapshot.plan.proxies {
        set(
            &info,
            vec![
                ("proxy", proxy.label()),
                ("source", proxy.source.as_str().to_string()),
                ("auth", proxy.auth().to_string()),
            ],
            1.0,
        );
    }
    for report in &snapshot.reports {
        let Some(observation) = &report.proxy else {
            continue;
        };
        let labels = || {
            vec![
                ("server", report.server.clone()),
                ("proxy", observation.proxy.clone()),
            ]
        };
        set(
            &connect_success,
            labels(),
            if observation.connect_ok { 1.0 } else { 0.0 },
        );
        if let Some(code) = observation.status {
            set(&status, labels(), f64::from(code));
        }
        set(&error_code, labels(), f64::from(observation.connector_code));
    }
}

/// The per-URL series: one URL can serve answers for several certificates
/// of a chain; it answered only if it answered for all of them, the answer
/// relied on expires with the first of them, and its last success is the
/// latest.
fn render_revocation_urls(
    fetch_success: &GaugeFamily,
    valid_until: &GaugeFamily,
    last_fetch: &GaugeFamily,
    report: &ProbeReport,
    observation: &crate::probe::revocation::RevocationObservation,
) {
    let mut urls: Vec<(crate::probe::revocation::Method, &str)> = observation
        .checks
        .iter()
        .map(|check| (check.method, check.url.as_str()))
        .collect();
    urls.sort();
    urls.dedup();
    for (method, url) in urls {
        let checks = || {
            observation
                .checks
                .iter()
                .filter(move |c| c.method == method && c.url == url)
        };
        let labels = || -> Labels {
            vec![
                ("server", report.server.clone()),
                ("route", report.route.as_str().to_string()),
                ("method", method.as_str().to_string()),
                ("url", url.to_string()),
            ]
        };
        let answered = checks().all(|c| c.fetch_ok);
        set(fetch_success, labels(), if answered { 1.0 } else { 0.0 });
        if let Some(until) = checks().filter_map(|c| c.valid_until).min() {
            set(valid_until, labels(), seconds_since_epoch(until));
        }
        if let Some(at) = checks().filter_map(|c| c.last_fetch_success).max() {
            set(last_fetch, labels(), seconds_since_epoch(at));
        }
    }
}

fn render_revocation(f: &mut Families, reports: &[ProbeReport]) {
    let success = f.gauge(
        "tetra_revocation_check_success",
        "Whether a verified revocation answer was obtained from the URL for the certificate at position",
    );
    let status = f.gauge(
        "tetra_revocation_status",
        "1 on the revocation status the answer states, 0 on the others; absent without an answer",
    );
    let next_update = f.gauge(
        "tetra_revocation_next_update_timestamp_seconds",
        "When the revocation answer expires (its nextUpdate)",
    );
    let fetch_success = f.gauge(
        "tetra_revocation_fetch_success",
        "Whether the URL answered when last asked; it is asked on every probe once the cached answer is older than revocation.recheck_interval",
    );
    let valid_until = f.gauge(
        "tetra_revocation_cache_valid_until_timestamp_seconds",
        "When the revocation answer the exporter relies on from this URL expires; the update path fails then unless the URL answers again",
    );
    let last_fetch = f.gauge(
        "tetra_revocation_last_fetch_success_timestamp_seconds",
        "When the URL last gave a good answer",
    );
    let duration = f.gauge(
        "tetra_revocation_duration_seconds",
        "From the request's start to the verified answer or the failure; 0 when served from the cache",
    );

    for report in reports {
        let Some(observation) = &report.revocation else {
            continue;
        };
        render_revocation_urls(
            &fetch_success,
            &valid_until,
            &last_fetch,
            report,
            observation,
        );
        for check in &observation.checks {
            let labels = || -> Labels {
                vec![
                    ("server", report.server.clone()),
                    ("route", report.route.as_str().to_string()),
                    ("method", check.method.as_str().to_string()),
                    ("url", check.url.clone()),
                    ("position", check.position.to_string()),
                ]
            };
            let ok = check.outcome.is_ok();
            set(&success, labels(), if ok { 1.0 } else { 0.0 });
            set(&duration, labels(), check.duration.as_secs_f64());
            if let Some(at) = check.next_update {
                set(&next_update, labels(), seconds_since_epoch(at));
            }
            if let Ok(answer) = &check.outcome {
                for candidate in CertStatus::ALL {
                    let mut with_status = labels();
                    with_status.push(("status", candidate.as_str().to_string()));
                    let value = if candidate == answer.status { 1.0 } else { 0.0 };
                    set(&status, with_status, value);
                }
            }
        }
    }
}

fn render_connector(f: &mut Families, snapshot: &Snapshot) {
    let read_success = f.gauge(
        "tetra_connector_state_read_success",
        "Whether the connector's file (local.xml, policy.xml) was read and parsed",
    );
    let definitions_enabled = f.gauge(
        "tetra_definitions_enabled",
        "Whether TETRA and its updater are enabled in the connector's policy",
    );
    let mtime = f.gauge(
        "tetra_connector_state_file_mtime_timestamp_seconds",
        "Modification time of the connector's state file, set only after a successful parse",
    );
    let last_error_code = f.gauge(
        "tetra_connector_last_error_code",
        "The connector's last TETRA update error, raw unsigned value; 0 when none",
    );
    let last_error_info = f.gauge(
        "tetra_connector_last_error_info",
        "The connector's last TETRA update error and its meaning; 1 when present",
    );
    let held = f.gauge(
        "tetra_definitions_version",
        "The TETRA definition version the connector holds",
    );
    let latest = f.gauge(
        "tetra_definitions_latest_version",
        "The newest published TETRA definition version",
    );
    let lag = f.gauge(
        "tetra_definitions_lag_versions",
        "Published versions the connector is behind: newest minus held",
    );
    let latest_fetch = f.gauge(
        "tetra_definitions_latest_fetch_success",
        "Whether the last fetch of the published-versions document succeeded",
    );
    let latest_fetched_at = f.gauge(
        "tetra_definitions_latest_fetch_timestamp_seconds",
        "When the newest published version was last fetched successfully",
    );

    let mut held_version = None;
    for (path, ok) in [
        file_outcome(&snapshot.connector),
        file_outcome(&snapshot.policy),
    ]
    .into_iter()
    .flatten()
    {
        set(
            &read_success,
            vec![("file", path)],
            if ok { 1.0 } else { 0.0 },
        );
    }
    if let Some(enabled) = snapshot.plan.definitions_enabled {
        set(
            &definitions_enabled,
            Vec::new(),
            if enabled { 1.0 } else { 0.0 },
        );
    }
    match &snapshot.connector {
        FileReading::Absent | FileReading::Failed { .. } => {}
        FileReading::Read {
            path,
            value: state,
            modified,
        } => {
            let file = || vec![("file", path.display().to_string())];
            if let Some(modified) = modified {
                set(&mtime, file(), seconds_since_epoch(*modified));
            }

            let code = state.last_error;
            set(&last_error_code, Vec::new(), f64::from(code));
            set(
                &last_error_info,
                vec![
                    ("code", code.to_string()),
                    (
                        "meaning",
                        LastErrorMeaning::from_code(code).as_str().to_string(),
                    ),
                ],
                1.0,
            );
            if let Some(version) = state.definitions_version {
                set(&held, Vec::new(), version as f64);
                held_version = Some(version);
            }
        }
    }

    if let Some(versions) = &snapshot.versions {
        set(
            &latest_fetch,
            Vec::new(),
            if versions.last_fetch_ok { 1.0 } else { 0.0 },
        );
        if let Some(at) = versions.fetched_at {
            set(&latest_fetched_at, Vec::new(), seconds_since_epoch(at));
        }
        if let Some(newest) = versions.latest {
            set(&latest, Vec::new(), newest as f64);
            if let Some(held_version) = held_version {
                set(
                    &lag,
                    Vec::new(),
                    definitions::lag(newest, held_version) as f64,
                );
            }
        }
    }
}

/// Encodes a registry in the chosen text format.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?
        }
    }
    Ok(out)
}
