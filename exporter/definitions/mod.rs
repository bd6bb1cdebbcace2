//! The newest published definition version, fetched from the public
//! versions document and cached.
//!
//! The document is fetched over HTTP(S) with a deadline and a size cap, over
//! the same route as the update probes: through the proxy when one is in
//! use, directly otherwise. reqwest's own reading of proxy variables is
//! switched off; the route comes from [`crate::targets`].
//! A good answer is reused for `versions.cache_for`; after a failed fetch
//! the last good version is still served (versions only grow, so the lag
//! computed from it is a lower bound) and the failure is reported beside it.
//! A failed fetch is retried at most once per `probe.min_interval`.
//!
//! The lag itself is computed in [`lag`]; the connector's held version comes
//! from [`crate::connector`].

pub mod parse;

use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::VersionsConfig;
use crate::probe::proxy::{error_chain, ProxySpec};
use rustls::pki_types::CertificateDer;

/// Why the versions document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("versions document: HTTP {status}")]
    HttpStatus { status: u16 },
    #[error("versions document: no answer before the deadline")]
    Timeout,
    #[error("versions document: request failed: {0}")]
    Unreachable(String),
    #[error("versions document: larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("versions document: {0}")]
    Parse(#[from] parse::VersionsError),
}

impl FetchError {
    /// The fixed reason shown in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::HttpStatus { .. } => "http_status",
            FetchError::Timeout => "timeout",
            FetchError::Unreachable(_) => "unreachable",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Parse(e) => e.reason(),
        }
    }
}

/// What is known of the newest published version at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionsSnapshot {
    /// The newest version from the last good fetch, if any.
    pub latest: Option<u64>,
    /// When that good fetch happened.
    pub fetched_at: Option<SystemTime>,
    /// Whether the most recent fetch attempt succeeded.
    pub last_fetch_ok: bool,
    /// The most recent attempt's failure reason and detail, if it failed.
    pub last_error: Option<(&'static str, String)>,
}

#[derive(Default)]
struct Cache {
    snapshot: VersionsSnapshot,
    good_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// Fetches and caches the versions document.
pub struct VersionsSource {
    config: VersionsConfig,
    retry_after: Duration,
    cache: Mutex<Cache>,
    /// The latest snapshot, readable while a fetch holds `cache`.
    last: std::sync::Mutex<VersionsSnapshot>,
    /// The configured CA certificates, trusted for an `https` URL.
    extra_roots: Vec<CertificateDer<'static>>,
}

impl VersionsSource {
    /// `retry_after` bounds how often a failed fetch is tried again;
    /// `extra_roots` are trusted beside the platform's roots.
    pub fn new(
        config: VersionsConfig,
        retry_after: Duration,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, FetchError> {
        Ok(VersionsSource {
            config,
            retry_after,
            cache: Mutex::new(Cache::default()),
            last: std::sync::Mutex::new(VersionsSnapshot::default()),
            extra_roots,
        })
    }

    /// The current snapshot, fetching first (over `proxy` when given) when
    /// the cache is due and the deadline allows.
    pub async fn current(&self, deadline: Instant, proxy: Option<&ProxySpec>) -> VersionsSnapshot {
        let Ok(mut cache) = tokio::time::timeout_at(deadline, self.cache.lock()).await else {
            // Another scrape is fetching past this one's deadline: show what
            // was known before that fetch began.
            return self
                .last
                .lock()
                .map(|last| last.clone())
                .unwrap_or_default();
        };

        let now = Instant::now();
        let fresh = cache
            .good_at
            .is_some_and(|at| now.duration_since(at) < self.config.cache_for);
        let retried_recently = !cache.snapshot.last_fetch_ok
            && cache
                .attempted_at
                .is_some_and(|at| now.duration_since(at) < self.retry_after);
        if fresh || retried_recently {
            return cache.snapshot.clone();
        }

        let fetch_deadline = deadline.min(now + self.config.timeout);
        cache.attempted_at = Some(now);
        match self.fetch(fetch_deadline, proxy).await {
            Ok(version) => {
                cache.good_at = Some(Instant::now());
                cache.snapshot = VersionsSnapshot {
                    latest: Some(version),
                    fetched_at: Some(SystemTime::now()),
                    last_fetch_ok: true,
                    last_error: None,
                };
            }
            Err(error) => {
                tracing::info!(reason = error.reason(), %error, "versions document not fetched");
                cache.snapshot.last_fetch_ok = false;
                cache.snapshot.last_error = Some((error.reason(), error.to_string()));
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = cache.snapshot.clone();
        }
        cache.snapshot.clone()
    }

    async fn fetch(&self, deadline: Instant, proxy: Option<&ProxySpec>) -> Result<u64, FetchError> {
        // Built per fetch: fetches are minutes apart and the route can
        // change between them.
        let client = crate::probe::proxy::http_client(proxy, &self.extra_roots)
            .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
        let work = async {
            let mut response = client
                .get(&self.config.url)
                .send()
                .await
                .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(FetchError::HttpStatus { status });
            }

            let limit = self.config.max_bytes;
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| FetchError::Unreachable(error_chain(&e)))?
            {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(FetchError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(parse::parse_versions_document(&body)?)
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// Versions behind: the newest published minus the one held, never below
/// zero (an endpoint can briefly hold a version newer than a cached
/// document).
pub fn lag(latest: u64, held: u64) -> u64 {
    latest.saturating_sub(held)
}
