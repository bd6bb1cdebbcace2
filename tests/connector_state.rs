//! The connector's `local.xml` and the published-versions document, read
//! through the whole exporter: held version, newest version, lag and the
//! decoded last error, for every fixture; and failed reads that present no
//! stale value.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{own_fixture, sample, shared_fixture, Harness};
use tetra_exporter::collect::Exporter;
use tetra_exporter::config::Config;
use tetra_exporter::metrics::{encode, render, Format};
use tokio::time::Instant;

/// A config whose only server fails at once (nothing listens on the port),
/// so that the scrape is about the connector and the versions document.
fn config(harness: &Harness, local_state: &Path, versions_url: &str) -> Config {
    let yaml = format!(
        "servers: [{{host: 127.0.0.1, port: {port}}}]\n\
         connector: {{local_state: \"{path}\"}}\n\
         versions: {{url: \"{versions_url}\", cache_for: 1m}}\n\
         probe: {{timeout: 2s, min_interval: 0s}}\n",
        port = harness.closed_port,
        path = local_state.display(),
    );
    Config::from_yaml(&yaml).expect("valid config")
}

async fn scrape(exporter: &Exporter) -> String {
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(5))
        .await;
    encode(&render(&snapshot), Format::Prometheus).expect("encode")
}

struct Expected {
    fixture: std::path::PathBuf,
    version: Option<f64>,
    code: Option<(u32, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gives_version_lag_and_error() {
    let harness = Harness::start().await;
    let ok = |fixture, version, code, meaning| Expected {
        fixture,
        version: Some(version),
        code: Some((code, meaning)),
    };
    let failed = |fixture| Expected {
        fixture,
        version: None,
        code: None,
    };
    // A FIFO would block the open until a writer comes: it is refused.
    let fifo = harness.dir.path().join("fifo-local.xml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let cases = vec![
        ok(
            shared_fixture("connector/local-current-healthy.xml"),
            90606.0,
            0,
            "none",
        ),
        ok(
            shared_fixture("connector/local-legacy-proxy-auth.xml"),
            90600.0,
            4294965196,
            "proxy_auth_failed",
        ),
        ok(
            shared_fixture("connector/local-utf16-proxy-unreachable.xml"),
            90598.0,
            4294965193,
            "proxy_unreachable",
        ),
        failed(shared_fixture("connector/local-truncated.xml")),
        ok(
            own_fixture("connector/local-utf8-bom.xml"),
            90604.0,
            0,
            "none",
        ),
        ok(
            own_fixture("connector/local-unknown-error.xml"),
            90590.0,
            12345,
            "unknown",
        ),
        ok(
            own_fixture("connector/local-negative-lasterror.xml"),
            90601.0,
            4294965187,
            "proxy_download_failed",
        ),
        ok(
            own_fixture("connector/local-both-layouts.xml"),
            90606.0,
            4294965187,
            "proxy_download_failed",
        ),
        ok(
            own_fixture("connector/local-lasterror-other-parent.xml"),
            90603.0,
            4294965193,
            "proxy_unreachable",
        ),
        failed(own_fixture("connector/local-bad-json.xml")),
        failed(own_fixture("connector/local-wrong-root.xml")),
        failed(own_fixture("connector/local-empty.xml")),
        failed(harness.dir.path().join("no-such-local.xml")),
        failed(harness.write("huge-local.xml", &vec![b' '; 5 * 1024 * 1024])),
        failed(std::path::PathBuf::from("/dev/zero")),
        failed(fifo),
    ];

    for case in cases {
        let exporter = Exporter::new(config(&harness, &case.fixture, &harness.versions_url))
            .expect("exporter");
        let text = scrape(&exporter).await;
        let file = format!("file=\"{}\"", case.fixture.display());
        let name = case.fixture.display();

        assert_eq!(
            sample(&text, "tetra_definitions_latest_version"),
            Some(90606.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "tetra_definitions_latest_fetch_success"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("tetra_connector_state_read_success{{{file}}}")
            ),
            Some(if case.version.is_some() { 1.0 } else { 0.0 }),
            "{name}\n{text}"
        );
        assert_eq!(
            sample(&text, "tetra_definitions_version"),
            case.version,
            "{name}"
        );
        assert_eq!(
            sample(&text, "tetra_definitions_lag_versions"),
            case.version.map(|v| 90606.0 - v),
            "{name}"
        );
        match case.code {
            Some((code, meaning)) => {
                assert_eq!(
                    sample(&text, "tetra_connector_last_error_code"),
                    Some(f64::from(code)),
                    "{name}"
                );
                assert_eq!(
                    sample(
                        &text,
                        &format!(
                            "tetra_connector_last_error_info{{code=\"{code}\",meaning=\"{meaning}\"}}"
                        )
                    ),
                    Some(1.0),
                    "{name}\n{text}"
                );
                assert!(
                    sample(
                        &text,
                        &format!("tetra_connector_state_file_mtime_timestamp_seconds{{{file}}}")
                    )
                    .is_some_and(|t| t > 1.6e9),
                    "{name}"
                );
            }
            None => {
                assert!(
                    !text.contains("tetra_connector_last_error_code "),
                    "{name}\n{text}"
                );
                assert!(!text.contains("tetra_connector_last_error_info{"), "{name}");
                assert!(!text.contains("tetra_connector_state_file_mtime_timestamp_seconds{"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_stops_parsing_shows_no_old_values() {
    let harness = Harness::start().await;
    let healthy =
        std::fs::read(shared_fixture("connector/local-legacy-proxy-auth.xml")).expect("fixture");
    let truncated =
        std::fs::read(shared_fixture("connector/local-truncated.xml")).expect("fixture");
    let path = harness.write("local.xml", &healthy);
    let exporter = Exporter::new(config(&harness, &path, &harness.versions_url)).expect("exporter");

    let text = scrape(&exporter).await;
    assert_eq!(sample(&text, "tetra_definitions_version"), Some(90600.0));
    assert_eq!(sample(&text, "tetra_definitions_lag_versions"), Some(6.0));

    std::fs::write(&path, truncated).expect("rewrite");
    let text = scrape(&exporter).await;
    let file = format!("file=\"{}\"", path.display());
    assert_eq!(
        sample(
            &text,
            &format!("tetra_connector_state_read_success{{{file}}}")
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "tetra_definitions_version"), None, "{text}");
    assert_eq!(sample(&text, "tetra_definitions_lag_versions"), None);
    assert_eq!(sample(&text, "tetra_connector_last_error_code"), None);
    // The newest published version does not depend on the connector.
    assert_eq!(
        sample(&text, "tetra_definitions_latest_version"),
        Some(90606.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_versions_source_is_reported_not_guessed() {
    let harness = Harness::start().await;
    let path = shared_fixture("connector/local-current-healthy.xml");
    let exporter =
        Exporter::new(config(&harness, &path, &harness.versions_broken_url)).expect("exporter");
    let text = scrape(&exporter).await;
    assert_eq!(
        sample(&text, "tetra_definitions_latest_fetch_success"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "tetra_definitions_latest_version"), None);
    assert_eq!(sample(&text, "tetra_definitions_lag_versions"), None);
    assert_eq!(sample(&text, "tetra_definitions_version"), Some(90606.0));
}
