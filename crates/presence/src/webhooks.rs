//! Webhooks: presence events POSTed to the application, signed, batched, in
//! order per user, at least once.
//!
//! Each target (`[webhooks]` in the config file, [`config`]) has a lease and
//! a cursor in Redis. The replica that holds the lease reads the event log
//! from the cursor (an [`EventTail`]), POSTs batches of the kinds the target
//! wants, retries a batch with backoff until the receiver answers 2xx, and
//! only then stores the cursor past it, in one script that checks it still
//! holds the lease: two replicas never deliver to one target at once, and a
//! replica that dies mid-batch leaves the batch to be sent again (with the
//! same event ids, for the receiver's dedupe). Events the log no longer has
//! when delivery gets to them (the receiver was down longer than the
//! retention) are counted in `pulse_presence_webhook_events_expired_total`
//! and skipped, with a warning.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use pulse_protocol::{PresenceEvent, event::Position};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{info, warn};

use crate::{EventTail, Presence, PresenceError, TailError};

pub mod config;
pub mod sign;

pub use config::{Target, WebhooksConfig};

/// How long a delivery lease lasts without renewal.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews it (and how often others try to take it).
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// The first and the longest wait between two tries of one batch.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> Result<HttpClient, String> {
    // The provider is named rather than taken from the process default.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(|error| format!("webhooks: cannot set up tls: {error}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Delivers to every target until `shutdown`. With no target it returns at
/// once.
pub async fn run_webhooks(
    presence: Presence,
    targets: Vec<Target>,
    shutdown: impl Future<Output = ()>,
) {
    if targets.is_empty() {
        return;
    }
    let client = match http_client() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "webhooks are off");
            return;
        }
    };
    let holder = uuid::Uuid::now_v7().to_string();
    let names: Vec<String> = targets.iter().map(|target| target.name.clone()).collect();
    let deliveries =
        futures_util::future::join_all(targets.into_iter().map(|target| {
            deliver_forever(presence.clone(), client.clone(), target, holder.clone())
        }));
    tokio::select! {
        () = shutdown => {}
        _ = deliveries => {}
    }
    // Another replica takes over at once rather than when the lease runs
    // out; a batch this one had not marked done is sent again (same ids).
    for name in names {
        let _ = presence.webhook_lease(&name, &holder, Duration::ZERO).await;
    }
}

/// Takes the target's lease whenever it is free, and delivers while held.
async fn deliver_forever(presence: Presence, client: HttpClient, target: Target, holder: String) {
    let mut reported = false;
    // Where this replica's delivery got to: used when Redis holds no cursor
    // although this replica delivered (Redis lost its data), so that what
    // the new log holds is delivered rather than skipped.
    let mut remembered: Option<Position> = None;
    loop {
        match presence
            .webhook_lease(&target.name, &holder, LEASE_TTL)
            .await
        {
            Ok(true) => {
                info!(target = %target.name, url = %target.url, "delivering webhooks (this replica holds the lease)");
                reported = false;
                let ended = Delivery {
                    presence: &presence,
                    client: &client,
                    target: &target,
                    holder: &holder,
                    renew_at: Instant::now() + RENEW_EVERY,
                    remembered: &mut remembered,
                    told_lost: false,
                }
                .run()
                .await;
                warn!(target = %target.name, reason = %ended, "webhook delivery paused");
            }
            Ok(false) => {}
            Err(error) => {
                if !reported {
                    warn!(target = %target.name, %error, "cannot take the webhook lease; retrying");
                    reported = true;
                }
            }
        }
        sleep(RENEW_EVERY).await;
    }
}

/// Adds an event the target wants to `batch` (with the position after it),
/// notes that the tail moved, or hands back the tail's error.
fn take(
    item: Result<PresenceEvent, TailError>,
    tail: &EventTail,
    target: &Target,
    batch: &mut Vec<(PresenceEvent, String)>,
    passed: &mut bool,
) -> Option<TailError> {
    match item {
        Ok(event) => {
            *passed = true;
            if target.events.contains(&event.kind) {
                batch.push((event, tail.position().to_string()));
            }
            None
        }
        Err(error) => Some(error),
    }
}

