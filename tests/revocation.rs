//! The revocation step against real loopback OCSP responders and CRL
//! servers: every case must come out as the right step,
//! reason, status and timestamps.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::pki::REV_ZONE;
use common::{sample, Harness};
use tetra_exporter::collect::Exporter;
use tetra_exporter::config::Config;
use tetra_exporter::metrics::{encode, render, Format};
use tokio::time::Instant;

const QUIET: &str = "connector: {enabled: false}\nversions: {enabled: false}";

fn entry(harness: &Harness, name: &str, mode: &str) -> String {
    format!(
        "  - host: {name}.{REV_ZONE}\n    port: {}\n    revocation: {mode}",
        harness.revocation.port(name)
    )
}

fn exporter(harness: &Harness, name: &str, mode: &str, extra: &str) -> Exporter {
    let yaml = harness.config_yaml(&entry(harness, name, mode), &format!("{QUIET}\n{extra}"));
    Exporter::new(Config::from_yaml(&yaml).expect("test config")).expect("exporter")
}

async fn scrape_with(exporter: &Exporter) -> String {
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(10))
        .await;
    encode(&render(&snapshot), Format::Prometheus).expect("encode")
}

async fn scrape(harness: &Harness, name: &str, mode: &str, extra: &str) -> String {
    scrape_with(&exporter(harness, name, mode, extra)).await
}

fn base(name: &str) -> String {
    format!("server=\"{name}.{REV_ZONE}\",route=\"direct\"")
}

/// The reason the probe failed for, or `None` when it passed.
fn failure(text: &str, name: &str) -> Option<String> {
    let prefix = format!("tetra_probe_failure_info{{{},step=\"", base(name));
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    let rest = &line[prefix.len()..];
    let (step, rest) = rest.split_once("\",reason=\"")?;
    let (reason, _) = rest.split_once('"')?;
    Some(format!("{step}/{reason}"))
}

/// `(method, position, success, status)` of every check, sorted.
fn checks(text: &str, name: &str) -> Vec<(String, String, f64, Option<String>)> {
    let prefix = format!("tetra_revocation_check_success{{{},method=\"", base(name));
    let mut out: Vec<_> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (method, rest) = rest.split_once('"')?;
            let labels_end = rest.find('}')?;
            let position = rest[..labels_end]
                .rsplit_once("position=\"")?
                .1
                .trim_end_matches('"');
            let value: f64 = rest[labels_end + 1..].trim().parse().ok()?;
            let series_labels = &line["tetra_revocation_check_success{".len()..];
            let series_labels = &series_labels[..series_labels.find('}')?];
            let status = ["good", "revoked", "unknown"].into_iter().find(|status| {
                sample(
                    text,
                    &format!("tetra_revocation_status{{{series_labels},status=\"{status}\"}}"),
                ) == Some(1.0)
            });
            Some((
                method.to_string(),
                position.to_string(),
                value,
                status.map(str::to_string),
            ))
        })
        .collect();
    out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    out
}

