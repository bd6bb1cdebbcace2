//! The real `tetra-exporter` binary, started as a user would, scraped over
//! HTTP: content negotiation, `promtool check metrics`, the golden
//! exposition, the scrape deadline, the landing page and config errors.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{start, BINARY};
use common::{sample, shared_fixture, Harness, ZONE};

fn which(binary: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let path = Path::new(dir).join(binary);
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!("{binary} is not installed: run the README's test command, which installs it");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Replaces what differs between runs (timings, paths, the revision) and
/// sorts the lines, so that the exposition can be held against a golden file.
fn normalize(text: &str, local_state: &Path) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let line = line.replace(&local_state.display().to_string(), "LOCAL_XML");
            let line = match line.find("revision=\"") {
                Some(at) => {
                    let end = line[at + 10..].find('"').map(|e| at + 10 + e).unwrap_or(at);
                    format!("{}revision=\"REV\"{}", &line[..at], &line[end + 1..])
                }
                None => line,
            };
            let line = line.replace(
                &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
                "version=\"VERSION\"",
            );
            let line = without_ports(&line);
            if !line.starts_with('#')
                && line
                    .split_whitespace()
                    .next()
                    .is_some_and(|s| s.contains("_seconds"))
            {
                let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(&line);
                format!("{series} VALUE")
            } else {
                line
            }
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// Replaces the port of every `127.0.0.1:PORT` (the harness's revocation
/// servers in `url` labels) with `PORT`.
fn without_ports(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("PORT");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_passes_promtool_and_matches_golden() {
    let harness = Harness::start().await;
    let local_state = harness.write(
        "local.xml",
        &std::fs::read(shared_fixture("connector/local-legacy-proxy-auth.xml")).expect("fixture"),
    );
    let yaml = harness.config_yaml(
        &format!("  - host: good.{ZONE}\n    port: {}", harness.port("good")),
        &format!(
            "connector: {{local_state: \"{}\"}}\nversions: {{url: \"{}\"}}\n",
            local_state.display(),
            harness.versions_url
        ),
    );
    let config = harness.write("config.yml", yaml.as_bytes());
    let exporter = start(&config);
    let client = client();

    // The classic text format unless OpenMetrics is asked for.
    let response = client
        .get(format!("{}/metrics", exporter.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = response.text().await.expect("body");
    let base = format!("server=\"good.{ZONE}\",route=\"direct\"");
    assert_eq!(
        sample(&classic, &format!("tetra_probe_success{{{base}}}")),
        Some(1.0),
        "{classic}"
    );
    assert_eq!(
        sample(&classic, "tetra_definitions_lag_versions"),
        Some(6.0)
    );
    assert_eq!(
        sample(&classic, "tetra_connector_last_error_code"),
        Some(4294965196.0)
    );

    let response = client
        .get(format!("{}/metrics", exporter.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let openmetrics = response.text().await.expect("body");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");

    // promtool reads the classic format and lints names, units and help.
    let mut promtool = Command::new(which("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin.write_all(classic.as_bytes()).expect("write");
    }
    let output = promtool.wait_with_output().expect("promtool ran");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/healthy.prom");
    let normalized = normalize(&classic, &local_state);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&golden_path, &normalized).expect("write golden");
    }
    let golden = std::fs::read_to_string(&golden_path)
        .expect("tests/golden/healthy.prom (UPDATE_GOLDEN=1 writes it)");
    let missing: Vec<&str> = golden.lines().filter(|l| !normalized.contains(l)).collect();
    let extra: Vec<&str> = normalized.lines().filter(|l| !golden.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && normalized == golden,
        "exposition differs from tests/golden/healthy.prom (UPDATE_GOLDEN=1 rewrites it)\n\
         missing:\n{}\nunexpected:\n{}",
        missing.join("\n"),
        extra.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_ends_inside_its_announced_timeout_when_every_hop_hangs() {
    let harness = Harness::start().await;
    let yaml = harness.config_yaml(
        &format!("  - host: hang.{ZONE}\n    port: {}", harness.port("hang")),
        "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {timeout: 30s}",
    );
    let config = harness.write("config.yml", yaml.as_bytes());
    let exporter = start(&config);

    let began = Instant::now();
    let text = client()
        .get(format!("{}/metrics", exporter.base))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "the scrape took {took:?}");
    assert!(
        text.contains(&format!(
            "tetra_probe_failure_info{{server=\"hang.{ZONE}\",route=\"direct\",step=\"tls\",reason=\"timeout\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_page_links_to_metrics() {
    let harness = Harness::start().await;
    let yaml = harness.config_yaml(
        &format!("  - host: 127.0.0.1\n    port: {}", harness.closed_port),
        "connector: {enabled: false}\nversions: {enabled: false}",
    );
    let config = harness.write("config.yml", yaml.as_bytes());
    let exporter = start(&config);
    let client = client();

    let page = client
        .get(format!("{}/", exporter.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .expect("body")
        .contains("<a href=\"/metrics\">"));

    let missing = client
        .get(format!("{}/nope", exporter.base))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    let post = client
        .post(format!("{}/metrics", exporter.base))
        .send()
        .await
        .expect("405");
    assert_eq!(post.status(), 405);
}

/// Runs `--config.check` on `yaml` and returns (exit success, stderr).
fn check(dir: &Path, yaml: &str) -> (bool, String) {
    let path = dir.join("check.yml");
    std::fs::write(&path, yaml).expect("write");
    let output = Command::new(BINARY)
        .arg(format!("--config.file={}", path.display()))
        .arg("--config.check")
        .output()
        .expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn config_check_accepts_good_and_names_the_field_of_bad() {
    let dir = tempfile::tempdir().expect("dir");

    let output = Command::new(BINARY)
        .arg("--config.check")
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "the embedded default must be valid"
    );

    let (ok, stderr) = check(dir.path(), "servers: [{host: a.example, port: 8443}]\n");
    assert!(ok, "{stderr}");

    let cases = [
        ("servers: [{host: a.example, port: 70000}]", "port"),
        ("servers: [{host: a.example, colour: blue}]", "colour"),
        (
            "servers: [{host: a.example}]\nprobe: {timeout: fast}",
            "timeout",
        ),
        (
            "servers: [{host: a.example}]\ntls: {ca_files: [/nonexistent/ca.pem]}",
            "tls.ca_files",
        ),
        (
            "servers: [{host: a.example}]\ndns: {server: 'dns.example'}",
            "dns.server",
        ),
        ("servers:\n  - host: [unclosed", "invalid config"),
        ("\u{0}\u{1}binary", "invalid config"),
    ];
    for (yaml, needle) in cases {
        let (ok, stderr) = check(dir.path(), yaml);
        assert!(!ok, "{yaml:?} was accepted");
        assert!(
            stderr.contains(needle),
            "{yaml:?}: {stderr:?} does not mention {needle}"
        );
        assert!(!stderr.contains("panicked"), "{yaml:?} panicked: {stderr}");
    }

    let output = Command::new(BINARY)
        .arg("--config.file=/nonexistent/config.yml")
        .arg("--config.check")
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/config.yml"));

    // Devices, FIFOs and directories are refused before they are read: a
    // FIFO would block the open, /dev/zero would never end.
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    for path in [Path::new("/dev/zero"), fifo.as_path(), dir.path()] {
        let output = Command::new(BINARY)
            .arg(format!("--config.file={}", path.display()))
            .arg("--config.check")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}", path.display());
        assert!(
            stderr.contains("is not a regular file"),
            "{}: {stderr}",
            path.display()
        );
    }
    let (ok, stderr) = check(
        dir.path(),
        "servers: [{host: a.example}]\ntls: {ca_files: [/dev/zero]}",
    );
    assert!(!ok && stderr.contains("is not a regular file"), "{stderr}");
}
