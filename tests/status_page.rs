//! The status page at `/`, seen through a real browser: Debian's headless
//! Chromium loads the page the real binary serves on loopback, and the test
//! reads the DOM as Chromium rendered it.
//!
//! The exporter probes a good server and one with an expired certificate,
//! reads a connector `local.xml` that recorded a proxy authentication
//! failure, and takes the newest version from the harness. The test checks
//! the title, both servers with their results, the connector's last error
//! and its meaning, the held and newest versions and the lag, and the
//! recent-probes table with its `/debug?id=N` links. It then follows the
//! failing probe's link in the browser and checks the debug view: the step
//! log names the tls step with reason expired, the metrics hold
//! `tetra_probe_failure_info` for it, and the settings show the proxy
//! password (configured inline, never used) as `<secret>`. That password
//! must appear nowhere: not in the page, the debug view, `/metrics` or the
//! exporter's standard error.
//!
//! Screenshots of the page and of the debug view are kept under
//! `target/test-artifacts/`.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::start;
use common::{shared_fixture, which, Harness, ZONE};

/// The inline proxy password: configured, never used, never shown.
const PASSWORD: &str = "Zq7-status-page-hunter2-xK9";

/// The longest one browser run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The first eight bytes of every PNG file.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Headless Chromium, each run with a fresh profile under `profiles`.
struct Browser {
    binary: PathBuf,
    profiles: tempfile::TempDir,
    runs: usize,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            binary: which("chromium"),
            profiles: tempfile::tempdir().expect("temp dir for browser profiles"),
            runs: 0,
        }
    }

    /// Runs Chromium with `args` after the common flags and returns its
    /// standard output. The run is killed, with every process it started,
    /// when it outlasts [`BROWSER_TIMEOUT`].
    fn run(&mut self, args: &[String]) -> String {
        self.runs += 1;
        let run_dir = self.profiles.path().join(format!("run-{}", self.runs));
        std::fs::create_dir_all(&run_dir).expect("create browser run dir");
        let stdout_path = run_dir.join("stdout");
        let stderr_path = run_dir.join("stderr");
        let mut child = Command::new(&self.binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // The exporter is on loopback; no proxy from the environment.
                "--no-proxy-server",
            ])
            .arg(format!(
                "--user-data-dir={}",
                run_dir.join("profile").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("create browser stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("create browser stderr file"))
            // Its own process group, so that a timeout kills the renderer
            // and helper processes too.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let status = loop {
            match child.try_wait().expect("wait for chromium") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", child.id())])
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "chromium {args:?} did not finish within {BROWSER_TIMEOUT:?}; killed\n{}",
                        tail(&stderr_path)
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        assert!(
            status.success(),
            "chromium {args:?} failed: {status}\n{}",
            tail(&stderr_path)
        );
        let mut stdout = String::new();
        std::fs::File::open(&stdout_path)
            .expect("open browser stdout")
            .read_to_string(&mut stdout)
            .expect("read browser stdout");
        stdout
    }

    /// The DOM of `url` after Chromium loaded it, serialized.
    fn dump_dom(&mut self, url: &str) -> String {
        let dom = self.run(&["--dump-dom".to_string(), url.to_string()]);
        assert!(!dom.trim().is_empty(), "chromium dumped no DOM for {url}");
        dom
    }

    /// Saves a screenshot of `url` at `path`.
    fn screenshot(&mut self, url: &str, path: &Path) {
        let _ = std::fs::remove_file(path);
        self.run(&[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,1600".to_string(),
            url.to_string(),
        ]);
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
        assert!(
            bytes.len() > PNG_SIGNATURE.len() && bytes.starts_with(&PNG_SIGNATURE),
            "{} is not a non-empty PNG file ({} bytes)",
            path.display(),
            bytes.len()
        );
        println!("screenshot of {url}: {}", path.display());
    }
}

/// The last lines of a browser's standard error, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Where the test keeps its screenshots.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Decodes the character references Chromium writes when it serializes a
/// DOM.
fn decode(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// The text of an HTML fragment: tags dropped, references decoded,
/// whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One table row as rendered: the text of each cell, and the raw HTML of
/// the row (for its links).
struct Row {
    cells: Vec<String>,
    html: String,
}

/// The rows of the table that follows the `<h2>` called `heading`.
fn table_after(dom: &str, heading: &str) -> Vec<Row> {
    let marker = format!("<h2>{heading}</h2>");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no section {heading:?} in the page:\n{dom}"));
    let section = &dom[start..];
    let table_start = section
        .find("<table")
        .unwrap_or_else(|| panic!("no table after {heading:?}"));
    let table_end = section[table_start..]
        .find("</table>")
        .map(|end| table_start + end)
        .unwrap_or_else(|| panic!("table after {heading:?} is not closed"));
    section[table_start..table_end]
        .split("<tr")
        .skip(1)
        .map(|row| {
            let cells = row
                .split("<t")
                .skip(1)
                .filter(|cell| cell.starts_with('d') || cell.starts_with('h'))
                .filter(|cell| !cell.starts_with("head") && !cell.starts_with("body"))
                .map(|cell| text_of(&format!("<t{cell}")))
                .collect();
            Row {
                cells,
                html: row.to_string(),
            }
        })
        .collect()
}

/// The value cell of the `<th>name</th><td>value</td>` row called `name`.
fn field<'a>(rows: &'a [Row], name: &str) -> &'a str {
    rows.iter()
        .find(|row| row.cells.first().map(String::as_str) == Some(name))
        .and_then(|row| row.cells.get(1))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no row {name:?}"))
}

