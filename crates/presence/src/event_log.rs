//! The durable presence event log, and reading it from a position.
//!
//! Every script that changes presence appends its events to its bucket's log
//! (a Redis stream, `lua/prelude.lua`'s `emit`) and publishes them on the bus
//! in the same step; the in-memory backend keeps one log the same way
//! (`event_log/memory.rs`). A reader ([`EventTail`], `event_log/tail.rs`)
//! takes events from the bus while they come in order, and reads the log
//! whenever the bus cannot vouch for that (it reconnected, the reader
//! lagged, an event's `prev` is not the last one it has): so it delivers
//! every event after its [`Position`] exactly once, or says which bucket
//! lost events ([`TailError::Expired`]). It never skips silently.
//!
//! Order: one bucket's events (so one user's) come in log order; events of
//! different buckets are not ordered among themselves.

use std::{collections::BTreeSet, time::Duration};

use pulse_protocol::{
    PresenceEvent,
    event::{LogPoint, Position},
};

use crate::{
    Backend, ConnectionRecord, Presence, PresenceError,
    buckets::{BUCKETS, bucket_of},
    observe,
};
use memory::MEMORY_LOG;
use pulse_protocol::event::now_ms;

pub(crate) mod memory;
mod tail;

pub use tail::{EventTail, TailError};

/// How long events and "last seen" are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLogOptions {
    /// Events older than this may be trimmed (the newest of each bucket is
    /// always kept); a position whose next event was trimmed is expired.
    pub retention: Duration,
    /// How long an offline user's "last seen" is kept.
    pub last_seen: Duration,
}

impl EventLogOptions {
    /// One hour of events.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
    /// Thirty days of "last seen".
    pub const DEFAULT_LAST_SEEN: Duration = Duration::from_secs(30 * 24 * 3600);
}

impl Default for EventLogOptions {
    fn default() -> Self {
        Self {
            retention: Self::DEFAULT_RETENTION,
            last_seen: Self::DEFAULT_LAST_SEEN,
        }
    }
}

/// What one read of a log found: entries after the point asked (in order,
/// at most a page), and the log's newest entry (`None`: the log is empty).
#[derive(Debug, Clone)]
pub(crate) struct LogRead {
    pub(crate) entries: Vec<PresenceEvent>,
    pub(crate) tail: Option<LogPoint>,
}

/// One bucket's online users, read in the same step as where its log was.
#[derive(Debug, Clone)]
pub(crate) struct Snapshotted {
    pub(crate) users: Vec<(String, Vec<ConnectionRecord>)>,
    pub(crate) at: LogPoint,
}

impl Presence {
    /// Sets how long events and "last seen" are kept (before events flow;
    /// a second call changes nothing and answers false). With Redis the
    /// trimming is [`Presence::trim_event_log`]'s, which `pulse-presence`
    /// runs; in memory each append trims.
    pub fn set_event_log_options(&self, options: EventLogOptions) -> bool {
        let set = self.inner.event_log.set(options).is_ok();
        if set && let Backend::Memory(store) = &self.inner.backend {
            store.set_log_options(options);
        }
        set
    }

    /// How long events and "last seen" are kept.
    pub fn event_log_options(&self) -> EventLogOptions {
        self.inner.event_log.get().copied().unwrap_or_default()
    }

    /// Every log there is: one per bucket with Redis, one in memory.
    pub fn log_buckets(&self) -> BTreeSet<u16> {
        match &self.inner.backend {
            Backend::Memory(_) => BTreeSet::from([MEMORY_LOG]),
            Backend::Redis(_) => (0..BUCKETS).collect(),
        }
    }

    /// The log that holds `user_id`'s events.
    pub fn log_of(&self, user_id: &str) -> u16 {
        match &self.inner.backend {
            Backend::Memory(_) => MEMORY_LOG,
            Backend::Redis(_) => bucket_of(user_id),
        }
    }

