//! The debug view of one probe: what each step did, the metrics the probe
//! produced, and the settings it ran with, secrets shown as `<secret>`.
//!
//! The step log is written from the [`ProbeReport`] itself, not from the
//! process's logs, so it is the same whether debug logging is on or off and
//! it can hold nothing the report does not (the report holds no secret).

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use crate::collect::{FileReading, Snapshot};
use crate::metrics::{self, Format};
use crate::probe::{ProbeReport, Step};
use crate::targets::Plan;

/// The step-by-step log of a probe, one line per step.
pub fn step_log(report: &ProbeReport) -> String {
    let mut out = String::new();
    let started = report
        .started_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(
        out,
        "probe server={} route={} started_at={started:.3}",
        report.server,
        report.route.as_str()
    );
    if let Some(proxy) = &report.proxy {
        let _ = writeln!(out, "proxy={}", proxy.proxy);
    }

    for timing in &report.steps {
        let failed = report
            .failure
            .as_ref()
            .filter(|failure| failure.step == timing.step);
        let outcome = match failed {
            Some(failure) => format!(
                "failed reason={} detail={:?}",
                failure.reason, failure.detail
            ),
            None => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "step={} duration_seconds={:.6} {outcome}{}",
            timing.step.as_str(),
            timing.duration.as_secs_f64(),
            observations(report, timing.step)
        );
    }

    let _ = writeln!(
        out,
        "result={} duration_seconds={:.6}",
        if report.success() {
            "success"
        } else {
            "failure"
        },
        report.duration.as_secs_f64()
    );
    out
}

/// What a step observed, as ` key=value` pairs.
fn observations(report: &ProbeReport, step: Step) -> String {
    let mut out = String::new();
    match step {
        Step::Dns => {
            if let Some(count) = report.dns_addresses {
                let _ = write!(out, " addresses={count}");
            }
        }
        Step::ProxyConnect => {
            if let Some(proxy) = &report.proxy {
                let _ = write!(out, " tcp_connected={}", proxy.connect_ok);
            }
        }
        Step::ProxyAuth => {
            if let Some(status) = report.proxy.as_ref().and_then(|p| p.status) {
                let _ = write!(out, " connect_status={status}");
            }
        }
        Step::Tls => {
            if let Some(tls) = &report.tls {
                if !tls.version.is_empty() {
                    let _ = write!(out, " version={:?} cipher={:?}", tls.version, tls.cipher);
                }
                for (position, cert) in tls.chain.iter().enumerate() {
                    let _ = write!(
                        out,
                        " cert[{position}]={{subject={:?} issuer={:?} not_after={}}}",
                        cert.subject, cert.issuer, cert.not_after
                    );
                }
            }
        }
        Step::Download => {
            if let Some(download) = &report.download {
                if let Some(status) = download.status {
                    let _ = write!(out, " status={status}");
                }
                let _ = write!(out, " bytes={}", download.bytes);
            }
        }
        Step::Connect | Step::Revocation => {}
    }
    out
}

/// The metrics this one probe produced, in the classic text format.
pub fn probe_metrics(report: &ProbeReport, plan: &Plan) -> String {
    let snapshot = Snapshot {
        reports: vec![report.clone()],
        connector: FileReading::Absent,
        policy: FileReading::Absent,
        plan: Plan {
            targets: Vec::new(),
            proxies: plan.proxies.clone(),
            definitions_enabled: None,
        },
        versions: None,
    };
    metrics::encode(&metrics::render_probe_only(&snapshot), Format::Prometheus)
        .unwrap_or_else(|_| "(metrics could not be encoded)\n".to_string())
}

/// The whole debug text: step log, metrics, and the settings as YAML.
pub fn page(report: &ProbeReport, plan: &Plan, settings_yaml: &str) -> String {
    format!(
        "Logs for the probe:\n{}\n\nMetrics that would have been returned:\n{}\n\nModule configuration:\n{}\n",
        step_log(report),
        probe_metrics(report, plan),
        settings_yaml
    )
}

/// Serializes settings as YAML for the debug page; secrets serialize as
/// `<secret>`.
pub fn settings_yaml<T: serde::Serialize>(settings: &T) -> String {
    serde_saphyr::to_string(settings).unwrap_or_else(|e| format!("(not serializable: {e})\n"))
}
