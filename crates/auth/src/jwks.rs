//! Keys fetched from a JWKS URL and kept fresh.
//!
//! A background task fetches the set at once, then every refresh interval
//! (sooner, with backoff, after a failure). A token whose `kid` is not in the
//! set may trigger one extra fetch, at most one per minimum refetch interval,
//! so a flood of made-up `kid`s costs the identity provider one request per
//! interval. A failed fetch never drops keys: the last good set stays until
//! a good one replaces it. Fetches never overlap: one lock serialises them,
//! and whoever waited on the lock reuses the fetch that just finished.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{task::AbortHandle, time::Instant};
use tracing::{debug, info, warn};

use crate::{error::ConfigError, jwk::parse_jwks, keys::VerificationKey};

/// The largest JWKS body read. Real sets are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The first retry after a failed fetch; each further failure doubles it, up
/// to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where a JWKS is fetched from and how it is kept fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSettings {
    /// An `http://` or `https://` URL serving `{"keys": [...]}`. Redirects are
    /// not followed.
    pub url: String,
    /// How often the set is fetched again while fetches succeed.
    pub refresh_interval: Duration,
    /// The least time between two fetches caused by tokens with an unknown `kid`.
    pub min_refetch_interval: Duration,
    /// How long one fetch may take, connecting and reading the body included.
    pub timeout: Duration,
}

impl JwksSettings {
    /// The default `refresh_interval` (and `--jwks-refresh-interval`'s).
    pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
    /// The default `min_refetch_interval` (and `--jwks-min-refetch-interval`'s).
    pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
    /// The default `timeout` (and `--jwks-timeout`'s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Settings for `url` with the defaults, which are the flags' too:
    /// refresh every 5 minutes, refetch for unknown `kid`s at most every 30
    /// seconds, 5 second timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            refresh_interval: Self::DEFAULT_REFRESH_INTERVAL,
            min_refetch_interval: Self::DEFAULT_MIN_REFETCH_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The fetched keys and the machinery that keeps them fresh. Owned by a
/// validator; the refresh task holds only a weak reference and is aborted
/// when this is dropped, so no task outlives its validator.
pub(crate) struct Jwks {
    uri: Uri,
    settings: JwksSettings,
    leeway_secs: u64,
    client: HttpClient,
    /// The last good set; empty until the first successful fetch.
    keys: RwLock<Arc<[VerificationKey]>>,
    loaded: AtomicBool,
    /// Fetches finished, good or bad: a waiter that sees it move knows a
    /// fetch happened while it waited.
    attempts: AtomicU64,
    state: tokio::sync::Mutex<FetchState>,
    refresher: Mutex<Option<AbortHandle>>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    failures: u32,
    last_on_demand: Option<Instant>,
    /// The kids of the set in hand, to log only the fetches that change it.
    kids: Vec<String>,
}

impl Jwks {
    /// Checks the settings, and spawns the refresh task on the current Tokio
    /// runtime, which must exist.
    pub(crate) fn start(
        settings: JwksSettings,
        leeway_secs: u64,
    ) -> Result<Arc<Self>, ConfigError> {
        let invalid = |reason: &str| ConfigError::JwksUrl {
            url: settings.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = settings
            .url
            .parse()
            .map_err(|err: http::uri::InvalidUri| invalid(&err.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(invalid("expected an http:// or https:// url"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("the url has no host"));
        }
        for (value, setting) in [
            (
                settings.refresh_interval,
                "--jwks-refresh-interval / JWKS_REFRESH_INTERVAL",
            ),
            (
                settings.min_refetch_interval,
                "--jwks-min-refetch-interval / JWKS_MIN_REFETCH_INTERVAL",
            ),
            (settings.timeout, "--jwks-timeout / JWKS_TIMEOUT"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::DurationZero { setting });
            }
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ConfigError::JwksRuntime)?;
        // The provider is named rather than taken from the process default,
        // which panics when two crypto backends end up linked in.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|err| invalid(&format!("cannot set up tls: {err}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let jwks = Arc::new(Self {
            uri,
            settings,
            leeway_secs,
            client,
            keys: RwLock::new(Arc::from(Vec::new())),
            loaded: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(FetchState::default()),
            refresher: Mutex::new(None),
        });
        let task = runtime.spawn(refresh_loop(Arc::downgrade(&jwks)));
        *jwks
            .refresher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Ok(jwks)
    }

