//! The revocation answer cache, shared by every probe of one configuration.
//!
//! One entry per method, URL and certificate (issuer key and serial): the
//! last good, verified answer, when it was fetched, and until when it may be
//! used: its nextUpdate, never later than `revocation.max_cache_age` after
//! the fetch. An answer without a nextUpdate is not kept. The cache holds at
//! most [`MAX_ENTRIES`] entries; when full, expired entries go first, then
//! the one that expires soonest.
//!
//! Entries are keyed per URL so that what was last heard from each URL, and
//! when, can be told apart; the cache does not record failed fetches.

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
    pub method: Method,
    pub url: String,
    /// The issuer's whole SubjectPublicKeyInfo, in DER.
    pub issuer_key: Vec<u8>,
    /// The certificate's serial number, as encoded.
    pub serial: Vec<u8>,
}

/// The last good answer from one URL about one certificate.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub answer: Answer,
    /// When the answer was fetched (the URL's last successful fetch).
    pub fetched_at: SystemTime,
    /// When the entry stops being used.
    pub valid_until: SystemTime,
}

/// Good answers, shared across probes.
pub struct RevocationCache {
    max_age: Duration,
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl RevocationCache {
    /// An empty cache whose entries live at most `max_age`.
    pub fn new(max_age: Duration) -> Self {
        RevocationCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `key`, when it is still valid at `now`.
    pub fn get(&self, key: &CacheKey, now: SystemTime) -> Option<Answer> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        (now < entry.valid_until).then(|| entry.answer.clone())
    }

    /// The entry for `key`, valid or not.
    pub fn entry(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// Keeps a good answer fetched at `now`; an answer without a nextUpdate,
    /// or one that is already expired, is not kept.
    pub fn put(&self, key: CacheKey, answer: Answer, now: SystemTime) {
        let Some(next_update) = answer.next_update else {
            return;
        };
        let valid_until = next_update.min(now + self.max_age);
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
            },
        );
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

    fn key(n: usize) -> CacheKey {
        CacheKey {
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
    fn kept_until_next_update_bounded_by_max_age() {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        let cache = RevocationCache::new(2 * hour);

        cache.put(key(1), good(Some(now + hour)), now);
        assert!(cache.get(&key(1), now + hour / 2).is_some());
        assert!(cache.get(&key(1), now + hour).is_none());

        cache.put(key(2), good(Some(now + 10 * hour)), now);
        assert!(cache.get(&key(2), now + hour).is_some());
        assert!(cache.get(&key(2), now + 3 * hour).is_none());

        cache.put(key(3), good(None), now);
        assert!(cache.get(&key(3), now).is_none());
    }

    #[test]
    fn bounded_in_entries() {
        let now = SystemTime::now();
        let cache = RevocationCache::new(Duration::from_secs(3600));
        for n in 0..MAX_ENTRIES + 10 {
            cache.put(
                key(n),
                good(Some(now + Duration::from_secs(60 + n as u64))),
                now,
            );
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // The soonest to expire went first.
        assert!(cache.get(&key(0), now).is_none());
        assert!(cache.get(&key(MAX_ENTRIES + 9), now).is_some());
    }
}
