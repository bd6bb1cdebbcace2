//! The real `tetra-exporter` binary as a child process: started on an
//! ephemeral loopback port, its address read from its `listening` log
//! line, every log line kept for the test to inspect, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The binary Cargo built for this test run.
pub const BINARY: &str = env!("CARGO_BIN_EXE_tetra-exporter");

/// A running exporter.
pub struct ExporterProcess {
    child: Child,
    /// `HOST:PORT` it listens on.
    pub address: String,
    /// `http://HOST:PORT`.
    pub base: String,
    logs: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts the binary with one config file.
pub fn start(config: &Path) -> ExporterProcess {
    ExporterProcess::start(&[format!("--config.file={}", config.display())])
}

impl ExporterProcess {
    /// Starts the binary with `args` (plus a loopback listen address and
    /// debug logging), without the environment's proxy variables.
    pub fn start(args: &[String]) -> ExporterProcess {
        let mut child = Command::new(BINARY)
            .args(args)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=debug")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start exporter");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("message=listening address=").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(address.to_string());
                }
                if let Ok(mut logs) = kept.lock() {
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("the exporter did not log its address:\n{logs}");
            }
        };
        ExporterProcess {
            child,
            base: format!("http://{address}"),
            address,
            logs,
            reader: Some(reader),
        }
    }

    /// Stops the process now, as a crash would; every line it wrote is in
    /// [`Self::logs`] afterwards.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGHUP (the reload signal).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP failed");
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
