//! The proxy route through real proxies on loopback: squid with Basic
//! authentication, tinyproxy (401 to wrong credentials) and an NTLM-only
//! proxy. Each case asserts the step, the reason, the CONNECT status and the
//! connector's code; the binary test asserts the password leaks nowhere.

mod common;

use std::time::Duration;

use common::proxies::{start_ntlm_only, start_squid, start_tinyproxy, PROXY_PASSWORD, PROXY_USER};
use common::{sample, Harness, ZONE};
use tetra_exporter::collect::Exporter;
use tetra_exporter::config::Config;
use tetra_exporter::metrics::{encode, render, Format};
use tokio::time::Instant;

const QUIET: &str = "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {timeout: 3s}";

async fn scrape_yaml(yaml: &str) -> String {
    let config = Config::from_yaml(yaml).expect("test config is valid");
    let exporter = Exporter::new(config).expect("exporter");
    let snapshot = exporter
        .collect(Instant::now() + Duration::from_secs(10))
        .await;
    encode(&render(&snapshot), Format::Prometheus).expect("encode")
}

/// Probes `name.tetra.test` on `port` through the proxy at `proxy_url`.
async fn through(
    harness: &Harness,
    name: &str,
    port: u16,
    proxy_url: &str,
    credentials: Option<(&str, &str)>,
) -> String {
    let auth = match credentials {
        Some((user, password)) => format!(", username: {user}, password: '{password}'"),
        None => String::new(),
    };
    let yaml = harness.config_yaml(
        &format!("  - host: {name}.{ZONE}\n    port: {port}"),
        &format!("{QUIET}\nproxy: {{url: '{proxy_url}'{auth}}}"),
    );
    scrape_yaml(&yaml).await
}

struct Expect<'a> {
    step: Option<&'a str>,
    reason: &'a str,
    status: Option<f64>,
    code: f64,
    connected: f64,
}