/// The `href` of the first link in an HTML fragment.
fn first_href(html: &str) -> Option<String> {
    let at = html.find("href=\"")? + "href=\"".len();
    let end = html[at..].find('"')?;
    Some(decode(&html[at..at + end]))
}

/// The part of the debug text between `start` and the next of `ends`.
fn debug_section<'a>(text: &'a str, start: &str, end: Option<&str>) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the debug view:\n{text}"));
    let rest = &text[from + start.len()..];
    match end.and_then(|end| rest.find(end)) {
        Some(to) => &rest[..to],
        None => rest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_and_debug_view_in_headless_chromium() {
    let began = Instant::now();
    let harness = Harness::start().await;
    let local_state = harness.write(
        "local.xml",
        &std::fs::read(shared_fixture("connector/local-legacy-proxy-auth.xml"))
            .expect("read the local.xml fixture"),
    );
    let yaml = harness.config_yaml(
        &format!(
            "  - host: good.{ZONE}\n    port: {}\n  - host: expired.{ZONE}\n    port: {}",
            harness.port("good"),
            harness.port("expired")
        ),
        &format!(
            "connector: {{local_state: \"{}\"}}\nversions: {{url: \"{}\"}}\n\
             proxy: {{username: svc-updates, password: \"{PASSWORD}\", from_policy: false, \
             from_environment: false}}\n",
            local_state.display(),
            harness.versions_url
        ),
    );
    let config = harness.write("config.yml", yaml.as_bytes());
    let exporter = start(&config);
    let mut browser = Browser::new();
    let artifacts = artifacts_dir();

    // The status page, as the browser rendered it.
    let page_url = format!("{}/", exporter.base);
    let dom = browser.dump_dom(&page_url);
    assert!(
        dom.contains("<title>tetra-exporter</title>"),
        "no title in the page:\n{dom}"
    );
    assert!(
        !dom.contains(PASSWORD),
        "the password is in the page:\n{dom}"
    );

    let servers = table_after(&dom, "Update path");
    let server_row = |host: &str| -> Vec<String> {
        servers
            .iter()
            .find(|row| row.cells.first().map(String::as_str) == Some(host))
            .map(|row| row.cells.clone())
            .unwrap_or_else(|| panic!("{host} is not listed under Update path:\n{dom}"))
    };
    let good = server_row(&format!("good.{ZONE}"));
    assert_eq!(good[1], "direct", "{good:?}");
    assert_eq!(good[2], "success", "{good:?}");
    let expired = server_row(&format!("expired.{ZONE}"));
    assert_eq!(expired[1], "direct", "{expired:?}");
    assert_eq!(expired[2], "failed at tls (expired)", "{expired:?}");
    assert!(
        !expired[3].is_empty(),
        "no detail for the failure: {expired:?}"
    );

    let connector = table_after(&dom, "Connector");
    assert_eq!(
        field(&connector, "local.xml"),
        local_state.display().to_string()
    );
    assert_eq!(
        field(&connector, "last update error"),
        "4294965196 (proxy_auth_failed)"
    );

    let definitions = table_after(&dom, "Definitions");
    assert_eq!(field(&definitions, "held"), "90600");
    assert_eq!(field(&definitions, "newest published"), "90606");
    assert_eq!(field(&definitions, "behind"), "6 versions");

    let probes = table_after(&dom, "Recent probes");
    let recorded: Vec<&Row> = probes
        .iter()
        .filter(|row| row.html.contains("<td"))
        .collect();
    assert!(recorded.len() >= 2, "fewer than two recent probes:\n{dom}");
    for row in &recorded {
        let href = first_href(&row.html).expect("a recent probe without a debug link");
        let id = href
            .strip_prefix("/debug?id=")
            .unwrap_or_else(|| panic!("link {href:?} is not /debug?id=N"));
        assert!(
            id.parse::<u64>().is_ok(),
            "link {href:?} is not /debug?id=N"
        );
        assert_eq!(row.cells[0], id, "the link's text is not its id");
    }
    let failing = recorded
        .iter()
        .find(|row| {
            row.cells.get(3).map(String::as_str) == Some(&format!("expired.{ZONE}"))
                && row.cells.get(5).map(String::as_str) == Some("failed at tls (expired)")
        })
        .unwrap_or_else(|| panic!("the failing probe is not in Recent probes:\n{dom}"));
    assert!(
        recorded.iter().any(|row| {
            row.cells.get(3).map(String::as_str) == Some(&format!("good.{ZONE}"))
                && row.cells.get(5).map(String::as_str) == Some("success")
        }),
        "the good probe is not in Recent probes:\n{dom}"
    );
    let debug_href = first_href(&failing.html).expect("the failing probe's debug link");

    let page_png = artifacts.join("status-page.png");
    browser.screenshot(&page_url, &page_png);

    // Follow the failing probe's link, in the browser.
    let debug_url = format!("{}{}", exporter.base, debug_href);
    let debug_dom = browser.dump_dom(&debug_url);
    assert!(
        !debug_dom.contains(PASSWORD),
        "the password is in the debug view:\n{debug_dom}"
    );
    let pre_start = debug_dom
        .find("<pre")
        .and_then(|at| debug_dom[at..].find('>').map(|end| at + end + 1))
        .unwrap_or_else(|| panic!("the debug view is not shown as text:\n{debug_dom}"));
    let pre_end = debug_dom[pre_start..]
        .find("</pre>")
        .map(|end| pre_start + end)
        .expect("the debug view's text is not closed");
    let debug = decode(&debug_dom[pre_start..pre_end]);

    let log = debug_section(
        &debug,
        "Logs for the probe:",
        Some("Metrics that would have been returned:"),
    );
    assert!(
        log.contains(&format!("server=expired.{ZONE} route=direct")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.starts_with("step=tls ") && line.contains("failed reason=expired")),
        "the step log does not name tls with reason expired:\n{log}"
    );
    assert!(log.contains("result=failure"), "{log}");

    let metrics = debug_section(
        &debug,
        "Metrics that would have been returned:",
        Some("Module configuration:"),
    );
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("tetra_probe_failure_info{")
                && line.contains(&format!("server=\"expired.{ZONE}\""))
                && line.contains("step=\"tls\"")
                && line.contains("reason=\"expired\"")
                && line
                    .rsplit_once(' ')
                    .and_then(|(_, value)| value.parse::<f64>().ok())
                    == Some(1.0)
        }),
        "no tetra_probe_failure_info for tls/expired:\n{metrics}"
    );

    let settings = debug_section(&debug, "Module configuration:", None);
    assert!(
        settings
            .lines()
            .any(|line| line.trim_start().starts_with("password:") && line.contains("<secret>")),
        "the settings do not show the password as <secret>:\n{settings}"
    );
    assert!(settings.contains("svc-updates"), "{settings}");

    let debug_png = artifacts.join("status-page-debug.png");
    browser.screenshot(&debug_url, &debug_png);

    // Nor in the exposition, nor in anything the exporter logged.
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
        .get(format!("{}/metrics", exporter.base))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("read /metrics");
    assert!(
        metrics.contains("tetra_probe_success"),
        "not an exposition:\n{metrics}"
    );
    assert!(!metrics.contains(PASSWORD), "the password is in /metrics");
    let stderr = exporter.logs();
    assert!(
        stderr.contains("message=listening"),
        "the exporter's log was not collected:\n{stderr}"
    );
    assert!(
        !stderr.contains(PASSWORD),
        "the password is in the exporter's log:\n{stderr}"
    );

    println!(
        "status page test took {:.1}s ({} browser runs)",
        began.elapsed().as_secs_f64(),
        browser.runs
    );
}