    /// Reads `buckets`' events after `since` (from now when `None`).
    ///
    /// With Redis the store must subscribe to events
    /// ([`crate::RedisOptions::subscribe_events`], the default; a gateway's
    /// store does not): a tail takes live events from the bus.
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] when `since` does not cover one of
    /// `buckets` or names a bucket that does not exist;
    /// [`PresenceError::Unavailable`] when starting from now and the logs
    /// cannot be read.
    pub async fn tail_events(
        &self,
        buckets: BTreeSet<u16>,
        since: Option<Position>,
    ) -> Result<EventTail, PresenceError> {
        let all = self.log_buckets();
        if let Some(bad) = buckets.iter().find(|bucket| !all.contains(bucket)) {
            return Err(PresenceError::InvalidArgument(format!(
                "no event log {bad}"
            )));
        }
        let since = match since {
            Some(since) => {
                let mut kept = Position::default();
                for &bucket in &buckets {
                    let point = since.get(bucket).ok_or_else(|| {
                        PresenceError::InvalidArgument(format!(
                            "the position does not cover event log {bucket}; \
                             use one from a Watch of the same users, from a Watch of all, or from a Snapshot"
                        ))
                    })?;
                    kept.set(bucket, point);
                }
                Some(kept)
            }
            None => None,
        };
        EventTail::start(self.clone(), buckets, since).await
    }

    /// The newest entry of each of `buckets`' logs.
    pub(crate) async fn log_tails(
        &self,
        buckets: &BTreeSet<u16>,
    ) -> Result<Position, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => {
                let tail = store.log_tail();
                Ok(Position::new(buckets.iter().map(|bucket| (*bucket, tail))))
            }
            Backend::Redis(store) => {
                let buckets: Vec<u16> = buckets.iter().copied().collect();
                Ok(Position::new(store.log_tails(&buckets).await?))
            }
        }
    }

    pub(crate) async fn read_log(
        &self,
        bucket: u16,
        after: LogPoint,
        count: usize,
    ) -> Result<LogRead, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.read_log(after, count)),
            Backend::Redis(store) => {
                observe("read_log", store.read_log(bucket, after, count)).await
            }
        }
    }

    /// One log's online users (each with their connections) and the point
    /// of that log at which the list is exact, read in one step.
    pub(crate) async fn snapshot_log(&self, bucket: u16) -> Result<Snapshotted, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.snapshot()),
            Backend::Redis(store) => observe("snapshot", store.snapshot_bucket(bucket)).await,
        }
    }

    /// Every online user with their connections, and the position at which
    /// that list is exact: each log is read in one step with its point, so
    /// [`Presence::tail_events`] from the position misses nothing the list
    /// lacks and repeats nothing it holds. Reads one log at a time.
    pub async fn snapshot(
        &self,
    ) -> Result<(Vec<(String, Vec<ConnectionRecord>)>, Position), PresenceError> {
        let mut users = Vec::new();
        let mut position = Position::default();
        for bucket in self.log_buckets() {
            let read = self.snapshot_log(bucket).await?;
            users.extend(read.users);
            position.set(bucket, read.at);
        }
        Ok((users, position))
    }

    /// When `user_id`'s last connection closed (ms since the Unix epoch),
    /// if within the last-seen window. Says nothing about whether they are
    /// online now.
    pub async fn last_seen(&self, user_id: &str) -> Result<Option<u64>, PresenceError> {
        crate::check_user_id(user_id)?;
        let window = self.event_log_options().last_seen;
        let seen = match &self.inner.backend {
            Backend::Memory(store) => store.last_seen(user_id),
            Backend::Redis(store) => observe("last_seen", store.last_seen(user_id)).await?,
        };
        let oldest = now_ms().saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        Ok(seen.filter(|at| *at >= oldest))
    }

    /// Trims every log to the retention (keeping each one's newest entry)
    /// and forgets users last seen before the window; how many entries went.
    /// Nothing to do in memory.
    pub async fn trim_event_log(&self) -> Result<u64, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(0),
            Backend::Redis(store) => {
                observe("trim_event_log", store.trim_logs(self.event_log_options())).await
            }
        }
    }
}

/// How often [`run_trimmer`] trims, at most: a log holds up to this much
/// more than its retention.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Trims the event logs to their retention until `shutdown`: every minute,
/// or every quarter of the retention when that is shorter. A failure is
/// logged and tried again next time (nothing is lost by trimming late).
pub async fn run_trimmer(presence: Presence, shutdown: impl Future<Output = ()>) {
    let every =
        (presence.event_log_options().retention / 4).clamp(Duration::from_millis(250), TRIM_EVERY);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        match presence.trim_event_log().await {
            Ok(trimmed) => {
                metrics::counter!("pulse_presence_events_trimmed_total").increment(trimmed);
            }
            Err(error) => tracing::warn!(%error, "cannot trim the event log; trying again later"),
        }
    }
}
