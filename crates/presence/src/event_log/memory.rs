//! The in-memory backend's event log: one log (bucket 0) for the process,
//! with the same ids, retention and "last seen" as the Redis streams.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use pulse_protocol::{
    EventKind, PresenceEvent,
    event::{EventId, LogPoint, now_ms},
};

use super::{EventLogOptions, LogRead, Snapshotted};
use crate::ConnectionRecord;

/// The one log of the in-memory backend.
pub(crate) const MEMORY_LOG: u16 = 0;

/// Events, newest last, and when each user went offline.
#[derive(Default)]
pub(crate) struct MemoryLog {
    entries: VecDeque<PresenceEvent>,
    /// Where the log is, kept when every entry is trimmed.
    last: LogPoint,
    /// user id -> when their last connection closed (ms).
    seen: HashMap<String, u64>,
    /// (when, user) in the order users went offline, to forget old ones.
    seen_order: VecDeque<(u64, String)>,
    options: EventLogOptions,
}

impl MemoryLog {
    pub(crate) fn set_options(&mut self, options: EventLogOptions) {
        self.options = options;
    }

    /// Appends one event (and trims what is past the retention, keeping the
    /// newest): the event as the bus carries it.
    pub(crate) fn append(
        &mut self,
        kind: EventKind,
        user_id: &str,
        connection_id: &str,
        instance_id: &str,
        at_ms: u64,
        channel: Option<&str>,
    ) -> PresenceEvent {
        let now = now_ms();
        let point = LogPoint {
            ms: now.max(self.last.ms),
            seq: self.last.seq + 1,
        };
        let event = PresenceEvent {
            user_id: user_id.to_owned(),
            kind,
            connection_id: connection_id.to_owned(),
            instance_id: instance_id.to_owned(),
            at_ms,
            id: EventId {
                bucket: MEMORY_LOG,
                point,
            },
            prev: self.last,
            channel: channel.map(str::to_owned),
        };
        self.last = point;
        let oldest = now.saturating_sub(millis(self.options.retention));
        while self
            .entries
            .front()
            .is_some_and(|first| first.id.point.ms < oldest)
        {
            self.entries.pop_front();
        }
        self.entries.push_back(event.clone());
        if kind == EventKind::Offline {
            self.seen.insert(user_id.to_owned(), at_ms);
            self.seen_order.push_back((at_ms, user_id.to_owned()));
        }
        self.forget_seen(now);
        event
    }

    fn forget_seen(&mut self, now: u64) {
        let oldest = now.saturating_sub(millis(self.options.last_seen));
        while let Some((at, _)) = self.seen_order.front()
            && *at < oldest
        {
            let (at, user) = self.seen_order.pop_front().unwrap_or_default();
            // A later offline of the same user is still queued; keep it.
            if self.seen.get(&user) == Some(&at) {
                self.seen.remove(&user);
            }
        }
    }

    /// When `user_id` was last online, within the window.
    pub(crate) fn last_seen(&self, user_id: &str) -> Option<u64> {
        let oldest = now_ms().saturating_sub(millis(self.options.last_seen));
        self.seen.get(user_id).copied().filter(|at| *at >= oldest)
    }

    /// Up to `count` entries after `after`, and the newest entry.
    pub(crate) fn read(&self, after: LogPoint, count: usize) -> LogRead {
        let start = self
            .entries
            .partition_point(|entry| entry.id.point <= after);
        LogRead {
            entries: self.entries.range(start..).take(count).cloned().collect(),
            tail: (self.last != LogPoint::default()).then_some(self.last),
        }
    }

    pub(crate) fn tail(&self) -> LogPoint {
        self.last
    }

    /// Every online user of `users` and where the log is.
    pub(crate) fn snapshot(&self, users: Vec<(String, Vec<ConnectionRecord>)>) -> Snapshotted {
        Snapshotted {
            users,
            at: self.last,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
