//! A real Prometheus and Alertmanager on loopback, a webhook receiver in the
//! test process, and the exporter binary as their scrape targets.
//!
//! Prometheus loads the project's rule files with every `for:` shortened, so
//! that an alert fires seconds after its condition holds; the conditions
//! themselves are the files' own. Alertmanager runs without clustering (its
//! default gossip port would listen on every interface) and sends every
//! alert, as its own group, to the webhook.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::{free_tcp_port, spawn, which, ChildGuard};

/// One rule of a Prometheus rule file.
#[derive(Debug, Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

/// The project's `alerts/` directory.
pub fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts")
}

/// The rule files under `alerts/`, sorted.
pub fn rule_files() -> Vec<PathBuf> {
    files_ending(&alerts_dir(), ".rules.yml")
}

/// Files in `dir` whose names end with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    files.sort();
    files
}

/// Every group of every rule file.
pub fn rule_groups() -> Vec<Group> {
    rule_files()
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("rule file");
            let file: RuleFile =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            file.groups
        })
        .collect()
}

/// The path of an installed binary; panics naming the README's command.
pub fn binary(name: &str) -> PathBuf {
    which(name)
}

/// Copies the rule files into `dir` with every `for:` set to `for_`, but
/// `TetraExporterAbsent`'s: Prometheus has no target at all for its first
/// seconds, which would fire it with a short `for:`. That alert is covered
/// by its promtool test.
pub fn shortened_rules(dir: &Path, for_: &str) -> Vec<PathBuf> {
    rule_files()
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("rule file");
            let mut in_absent = false;
            let shortened: Vec<String> = text
                .lines()
                .map(|line| {
                    if let Some(name) = line.trim().strip_prefix("- alert: ") {
                        in_absent = name == "TetraExporterAbsent";
                    }
                    match line.split_once("for: ") {
                        Some((indent, _)) if indent.trim().is_empty() && !in_absent => {
                            format!("{indent}for: {for_}")
                        }
                        _ => line.to_string(),
                    }
                })
                .collect();
            let target = dir.join(path.file_name().expect("name"));
            std::fs::write(&target, shortened.join("\n") + "\n").expect("write rules");
            target
        })
        .collect()
}

/// A scrape target: the exporter's address and the `scenario` label
/// Prometheus attaches to its series.
pub struct Target {
    pub scenario: &'static str,
    pub address: String,
}

/// Starts Prometheus scraping `targets` as job `tetra` every 2 seconds, with
/// `rules` and alerts sent to Alertmanager at `alertmanager`.
pub fn start_prometheus(
    dir: &Path,
    targets: &[Target],
    rules: &[PathBuf],
    alertmanager: SocketAddr,
) -> (ChildGuard, String) {
    let mut config = String::from(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 1s\n",
    );
    config.push_str("rule_files:\n");
    for rule in rules {
        config.push_str(&format!("  - \"{}\"\n", rule.display()));
    }
    config.push_str(&format!(
        "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n"
    ));
    config.push_str("scrape_configs:\n  - job_name: tetra\n    static_configs:\n");
    for target in targets {
        config.push_str(&format!(
            "      - targets: [\"{}\"]\n        labels: {{scenario: {}}}\n",
            target.address, target.scenario
        ));
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("prometheus config");
    let port = free_tcp_port();
    let mut command = Command::new(binary("prometheus"));
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--rules.alert.resend-delay=1s")
        .arg("--log.level=warn");
    (
        spawn("prometheus", &mut command),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Starts Alertmanager sending every alert to `webhook`, at once.
pub fn start_alertmanager(dir: &Path, webhook: SocketAddr) -> (ChildGuard, SocketAddr) {
    let config = format!(
        "route:\n  receiver: webhook\n  group_by: ['...']\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: webhook\n    \
         webhook_configs:\n      - url: \"http://{webhook}/alerts\"\n        \
         send_resolved: false\n"
    );
    let config_path = dir.join("alertmanager.yml");
    std::fs::write(&config_path, config).expect("alertmanager config");
    let port = free_tcp_port();
    let mut command = Command::new(binary("prometheus-alertmanager"));
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.path={}",
            dir.join("alertmanager-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    (
        spawn("alertmanager", &mut command),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    )
}

/// One alert as the webhook received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Starts the webhook receiver; every alert of every notification is kept.
pub async fn start_webhook() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) {
                            let alerts = payload["alerts"].as_array().cloned().unwrap_or_default();
                            let mut store = store.lock().expect("lock");
                            for alert in alerts {
                                store.push(Received {
                                    labels: string_map(&alert["labels"]),
                                    annotations: string_map(&alert["annotations"]),
                                });
                            }
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, received)
}

/// A JSON object of strings as a map.
pub fn string_map(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}
