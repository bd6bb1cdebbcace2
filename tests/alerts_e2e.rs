//! The alert rules, dashboards and runbook, proven: promtool checks and unit
//! tests, the mixin conventions, dashboards importable as they are, and an
//! end-to-end run in which a real Prometheus scrapes real exporters pointed
//! at the loopback test servers and a real Alertmanager delivers each
//! scenario's alert, and no other, to a webhook in this process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::prometheus::{
    alerts_dir, binary, files_ending, rule_files, rule_groups, shortened_rules, start_alertmanager,
    start_prometheus, start_webhook, string_map, Target,
};
use common::{shared_fixture, Harness, ZONE};
use tetra_exporter::probe::Step;

/// The steps of the probe chain, as the exporter names them; each needs an
/// alert of its own.
const STEPS: [&str; 7] = [
    Step::Dns.as_str(),
    Step::Connect.as_str(),
    Step::ProxyConnect.as_str(),
    Step::ProxyAuth.as_str(),
    Step::Tls.as_str(),
    Step::Revocation.as_str(),
    Step::Download.as_str(),
];

/// What Prometheus loads in place of every `for:` in the end-to-end test.
const SHORT_FOR: &str = "5s";

fn project_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn rule_files_pass_promtool_check_and_unit_tests() {
    run(Command::new(binary("promtool"))
        .args(["check", "rules"])
        .args(rule_files()));

    let tests_dir = alerts_dir().join("tests");
    let tests = files_ending(&tests_dir, ".test.yml");
    assert!(!tests.is_empty());
    run(Command::new(binary("promtool"))
        .current_dir(&tests_dir)
        .args(["test", "rules"])
        .args(tests.iter().map(|p| p.file_name().expect("name"))));
}

/// The anchor GitHub gives a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn alerts_follow_the_conventions_and_have_tests_and_runbook_sections() {
    let runbook = std::fs::read_to_string(project_file("docs/runbook.md")).expect("runbook");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(slug)
        .collect();
    let tests: String = files_ending(&alerts_dir().join("tests"), ".test.yml")
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("test file"))
        .collect();

    let mut step_alerts = BTreeSet::new();
    let alerts: Vec<_> = rule_groups()
        .into_iter()
        .flat_map(|group| group.rules)
        .filter(|rule| rule.alert.is_some())
        .collect();
    assert!(!alerts.is_empty());
    for rule in &alerts {
        let name = rule.alert.as_deref().expect("alert");
        assert!(
            name.starts_with("Tetra")
                && name.chars().all(|c| c.is_ascii_alphanumeric())
                && name.chars().nth(5).is_some_and(|c| c.is_ascii_uppercase()),
            "{name}: not PascalCase with the Tetra prefix"
        );
        assert!(
            matches!(
                rule.labels.get("severity").map(String::as_str),
                Some("critical" | "warning" | "info")
            ),
            "{name}: severity"
        );
        assert!(rule.for_.is_some(), "{name}: no for:");
        let summary = &rule.annotations["summary"];
        assert!(!summary.contains("{{"), "{name}: summary must be static");
        let description = &rule.annotations["description"];
        assert!(
            description.contains("{{"),
            "{name}: description must be templated"
        );
        let anchor = rule.annotations["runbook_url"]
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url must point into docs/runbook.md"));
        assert!(
            anchors.contains(anchor),
            "{name}: no runbook section #{anchor}"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name}: no promtool test"
        );
        for step in STEPS {
            if rule.expr.contains(&format!("step=\"{step}\"")) {
                step_alerts.insert(step);
                for label in ["server", "route", "step", "reason"] {
                    assert!(
                        description.contains(&format!("$labels.{label}")),
                        "{name}: description does not name the {label}"
                    );
                }
            }
        }
    }
    assert_eq!(
        step_alerts,
        STEPS.into_iter().collect(),
        "one alert per step"
    );
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let files = files_ending(&project_file("dashboards"), ".json");
    assert!(
        files.len() >= 2,
        "an overview and a single-endpoint dashboard"
    );
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard");
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, json)
        })
        .collect()
}

