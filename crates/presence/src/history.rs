//! Channel history: each publication of a namespace with `history_size > 0`
//! gets the next offset of its channel and is kept (the last
//! `history_size`, for `history_ttl` after the channel's last publication),
//! appended and fanned out in one atomic step, so that what a subscriber
//! recovers and what it received live never disagree.
//!
//! A channel's stream is named by its **epoch**, an opaque string made
//! when its history starts. The epoch changes whenever the history was lost:
//! Redis restarted empty or the channel's metadata expired (after
//! [`HISTORY_META_TTL`] without a publication or a subscription), or a
//! client showed a position past the end of the history (writes a failover
//! lost: the history it read from is not the one that is there now). A
//! stream trimmed past a client's position is told by its offsets.
//!
//! Redis: `history.lua` and `publish.lua` on the channel's bucket, keys
//! `history:<channel>` (a list of `<offset> <data>`, oldest first, trimmed
//! to the last `history_size`; its offsets follow one another up to the
//! last one) and `meta:<channel>` (a hash: `e` the epoch, `o` the last
//! offset). A list rather than a stream: a stream trimmed one entry at a
//! time keeps the trimmed entries in its node until the whole node goes,
//! and rounds up a node per few large entries, where a list frees what it
//! trims (BENCHMARKS.md, "Redis memory per stored publication"). In
//! memory: `history/memory.rs`.

use std::time::Duration;

use pulse_protocol::{
    Channel, StreamPosition,
    history::{HistoryEntry, Recovery},
};

use crate::{Backend, Presence, PresenceError, observe};

pub(crate) mod memory;

/// How long a channel's epoch and last offset are kept after its last
/// publication or subscription: longer than any `history_ttl`, so that a
/// quiet channel keeps its epoch and a client that comes back to it later
/// (with nothing missed) recovers.
pub const HISTORY_META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most publications one [`Presence::history`] page returns.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// A namespace's history: how many publications a channel keeps, and for
/// how long after its last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept (at least 1).
    pub size: u32,
    /// How long they are kept after the channel's last publication.
    pub ttl: Duration,
}

/// How one publication is made: with the namespace's history or without,
/// and with an idempotency key or without.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOptions<'a> {
    /// The channel's namespace's history; `None` publishes without an offset.
    pub history: Option<HistoryOptions>,
    /// A retried call with the same key (on the same channel) within
    /// `window` returns the first call's result and publishes nothing.
    pub idempotency_key: Option<&'a str>,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Where a channel's stream is now: its last offset (0 before the first
/// publication) and its epoch.
pub type StreamTop = StreamPosition;

/// What [`Presence::read_stream`] found: where the stream is, and, for a
/// `since`, what came after it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRead {
    /// The last offset and the epoch when it was read.
    pub top: StreamTop,
    /// Present when a `since` was given.
    pub recovery: Option<Recovery>,
}

/// Which of a channel's kept publications one [`Presence::history`] page
/// holds: those with an offset above `after` and below `before`, at most
/// `limit` of them, the oldest (oldest first) or the newest (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only offsets above this one (0: from the oldest kept).
    pub after: u64,
    /// Only offsets below this one (`None`: up to the newest).
    pub before: Option<u64>,
    /// The most publications returned, 1 to [`MAX_HISTORY_PAGE`].
    pub limit: usize,
    /// The newest of the range, newest first, instead of the oldest.
    pub newest_first: bool,
}

impl HistoryQuery {
    /// The oldest `limit` publications after `after`, oldest first: the
    /// next page asks after the last offset returned.
    pub fn after(after: u64, limit: usize) -> Self {
        Self {
            after,
            before: None,
            limit,
            newest_first: false,
        }
    }

    /// The newest `limit` publications below `before` (`None`: the newest
    /// kept), newest first: the next (older) page asks below the last
    /// offset returned.
    pub fn newest(before: Option<u64>, limit: usize) -> Self {
        Self {
            after: 0,
            before,
            limit,
            newest_first: true,
        }
    }

    /// Whether `offset` is in the range (limit aside).
    pub(crate) fn holds(&self, offset: u64) -> bool {
        offset > self.after && self.before.is_none_or(|before| offset < before)
    }
}

/// One page of a channel's history (the History API).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The last offset and the epoch.
    pub top: StreamTop,
    /// The publications of the asked range, at most the asked limit: the
    /// oldest, oldest first, or the newest, newest first.
    pub publications: Vec<HistoryEntry>,
}

/// A fresh epoch: 12 random hex digits.
pub(crate) fn new_epoch() -> String {
    let mut epoch = uuid::Uuid::new_v4().simple().to_string();
    epoch.truncate(12);
    epoch
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Presence {
    /// Gives personal channels a history (`[personal]` in the config file;
    /// every gateway and `pulse-presence` must agree, as they read the same
    /// file): from then on `Send` and `Publish` to `#<user_id>` append to
    /// it and travel like a channel's publications, to the instances
    /// subscribed to the user's personal channel. Set once, at start; a
    /// second call changes nothing.
    pub fn set_personal_history(&self, history: HistoryOptions) {
        let _ = self.inner.personal_history.set(history);
    }

    /// The history of personal channels, when they keep one.
    pub fn personal_history(&self) -> Option<HistoryOptions> {
        self.inner.personal_history.get().copied()
    }

    /// Reads `channel`'s stream position and, with `since`, the publications
    /// after it: all of them, oldest first, and `recovered: true`; or
    /// `recovered: false` and none when the gap cannot be filled (another
    /// epoch, an offset older than what history keeps, or a position past
    /// the end of this history, which starts a new epoch). Creates the
    /// channel's epoch when it has none, so that a subscriber's position
    /// holds from its first subscription on.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn read_stream(
        &self,
        channel: &str,
        history: HistoryOptions,
        since: Option<&StreamPosition>,
    ) -> Result<StreamRead, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(self.inner.local_hub.histories.read(channel, since)),
            Backend::Redis(store) => {
                observe("read_stream", store.read_stream(channel, history, since)).await
            }
        }
    }

    /// Where `channel`'s stream is now (its epoch made when it has none).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn stream_top(&self, channel: &str) -> Result<StreamTop, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(self.inner.local_hub.histories.read(channel, None).top),
            Backend::Redis(store) => observe("read_stream", store.stream_top(channel)).await,
        }
    }

    /// One page of `channel`'s history: the kept publications in the
    /// query's range, at most its limit (1 to [`MAX_HISTORY_PAGE`]), the
    /// oldest first or the newest first ([`HistoryQuery`]).
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] for a bad channel name or limit;
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, PresenceError> {
        Channel::parse(channel)
            .map_err(|error| PresenceError::InvalidArgument(format!("channel: {error}")))?;
        if query.limit == 0 || query.limit > MAX_HISTORY_PAGE {
            return Err(PresenceError::InvalidArgument(format!(
                "limit: 1 to {MAX_HISTORY_PAGE}, got {}",
                query.limit
            )));
        }
        match &self.inner.backend {
            Backend::Memory(_) => Ok(self.inner.local_hub.histories.page(channel, query)),
            Backend::Redis(store) => observe("history", store.history_page(channel, query)).await,
        }
    }
}

pub(crate) fn check_idempotency_key(key: Option<&str>) -> Result<(), PresenceError> {
    match key {
        Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
            Err(PresenceError::InvalidArgument(format!(
                "idempotency_key: 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}",
                key.len()
            )))
        }
        _ => Ok(()),
    }
}
