//! The real `tetra-exporter` binary, started as a user would on an
//! ephemeral loopback port, its address read from its `listening` log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The binary Cargo built for this test run.
pub const BINARY: &str = env!("CARGO_BIN_EXE_tetra-exporter");

/// The exporter process, killed when dropped.
pub struct Running {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Everything the exporter has written to standard error so far.
    pub fn stderr(&self) -> String {
        match self.stderr.lock() {
            Ok(text) => text.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `config` on an ephemeral port, debug logging on,
/// and waits for its `listening` log line.
pub fn start(config: &Path) -> Running {
    let mut child = Command::new(BINARY)
        .arg(format!("--config.file={}", config.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.level=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exporter");
    let stderr = child.stderr.take().expect("stderr");
    let collected = Arc::new(Mutex::new(String::new()));
    let sink = collected.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("message=listening address=").nth(1) {
                let address = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(address);
            }
            if let Ok(mut text) = sink.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("exporter logged its address");
    Running {
        child,
        base: format!("http://{address}"),
        stderr: collected,
    }
}
