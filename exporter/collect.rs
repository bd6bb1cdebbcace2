//! Gathering everything one scrape shows: the probe of every configured
//! server, the connector's state and the newest published version.
//!
//! Probes run on scrape, not in the background, so a result is never older
//! than the scrape interval. A result younger than `probe.min_interval` is
//! served again instead of probing, and concurrent scrapes share one
//! in-flight probe per server: two Prometheus servers scraping the same
//! exporter do not double the traffic to the update server.
//!
//! Nothing here renders metrics; [`crate::metrics`] does that from the
//! returned [`Snapshot`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::SystemTime;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{self, Config, ServerConfig};
use crate::connector::local_state::{self, LocalState, LocalStateError};
use crate::definitions::{VersionsSnapshot, VersionsSource};
use crate::probe::{self, ProbeContext, ProbeReport};

/// The outcome of reading the connector's `local.xml`.
#[derive(Debug, Clone)]
pub enum ConnectorReading {
    /// No path was configured and the platform's default path holds no
    /// file: this machine runs no connector, nothing is reported.
    Absent,
    /// The file was read and parsed.
    Read {
        path: PathBuf,
        state: LocalState,
        modified: SystemTime,
    },
    /// The file could not be read or parsed; no value of it is presented.
    Failed {
        path: PathBuf,
        reason: &'static str,
        detail: String,
    },
}

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub reports: Vec<ProbeReport>,
    pub connector: ConnectorReading,
    pub versions: Option<VersionsSnapshot>,
}

/// Why the exporter could not be set up from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] probe::tls::TlsSetupError),
    #[error(transparent)]
    Probe(#[from] probe::ProbeSetupError),
    #[error(transparent)]
    Versions(#[from] crate::definitions::FetchError),
}

struct ServerSlot {
    server: ServerConfig,
    /// Held while a probe of this server runs: the single flight.
    in_flight: Mutex<()>,
    /// The last report and when it completed.
    last: StdMutex<Option<(Instant, ProbeReport)>>,
}

/// The exporter's long-lived state for one configuration.
pub struct Exporter {
    ctx: Arc<ProbeContext>,
    slots: Vec<ServerSlot>,
    versions: Option<VersionsSource>,
}

impl Exporter {
    /// Builds what probes share (trust store, HTTP client) once.
    pub fn new(config: Config) -> Result<Self, SetupError> {
        let config = Arc::new(config);
        let ctx = Arc::new(ProbeContext::new(config.clone())?);
        let slots = config
            .servers
            .iter()
            .map(|server| ServerSlot {
                server: server.clone(),
                in_flight: Mutex::new(()),
                last: StdMutex::new(None),
            })
            .collect();
        let versions = if config.versions.enabled {
            Some(VersionsSource::new(
                config.versions.clone(),
                config.probe.min_interval,
            )?)
        } else {
            None
        };
        Ok(Exporter {
            ctx,
            slots,
            versions,
        })
    }

    /// The configuration this exporter runs.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Gathers a snapshot, finishing by `deadline`.
    pub async fn collect(&self, deadline: Instant) -> Snapshot {
        let probes = futures_util::future::join_all(
            self.slots
                .iter()
                .map(|slot| self.report_for(slot, deadline)),
        );
        let versions = async {
            match &self.versions {
                Some(source) => Some(source.current(deadline).await),
                None => None,
            }
        };
        let connector = read_connector(&self.ctx.config);

        let (reports, versions, connector) = tokio::join!(probes, versions, connector);
        Snapshot {
            reports: reports.into_iter().flatten().collect(),
            connector,
            versions,
        }
    }

    /// A fresh enough report for one server: the cached one, the one a
    /// concurrent scrape is producing, or a new probe.
    async fn report_for(&self, slot: &ServerSlot, deadline: Instant) -> Option<ProbeReport> {
        let min_interval = self.ctx.config.probe.min_interval;
        let fresh = |slot: &ServerSlot| -> Option<ProbeReport> {
            let last = slot.last.lock().ok()?;
            let (at, report) = last.as_ref()?;
            (at.elapsed() < min_interval).then(|| report.clone())
        };
        let last_known = |slot: &ServerSlot| -> Option<ProbeReport> {
            let last = slot.last.lock().ok()?;
            last.as_ref().map(|(_, report)| report.clone())
        };

        if let Some(report) = fresh(slot) {
            return Some(report);
        }
        let Ok(_guard) = tokio::time::timeout_at(deadline, slot.in_flight.lock()).await else {
            // A concurrent probe outlived this scrape's deadline: show the
            // last complete result rather than nothing.
            return last_known(slot);
        };
        if let Some(report) = fresh(slot) {
            return Some(report);
        }

        let probe_deadline = deadline.min(Instant::now() + self.ctx.config.probe.timeout);
        let report = probe::probe_direct(&self.ctx, &slot.server, probe_deadline).await;
        if let Ok(mut last) = slot.last.lock() {
            *last = Some((Instant::now(), report.clone()));
        }
        Some(report)
    }
}

async fn read_connector(config: &Config) -> ConnectorReading {
    if !config.connector.enabled {
        return ConnectorReading::Absent;
    }
    let (path, explicit) = match &config.connector.local_state {
        Some(path) => (path.clone(), true),
        None => (config::default_local_state_path(), false),
    };

    let read_path = path.clone();
    let result = tokio::task::spawn_blocking(move || {
        local_state::read_local_state(&read_path, local_state::DEFAULT_MAX_BYTES)
    })
    .await;

    match result {
        Ok(Ok((state, modified))) => ConnectorReading::Read {
            path,
            state,
            modified,
        },
        Ok(Err(LocalStateError::NotFound)) if !explicit => ConnectorReading::Absent,
        Ok(Err(error)) => {
            tracing::info!(path = %path.display(), reason = error.reason(), %error, "connector state not read");
            ConnectorReading::Failed {
                path,
                reason: error.reason(),
                detail: error.to_string(),
            }
        }
        Err(join_error) => ConnectorReading::Failed {
            path,
            reason: "unreadable",
            detail: join_error.to_string(),
        },
    }
}
