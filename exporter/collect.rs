//! Gathering everything one scrape shows: the connector's files, the probe
//! of every target (server and route), and the newest published version.
//!
//! Probes run on scrape, not in the background, so a result is never older
//! than the scrape interval. A result younger than `probe.min_interval` is
//! served again instead of probing, and concurrent scrapes share one
//! in-flight probe per target: two Prometheus servers scraping the same
//! exporter do not double the traffic to the update server.
//!
//! The targets are planned on every scrape ([`crate::targets`]), because the
//! connector's policy can change the update server and the proxy at any
//! time; a target that leaves the plan leaves its cached result behind.
//!
//! Nothing here renders metrics; [`crate::metrics`] does that from the
//! returned [`Snapshot`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::SystemTime;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{self, Config, RouteChoice, ServerConfig};
use crate::connector::local_state::{self, LocalState, LocalStateError};
use crate::connector::policy::{self, Policy, PolicyError};
use crate::connector::ReadError;
use crate::definitions::{VersionsSnapshot, VersionsSource};
use crate::history::{History, Origin};
use crate::probe::proxy::ProxySpec;
use crate::probe::revocation::cache::RevocationCache;
use crate::probe::{self, ProbeContext, ProbeReport};
use crate::targets::{self, Plan, Target};

/// The outcome of reading one of the connector's files.
#[derive(Debug, Clone)]
pub enum FileReading<T> {
    /// No path was configured and the platform's default path holds no
    /// file: nothing is reported.
    Absent,
    /// The file was read and parsed.
    Read {
        path: PathBuf,
        value: T,
        modified: Option<SystemTime>,
    },
    /// The file could not be read or parsed; no value of it is presented.
    Failed {
        path: PathBuf,
        reason: &'static str,
        detail: String,
    },
}

