//! A bounded record of recent probes, for the status page and the debug
//! view of each probe.
//!
//! Two rings are kept: the most recent probes of any outcome, and the most
//! recent failures. A failure therefore stays visible for a while even when
//! many successes follow it, which is when an operator comes looking. Both
//! rings have fixed sizes, so memory is bounded whatever the probe rate.
//! The history lives across config reloads and is lost on restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::probe::ProbeReport;

/// Probes of any outcome kept.
pub const RECENT: usize = 100;
/// Failed probes kept in addition.
pub const FAILURES: usize = 50;

/// What asked for the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A scrape of `/metrics`, for a configured (or policy-named) server.
    Scrape,
    /// `/probe` with this module.
    OnDemand { module: String },
}

/// One recorded probe.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Increasing, never reused while the process runs.
    pub id: u64,
    pub origin: Origin,
    pub report: ProbeReport,
}

#[derive(Default)]
struct Rings {
    next_id: u64,
    recent: VecDeque<Arc<Entry>>,
    failures: VecDeque<Arc<Entry>>,
}

/// The shared history.
#[derive(Default)]
pub struct History {
    rings: Mutex<Rings>,
}

impl History {
    /// Records a probe and returns its id.
    pub fn record(&self, origin: Origin, report: ProbeReport) -> u64 {
        let Ok(mut rings) = self.rings.lock() else {
            return 0;
        };
        rings.next_id += 1;
        let entry = Arc::new(Entry {
            id: rings.next_id,
            origin,
            report,
        });
        if !entry.report.success() {
            rings.failures.push_back(entry.clone());
            if rings.failures.len() > FAILURES {
                rings.failures.pop_front();
            }
        }
        rings.recent.push_back(entry.clone());
        if rings.recent.len() > RECENT {
            rings.recent.pop_front();
        }
        entry.id
    }

    /// Every kept entry, newest first, each once.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let Ok(rings) = self.rings.lock() else {
            return Vec::new();
        };
        let mut all: Vec<Arc<Entry>> = rings
            .recent
            .iter()
            .chain(rings.failures.iter())
            .cloned()
            .collect();
        all.sort_by_key(|entry| std::cmp::Reverse(entry.id));
        all.dedup_by_key(|entry| entry.id);
        all
    }

    /// The entry with this id, while it is kept.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        let rings = self.rings.lock().ok()?;
        rings
            .recent
            .iter()
            .chain(rings.failures.iter())
            .find(|entry| entry.id == id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Failure, Route, Step};
    use std::time::{Duration, SystemTime};

    fn report(ok: bool) -> ProbeReport {
        ProbeReport {
            server: "s".to_string(),
            route: Route::Direct,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            steps: Vec::new(),
            failure: (!ok).then(|| Failure {
                step: Step::Dns,
                reason: "nxdomain",
                detail: String::new(),
            }),
            dns_addresses: None,
            tls: None,
            download: None,
            proxy: None,
            revocation: None,
        }
    }

    #[test]
    fn failures_survive_many_successes_and_memory_is_bounded() {
        let history = History::default();
        let failed = history.record(Origin::Scrape, report(false));
        for _ in 0..(RECENT * 3) {
            history.record(Origin::Scrape, report(true));
        }
        let entries = history.entries();
        assert_eq!(entries.len(), RECENT + 1);
        assert!(history.get(failed).is_some(), "the failure is still there");
        assert!(
            entries.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );

        for _ in 0..(FAILURES * 2) {
            history.record(Origin::Scrape, report(false));
        }
        assert!(history.get(failed).is_none(), "old failures age out too");
        assert!(history.entries().len() <= RECENT + FAILURES);
    }
}
