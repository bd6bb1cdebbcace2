//! Operating the exporter safely, through the real binary: `/probe` and its
//! allowlist, secrets kept out of every output, reload by HTTP and SIGHUP,
//! TLS and basic auth on the web endpoint, and 200 concurrent probes of a
//! hanging target.

mod common;

use std::time::{Duration, Instant};

use common::process::ExporterProcess;
use common::proxies::start_ntlm_only;
use common::{sample, Harness, ZONE};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn get(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn start(harness: &Harness, name: &str, yaml: &str) -> ExporterProcess {
    let config = harness.write(name, yaml.as_bytes());
    ExporterProcess::start(&[format!("--config.file={}", config.display())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_allows_only_listed_targets() {
    let harness = Harness::start().await;
    let good = harness.port("good");
    let expired = harness.port("expired");
    let yaml = harness.config_yaml(
        &format!("  - host: good.{ZONE}\n    port: {good}"),
        &format!(
            "connector: {{enabled: false}}\nversions: {{enabled: false}}\n\
             allowed_targets: ['good.{ZONE}:{good}', '*.{ZONE}:{expired}']\n\
             modules:\n  tetra: {{}}\n  missing_path: {{path: /missing}}\n"
        ),
    );
    let exporter = start(&harness, "config.yml", &yaml);
    let base = format!("http://{}", exporter.address);

    let (status, text) = get(&format!("{base}/probe?target=good.{ZONE}:{good}")).await;
    assert_eq!(status, 200, "{text}");
    let series = format!("server=\"good.{ZONE}\",route=\"direct\"");
    assert_eq!(
        sample(&text, &format!("tetra_probe_success{{{series}}}")),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("tetra_connector"),
        "/probe shows only the probe"
    );

    let (status, text) = get(&format!(
        "{base}/probe?target=good.{ZONE}:{good}&module=missing_path"
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("step=\"download\",reason=\"http_status\"} 1"),
        "{text}"
    );

    let (status, text) = get(&format!("{base}/probe?target=expired.{ZONE}:{expired}")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("step=\"tls\",reason=\"expired\"} 1"),
        "{text}"
    );

    // What an attacker would try, to reach the exporter's own network.
    for target in [
        format!("localhost:{good}"),
        format!("127.0.0.1:{good}"),
        format!("[::1]:{good}"),
        format!("2130706433:{good}"),
        format!("0x7f000001:{good}"),
        format!("good.{ZONE}"),
        format!("good.{ZONE}:22"),
        format!("good.{ZONE}.evil.example:{good}"),
        format!("evilgood.{ZONE}:{good}"),
        format!("{ZONE}:{expired}"),
        format!("169.254.169.254:{good}"),
        format!("*.{ZONE}:{expired}"),
        format!("..localhost:{good}"),
        format!("LOCALHOST.:{good}"),
    ] {
        // Refused either as outside the allowlist (403) or, for forms no
        // resolver would take as a host, as not a host at all (400).
        let (status, text) = get(&format!("{base}/probe?target={target}")).await;
        let refused = (status == 403 && text.contains("not in allowed_targets"))
            || (status == 400 && text.contains("is not HOST[:PORT]"));
        assert!(refused, "{target}: {status} {text}");
    }
    for (query, needle) in [
        ("", "target parameter is missing"),
        (
            &format!("target=good.{ZONE}:{good}&module=nope") as &str,
            "unknown module",
        ),
        ("target=http://good.tetra.test/", "is not HOST[:PORT]"),
        ("target=user@good.tetra.test", "is not HOST[:PORT]"),
        ("target=good.tetra.test:99999", "is not HOST[:PORT]"),
    ] {
        let (status, text) = get(&format!("{base}/probe?{query}")).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains(needle), "{query}: {text}");
    }

    let (status, text) = get(&format!(
        "{base}/probe?target=expired.{ZONE}:{expired}&debug=true"
    ))
    .await;
    assert_eq!(status, 200);
    for needle in [
        "Logs for the probe:",
        "step=tls",
        "failed reason=expired",
        "Metrics that would have been returned:",
        "tetra_probe_failure_info{",
        "Module configuration:",
        "revocation: require",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    let (status, _) = get(&format!("{base}/-/healthy")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{base}/-/ready")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_password_reaches_no_output() {
    let harness = Harness::start().await;
    let ntlm = start_ntlm_only().await;
    let good = harness.port("good");
    let password = "Pr0xy-pa55word-that-must-not-leak";
    let yaml = harness.config_yaml(
        &format!("  - host: good.{ZONE}\n    port: {good}"),
        &format!(
            "connector: {{enabled: false}}\nversions: {{enabled: false}}\n\
             allowed_targets: ['good.{ZONE}:{good}']\n\
             proxy: {{url: 'http://127.0.0.1:{}', username: svc, password: '{password}'}}\n",
            ntlm.port
        ),
    );
    let config_path = harness.write("config.yml", yaml.as_bytes());
    let exporter = ExporterProcess::start(&[format!("--config.file={}", config_path.display())]);
    let base = format!("http://{}", exporter.address);

    let mut outputs = Vec::new();
    for path in [
        "/metrics".to_string(),
        "/".to_string(),
        format!("/probe?target=good.{ZONE}:{good}"),
        format!("/probe?target=good.{ZONE}:{good}&debug=true"),
        "/debug?id=1".to_string(),
    ] {
        let (status, text) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}: {text}");
        outputs.push((path, text));
    }
    // The probe really went through the proxy with the credentials.
    assert!(
        outputs[0].1.contains("reason=\"scheme_unsupported\""),
        "{}",
        outputs[0].1
    );
    assert!(
        outputs[3].1.contains("password: <secret>"),
        "{}",
        outputs[3].1
    );

    // A reload with a broken file that holds the password: the error names
    // the field, not the line.
    let broken = yaml.replace("connector: {enabled: false}", "connector: {enabled: maybe}");
    std::fs::write(&config_path, broken).expect("write");
    let response = client()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(response.status().as_u16(), 500);
    let error = response.text().await.expect("body");
    assert!(error.contains("connector.enabled"), "{error}");
    outputs.push(("/-/reload".to_string(), error));

    tokio::time::sleep(Duration::from_millis(200)).await;
    outputs.push(("logs".to_string(), exporter.logs()));
    for (what, text) in &outputs {
        assert!(
            !text.contains(password),
            "the password leaked in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_http_and_sighup_keeps_the_old_config_on_error() {
    let harness = Harness::start().await;
    let server = |name: &str| format!("  - host: {name}.{ZONE}\n    port: {}", harness.port(name));
    let quiet =
        "connector: {enabled: false}\nversions: {enabled: false}\nprobe: {min_interval: 0s}";
    let config_path = harness.write(
        "config.yml",
        harness.config_yaml(&server("good"), quiet).as_bytes(),
    );
    let exporter = ExporterProcess::start(&[format!("--config.file={}", config_path.display())]);
    let base = format!("http://{}", exporter.address);
    let success =
        |name: &str| format!("tetra_probe_success{{server=\"{name}.{ZONE}\",route=\"direct\"}}");

    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(sample(&text, &success("good")), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "tetra_exporter_config_last_reload_successful"),
        Some(1.0)
    );
    let loaded_at = sample(
        &text,
        "tetra_exporter_config_last_reload_success_timestamp_seconds",
    )
    .expect("load time");

    // A good new file over HTTP.
    std::fs::write(&config_path, harness.config_yaml(&server("expired"), quiet)).expect("write");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = client()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(response.status().as_u16(), 200);
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(sample(&text, &success("expired")), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, &success("good")),
        None,
        "the old server is gone"
    );
    assert_eq!(
        sample(&text, "tetra_exporter_config_last_reload_successful"),
        Some(1.0)
    );
    let reloaded_at = sample(
        &text,
        "tetra_exporter_config_last_reload_success_timestamp_seconds",
    )
    .expect("reload time");
    assert!(reloaded_at > loaded_at);

    // A bad file: rejected, the previous config keeps serving.
    std::fs::write(&config_path, "servers: [{host: 'a b'}]\n").expect("write");
    let response = client()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(response.status().as_u16(), 500);
    assert!(response
        .text()
        .await
        .expect("body")
        .contains("servers[0].host"));
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(
        sample(&text, &success("expired")),
        Some(0.0),
        "still serving\n{text}"
    );
    assert_eq!(
        sample(&text, "tetra_exporter_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "tetra_exporter_config_last_reload_success_timestamp_seconds"
        ),
        Some(reloaded_at)
    );

    // SIGHUP with a good file again.
    std::fs::write(&config_path, harness.config_yaml(&server("good"), quiet)).expect("write");
    exporter.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        if sample(&text, "tetra_exporter_config_last_reload_successful") == Some(1.0) {
            assert_eq!(sample(&text, &success("good")), Some(1.0), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            exporter.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exporter.logs().contains("SIGHUP"));

    let (status, _) = get(&format!("{base}/-/reload")).await;
    assert_eq!(status, 405, "reload is POST only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_config_serves_tls_and_checks_basic_auth() {
    let harness = Harness::start().await;
    tetra_exporter::install_crypto_provider();

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let cert = params.self_signed(&key).expect("cert");
    let cert_file = harness.write("web.crt", cert.pem().as_bytes());
    let key_file = harness.write("web.key", key.serialize_pem().as_bytes());
    let hash = bcrypt::hash("right-password", 4).expect("hash");
    let web_config = harness.write(
        "web.yml",
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            cert_file.display(),
            key_file.display()
        )
        .as_bytes(),
    );
    let config = harness.write(
        "config.yml",
        harness
            .config_yaml(
                &format!("  - host: good.{ZONE}\n    port: {}", harness.port("good")),
                "connector: {enabled: false}\nversions: {enabled: false}",
            )
            .as_bytes(),
    );
    let exporter = ExporterProcess::start(&[
        format!("--config.file={}", config.display()),
        format!("--web.config.file={}", web_config.display()),
    ]);

    let tls_client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("https://{}/metrics", exporter.address);

    let response = tls_client
        .get(&url)
        .basic_auth("prometheus", Some("right-password"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .text()
        .await
        .expect("body")
        .contains("tetra_probe_success{"));

    for (user, password) in [
        ("prometheus", Some("wrong")),
        ("nobody", Some("right-password")),
    ] {
        let response = tls_client
            .get(&url)
            .basic_auth(user, password)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 401, "{user}");
    }
    let response = tls_client.get(&url).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = client()
        .get(format!("http://{}/metrics", exporter.address))
        .basic_auth("prometheus", Some("right-password"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_probes_of_a_hanging_target_end_by_their_deadline() {
    let harness = Harness::start().await;
    let hang = harness.port("hang");
    let yaml = harness.config_yaml(
        &format!("  - host: good.{ZONE}\n    port: {}", harness.port("good")),
        &format!(
            "connector: {{enabled: false}}\nversions: {{enabled: false}}\n\
             allowed_targets: ['hang.{ZONE}:{hang}']\nprobe: {{timeout: 10s, max_concurrent: 32}}"
        ),
    );
    let exporter = start(&harness, "config.yml", &yaml);
    let base = format!("http://{}", exporter.address);
    let client = client();

    // Each asks for a 3 s scrape: the exporter answers within 2.5 s.
    let began = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let client = client.clone();
        let url = format!("{base}/probe?target=hang.{ZONE}:{hang}");
        requests.spawn(async move {
            let sent = Instant::now();
            let response = client
                .get(url)
                .header("X-Prometheus-Scrape-Timeout-Seconds", "3")
                .send()
                .await
                .expect("answered");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            (status, body, sent.elapsed())
        });
    }

    // Meanwhile /metrics stays responsive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let (status, text) = get(&format!("{base}/metrics")).await;
    let metrics_took = sent.elapsed();
    assert_eq!(status, 200);
    assert!(text.contains("tetra_probe_success{"));
    assert!(
        metrics_took < Duration::from_secs(2),
        "/metrics took {metrics_took:?}"
    );

    let (mut probed, mut refused) = (0, 0);
    while let Some(result) = requests.join_next().await {
        let (status, body, took) = result.expect("task");
        assert!(took < Duration::from_secs(4), "a request took {took:?}");
        match status {
            200 => {
                assert!(
                    body.contains("step=\"tls\",reason=\"timeout\"} 1"),
                    "{body}"
                );
                probed += 1;
            }
            503 => refused += 1,
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    eprintln!(
        "200 probes: {probed} probed, {refused} refused for want of a slot, all done in {:?}",
        began.elapsed()
    );
    assert!(probed >= 32, "at least max_concurrent probes ran: {probed}");
    assert_eq!(probed + refused, 200);
}
