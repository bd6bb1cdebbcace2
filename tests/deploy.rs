//! The deployment examples under `deploy/` stay valid: both Prometheus
//! scrape configs pass `promtool check config`, and the systemd unit names
//! the flags the binary has.

mod common;

use std::path::Path;
use std::process::Command;

fn deploy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

#[test]
fn scrape_configs_pass_promtool() {
    for name in ["prometheus-static.yml", "prometheus-multi-target.yml"] {
        let output = Command::new(common::which("promtool"))
            .args(["check", "config"])
            .arg(deploy(name))
            .output()
            .expect("promtool");
        assert!(
            output.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_unit_uses_real_flags_and_a_dedicated_user() {
    let unit = std::fs::read_to_string(deploy("tetra-exporter.service")).expect("unit");
    let help = Command::new(env!("CARGO_BIN_EXE_tetra-exporter"))
        .arg("--help")
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in unit
        .lines()
        .filter(|line| !line.starts_with('#'))
        .flat_map(str::split_whitespace)
        .filter(|word| word.starts_with("--"))
        .map(|word| word.split('=').next().unwrap_or(word))
    {
        assert!(
            help.contains(flag),
            "the unit uses {flag}, which --help does not list"
        );
    }
    assert!(unit.contains("User=tetra-exporter"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
}