#[test]
fn dashboards_import_as_they_are() {
    const CURRENT: [&str; 12] = [
        "timeseries",
        "stat",
        "table",
        "state-timeline",
        "status-history",
        "bargauge",
        "gauge",
        "barchart",
        "piechart",
        "heatmap",
        "text",
        "row",
    ];
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = path.display();
        for leftover in ["id", "iteration", "gnetId", "__inputs", "__requires"] {
            assert!(dashboard.get(leftover).is_none(), "{file}: {leftover}");
        }
        let uid = dashboard["uid"].as_str().expect("uid");
        assert!(
            !uid.is_empty() && uids.insert(uid.to_string()),
            "{file}: uid"
        );

        let variables = dashboard["templating"]["list"].as_array().expect("vars");
        let variable = |name: &str| {
            variables
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{file}: no {name} variable"))
        };
        let datasource = variable("datasource");
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");
        for name in ["job", "instance"] {
            let v = variable(name);
            assert_eq!(v["type"], "query", "{file}: {name}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: {name}");
        }

        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            let kind = panel["type"].as_str().expect("type");
            assert!(CURRENT.contains(&kind), "{file}: {title}: type {kind}");
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{file}: {title}: id"
            );
            assert!(panel["gridPos"].is_object(), "{file}: {title}: gridPos");
            if kind == "row" || kind == "text" {
                continue;
            }
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(unit.is_some_and(|u| !u.is_empty()), "{file}: {title}: unit");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title}"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}: targets");
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
                assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            }
        }
    }
}

/// Metric names in a PromQL expression: identifiers outside string
/// literals that start with `tetra_` or are recording rules (`a:b`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let metric_like = word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if metric_like && (word.starts_with("tetra_") || word.contains(':')) {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
        if c == '"' || c == '\'' || c == '`' {
            quote = Some(c);
        }
    }
    names
}

