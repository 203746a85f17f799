//! [`EventTail`]: every event after a [`Position`], from the bus while it
//! comes in order and from the log whenever the bus cannot vouch for that;
//! and [`TailError`], why a tail cannot go on.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Duration,
};

use pulse_protocol::{
    PresenceEvent,
    event::{LogPoint, Position},
};
use tokio::sync::{broadcast, watch};

use super::LogRead;
use crate::{Presence, PresenceError};

/// How many entries one read of a log takes.
const PAGE: usize = 512;
/// How many logs a tail reads at once when several are behind.
const READ_TOGETHER: usize = 32;

/// Why an [`EventTail`] cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Events after the position in `bucket` are no longer in the log
    /// (trimmed past the retention, or lost with Redis's data): nothing after
    /// them can be delivered without a gap. `lost` is how many, when known.
    #[error("events after the position are no longer kept (bucket {bucket})")]
    Expired {
        /// The bucket whose log lost them.
        bucket: u16,
        /// How many events were lost, when the log can tell.
        lost: Option<u64>,
    },
    /// The store was dropped.
    #[error("the presence store is gone")]
    Closed,
}

/// Checks one read of `bucket` after `after` and returns its entries, or
/// says the position expired: the first entry must be the one right after
/// `after`, and an empty read must find the log where `after` left it.
fn check_read(
    bucket: u16,
    after: LogPoint,
    read: LogRead,
) -> Result<Vec<PresenceEvent>, TailError> {
    let mut last = after;
    for entry in &read.entries {
        if !last.precedes(entry.id.point) {
            let lost = (entry.id.point.ms >= last.ms && entry.id.point.seq > last.seq)
                .then(|| entry.id.point.seq - last.seq - 1);
            return Err(TailError::Expired { bucket, lost });
        }
        last = entry.id.point;
    }
    if read.entries.is_empty() && read.tail.unwrap_or_default() != after {
        // The log is behind the position (it lost writes or was emptied).
        return Err(TailError::Expired { bucket, lost: None });
    }
    let mut entries = read.entries;
    let mut prev = after;
    for entry in &mut entries {
        entry.prev = prev;
        prev = entry.id.point;
    }
    Ok(entries)
}

/// Every event after a [`Position`], in order per bucket, exactly once.
///
/// Subscribes to the bus before it reads anything, so an event is either in
/// what it reads from the log or arrives on the bus after; the log's points
/// tell them apart.
pub struct EventTail {
    presence: Presence,
    events: broadcast::Receiver<PresenceEvent>,
    epoch: watch::Receiver<u64>,
    /// Where the caller is: the last event handed out, per bucket.
    position: Position,
    /// Where the queue ends, per bucket (at or after `position`).
    cursor: Position,
    /// Buckets to read from the log before trusting the bus for them.
    stale: BTreeSet<u16>,
    queue: VecDeque<PresenceEvent>,
}

impl EventTail {
    /// Starts after `since` (which covers the buckets to read), or from the
    /// newest entry of each of `buckets` when `since` is `None`.
    pub(crate) async fn start(
        presence: Presence,
        buckets: BTreeSet<u16>,
        since: Option<Position>,
    ) -> Result<Self, PresenceError> {
        let events = presence.subscribe();
        let mut epoch = presence.bus_epoch();
        epoch.mark_unchanged();
        let position = match since {
            Some(since) => since,
            None => presence.log_tails(&buckets).await?,
        };
        let stale = position.iter().map(|(bucket, _)| bucket).collect();
        Ok(Self {
            presence,
            events,
            epoch,
            cursor: position.clone(),
            position,
            stale,
            queue: VecDeque::new(),
        })
    }