    /// The last good set (empty before the first good fetch).
    pub(crate) fn keys(&self) -> Arc<[VerificationKey]> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a fetch has ever succeeded.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// How many fetches have finished; pass it to [`Self::refetch_for_unknown_kid`].
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Fetches the set again for a token whose `kid` was unknown when
    /// `attempts` fetches had finished, unless another fetch has finished
    /// since (its result is as fresh) or the last such refetch was less than
    /// the minimum refetch interval ago.
    pub(crate) async fn refetch_for_unknown_kid(&self, attempts: u64) {
        let mut state = self.state.lock().await;
        if self.attempts() != attempts {
            return;
        }
        if state.last_attempt.is_none() {
            // The first fetch has not happened yet: it is due now whoever
            // makes it, and the refresher will skip it, so it does not count
            // against the rate limit.
            self.fetch_locked(&mut state).await;
            return;
        }
        let now = Instant::now();
        if let Some(last) = state.last_on_demand
            && now.duration_since(last) < self.settings.min_refetch_interval
        {
            debug!("unknown kid: refetch skipped, the last one was too recent");
            return;
        }
        state.last_on_demand = Some(now);
        debug!("unknown kid: fetching the jwks again");
        self.fetch_locked(&mut state).await;
    }

    /// When the refresh task should fetch next.
    fn next_fetch(&self, state: &FetchState) -> Instant {
        let Some(last) = state.last_attempt else {
            return Instant::now();
        };
        let wait = if state.failures == 0 {
            self.settings.refresh_interval
        } else {
            let doublings = state.failures.saturating_sub(1).min(16);
            (FIRST_RETRY * 2u32.pow(doublings)).min(self.settings.refresh_interval)
        };
        last + wait
    }

    /// Fetches, then installs the new set or keeps the old one. Called with
    /// the fetch lock held.
    async fn fetch_locked(&self, state: &mut FetchState) {
        let result = tokio::time::timeout(self.settings.timeout, self.fetch())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.settings.timeout)));
        state.last_attempt = Some(Instant::now());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("pulse_auth_jwks_fetches_total", "result" => outcome).increment(1);
        match result {
            Ok(parsed) => {
                state.failures = 0;
                let kids: Vec<String> = parsed
                    .keys
                    .iter()
                    .map(|key| key.kid.clone().unwrap_or_default())
                    .collect();
                if kids != state.kids {
                    for (kid, reason) in &parsed.skipped {
                        warn!(url = %self.uri, kid, reason, "jwks key skipped");
                    }
                    info!(url = %self.uri, ?kids, "jwks keys loaded");
                    state.kids = kids;
                }
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = parsed.keys.into();
                self.loaded.store(true, Ordering::Release);
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                warn!(
                    url = %self.uri,
                    %error,
                    failures = state.failures,
                    kept = state.kids.len(),
                    "jwks fetch failed, keeping the last good keys"
                );
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    /// One GET of the set, parsed.
    async fn fetch(&self) -> Result<crate::jwk::ParsedJwks, String> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/json, application/jwk-set+json")
            .header(
                header::USER_AGENT,
                concat!("pulse-auth/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|err| format!("cannot build the request: {err}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| format!("request failed: {}", chain(&err)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|err| format!("reading the body failed: {err}"))?
            .to_bytes();
        parse_jwks(&body, self.leeway_secs)
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Fetches when due, for as long as the validator lives.
async fn refresh_loop(jwks: Weak<Jwks>) {
    loop {
        let due = {
            let Some(jwks) = jwks.upgrade() else { return };
            let state = jwks.state.lock().await;
            jwks.next_fetch(&state)
        };
        tokio::time::sleep_until(due).await;
        let Some(jwks) = jwks.upgrade() else { return };
        let mut state = jwks.state.lock().await;
        // An on-demand fetch may have happened while this slept.
        if jwks.next_fetch(&state) <= Instant::now() {
            jwks.fetch_locked(&mut state).await;
        }
    }
}

/// An error and its sources on one line: hyper's own message alone says
/// little more than "client error".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_refresher_ends_with_its_owner() {
        let jwks = Jwks::start(JwksSettings::new("http://127.0.0.1:9/jwks.json"), 0).unwrap();
        let task = jwks
            .refresher
            .lock()
            .unwrap()
            .clone()
            .expect("a refresher was spawned");
        assert!(!task.is_finished());
        drop(jwks);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !task.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the refresher stops once its validator is gone");
    }

    #[test]
    fn retries_back_off_up_to_the_refresh_interval() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let jwks = Jwks::start(JwksSettings::new("http://127.0.0.1:9/"), 0).unwrap();
        let now = Instant::now();
        let state = |failures| FetchState {
            last_attempt: Some(now),
            failures,
            ..FetchState::default()
        };
        assert!(jwks.next_fetch(&FetchState::default()) <= Instant::now());
        assert_eq!(jwks.next_fetch(&state(0)), now + Duration::from_secs(300));
        assert_eq!(jwks.next_fetch(&state(1)), now + Duration::from_secs(1));
        assert_eq!(jwks.next_fetch(&state(3)), now + Duration::from_secs(4));
        assert_eq!(jwks.next_fetch(&state(40)), now + Duration::from_secs(300));
    }
}
