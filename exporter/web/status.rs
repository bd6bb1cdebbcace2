//! The status page at `/`: plain server-rendered HTML, no scripts and no
//! external assets, readable in a terminal browser too.
//!
//! It shows the build, the probed targets with their current result, the
//! connector's state, the held and newest versions, and the recent probes
//! (failures kept longer) each linking to its debug view. Every value from
//! outside (file paths, server names, reasons, details) is HTML-escaped.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use crate::collect::{FileReading, Snapshot};
use crate::connector::local_state::LastErrorMeaning;
use crate::history::{Entry, Origin};
use crate::probe::ProbeReport;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A point in time as RFC 3339 UTC.
fn when(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn age(time: SystemTime) -> String {
    let seconds = SystemTime::now()
        .duration_since(time)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

fn outcome(report: &ProbeReport) -> String {
    match &report.failure {
        None => "<span class=\"ok\">success</span>".to_string(),
        Some(failure) => format!(
            "<span class=\"fail\">failed at {} ({})</span>",
            escape(failure.step.as_str()),
            escape(failure.reason)
        ),
    }
}

/// What the page needs beyond the snapshot.
pub struct PageContext<'a> {
    pub version: &'a str,
    pub revision: &'a str,
    pub reload_ok: bool,
    pub last_reload: SystemTime,
    pub history: &'a [Arc<Entry>],
}

/// Renders the page.
pub fn render(snapshot: &Snapshot, page: &PageContext<'_>) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>tetra-exporter</title>\n<style>\n\
         body{{font-family:sans-serif;margin:1.5em;max-width:80em}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         .ok{{color:#1a7f37}}.fail{{color:#cf222e;font-weight:bold}}code{{font-size:.95em}}\n\
         </style>\n</head>\n<body>\n<h1>tetra-exporter</h1>\n\
         <p>Why this machine can or cannot update its TETRA definitions, step by step. \
         <a href=\"/metrics\">Metrics</a></p>\n"
    );

    let _ = write!(
        html,
        "<h2>Build</h2>\n<table>\n<tr><th>version</th><td>{}</td></tr>\n\
         <tr><th>revision</th><td>{}</td></tr>\n\
         <tr><th>last config load</th><td>{} ({})</td></tr>\n</table>\n",
        escape(page.version),
        escape(page.revision),
        when(page.last_reload),
        if page.reload_ok {
            "<span class=\"ok\">successful</span>"
        } else {
            "<span class=\"fail\">the last reload failed; the previous config is serving</span>"
        }
    );

    html.push_str("<h2>Update path</h2>\n");
    if snapshot.reports.is_empty() {
        let why = if snapshot.plan.definitions_enabled == Some(false) {
            "TETRA updates are disabled by the connector's policy: nothing is probed."
        } else if matches!(snapshot.policy, FileReading::Failed { .. }) {
            "The connector's policy.xml could not be read, so its update server and proxy are unknown: nothing is probed (see below)."
        } else {
            "No server is probed."
        };
        let _ = writeln!(html, "<p>{why}</p>");
    } else {
        html.push_str(
            "<table>\n<tr><th>server</th><th>route</th><th>result</th><th>detail</th>\
             <th>when</th></tr>\n",
        );
        for report in &snapshot.reports {
            let route = match &report.proxy {
                Some(proxy) => format!("proxy {}", escape(&proxy.proxy)),
                None => escape(report.route.as_str()),
            };
            let detail = report
                .failure
                .as_ref()
                .map(|f| escape(&f.detail))
                .unwrap_or_default();
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{route}</td><td>{}</td><td>{detail}</td><td>{} ({} ago)</td></tr>",
                escape(&report.server),
                outcome(report),
                when(report.started_at),
                age(report.started_at)
            );
        }
        html.push_str("</table>\n");
    }

    html.push_str("<h2>Connector</h2>\n<table>\n");
    match &snapshot.connector {
        FileReading::Absent => {
            html.push_str("<tr><th>local.xml</th><td>not present on this machine</td></tr>\n")
        }
        FileReading::Failed {
            path,
            reason,
            detail,
        } => {
            let _ = writeln!(
                html,
                "<tr><th>local.xml</th><td><code>{}</code>: <span class=\"fail\">not read ({})</span> {}</td></tr>",
                escape(&path.display().to_string()),
                escape(reason),
                escape(detail)
            );
        }
        FileReading::Read { path, value, .. } => {
            let meaning = LastErrorMeaning::from_code(value.last_error).as_str();
            let _ = writeln!(
                html,
                "<tr><th>local.xml</th><td><code>{}</code></td></tr>\n\
                 <tr><th>connector id</th><td>{}</td></tr>\n\
                 <tr><th>last update error</th><td>{} ({})</td></tr>",
                escape(&path.display().to_string()),
                escape(value.connector_id.as_deref().unwrap_or("unknown")),
                value.last_error,
                escape(meaning)
            );
        }
    }
    if let FileReading::Failed {
        path,
        reason,
        detail,
    } = &snapshot.policy
    {
        let _ = writeln!(
            html,
            "<tr><th>policy.xml</th><td><code>{}</code>: <span class=\"fail\">not read ({})</span> {}</td></tr>",
            escape(&path.display().to_string()),
            escape(reason),
            escape(detail)
        );
    }
    if let Some(enabled) = snapshot.plan.definitions_enabled {
        let _ = writeln!(
            html,
            "<tr><th>TETRA updates (policy)</th><td>{}</td></tr>",
            if enabled { "enabled" } else { "disabled" }
        );
    }
    for proxy in &snapshot.plan.proxies {
        let _ = writeln!(
            html,
            "<tr><th>proxy</th><td>{} (from {}, auth {})</td></tr>",
            escape(&proxy.label()),
            proxy.source.as_str(),
            proxy.auth()
        );
    }
    html.push_str("</table>\n");

    html.push_str("<h2>Definitions</h2>\n<table>\n");
    let held = snapshot
        .connector
        .value()
        .and_then(|state| state.definitions_version);
    let latest = snapshot.versions.as_ref().and_then(|v| v.latest);
    let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        html,
        "<tr><th>held</th><td>{}</td></tr>\n<tr><th>newest published</th><td>{}</td></tr>",
        show(held),
        show(latest)
    );
    if let (Some(held), Some(latest)) = (held, latest) {
        let _ = writeln!(
            html,
            "<tr><th>behind</th><td>{} versions</td></tr>",
            crate::definitions::lag(latest, held)
        );
    }
    if let Some((reason, detail)) = snapshot
        .versions
        .as_ref()
        .and_then(|v| v.last_error.as_ref())
    {
        let _ = writeln!(
            html,
            "<tr><th>versions document</th><td><span class=\"fail\">{}</span> {}</td></tr>",
            escape(reason),
            escape(detail)
        );
    }
    html.push_str("</table>\n");

    html.push_str(
        "<h2>Recent probes</h2>\n<p>Failures are kept longer than successes.</p>\n<table>\n\
         <tr><th>#</th><th>when</th><th>origin</th><th>server</th><th>route</th>\
         <th>result</th><th>duration</th></tr>\n",
    );
    for entry in page.history {
        let origin = match &entry.origin {
            Origin::Scrape => "scrape".to_string(),
            Origin::OnDemand { module } => format!("/probe module {}", escape(module)),
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"/debug?id={id}\">{id}</a></td><td>{}</td><td>{origin}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{:.3}s</td></tr>",
            when(entry.report.started_at),
            escape(&entry.report.server),
            escape(entry.report.route.as_str()),
            outcome(&entry.report),
            entry.report.duration.as_secs_f64(),
            id = entry.id,
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