    /// Where the caller is: resuming after this misses nothing it has not
    /// been handed.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// The next event. While the log cannot be read (Redis is away) it waits
    /// and tries again; it ends only when events were lost or the store is
    /// gone.
    pub async fn next(&mut self) -> Result<PresenceEvent, TailError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(event) = self.queue.pop_front() {
                self.position.set(event.id.bucket, event.id.point);
                return Ok(event);
            }
            if !self.stale.is_empty() {
                // Several logs at once (one round trip on the multiplexed
                // connection, not one each): a Watch of all that resumes
                // reads up to 128.
                let buckets: Vec<u16> = self.stale.iter().copied().take(READ_TOGETHER).collect();
                let reads = futures_util::future::join_all(buckets.iter().map(|&bucket| {
                    let after = self.cursor.get(bucket).unwrap_or_default();
                    let presence = &self.presence;
                    async move { (after, presence.read_log(bucket, after, PAGE).await) }
                }))
                .await;
                let mut failed = false;
                for (bucket, (after, read)) in buckets.into_iter().zip(reads) {
                    match read {
                        Ok(read) => {
                            let full = read.entries.len() >= PAGE;
                            let entries = check_read(bucket, after, read)?;
                            if let Some(last) = entries.last() {
                                self.cursor.set(bucket, last.id.point);
                            }
                            self.queue.extend(entries);
                            if !full {
                                self.stale.remove(&bucket);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, bucket, "event log read failed; retrying");
                            failed = true;
                        }
                    }
                }
                if failed && self.queue.is_empty() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                } else if !failed {
                    backoff = Duration::from_millis(100);
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = self.epoch.changed() => {
                    changed.map_err(|_| TailError::Closed)?;
                    // The bus reconnected: what it missed is in the logs.
                    self.stale = self.cursor.iter().map(|(bucket, _)| bucket).collect();
                }
                received = self.events.recv() => match received {
                    Ok(event) => self.take_live(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.stale = self.cursor.iter().map(|(bucket, _)| bucket).collect();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(TailError::Closed),
                },
            }
        }
    }

    /// Queues a bus event when it is the next one of its bucket; marks the
    /// bucket for a log read when something is missing before it.
    fn take_live(&mut self, event: PresenceEvent) {
        let bucket = event.id.bucket;
        let Some(at) = self.cursor.get(bucket) else {
            return;
        };
        if event.id.point <= at || self.stale.contains(&bucket) {
            return;
        }
        if event.prev == at && at.precedes(event.id.point) {
            self.cursor.set(bucket, event.id.point);
            self.queue.push_back(event);
        } else {
            self.stale.insert(bucket);
        }
    }

    /// Moves past events of `bucket` that were lost, to the oldest one the
    /// log still has (for a consumer that counts them and goes on, like
    /// webhook delivery); returns how many were lost, when known.
    pub async fn skip_lost(&mut self, bucket: u16) -> Result<Option<u64>, PresenceError> {
        let read = self
            .presence
            .read_log(bucket, LogPoint::default(), 1)
            .await?;
        let from = self.cursor.get(bucket).unwrap_or_default();
        let resume = match read.entries.first() {
            Some(oldest) => LogPoint {
                ms: oldest.id.point.ms,
                seq: oldest.id.point.seq - 1,
            },
            None => read.tail.unwrap_or_default(),
        };
        let lost = (resume.ms >= from.ms && resume.seq >= from.seq).then(|| resume.seq - from.seq);
        self.queue.retain(|event| event.id.bucket != bucket);
        self.cursor.set(bucket, resume);
        self.position.set(bucket, resume);
        self.stale.insert(bucket);
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use pulse_protocol::{EventKind, event::EventId};

    use super::*;

    fn entry(ms: u64, seq: u64) -> PresenceEvent {
        PresenceEvent {
            user_id: "u".into(),
            kind: EventKind::Connected,
            connection_id: "c".into(),
            instance_id: "i".into(),
            at_ms: ms,
            id: EventId {
                bucket: 3,
                point: LogPoint { ms, seq },
            },
            prev: LogPoint::default(),
            channel: None,
        }
    }

    fn at(ms: u64, seq: u64) -> LogPoint {
        LogPoint { ms, seq }
    }

    fn read(entries: &[(u64, u64)], tail: Option<(u64, u64)>) -> LogRead {
        LogRead {
            entries: entries.iter().map(|(ms, seq)| entry(*ms, *seq)).collect(),
            tail: tail.map(|(ms, seq)| at(ms, seq)),
        }
    }

    #[test]
    fn a_read_that_continues_the_position_is_taken() {
        let entries = check_read(3, at(10, 4), read(&[(10, 5), (12, 6)], Some((12, 6)))).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].prev, at(10, 4));
        assert_eq!(entries[1].prev, at(10, 5));
        assert!(
            check_read(3, at(10, 4), read(&[], Some((10, 4))))
                .unwrap()
                .is_empty()
        );
        assert!(check_read(3, at(0, 0), read(&[], None)).unwrap().is_empty());
        assert_eq!(
            check_read(3, at(0, 0), read(&[(5, 1)], Some((5, 1))))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn trimmed_lost_or_restarted_logs_expire_the_position() {
        // Trimmed: the oldest kept is seq 9, the reader was at 4.
        match check_read(3, at(10, 4), read(&[(20, 9)], Some((20, 9)))) {
            Err(TailError::Expired {
                bucket: 3,
                lost: Some(4),
            }) => {}
            other => panic!("{other:?}"),
        }
        // Redis restarted empty and has new events since.
        assert!(matches!(
            check_read(3, at(10, 4), read(&[(30, 1)], Some((30, 1)))),
            Err(TailError::Expired { lost: None, .. })
        ));
        // Emptied, or went back (lost writes), with nothing new.
        assert!(check_read(3, at(10, 4), read(&[], None)).is_err());
        assert!(check_read(3, at(10, 4), read(&[], Some((10, 2)))).is_err());
        // A hole inside a read.
        assert!(check_read(3, at(10, 4), read(&[(10, 5), (10, 7)], Some((10, 7)))).is_err());
    }
}