impl<T> FileReading<T> {
    /// The parsed value, when the read succeeded.
    pub fn value(&self) -> Option<&T> {
        match self {
            FileReading::Read { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub reports: Vec<ProbeReport>,
    pub connector: FileReading<LocalState>,
    pub policy: FileReading<Policy>,
    pub plan: Plan,
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

/// One target's cache and single flight.
#[derive(Default)]
struct Slot {
    /// Held while a probe of this target runs.
    in_flight: Mutex<()>,
    /// The last report and when it completed.
    last: StdMutex<Option<(Instant, ProbeReport)>>,
}

/// What outlives a configuration: kept across reloads.
#[derive(Clone)]
pub struct Shared {
    pub history: Arc<History>,
    /// Revocation answers and what was last heard from each URL.
    pub revocation_cache: Arc<RevocationCache>,
    /// One read of the connector's files at a time: a read that hangs (a
    /// stalled network share) holds it, and later scrapes report a timeout
    /// instead of piling up blocked threads.
    pub connector_reads: Arc<tokio::sync::Semaphore>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            history: Arc::default(),
            revocation_cache: Arc::default(),
            connector_reads: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// Why `/probe` could not run a probe.
#[derive(Debug, thiserror::Error)]
pub enum OnDemandError {
    #[error("unknown module {0:?}")]
    UnknownModule(String),
    #[error("module {0:?} uses the proxy route and no proxy is configured")]
    NoProxy(String),
}

/// The exporter's long-lived state for one configuration.
pub struct Exporter {
    ctx: Arc<ProbeContext>,
    slots: StdMutex<HashMap<SlotKey, Arc<Slot>>>,
    versions: Option<VersionsSource>,
    shared: Shared,
}

/// Identifies a target across scrapes: server, path and route with its
/// proxy (credentials included, so that a changed password probes anew).
type SlotKey = (
    String,
    u16,
    String,
    String,
    Option<(String, u16, Option<String>)>,
);

fn slot_key(target: &Target) -> SlotKey {
    let proxy = match &target.route {
        probe::RouteSpec::Direct => None,
        probe::RouteSpec::Proxy(spec) => Some((
            spec.host.clone(),
            spec.port,
            spec.credentials
                .as_ref()
                .map(|(user, password)| format!("{user}\u{0}{}", password.expose())),
        )),
    };
    (
        target.server.host.clone(),
        target.server.port,
        target.server.path.clone(),
        target.route.route().as_str().to_string(),
        proxy,
    )
}

impl Exporter {
    /// Builds what probes share (trust store, HTTP client) once, with a
    /// fresh [`Shared`].
    pub fn new(config: Config) -> Result<Self, SetupError> {
        Self::with_shared(config, Shared::default())
    }

    /// Builds an exporter that keeps `shared` from a previous configuration.
    pub fn with_shared(config: Config, shared: Shared) -> Result<Self, SetupError> {
        let config = Arc::new(config);
        let ctx = Arc::new(ProbeContext::new(
            config.clone(),
            shared.revocation_cache.clone(),
        )?);
        let versions = if config.versions.enabled {
            Some(VersionsSource::new(
                config.versions.clone(),
                config.probe.min_interval,
                ctx.tls.configured_cas().to_vec(),
            )?)
        } else {
            None
        };
        Ok(Exporter {
            ctx,
            slots: StdMutex::new(HashMap::new()),
            versions,
            shared,
        })
    }

    /// What this exporter shares with the next configuration.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Probes `host:port` with a module, now, for `/probe`: no reuse of
    /// earlier results. The caller has checked the allowlist. Returns the
    /// report, the plan it ran under (for its proxy) and its history id.
    pub async fn probe_on_demand(
        &self,
        host: &str,
        port: u16,
        module_name: &str,
        deadline: Instant,
    ) -> Result<(ProbeReport, Plan, u64), OnDemandError> {
        let config = &self.ctx.config;
        let module = config
            .modules
            .get(module_name)
            .ok_or_else(|| OnDemandError::UnknownModule(module_name.to_string()))?;
        let server = ServerConfig {
            host: host.to_string(),
            port,
            path: module.path.clone(),
            valid_status_codes: module.valid_status_codes.clone(),
            revocation: module.revocation,
        };

        // The policy is consulted for its proxy only when the route may use
        // one; it is read fresh, like on a scrape.
        let policy = match module.route {
            RouteChoice::Direct => None,
            RouteChoice::Auto | RouteChoice::Proxy => {
                read_connector_files(config, &self.shared.connector_reads, deadline)
                    .await
                    .1
                    .value()
                    .cloned()
            }
        };
        let proxy = targets::proxy_for(config, policy.as_ref(), &targets::process_env, host);
        let route = match (module.route, proxy) {
            (RouteChoice::Direct, _) | (RouteChoice::Auto, None) => probe::RouteSpec::Direct,
            (RouteChoice::Auto | RouteChoice::Proxy, Some(proxy)) => probe::RouteSpec::Proxy(proxy),
            (RouteChoice::Proxy, None) => {
                return Err(OnDemandError::NoProxy(module_name.to_string()))
            }
        };
        let plan = Plan {
            proxies: match &route {
                probe::RouteSpec::Proxy(proxy) => vec![proxy.clone()],
                probe::RouteSpec::Direct => Vec::new(),
            },
            targets: vec![Target {
                server: server.clone(),
                route: route.clone(),
            }],
            definitions_enabled: None,
        };

        let probe_deadline = deadline.min(Instant::now() + config.probe.timeout);
        let report = probe::probe(&self.ctx, &server, &route, probe_deadline).await;
        let id = self.shared.history.record(
            Origin::OnDemand {
                module: module_name.to_string(),
            },
            report.clone(),
        );
        Ok((report, plan, id))
    }

    /// The configuration this exporter runs.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Gathers a snapshot, finishing by `deadline`.
    pub async fn collect(&self, deadline: Instant) -> Snapshot {
        let (connector, policy) =
            read_connector_files(&self.ctx.config, &self.shared.connector_reads, deadline).await;
        let policy_unreadable = matches!(policy, FileReading::Failed { .. });
        let plan = targets::plan(
            &self.ctx.config,
            policy.value(),
            policy_unreadable,
            &targets::process_env,
        );

        let slots = self.slots_for(&plan.targets);
        let probes = futures_util::future::join_all(
            plan.targets
                .iter()
                .zip(slots)
                .map(|(target, slot)| self.report_for(target, slot, deadline)),
        );
        let versions = async {
            let source = self.versions.as_ref()?;
            let proxy = self.versions_proxy(policy.value());
            Some(source.current(deadline, proxy.as_ref()).await)
        };

        let (reports, versions) = tokio::join!(probes, versions);
        Snapshot {
            reports: reports.into_iter().flatten().collect(),
            connector,
            policy,
            plan,
            versions,
        }
    }

    /// The versions document goes over the same route as the updates.
    fn versions_proxy(&self, policy: Option<&Policy>) -> Option<ProxySpec> {
        let host = url::Url::parse(&self.ctx.config.versions.url)
            .ok()?
            .host_str()?
            .to_string();
        targets::proxy_for(&self.ctx.config, policy, &targets::process_env, &host)
    }

    /// The slot of each target, created when new; slots of targets no
    /// longer planned are dropped.
    fn slots_for(&self, targets: &[Target]) -> Vec<Arc<Slot>> {
        let Ok(mut slots) = self.slots.lock() else {
            return targets.iter().map(|_| Arc::new(Slot::default())).collect();
        };
        let keys: Vec<SlotKey> = targets.iter().map(slot_key).collect();
        slots.retain(|key, _| keys.contains(key));
        keys.into_iter()
            .map(|key| slots.entry(key).or_default().clone())
            .collect()
    }

    /// A fresh enough report for one target: the cached one, the one a
    /// concurrent scrape is producing, or a new probe.
    async fn report_for(
        &self,
        target: &Target,
        slot: Arc<Slot>,
        deadline: Instant,
    ) -> Option<ProbeReport> {
        let min_interval = self.ctx.config.probe.min_interval;
        let fresh = |slot: &Slot| -> Option<ProbeReport> {
            let last = slot.last.lock().ok()?;
            let (at, report) = last.as_ref()?;
            (at.elapsed() < min_interval).then(|| report.clone())
        };
        let last_known = |slot: &Slot| -> Option<ProbeReport> {
            let last = slot.last.lock().ok()?;
            last.as_ref().map(|(_, report)| report.clone())
        };

        if let Some(report) = fresh(&slot) {
            return Some(report);
        }
        let Ok(_guard) = tokio::time::timeout_at(deadline, slot.in_flight.lock()).await else {
            // A concurrent probe outlived this scrape's deadline: show the
            // last complete result rather than nothing.
            return last_known(&slot);
        };
        if let Some(report) = fresh(&slot) {
            return Some(report);
        }

        let probe_deadline = deadline.min(Instant::now() + self.ctx.config.probe.timeout);
        let report = probe::probe(&self.ctx, &target.server, &target.route, probe_deadline).await;
        self.shared.history.record(Origin::Scrape, report.clone());
        if let Ok(mut last) = slot.last.lock() {
            *last = Some((Instant::now(), report.clone()));
        }
        Some(report)
    }
}

/// Reads `local.xml` and `policy.xml` off the async threads, by `deadline`.
/// A read still running then is left to finish on its own and reported as
/// a `timeout`; until it finishes, no other read starts.
async fn read_connector_files(
    config: &Config,
    gate: &Arc<tokio::sync::Semaphore>,
    deadline: Instant,
) -> (FileReading<LocalState>, FileReading<Policy>) {
    if !config.connector.enabled {
        return (FileReading::Absent, FileReading::Absent);
    }
    let (local_path, local_explicit) = match &config.connector.local_state {
        Some(path) => (path.clone(), true),
        None => (config::default_local_state_path(), false),
    };
    let (policy_path, policy_explicit) = match &config.connector.policy {
        Some(path) => (path.clone(), true),
        None => (
            local_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("policy.xml"),
            false,
        ),
    };

    let timed_out = |detail: &str| {
        (
            failed_read(local_path.clone(), "timeout", detail.to_string()),
            failed_read(policy_path.clone(), "timeout", detail.to_string()),
        )
    };
    let Ok(permit) = gate.clone().try_acquire_owned() else {
        return timed_out("an earlier read of the connector's files has not finished");
    };
    let paths = (local_path.clone(), policy_path.clone());
    let read = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        (
            local_state::read_local_state(&paths.0, local_state::DEFAULT_MAX_BYTES),
            policy::read_policy(&paths.1),
        )
    });
    let (local, policy) = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(join_error)) => {
            let detail = join_error.to_string();
            return (
                failed_read(local_path, "unreadable", detail.clone()),
                failed_read(policy_path, "unreadable", detail),
            );
        }
        Err(_elapsed) => return timed_out("the read did not finish before the deadline"),
    };

    let local = match local {
        Ok((state, modified)) => FileReading::Read {
            path: local_path,
            value: state,
            modified: Some(modified),
        },
        Err(LocalStateError::NotFound) if !local_explicit => FileReading::Absent,
        Err(error) => failed_read(local_path, error.reason(), error.to_string()),
    };
    let policy = match policy {
        Ok(policy) => FileReading::Read {
            path: policy_path,
            value: policy,
            modified: None,
        },
        Err(PolicyError::Read(ReadError::NotFound)) if !policy_explicit => FileReading::Absent,
        Err(error) => failed_read(policy_path, error.reason(), error.to_string()),
    };
    (local, policy)
}

fn failed_read<T>(path: PathBuf, reason: &'static str, detail: String) -> FileReading<T> {
    tracing::info!(path = %path.display(), reason, %detail, "connector file not read");
    FileReading::Failed {
        path,
        reason,
        detail,
    }
}
