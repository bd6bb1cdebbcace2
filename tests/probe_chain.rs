//! Each failure class of the update path, produced by a real server on
//! loopback, must come out of the exporter as the right failing step and
//! reason, with every other step at 0.

mod common;

use std::time::Duration;

use common::{sample, Harness, ZONE};
use tetra_exporter::collect::Exporter;
use tetra_exporter::config::Config;
use tetra_exporter::metrics::{encode, render, Format};
use tokio::time::Instant;

/// Probes one server entry with the harness's DNS and CA, and returns the
/// classic text exposition.
async fn scrape(harness: &Harness, server: &str, extra: &str) -> String {
    let yaml = harness.config_yaml(server, extra);
    let config = Config::from_yaml(&yaml).expect("test config is valid");
    let exporter = Exporter::new(config).expect("exporter");
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(10))
        .await;
    encode(&render(&snapshot), Format::Prometheus).expect("encode")
}

const NO_CONNECTOR: &str =
    "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {timeout: 2s}";

fn server(name: &str, port: u16, path: &str) -> String {
    format!("  - host: {name}.{ZONE}\n    port: {port}\n    path: \"{path}\"")
}

/// Asserts the probe of `host` failed at `step` for `reason`, and that the
/// failed-step family says so for every step.
fn assert_failed(text: &str, host: &str, step: &str, reason: &str) {
    let base = format!("server=\"{host}\",route=\"direct\"");
    assert_eq!(
        sample(text, &format!("tetra_probe_success{{{base}}}")),
        Some(0.0),
        "{host}: probe should fail\n{text}"
    );
    assert_eq!(
        sample(
            text,
            &format!("tetra_probe_failure_info{{{base},step=\"{step}\",reason=\"{reason}\"}}")
        ),
        Some(1.0),
        "{host}: expected step {step} reason {reason}\n{text}"
    );
    assert_eq!(
        text.matches("tetra_probe_failure_info{").count(),
        1,
        "exactly one reason"
    );
    for other in tetra_exporter::probe::Step::ALL.map(|step| step.as_str()) {
        let expected = if other == step { 1.0 } else { 0.0 };
        assert_eq!(
            sample(
                text,
                &format!("tetra_probe_failed_step{{{base},step=\"{other}\"}}")
            ),
            Some(expected),
            "{host}: failed_step for {other}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_path_passes_every_step() {
    let harness = Harness::start().await;
    let port = harness.port("good");
    let text = scrape(&harness, &server("good", port, "/"), NO_CONNECTOR).await;
    let host = format!("good.{ZONE}");
    let base = format!("server=\"{host}\",route=\"direct\"");

    assert_eq!(
        sample(&text, &format!("tetra_probe_success{{{base}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(text.matches("tetra_probe_failure_info{").count(), 0);
    assert_eq!(text.matches("tetra_probe_failed_step{").count(), 7);
    assert!(!text
        .lines()
        .any(|l| l.starts_with("tetra_probe_failed_step{") && l.ends_with(" 1.0")));
    assert_eq!(
        sample(&text, &format!("tetra_dns_addresses{{server=\"{host}\"}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("tetra_tls_handshake_success{{{base}}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("tetra_download_http_status_code{{{base}}}")),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, &format!("tetra_download_body_bytes{{{base}}}")),
        Some("tetra definitions live here\n".len() as f64)
    );
    for step in ["dns", "connect", "tls", "download"] {
        let duration = sample(
            &text,
            &format!("tetra_probe_step_duration_seconds{{{base},step=\"{step}\"}}"),
        )
        .unwrap_or_else(|| panic!("duration of {step}\n{text}"));
        assert!((0.0..2.0).contains(&duration), "{step} took {duration}");
    }
    // Leaf and intermediate, both valid for about 30 days from now.
    for position in [0, 1] {
        let not_after = sample(
            &text,
            &format!(
                "tetra_tls_cert_not_after_timestamp_seconds{{{base},position=\"{position}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("position {position}\n{text}"));
        assert!(not_after > 1.7e9, "{not_after}");
    }
    assert!(
        text.contains(&format!(
            "tetra_tls_info{{{base},version=\"TLS 1.3\",cipher=\"TLS13_AES_256_GCM_SHA384\",leaf_issuer=\"Tetra Test Intermediate CA\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failures_are_named() {
    let harness = Harness::start().await;
    let port = harness.port("good");

    let text = scrape(&harness, &server("missing", port, "/"), NO_CONNECTOR).await;
    assert_failed(&text, &format!("missing.{ZONE}"), "dns", "nxdomain");

    let text = scrape(&harness, &server("noaddr", port, "/"), NO_CONNECTOR).await;
    assert_failed(&text, &format!("noaddr.{ZONE}"), "dns", "no_addresses");

    let text = scrape(
        &harness,
        &format!("  - host: outside.example\n    port: {port}"),
        NO_CONNECTOR,
    )
    .await;
    assert_failed(&text, "outside.example", "dns", "refused");

    // unbound forwards sf.test to a server that refuses, and says SERVFAIL.
    let config = Config::from_yaml(
        &harness
            .config_yaml(
                &format!("  - host: x.sf.test\n    port: {port}"),
                NO_CONNECTOR,
            )
            .replace(&harness.dns.to_string(), &harness.servfail_dns.to_string()),
    )
    .expect("config");
    let exporter = Exporter::new(config).expect("exporter");
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(10))
        .await;
    let text = encode(&render(&snapshot), Format::Prometheus).expect("encode");
    assert_failed(&text, "x.sf.test", "dns", "servfail");

    // A server that never answers: the step ends at the probe's deadline.
    let config = Config::from_yaml(
        &harness
            .config_yaml(&server("good", port, "/"), NO_CONNECTOR)
            .replace(&harness.dns.to_string(), &harness.silent_dns.to_string()),
    )
    .expect("config");
    let exporter = Exporter::new(config).expect("exporter");
    let began = std::time::Instant::now();
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(10))
        .await;
    let text = encode(&render(&snapshot), Format::Prometheus).expect("encode");
    assert_failed(&text, &format!("good.{ZONE}"), "dns", "timeout");
    // The probe's own 2s deadline ended it, not the 10s scrape budget.
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_named() {
    let harness = Harness::start().await;
    let text = scrape(
        &harness,
        &server("closed", harness.closed_port, "/"),
        NO_CONNECTOR,
    )
    .await;
    assert_failed(&text, &format!("closed.{ZONE}"), "connect", "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_named() {
    let harness = Harness::start().await;
    let cases = [
        ("expired", "expired"),
        ("future", "not_yet_valid"),
        ("wrongname", "name_mismatch"),
        ("unknownca", "unknown_issuer"),
        ("selfsigned", "ca_used_as_leaf"),
        ("hang", "timeout"),
    ];
    for (name, reason) in cases {
        let text = scrape(
            &harness,
            &server(name, harness.port(name), "/"),
            NO_CONNECTOR,
        )
        .await;
        let host = format!("{name}.{ZONE}");
        assert_failed(&text, &host, "tls", reason);
        let base = format!("server=\"{host}\",route=\"direct\"");
        assert_eq!(
            sample(&text, &format!("tetra_tls_handshake_success{{{base}}}")),
            Some(0.0),
            "{text}"
        );
        // The presented chain is kept even though it was rejected.
        if name != "hang" {
            assert!(
                sample(
                    &text,
                    &format!("tetra_tls_cert_not_after_timestamp_seconds{{{base},position=\"0\"}}")
                )
                .is_some(),
                "{name}: chain not reported\n{text}"
            );
        }
    }

    // The intercepting CA's name is visible to the operator.
    let text = scrape(
        &harness,
        &server("unknownca", harness.port("unknownca"), "/"),
        NO_CONNECTOR,
    )
    .await;
    assert!(
        text.contains("leaf_issuer=\"Rogue Inspection CA\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_failures_are_named() {
    let harness = Harness::start().await;
    let port = harness.port("good");
    let host = format!("good.{ZONE}");
    let base = format!("server=\"{host}\",route=\"direct\"");

    let text = scrape(&harness, &server("good", port, "/missing"), NO_CONNECTOR).await;
    assert_failed(&text, &host, "download", "http_status");
    assert_eq!(
        sample(&text, &format!("tetra_download_http_status_code{{{base}}}")),
        Some(404.0)
    );

    let text = scrape(&harness, &server("good", port, "/error"), NO_CONNECTOR).await;
    assert_failed(&text, &host, "download", "http_status");
    assert_eq!(
        sample(&text, &format!("tetra_download_http_status_code{{{base}}}")),
        Some(500.0)
    );

    let text = scrape(&harness, &server("good", port, "/cut"), NO_CONNECTOR).await;
    assert_failed(&text, &host, "download", "interrupted");
    assert_eq!(
        sample(&text, &format!("tetra_download_body_bytes{{{base}}}")),
        Some(100.0)
    );

    let text = scrape(
        &harness,
        &server("good", port, "/huge"),
        "connector: {enabled: false}\nversions: {enabled: false}\n\
         probe: {timeout: 2s, download_max_bytes: 65536}",
    )
    .await;
    assert_failed(&text, &host, "download", "too_large");

    let text = scrape(&harness, &server("good", port, "/stall"), NO_CONNECTOR).await;
    assert_failed(&text, &host, "download", "timeout");
    assert_eq!(
        sample(&text, &format!("tetra_download_http_status_code{{{base}}}")),
        Some(200.0)
    );

    // A 404 the operator declared acceptable is a success.
    let entry = format!(
        "{}\n    valid_status_codes: [404]",
        server("good", port, "/missing")
    );
    let text = scrape(&harness, &entry, NO_CONNECTOR).await;
    assert_eq!(
        sample(&text, &format!("tetra_probe_success{{{base}}}")),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_share_one_probe() {
    let harness = Harness::start().await;
    let port = harness.port("good");
    let yaml = harness.config_yaml(
        &server("good", port, "/"),
        "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {min_interval: 1m}",
    );
    let exporter = Exporter::new(Config::from_yaml(&yaml).expect("config")).expect("exporter");
    let deadline = Instant::now() + Duration::from_secs(10);

    let (a, b, c) = tokio::join!(
        exporter.collect(deadline),
        exporter.collect(deadline),
        exporter.collect(deadline)
    );
    let again = exporter.collect(deadline).await;
    assert_eq!(
        harness
            .good_connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "four scrapes inside min_interval must reach the server once"
    );
    for snapshot in [&a, &b, &c, &again] {
        assert_eq!(snapshot.reports.len(), 1);
        assert!(snapshot.reports[0].success());
        assert_eq!(snapshot.reports[0].started_at, a.reports[0].started_at);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_named() {
    let harness = Harness::start().await;
    // A listener that never accepts, with its queue filled: the kernel then
    // drops further SYNs, and a connect waits until its deadline, as it
    // does behind a firewall that drops packets.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }

    let text = scrape(
        &harness,
        &format!("  - host: 127.0.0.1\n    port: {}", addr.port()),
        "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {timeout: 1s}",
    )
    .await;
    assert_failed(&text, "127.0.0.1", "connect", "timeout");
    drop(listener);
}