fn c(
    method: &str,
    position: &str,
    ok: f64,
    status: Option<&str>,
) -> (String, String, f64, Option<String>) {
    (
        method.into(),
        position.into(),
        ok,
        status.map(str::to_string),
    )
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_verdicts() {
    let harness = Harness::start().await;

    // Revoked by OCSP (the leaf names only the responder).
    let text = scrape(&harness, "ocsp-revoked", "require", "").await;
    assert_eq!(
        failure(&text, "ocsp-revoked").as_deref(),
        Some("revocation/revoked"),
        "{text}"
    );
    assert_eq!(
        checks(&text, "ocsp-revoked"),
        vec![
            c("ocsp", "0", 1.0, Some("revoked")),
            c("crl", "1", 1.0, Some("good")),
            c("ocsp", "1", 1.0, Some("good")),
        ]
    );

    // Revoked by CRL.
    let text = scrape(&harness, "crl-revoked", "require", "").await;
    assert_eq!(
        failure(&text, "crl-revoked").as_deref(),
        Some("revocation/revoked"),
        "{text}"
    );
    assert_eq!(
        checks(&text, "crl-revoked")[0],
        c("crl", "0", 1.0, Some("revoked"))
    );

    // The intermediate revoked by the root, by OCSP and CRL alike.
    let text = scrape(&harness, "inter-revoked", "require", "").await;
    assert_eq!(
        failure(&text, "inter-revoked").as_deref(),
        Some("revocation/revoked"),
        "{text}"
    );
    assert_eq!(
        checks(&text, "inter-revoked"),
        vec![
            c("crl", "0", 1.0, Some("good")),
            c("crl", "1", 1.0, Some("revoked")),
            c("ocsp", "1", 1.0, Some("revoked")),
        ]
    );

    // OCSP unknown: the responder does not know the serial.
    let text = scrape(&harness, "ocsp-unknown", "require", "").await;
    assert_eq!(
        failure(&text, "ocsp-unknown").as_deref(),
        Some("revocation/unknown_status"),
        "{text}"
    );
    assert_eq!(
        checks(&text, "ocsp-unknown")[0],
        c("ocsp", "0", 1.0, Some("unknown"))
    );

    // A PEM CRL is read as well as a DER one.
    let text = scrape(&harness, "crl-pem", "require", "").await;
    assert_eq!(failure(&text, "crl-pem"), None, "{text}");
    assert_eq!(
        checks(&text, "crl-pem")[0],
        c("crl", "0", 1.0, Some("good"))
    );

    // No URL at all.
    let text = scrape(&harness, "no-urls", "require", "").await;
    assert_eq!(
        failure(&text, "no-urls").as_deref(),
        Some("revocation/no_revocation_info"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hosts_fail_require_and_pass_report() {
    let harness = Harness::start().await;

    // OCSP down, CRL up: both reported, the CRL decides.
    let text = scrape(&harness, "ocsp-down", "require", "").await;
    assert_eq!(failure(&text, "ocsp-down"), None, "{text}");
    assert_eq!(
        checks(&text, "ocsp-down")[..2],
        [c("crl", "0", 1.0, Some("good")), c("ocsp", "0", 0.0, None)]
    );

    // Both down: the exact Windows failure in require, metrics only in report.
    let text = scrape(&harness, "both-down", "require", "").await;
    assert_eq!(
        failure(&text, "both-down").as_deref(),
        Some("revocation/responder_unreachable"),
        "{text}"
    );
    assert_eq!(
        checks(&text, "both-down")[..2],
        [c("crl", "0", 0.0, None), c("ocsp", "0", 0.0, None)]
    );
    let text = scrape(&harness, "both-down", "report", "").await;
    assert_eq!(failure(&text, "both-down"), None, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("tetra_probe_success{{{}}}", base("both-down"))
        ),
        Some(1.0)
    );

    // Off: the step does not run.
    let text = scrape(&harness, "both-down", "off", "").await;
    assert_eq!(failure(&text, "both-down"), None, "{text}");
    assert!(checks(&text, "both-down").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_that_never_answers_cannot_outlast_the_deadline() {
    let harness = Harness::start().await;

    // The fetch's own timeout ends the OCSP wait; the CRL decides.
    let began = std::time::Instant::now();
    let text = scrape(
        &harness,
        "ocsp-hang",
        "require",
        "probe: {timeout: 5s}\nrevocation: {fetch_timeout: 1s}",
    )
    .await;
    let took = began.elapsed();
    assert_eq!(failure(&text, "ocsp-hang"), None, "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let ocsp_duration = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "tetra_revocation_duration_seconds{{{},method=\"ocsp\"",
                base("ocsp-hang")
            )) && l.contains("position=\"0\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .expect("ocsp duration");
    assert!((0.9..2.0).contains(&ocsp_duration), "{ocsp_duration}");

    // The probe's deadline comes first: the step ends there with timeout.
    let began = std::time::Instant::now();
    let text = scrape(
        &harness,
        "ocsp-hang",
        "require",
        "probe: {timeout: 2s}\nrevocation: {fetch_timeout: 30s}",
    )
    .await;
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The CRL answered, so revocation passes; nothing is left for download.
    assert_eq!(
        failure(&text, "ocsp-hang").as_deref(),
        Some("download/timeout"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_named() {
    let harness = Harness::start().await;
    let cases = [
        ("crl-stale", "stale"),
        ("crl-forged", "bad_signature"),
        ("ocsp-unauth", "bad_signature"),
        ("garbage", "malformed"),
        ("crl-huge", "too_large"),
    ];
    for (name, reason) in cases {
        let began = std::time::Instant::now();
        let text = scrape(&harness, name, "require", "").await;
        let took = began.elapsed();
        assert_eq!(
            failure(&text, name),
            Some(format!("revocation/{reason}")),
            "{name}\n{text}"
        );
        assert_eq!(checks(&text, name)[0].2, 0.0, "{name}");
        eprintln!("{name}: {reason} in {took:?}");
    }

    // A stale CRL still shows when it expired: a day ago.
    let text = scrape(&harness, "crl-stale", "report", "").await;
    let next = sample(
        &text,
        &format!(
            "tetra_revocation_next_update_timestamp_seconds{{{},method=\"crl\",url=\"{}/stale.crl\",position=\"0\"}}",
            base("crl-stale"),
            crl_base(&text)
        ),
    )
    .unwrap_or_else(|| panic!("next update of the stale CRL\n{text}"));
    assert!((now_secs() - next - 86400.0).abs() < 120.0, "{next}");
}

/// The CRL server's base URL, as the scenario certificates name it.
fn crl_base(text: &str) -> String {
    text.split("url=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|url| url.ends_with(".crl"))
        .and_then(|url| url.rsplit_once('/'))
        .map(|(base, _)| base.to_string())
        .expect("a CRL url label")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_probe_inside_next_update_asks_nobody() {
    let harness = Harness::start().await;
    let port = harness.port("good");
    let yaml = harness.config_yaml(
        &format!("  - host: good.tetra.test\n    port: {port}"),
        &format!("{QUIET}\nprobe: {{min_interval: 0s}}"),
    );
    let exporter = Exporter::new(Config::from_yaml(&yaml).expect("config")).expect("exporter");
    let counts = |h: &Harness| {
        (
            h.revocation
                .ocsp_inter_requests
                .load(std::sync::atomic::Ordering::SeqCst),
            h.revocation
                .ocsp_root_requests
                .load(std::sync::atomic::Ordering::SeqCst),
            h.revocation.crl_count("/inter.crl"),
            h.revocation.crl_count("/root.crl"),
        )
    };

    let first = scrape_with(&exporter).await;
    let after_first = counts(&harness);
    assert_eq!(after_first, (1, 1, 1, 1), "{first}");

    let second = scrape_with(&exporter).await;
    assert_eq!(
        counts(&harness),
        after_first,
        "the second probe asked again"
    );
    let base = "server=\"good.tetra.test\",route=\"direct\"";
    assert_eq!(
        sample(&second, &format!("tetra_probe_success{{{base}}}")),
        Some(1.0)
    );
    let cached: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with("tetra_revocation_duration_seconds{"))
        .collect();
    assert_eq!(cached.len(), 4, "{second}");
    assert!(cached.iter().all(|l| l.ends_with(" 0.0")), "{cached:?}");
    // OCSP answers expire in a day (openssl ocsp -nmin 1440).
    let next = second
        .lines()
        .find(|l| {
            l.starts_with("tetra_revocation_next_update_timestamp_seconds{")
                && l.contains("method=\"ocsp\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .expect("ocsp next update");
    assert!((next - now_secs() - 86400.0).abs() < 120.0, "{next}");
}

/// A CRL host that stops answering: the path lives on the cached CRL (as
/// Windows does) and says until when; once that passes, the step fails
/// with the revocation-offline reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_lives_on_the_cache_until_it_expires() {
    use common::pki::{SHORT_CRL_PATH, SHORT_CRL_SECONDS};
    let harness = Harness::start().await;
    let name = "crl-short";
    let started = now_secs();
    let exporter = exporter(
        &harness,
        name,
        "require",
        "probe: {min_interval: 0s}\nrevocation: {recheck_interval: 0s, fetch_timeout: 1s}",
    );

    let text = scrape_with(&exporter).await;
    assert_eq!(failure(&text, name), None, "{text}");
    let url = format!("{}{SHORT_CRL_PATH}", crl_base(&text));
    let series = |family: &str| format!("{family}{{{},method=\"crl\",url=\"{url}\"}}", base(name));
    assert_eq!(
        sample(&text, &series("tetra_revocation_fetch_success")),
        Some(1.0)
    );
    let valid_until = sample(
        &text,
        &series("tetra_revocation_cache_valid_until_timestamp_seconds"),
    )
    .expect("valid until");
    assert!(
        (valid_until - started - SHORT_CRL_SECONDS as f64).abs() < 5.0,
        "the CRL's nextUpdate: {valid_until} vs {started}"
    );
    let answered_at = sample(
        &text,
        &series("tetra_revocation_last_fetch_success_timestamp_seconds"),
    )
    .expect("last success");
    let requests = harness.revocation.crl_count(SHORT_CRL_PATH);

    // The host stops answering; the cached CRL is still valid.
    harness
        .revocation
        .crl_offline
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        let text = scrape_with(&exporter).await;
        assert_eq!(failure(&text, name), None, "lives on the cache\n{text}");
        assert_eq!(
            sample(&text, &series("tetra_revocation_fetch_success")),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &series("tetra_revocation_cache_valid_until_timestamp_seconds")
            ),
            Some(valid_until)
        );
        assert_eq!(
            sample(
                &text,
                &series("tetra_revocation_last_fetch_success_timestamp_seconds")
            ),
            Some(answered_at),
            "the last success stays"
        );
    }
    assert!(
        harness.revocation.crl_count(SHORT_CRL_PATH) > requests,
        "the URL was asked again while the cache was valid"
    );

    // Past the cached CRL's expiry the update path fails, as Windows' does.
    let wait = (valid_until - now_secs()).max(0.0) + 1.0;
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let text = scrape_with(&exporter).await;
    assert_eq!(
        failure(&text, name),
        Some("revocation/crl_unreachable".to_string()),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("tetra_revocation_fetch_success")),
        Some(0.0)
    );
}

/// The cache outlives a configuration reload: the reloaded exporter uses
/// the answers the previous one fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_a_reload() {
    let harness = Harness::start().await;
    let name = "crl-pem";
    let first = exporter(&harness, name, "require", "");
    let text = scrape_with(&first).await;
    assert_eq!(failure(&text, name), None, "{text}");
    let requests = harness.revocation.crl_count("/inter.pem.crl");

    let yaml = harness.config_yaml(&entry(&harness, name, "require"), QUIET);
    let reloaded = Exporter::with_shared(
        Config::from_yaml(&yaml).expect("config"),
        first.shared().clone(),
    )
    .expect("exporter");
    let text = scrape_with(&reloaded).await;
    assert_eq!(failure(&text, name), None, "{text}");
    assert_eq!(
        harness.revocation.crl_count("/inter.pem.crl"),
        requests,
        "the reloaded exporter asked nobody"
    );
}