#[test]
fn metric_names_skip_strings_labels_and_ranges() {
    let names = metric_names(
        r#"sum by (step) (tetra_a_b{x="tetra_not", y=~"a:b"}[5m:1m]) > on() group_left() tetra:threshold:x"#,
    );
    let expected: BTreeSet<String> = ["tetra_a_b", "tetra:threshold:x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, expected);
}

/// A scenario: one exporter, its config, and the alerts it must raise as
/// (alert name, severity, reason or code).
struct Scenario {
    name: &'static str,
    server: String,
    /// `local.xml` contents; `None` turns the connector off.
    local_state: Option<Vec<u8>>,
    versions_url: String,
    /// Top-level YAML added to the scenario's config (a proxy, say).
    extra: String,
    expect: Vec<(&'static str, &'static str, &'static str)>,
}

type Key = (String, String, String, String);

/// (scenario, alert name, severity, reason or code) of an alert's labels.
fn key(labels: &BTreeMap<String, String>) -> Key {
    let get = |name: &str| labels.get(name).cloned().unwrap_or_default();
    let detail = labels
        .get("reason")
        .or_else(|| labels.get("code"))
        .cloned()
        .unwrap_or_default();
    (get("scenario"), get("alertname"), get("severity"), detail)
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query).expect("url");
        let response = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let body = response.bytes().await.expect("body");
        serde_json::from_slice(&body).expect("json")
    }

    /// Runs an instant query; panics with Prometheus's error.
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = self.get("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Substitutes the dashboard variables and Grafana's interval macros.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("${job}", "tetra")
        .replace("$job", "tetra")
        .replace("${instance}", instance)
        .replace("$instance", instance)
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_end_to_end_and_dashboard_queries_run() {
    let began = Instant::now();
    let harness = Harness::start().await;
    let healthy_xml =
        std::fs::read_to_string(shared_fixture("connector/local-current-healthy.xml"))
            .expect("fixture");
    assert!(healthy_xml.contains("\"1:90606\"") && healthy_xml.contains("<lasterror>0<"));
    let holding = |version: u32| {
        Some(
            healthy_xml
                .replace("\"1:90606\"", &format!("\"1:{version}\""))
                .into_bytes(),
        )
    };
    let server = |name: &str, path: &str| {
        format!(
            "  - host: {name}.{ZONE}\n    port: {}\n    path: {path}",
            harness.port(name)
        )
    };
    let good = server("good", "/");
    let versions = harness.versions_url.clone();
    let ntlm_proxy = common::proxies::start_ntlm_only().await;
    let scenarios = vec![
        Scenario {
            name: "healthy",
            server: good.clone(),
            local_state: holding(90606),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![],
        },
        Scenario {
            name: "dns_nxdomain",
            server: format!("  - host: nothing-here.{ZONE}"),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateDnsFailing", "critical", "nxdomain")],
        },
        Scenario {
            name: "connect_refused",
            server: format!("  - host: closed.{ZONE}\n    port: {}", harness.closed_port),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateConnectFailing", "critical", "refused")],
        },
        Scenario {
            name: "tls_unknown_issuer",
            server: server("unknownca", "/"),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateTlsFailing", "critical", "unknown_issuer")],
        },
        Scenario {
            name: "tls_expired",
            server: server("expired", "/"),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateTlsFailing", "critical", "expired")],
        },
        Scenario {
            name: "download_http_status",
            server: server("good", "/missing"),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateDownloadFailing", "critical", "http_status")],
        },
        Scenario {
            name: "definitions_behind_warning",
            server: good.clone(),
            local_state: holding(90599),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraDefinitionsBehind", "warning", "")],
        },
        Scenario {
            name: "definitions_behind_critical",
            server: good.clone(),
            local_state: holding(90590),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraDefinitionsBehind", "critical", "")],
        },
        Scenario {
            name: "connector_lasterror",
            server: good.clone(),
            local_state: Some(
                healthy_xml
                    .replace("<lasterror>0<", "<lasterror>4294965193<")
                    .into_bytes(),
            ),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraConnectorUpdateError", "warning", "4294965193")],
        },
        Scenario {
            name: "connector_unreadable",
            server: good.clone(),
            local_state: Some(
                std::fs::read(shared_fixture("connector/local-truncated.xml")).expect("fixture"),
            ),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraConnectorStateUnreadable", "warning", "")],
        },
        Scenario {
            name: "versions_unreachable",
            server: good.clone(),
            local_state: None,
            versions_url: harness.versions_broken_url.clone(),
            extra: String::new(),
            expect: vec![("TetraVersionsFetchFailing", "info", "")],
        },
        Scenario {
            name: "proxy_connect_refused",
            server: good.clone(),
            local_state: None,
            versions_url: versions.clone(),
            extra: format!("proxy: {{url: 'http://127.0.0.1:{}'}}", harness.closed_port),
            // The versions document goes over the same route, and fails too.
            expect: vec![
                ("TetraUpdateProxyConnectFailing", "critical", "refused"),
                ("TetraVersionsFetchFailing", "info", ""),
            ],
        },
        Scenario {
            name: "proxy_auth_ntlm_only",
            server: good.clone(),
            local_state: None,
            versions_url: versions.clone(),
            extra: format!(
                "proxy: {{url: 'http://127.0.0.1:{}', username: u, password: p}}",
                ntlm_proxy.port
            ),
            // The versions document goes over the same route, and fails too.
            expect: vec![
                (
                    "TetraUpdateProxyAuthFailing",
                    "critical",
                    "scheme_unsupported",
                ),
                ("TetraVersionsFetchFailing", "info", ""),
            ],
        },
        Scenario {
            name: "revocation_revoked",
            server: format!(
                "  - host: ocsp-revoked.{}\n    port: {}",
                common::pki::REV_ZONE,
                harness.revocation.port("ocsp-revoked")
            ),
            local_state: None,
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraUpdateRevocationFailing", "critical", "revoked")],
        },
        Scenario {
            name: "revocation_outage",
            server: format!(
                "  - host: crl-outage.{}\n    port: {}",
                common::pki::REV_ZONE,
                harness.revocation.port("crl-outage")
            ),
            local_state: None,
            versions_url: versions.clone(),
            extra: "revocation: {recheck_interval: 0s, fetch_timeout: 1s}".to_string(),
            expect: vec![("TetraRevocationOutageAhead", "warning", "")],
        },
        Scenario {
            name: "exporter_down",
            server: good.clone(),
            local_state: holding(90606),
            versions_url: versions.clone(),
            extra: String::new(),
            expect: vec![("TetraExporterDown", "warning", "")],
        },
    ];

    // One exporter per scenario, all scraped by one Prometheus.
    let mut exporters = Vec::new();
    let mut targets = Vec::new();
    let mut expected = BTreeSet::new();
    for scenario in &scenarios {
        let connector = match &scenario.local_state {
            Some(contents) => {
                let path = harness.write(&format!("{}-local.xml", scenario.name), contents);
                format!("connector: {{local_state: \"{}\"}}", path.display())
            }
            None => "connector: {enabled: false}".to_string(),
        };
        let yaml = harness.config_yaml(
            &scenario.server,
            &format!(
                "{connector}\nversions: {{url: \"{}\"}}\nprobe: {{timeout: 5s, min_interval: 1s}}\n{}",
                scenario.versions_url, scenario.extra
            ),
        );
        let config = harness.write(&format!("{}.yml", scenario.name), yaml.as_bytes());
        let exporter = common::process::start(&config);
        targets.push(Target {
            scenario: scenario.name,
            address: exporter.address.clone(),
        });
        exporters.push((scenario.name, exporter));
        for (alert, severity, detail) in &scenario.expect {
            expected.insert((
                scenario.name.to_string(),
                alert.to_string(),
                severity.to_string(),
                detail.to_string(),
            ));
        }
    }

    let work = harness.dir.path();
    let rules_dir = work.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    let rules = shortened_rules(&rules_dir, SHORT_FOR);
    let (webhook, received) = start_webhook().await;
    let (_alertmanager, alertmanager) = start_alertmanager(work, webhook);
    let (_prometheus, base) = start_prometheus(work, &targets, &rules, alertmanager);
    let api = Api {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        base,
    };

    // Ready, then the exporter of the "down" scenario is stopped once it
    // has been scraped: its target goes down as a crashed exporter's does.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = api
            .client
            .get(format!("{}/-/ready", api.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let targets = api.get("/api/v1/targets", &[]).await;
        let up = targets["data"]["activeTargets"]
            .as_array()
            .expect("targets")
            .iter()
            .any(|t| t["labels"]["scenario"] == "exporter_down" && t["health"] == "up");
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "first scrape did not come");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    exporters
        .iter_mut()
        .filter(|(name, _)| *name == "exporter_down")
        .for_each(|(_, exporter)| exporter.stop());

    // Once the outage scenario's CRL has been fetched and seen, its host
    // stops answering: the path then lives on the cached CRL.
    loop {
        let fetched = api
            .query("tetra_revocation_fetch_success{scenario=\"revocation_outage\"} == 1")
            .await;
        if !fetched.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage CRL was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    harness
        .revocation
        .crl_offline
        .store(true, std::sync::atomic::Ordering::SeqCst);

    // Every expected alert reaches the webhook.
    let received_keys = || -> BTreeSet<Key> {
        received
            .lock()
            .expect("lock")
            .iter()
            .map(|alert| key(&alert.labels))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !received_keys().is_superset(&expected) {
        let missing: Vec<_> = expected.difference(&received_keys()).cloned().collect();
        assert!(
            Instant::now() < deadline,
            "alerts never reached the webhook: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fired_after = began.elapsed();

    // Then long enough for any other alert to fire too: twice the `for:`
    // and a few scrapes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alerts = api.get("/api/v1/alerts", &[]).await;
    let in_prometheus: BTreeSet<Key> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|alert| {
            let labels = string_map(&alert["labels"]);
            assert_eq!(alert["state"], "firing", "{alert}");
            key(&labels)
        })
        .collect();
    assert_eq!(in_prometheus, expected, "alerts in Prometheus");
    assert_eq!(received_keys(), expected, "alerts at the webhook");
    for alert in received.lock().expect("lock").iter() {
        let description = &alert.annotations["description"];
        assert!(
            !description.is_empty() && !description.contains("<no value>"),
            "{:?}: {description:?}",
            alert.labels
        );
        if alert.labels.get("alertname").map(String::as_str) == Some("TetraRevocationOutageAhead") {
            let url = &alert.labels["url"];
            assert!(
                description.contains(url.as_str())
                    && description.contains("has not answered since")
                    && !description.contains("an unknown time")
                    && description.contains("expires in"),
                "{description:?}"
            );
        }
        if let Some(step) = alert.labels.get("step") {
            for label in ["server", "route", "reason"] {
                assert!(
                    description.contains(&alert.labels[label]),
                    "{description:?} does not name the {label}"
                );
            }
            assert!(description.contains(step.as_str()), "{description:?}");
        }
    }

    // Every metric a dashboard or rule names is exposed by the exporter (as
    // scraped in these scenarios) or recorded by a rule.
    let exposed: BTreeSet<String> = api.get("/api/v1/label/__name__/values", &[]).await["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|name| name.as_str())
        .filter(|name| name.starts_with("tetra_"))
        .map(str::to_string)
        .collect();
    let groups = rule_groups();
    let recorded: BTreeSet<String> = groups
        .iter()
        .flat_map(|group| &group.rules)
        .filter_map(|rule| rule.record.clone())
        .collect();
    let known = |name: &str| exposed.contains(name) || recorded.contains(name);
    for rule in groups.iter().flat_map(|group| &group.rules) {
        for name in metric_names(&rule.expr) {
            assert!(known(&name), "rule {:?} uses unknown {name}", rule.alert);
        }
    }

    // Every panel's query runs against this Prometheus, with the variables
    // substituted: the overview for every endpoint, the single-endpoint view
    // for the healthy one.
    let healthy = targets
        .iter()
        .find(|t| t.scenario == "healthy")
        .expect("healthy")
        .address
        .clone();
    let mut queried = 0;
    for (path, dashboard) in dashboards() {
        let instance = if dashboard["uid"] == "tetra-endpoint" {
            healthy.as_str()
        } else {
            ".*"
        };
        for variable in dashboard["templating"]["list"].as_array().expect("vars") {
            let Some(definition) = variable["query"]["query"].as_str() else {
                continue;
            };
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(series, _)| series)
                .unwrap_or_else(|| panic!("{}: {definition}", path.display()));
            let result = api.query(&substitute(inner, instance)).await;
            assert!(
                !result.is_empty(),
                "{}: {definition} is empty",
                path.display()
            );
        }
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                for name in metric_names(expr) {
                    assert!(
                        known(&name),
                        "{}: panel {}: unknown metric {name}",
                        path.display(),
                        panel["title"]
                    );
                }
                api.query(&substitute(expr, instance)).await;
                queried += 1;
            }
        }
    }
    assert!(queried > 20, "{queried} panel queries");
    eprintln!(
        "alerts reached the webhook after {fired_after:?}; test took {:?}",
        began.elapsed()
    );
}