fn check(text: &str, host: &str, proxy: &str, expect: Expect<'_>) {
    let base = format!("server=\"{host}\",route=\"proxy\"");
    let proxy_labels = format!("server=\"{host}\",proxy=\"{proxy}\"");
    match expect.step {
        None => assert_eq!(
            sample(text, &format!("tetra_probe_success{{{base}}}")),
            Some(1.0),
            "{text}"
        ),
        Some(step) => {
            assert_eq!(
                sample(text, &format!("tetra_probe_success{{{base}}}")),
                Some(0.0)
            );
            assert_eq!(
                sample(
                    text,
                    &format!(
                        "tetra_probe_failure_info{{{base},step=\"{step}\",reason=\"{}\"}}",
                        expect.reason
                    )
                ),
                Some(1.0),
                "expected {step}/{}\n{text}",
                expect.reason
            );
            assert_eq!(
                sample(
                    text,
                    &format!("tetra_probe_failed_step{{{base},step=\"{step}\"}}")
                ),
                Some(1.0)
            );
        }
    }
    assert_eq!(
        sample(
            text,
            &format!("tetra_proxy_connect_status_code{{{proxy_labels}}}")
        ),
        expect.status,
        "CONNECT status\n{text}"
    );
    assert_eq!(
        sample(text, &format!("tetra_proxy_error_code{{{proxy_labels}}}")),
        Some(expect.code),
        "connector code\n{text}"
    );
    assert_eq!(
        sample(
            text,
            &format!("tetra_proxy_connect_success{{{proxy_labels}}}")
        ),
        Some(expect.connected)
    );
    // The proxy route never runs the direct route's first steps.
    assert!(!text.contains(&format!(
        "tetra_probe_step_duration_seconds{{{base},step=\"dns\"}}"
    )));
    assert!(!text.contains(PROXY_PASSWORD), "password leaked:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_cases_are_named() {
    let harness = Harness::start().await;
    let squid = start_squid(&harness.dir.path().join("squid")).await;
    let url = format!("http://127.0.0.1:{}", squid.port);
    let proxy = format!("127.0.0.1:{}", squid.port);
    let good = harness.port("good");
    let creds = Some((PROXY_USER, PROXY_PASSWORD));

    let text = through(&harness, "good", good, &url, creds).await;
    let ok = Expect {
        step: None,
        reason: "",
        status: Some(200.0),
        code: 0.0,
        connected: 1.0,
    };
    check(&text, &format!("good.{ZONE}"), &proxy, ok);
    assert!(text.contains(&format!(
        "tetra_proxy_info{{proxy=\"{proxy}\",source=\"config\",auth=\"basic\"}} 1"
    )));
    // The revocation step fetched its CRLs and OCSP answers through the
    // proxy too, as the connector's TLS stack does.
    let log = squid.access_log.clone().expect("squid log");
    let mut access = String::new();
    for _ in 0..50 {
        access = std::fs::read_to_string(&log).unwrap_or_default();
        if access.contains(".crl") && access.contains("POST") && access.contains("CONNECT") {
            break;
        }
        // squid logs a tunnel when it closes, a moment after the probe.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(access.contains("CONNECT good.tetra.test"), "{access}");
    assert!(
        access.contains(".crl") && access.contains("POST"),
        "{access}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("tetra_download_http_status_code{{server=\"good.{ZONE}\",route=\"proxy\"}}")
        ),
        Some(200.0)
    );

    let text = through(&harness, "good", good, &url, None).await;
    let required = Expect {
        step: Some("proxy_auth"),
        reason: "auth_required",
        status: Some(407.0),
        code: 4294965196.0,
        connected: 1.0,
    };
    check(&text, &format!("good.{ZONE}"), &proxy, required);

    let text = through(&harness, "good", good, &url, Some((PROXY_USER, "wrong"))).await;
    let rejected = Expect {
        step: Some("proxy_auth"),
        reason: "auth_rejected",
        status: Some(407.0),
        code: 4294965196.0,
        connected: 1.0,
    };
    check(&text, &format!("good.{ZONE}"), &proxy, rejected);

    let text = through(&harness, "denied", good, &url, creds).await;
    let denied = Expect {
        step: Some("download"),
        reason: "tunnel_refused",
        status: Some(403.0),
        code: 4294965187.0,
        connected: 1.0,
    };
    check(&text, &format!("denied.{ZONE}"), &proxy, denied);

    // The update server is down behind the proxy: squid answers 503.
    let text = through(&harness, "down", harness.closed_port, &url, creds).await;
    let down = Expect {
        step: Some("download"),
        reason: "tunnel_refused",
        status: Some(503.0),
        code: 4294965187.0,
        connected: 1.0,
    };
    check(&text, &format!("down.{ZONE}"), &proxy, down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_proxies_are_named() {
    let harness = Harness::start().await;
    let good = harness.port("good");
    let host = format!("good.{ZONE}");
    let creds = Some((PROXY_USER, PROXY_PASSWORD));

    let closed = harness.closed_port;
    let text = through(
        &harness,
        "good",
        good,
        &format!("http://127.0.0.1:{closed}"),
        creds,
    )
    .await;
    let refused = Expect {
        step: Some("proxy_connect"),
        reason: "refused",
        status: None,
        code: 4294965193.0,
        connected: 0.0,
    };
    check(&text, &host, &format!("127.0.0.1:{closed}"), refused);

    // Accepts TCP, never answers the CONNECT.
    let silent = common::start_silent_tcp().await;
    let began = std::time::Instant::now();
    let text = through(
        &harness,
        "good",
        good,
        &format!("http://127.0.0.1:{silent}"),
        creds,
    )
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
    let hung = Expect {
        step: Some("proxy_connect"),
        reason: "timeout",
        status: None,
        code: 4294965193.0,
        connected: 1.0,
    };
    check(&text, &host, &format!("127.0.0.1:{silent}"), hung);

    // The proxy's own name does not resolve.
    let text = through(
        &harness,
        "good",
        good,
        &format!("http://noproxy.{ZONE}:3128"),
        creds,
    )
    .await;
    let unresolved = Expect {
        step: Some("proxy_connect"),
        reason: "dns",
        status: None,
        code: 4294965193.0,
        connected: 0.0,
    };
    check(&text, &host, &format!("noproxy.{ZONE}:3128"), unresolved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tinyproxy_401_and_ntlm_only_are_named() {
    let harness = Harness::start().await;
    let good = harness.port("good");
    let host = format!("good.{ZONE}");

    let tiny = start_tinyproxy(&harness.dir.path().join("tinyproxy")).await;
    let text = through(
        &harness,
        "good",
        good,
        &format!("http://127.0.0.1:{}", tiny.port),
        Some((PROXY_USER, "wrong")),
    )
    .await;
    let rejected = Expect {
        step: Some("proxy_auth"),
        reason: "auth_rejected",
        status: Some(401.0),
        code: 4294965196.0,
        connected: 1.0,
    };
    check(&text, &host, &format!("127.0.0.1:{}", tiny.port), rejected);

    let ntlm = start_ntlm_only().await;
    let url = format!("http://127.0.0.1:{}", ntlm.port);
    let text = through(
        &harness,
        "good",
        good,
        &url,
        Some((PROXY_USER, PROXY_PASSWORD)),
    )
    .await;
    let unsupported = Expect {
        step: Some("proxy_auth"),
        reason: "scheme_unsupported",
        status: Some(407.0),
        code: 4294965196.0,
        connected: 1.0,
    };
    check(
        &text,
        &host,
        &format!("127.0.0.1:{}", ntlm.port),
        unsupported,
    );

    let text = through(&harness, "good", good, &url, None).await;
    let required = Expect {
        step: Some("proxy_auth"),
        reason: "auth_required",
        status: Some(407.0),
        code: 4294965196.0,
        connected: 1.0,
    };
    check(&text, &host, &format!("127.0.0.1:{}", ntlm.port), required);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_direct_shows_both_routes() {
    let harness = Harness::start().await;
    let good = harness.port("good");
    let host = format!("good.{ZONE}");
    // Through a proxy that only speaks NTLM the route fails; directly it works.
    let ntlm = start_ntlm_only().await;
    let yaml = harness.config_yaml(
        &format!("  - host: {host}\n    port: {good}"),
        &format!(
            "{QUIET}\nproxy: {{url: 'http://127.0.0.1:{}', username: u, password: p, compare_direct: true}}",
            ntlm.port
        ),
    );
    let text = scrape_yaml(&yaml).await;
    assert_eq!(
        sample(
            &text,
            &format!("tetra_probe_success{{server=\"{host}\",route=\"proxy\"}}")
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("tetra_probe_success{{server=\"{host}\",route=\"direct\"}}")
        ),
        Some(1.0),
        "{text}"
    );
}

fn policy_xml(server: &str, tetra_enabled: bool, proxy: Option<(&str, u16)>) -> String {
    let proxy = match proxy {
        Some((host, port)) => format!(
            "<proxy><server>{host}</server><port>{port}</port><type>1</type>\
             <authtype>1</authtype><username>{PROXY_USER}</username>\
             <password>obfuscated-by-the-console</password></proxy>"
        ),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignedInfo/>\
         <Object Id=\"xml-sig-policy\"><config><agent><scansettings><tetra>\
         <enable>{}</enable><updater><enable>1</enable><server>{server}</server>\
         <interval>3600</interval></updater></tetra></scansettings></agent>{proxy}\
         </config></Object></Signature>\n",
        u8::from(tetra_enabled)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_names_server_and_proxy() {
    let harness = Harness::start().await;
    let squid = start_squid(&harness.dir.path().join("squid")).await;
    let good = harness.port("good");
    let host = format!("good.{ZONE}");
    let local = harness.write(
        "local.xml",
        &std::fs::read(common::shared_fixture(
            "connector/local-current-healthy.xml",
        ))
        .expect("fixture"),
    );
    let password_file = harness.write("proxy-password", format!("{PROXY_PASSWORD}\n").as_bytes());

    // No servers and no proxy in the config: both come from the policy; the
    // policy's obfuscated password loses to the one from the file.
    let policy = harness.write(
        "policy.xml",
        policy_xml(
            &format!("{host}:{good}"),
            true,
            Some(("127.0.0.1", squid.port)),
        )
        .as_bytes(),
    );
    let yaml = format!(
        "dns: {{server: '{dns}'}}\ntls: {{ca_files: ['{ca}']}}\n\
         connector: {{local_state: '{local}', policy: '{policy}'}}\n\
         versions: {{enabled: false}}\n\
         proxy: {{password_file: '{pw}', from_environment: false}}\n",
        dns = harness.dns,
        ca = harness.ca_file.display(),
        local = local.display(),
        policy = policy.display(),
        pw = password_file.display(),
    );
    let text = scrape_yaml(&yaml).await;
    let proxy = format!("127.0.0.1:{}", squid.port);
    assert!(
        text.contains(&format!(
            "tetra_proxy_info{{proxy=\"{proxy}\",source=\"policy\",auth=\"basic\"}} 1"
        )),
        "{text}"
    );
    let ok = Expect {
        step: None,
        reason: "",
        status: Some(200.0),
        code: 0.0,
        connected: 1.0,
    };
    check(&text, &host, &proxy, ok);
    assert_eq!(sample(&text, "tetra_definitions_enabled"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            &format!(
                "tetra_connector_state_read_success{{file=\"{}\"}}",
                policy.display()
            )
        ),
        Some(1.0)
    );

    // A policy without a proxy: the policy's server, directly.
    std::fs::write(&policy, policy_xml(&format!("{host}:{good}"), true, None)).expect("write");
    let text = scrape_yaml(&yaml).await;
    assert_eq!(
        sample(
            &text,
            &format!("tetra_probe_success{{server=\"{host}\",route=\"direct\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("tetra_proxy_info{"));

    // A policy that cannot be read: the server and proxy are unknown, and
    // nothing is guessed (no direct probe of Cisco's server).
    std::fs::write(
        &policy,
        policy_xml(
            &format!("{host}:{good}"),
            true,
            Some(("127.0.0.1", squid.port)),
        )
        .replace("<port>", "<port>9")
        .replace("</port>", "9999</port>"),
    )
    .expect("write");
    let text = scrape_yaml(&yaml).await;
    assert_eq!(
        sample(
            &text,
            &format!(
                "tetra_connector_state_read_success{{file=\"{}\"}}",
                policy.display()
            )
        ),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("tetra_probe_success{"), "{text}");

    // TETRA disabled: reported as disabled, nothing probed, nothing failing.
    std::fs::write(&policy, policy_xml(&format!("{host}:{good}"), false, None)).expect("write");
    let text = scrape_yaml(&yaml).await;
    assert_eq!(
        sample(&text, "tetra_definitions_enabled"),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("tetra_probe_success{"), "{text}");
    assert!(!text.contains("tetra_probe_failure_info{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_no_log_and_no_metric() {
    let harness = Harness::start().await;
    let squid = start_squid(&harness.dir.path().join("squid")).await;
    let good = harness.port("good");
    let password_file = harness.write("proxy-password", PROXY_PASSWORD.as_bytes());
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
    };

    for (name, port) in [
        ("good", good),
        ("denied", good),
        ("down", harness.closed_port),
    ] {
        let yaml = harness.config_yaml(
            &format!("  - host: {name}.{ZONE}\n    port: {port}"),
            &format!(
                "connector: {{enabled: false}}\nversions: {{enabled: false}}\n\
                 proxy: {{url: 'http://127.0.0.1:{}', username: {PROXY_USER}, password_file: '{}'}}",
                squid.port,
                password_file.display()
            ),
        );
        let config = harness.write("config.yml", yaml.as_bytes());
        let mut exporter = common::process::start(&config);
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/metrics", exporter.base))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        exporter.stop();
        let logs = exporter.logs();

        assert!(text.contains("tetra_probe_success{"), "{text}");
        assert!(logs.contains("probe"), "debug logs were captured: {logs}");
        for secret in [PROXY_PASSWORD, encoded.as_str()] {
            assert!(!text.contains(secret), "{name}: secret in metrics");
            assert!(!logs.contains(secret), "{name}: secret in logs:\n{logs}");
        }
    }
}