/// One stretch of delivery under the lease.
struct Delivery<'a> {
    presence: &'a Presence,
    client: &'a HttpClient,
    target: &'a Target,
    holder: &'a str,
    renew_at: Instant,
    remembered: &'a mut Option<Position>,
    /// Whether this run has logged that Redis lost the logs.
    told_lost: bool,
}

impl Delivery<'_> {
    /// Delivers until the lease is lost or Redis fails; says why it stopped.
    async fn run(mut self) -> String {
        match self.deliver().await {
            Ok(never) => match never {},
            Err(reason) => reason,
        }
    }

    async fn deliver(&mut self) -> Result<std::convert::Infallible, String> {
        let name = &self.target.name;
        let stored = self
            .presence
            .webhook_cursor(name)
            .await
            .map_err(|error| error.to_string())?;
        let since = match stored.as_deref().map(str::parse::<Position>) {
            Some(Ok(position)) => Some(position),
            Some(Err(error)) => {
                warn!(target = %name, %error, "the stored webhook cursor does not parse; starting from now");
                None
            }
            None => {
                if self.remembered.is_some() {
                    warn!(target = %name, "the webhook cursor is gone from Redis (it lost its data); going on from where this replica was");
                }
                self.remembered.clone()
            }
        };
        let fresh = stored.is_none();
        let mut tail = self
            .presence
            .tail_events(self.presence.log_buckets(), since)
            .await
            .map_err(|error| error.to_string())?;
        if fresh {
            self.store(&tail).await?;
        }
        let mut pending: Option<TailError> = None;
        loop {
            let mut batch: Vec<(PresenceEvent, String)> = Vec::new();
            let mut passed = false;
            if let Some(error) = pending.take() {
                self.skip(&mut tail, error).await?;
                continue;
            }
            // Wait for an event, renewing the lease meanwhile.
            let first = loop {
                tokio::select! {
                    item = tail.next() => break item,
                    () = sleep_until(self.renew_at) => self.renew().await?,
                }
            };
            pending = take(first, &tail, self.target, &mut batch, &mut passed);
            // Whatever else is ready now goes in the same POST.
            while pending.is_none() && batch.len() < self.target.max_batch {
                match tail.next().now_or_never() {
                    Some(item) => pending = take(item, &tail, self.target, &mut batch, &mut passed),
                    None => break,
                }
            }
            if !batch.is_empty() {
                self.post(&batch).await?;
            }
            if passed {
                self.store(&tail).await?;
            }
        }
    }

    /// Counts and skips what the log lost, or stops on a closed store.
    async fn skip(&mut self, tail: &mut EventTail, error: TailError) -> Result<(), String> {
        let TailError::Expired { bucket, .. } = error else {
            return Err("the presence store closed".into());
        };
        let lost = tail
            .skip_lost(bucket)
            .await
            .map_err(|error| error.to_string())?;
        match lost {
            Some(lost) => {
                metrics::counter!("pulse_presence_webhook_events_expired_total", "target" => self.target.name.clone())
                    .increment(lost);
                warn!(
                    target = %self.target.name,
                    bucket,
                    lost,
                    "webhook events expired before they could be delivered (the receiver was down longer than --event-retention)"
                );
            }
            // A log lost with Redis's data: every bucket says so at once.
            None if !self.told_lost => {
                self.told_lost = true;
                warn!(
                    target = %self.target.name,
                    "the event logs were lost with Redis's data: what they held is not delivered; going on with what they hold now"
                );
            }
            None => {}
        }
        self.store(tail).await
    }

    async fn renew(&mut self) -> Result<(), String> {
        self.renew_at = Instant::now() + RENEW_EVERY;
        match self
            .presence
            .webhook_lease(&self.target.name, self.holder, LEASE_TTL)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("another replica holds the lease".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn store(&mut self, tail: &EventTail) -> Result<(), String> {
        *self.remembered = Some(tail.position().clone());
        match self
            .presence
            .store_webhook_cursor(&self.target.name, self.holder, &tail.position().to_string())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("the lease was lost before the cursor was stored".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// POSTs one batch until the receiver answers 2xx, with backoff,
    /// renewing the lease between tries and while one waits.
    async fn post(&mut self, batch: &[(PresenceEvent, String)]) -> Result<(), String> {
        let body = Bytes::from(sign::body(batch));
        let mut backoff = FIRST_BACKOFF;
        let name = self.target.name.clone();
        loop {
            let started = std::time::Instant::now();
            // The lease is renewed while the receiver takes its time (up to
            // the target's timeout, which may be longer than the lease):
            // else another replica would take it and send this batch again
            // beside this POST, and the next ones before it is answered.
            // A lease lost meanwhile drops the POST.
            let outcome = {
                let attempt = attempt(self.client, self.target, body.clone());
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        outcome = &mut attempt => break outcome,
                        () = sleep_until(self.renew_at) => self.renew().await?,
                    }
                }
            };
            metrics::histogram!("pulse_presence_webhook_post_seconds", "target" => name.clone())
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => {
                    metrics::counter!("pulse_presence_webhook_events_delivered_total", "target" => name.clone())
                        .increment(batch.len() as u64);
                    if let Some((last, _)) = batch.last() {
                        let delay = pulse_protocol::event::now_ms().saturating_sub(last.at_ms);
                        metrics::histogram!("pulse_presence_webhook_delay_seconds", "target" => name.clone())
                            .record(delay as f64 / 1000.0);
                    }
                    return Ok(());
                }
                Err(reason) => {
                    metrics::counter!("pulse_presence_webhook_failures_total", "target" => name.clone())
                        .increment(1);
                    warn!(target = %name, %reason, retry_in = ?backoff, events = batch.len(), "webhook POST failed");
                }
            }
            let wake = Instant::now() + backoff;
            while Instant::now() < wake {
                tokio::select! {
                    () = sleep_until(wake) => {}
                    () = sleep_until(self.renew_at) => self.renew().await?,
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One POST of a signed batch, within the target's timeout.
async fn attempt(client: &HttpClient, target: &Target, body: Bytes) -> Result<(), String> {
    let timestamp = pulse_protocol::event::now_ms() / 1000;
    let request = hyper::Request::post(target.url.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("pulse-presence/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            sign::SIGNATURE_HEADER,
            sign::signature(&target.secret, timestamp, &body),
        )
        .body(Full::new(body))
        .map_err(|error| format!("bad request: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        // Read the answer so the connection can be used again.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    };
    timeout(target.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", target.timeout))?
}

impl Presence {
    /// Takes or renews `target`'s delivery lease for `holder` (releases it
    /// with a zero `ttl`); false when another holder has it. Always true in
    /// memory (one process).
    pub(crate) async fn webhook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        match &self.inner.backend {
            crate::Backend::Memory(_) => Ok(true),
            crate::Backend::Redis(store) => store.webhook_lease(target, holder, ttl).await,
        }
    }

    /// Where `target`'s delivery stopped, if it ever ran (Redis only).
    pub(crate) async fn webhook_cursor(
        &self,
        target: &str,
    ) -> Result<Option<String>, PresenceError> {
        match &self.inner.backend {
            crate::Backend::Memory(_) => Ok(None),
            crate::Backend::Redis(store) => store.webhook_cursor(target).await,
        }
    }

    /// Stores `target`'s cursor if `holder` still holds its lease.
    pub(crate) async fn store_webhook_cursor(
        &self,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, PresenceError> {
        match &self.inner.backend {
            crate::Backend::Memory(_) => Ok(true),
            crate::Backend::Redis(store) => {
                store.store_webhook_cursor(target, holder, position).await
            }
        }
    }
}
