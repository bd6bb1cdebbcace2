//! The revocation answer cache, shared by every probe and kept across
//! configuration reloads (it is lost on restart).
//!
//! One entry per route, method, URL and certificate (issuer key and
//! serial): the
//! last good, verified answer, when it was fetched, until when it may be
//! relied on (its nextUpdate, never later than `revocation.max_cache_age`
//! after the fetch), and how the last attempt to fetch it went.
//!
//! An entry is *fresh* while its last fetch succeeded less than
//! `revocation.recheck_interval` ago and it is still valid: it is then used
//! without asking the URL. Otherwise the URL is asked; when that fails, a
//! still valid answer is used all the same (as Windows uses its cached CRLs
//! and OCSP answers), and the failure is recorded so that the exporter can
//! say the path is living on its cache, and until when.
//!
//! At most [`MAX_ENTRIES`] entries are held; when full, expired entries go
//! first, then the one that expires soonest. An answer without a nextUpdate
//! is not kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Answer, Method};

/// Most entries kept: a few per certificate of each configured chain, with
/// room to spare for chains that change.
pub const MAX_ENTRIES: usize = 4096;

/// What an answer is about and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The route it was fetched over (`direct`, or the proxy's address):
    /// an answer fetched directly says nothing of whether the proxy lets
    /// the URL through.
    pub route: String,
    pub method: Method,
    pub url: String,
    /// The issuer's whole SubjectPublicKeyInfo, in DER.
    pub issuer_key: Vec<u8>,
    /// The certificate's serial number, as encoded.
    pub serial: Vec<u8>,
}

/// The last good answer from one URL about one certificate, and how the
/// last attempt to renew it went.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub answer: Answer,
    /// When the answer was fetched: the URL's last successful fetch.
    pub fetched_at: SystemTime,
    /// Until when the answer may be relied on.
    pub valid_until: SystemTime,
    /// Whether the last attempt to fetch from the URL succeeded.
    pub last_attempt_ok: bool,
}

impl CacheEntry {
    /// Usable without asking the URL at `now`.
    pub fn is_fresh(&self, now: SystemTime, recheck_interval: Duration) -> bool {
        self.last_attempt_ok && now < self.valid_until && now < self.fetched_at + recheck_interval
    }

    /// Still valid at `now`, whatever the last attempt said.
    pub fn is_valid(&self, now: SystemTime) -> bool {
        now < self.valid_until
    }
}

/// Good answers, shared across probes and configurations.
#[derive(Default)]
pub struct RevocationCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl RevocationCache {
    /// The entry for `key`, valid or not.
    pub fn entry(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// Keeps a good answer fetched at `now`, relied on at most `max_age`;
    /// an answer without a nextUpdate, or already expired, is not kept.
    pub fn put(&self, key: CacheKey, answer: Answer, now: SystemTime, max_age: Duration) {
        let Some(next_update) = answer.next_update else {
            return;
        };
        let valid_until = next_update.min(now + max_age);
        if valid_until <= now {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.valid_until > now);
            if entries.len() >= MAX_ENTRIES {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.valid_until)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(
            key,
            CacheEntry {
                answer,
                fetched_at: now,
                valid_until,
                last_attempt_ok: true,
            },
        );
    }

    /// Records that fetching `key` failed; the answer held stays as it is.
    pub fn record_failure(&self, key: &CacheKey) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(key) {
                entry.last_attempt_ok = false;
            }
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::CertStatus;
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(n: usize) -> CacheKey {
        CacheKey {
            route: "direct".to_string(),
            method: Method::Crl,
            url: format!("http://ca.example/{n}.crl"),
            issuer_key: vec![1],
            serial: vec![2],
        }
    }

    fn good(next_update: Option<SystemTime>) -> Answer {
        Answer {
            status: CertStatus::Good,
            this_update: SystemTime::UNIX_EPOCH,
            next_update,
        }
    }

    #[test]
    fn valid_until_next_update_bounded_by_max_age() {
        let now = SystemTime::now();
        let cache = RevocationCache::default();

        cache.put(key(1), good(Some(now + HOUR)), now, 2 * HOUR);
        let entry = cache.entry(&key(1)).expect("kept");
        assert!(entry.is_valid(now + HOUR / 2));
        assert!(!entry.is_valid(now + HOUR));

        cache.put(key(2), good(Some(now + 10 * HOUR)), now, 2 * HOUR);
        let entry = cache.entry(&key(2)).expect("kept");
        assert!(entry.is_valid(now + HOUR));
        assert!(!entry.is_valid(now + 3 * HOUR));

        cache.put(key(3), good(None), now, 2 * HOUR);
        assert!(cache.entry(&key(3)).is_none());
    }

    #[test]
    fn fresh_until_the_recheck_interval_or_a_failure() {
        let now = SystemTime::now();
        let cache = RevocationCache::default();
        cache.put(key(1), good(Some(now + 10 * HOUR)), now, 24 * HOUR);

        let entry = cache.entry(&key(1)).expect("kept");
        assert!(entry.is_fresh(now + HOUR / 2, HOUR));
        assert!(!entry.is_fresh(now + HOUR, HOUR), "due for a recheck");

        cache.record_failure(&key(1));
        let entry = cache.entry(&key(1)).expect("kept");
        assert!(!entry.is_fresh(now, HOUR), "a failed recheck is retried");
        assert!(
            entry.is_valid(now + 2 * HOUR),
            "and the answer is still relied on"
        );
        assert_eq!(entry.fetched_at, now, "the last success stays");
    }

    #[test]
    fn bounded_in_entries() {
        let now = SystemTime::now();
        let cache = RevocationCache::default();
        for n in 0..MAX_ENTRIES + 10 {
            let next = now + Duration::from_secs(60 + n as u64);
            cache.put(key(n), good(Some(next)), now, HOUR);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // The soonest to expire went first.
        assert!(cache.entry(&key(0)).is_none());
        assert!(cache.entry(&key(MAX_ENTRIES + 9)).is_some());
    }
}
