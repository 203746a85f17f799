//! One `Watch` stream: the event log read from a position, filtered to the
//! users asked for, each event with the position to resume after it.

use std::collections::HashSet;

use futures_util::{StreamExt, stream};
use pulse_protocol::{proto::presence::v1 as pb, status::status_with_reason};
use tokio::sync::watch;
use tonic::{Code, Status};

use super::{ERROR_DOMAIN, calls::WatchStream};
use crate::{EventTail, TailError, watch_slots::WatchSlot};

/// One `Watch` call: an adaptor over an [`EventTail`], so it needs no task
/// of its own and ends as soon as tonic drops it (the client went away).
pub(super) struct Watcher {
    pub(super) tail: EventTail,
    pub(super) stopping: watch::Receiver<bool>,
    pub(super) filter: Option<HashSet<String>>,
    /// Held while the stream lives; frees the caller's slot when dropped.
    pub(super) _slot: WatchSlot,
}

impl Watcher {
    pub(super) fn into_stream(self) -> WatchStream {
        stream::unfold(Some(self), |watcher| async move {
            let mut watcher = watcher?;
            let item = watcher.next().await?;
            // After an error the stream ends: the client watches again from
            // its last position, or takes a snapshot.
            let next = item.is_ok().then_some(watcher);
            Some((item, next))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<Result<pb::PresenceEvent, Status>> {
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.wait_for(|stopping| *stopping) => {
                    return Some(Err(status_with_reason(
                        Code::Unavailable,
                        ERROR_DOMAIN,
                        "shutting_down",
                        "the presence service is shutting down; watch another instance from your last position",
                    )));
                }
                // Cancel-safe: the tail changes its state only between awaits.
                item = self.tail.next() => match item {
                    Ok(event) => {
                        // A Watch of some users reads only their buckets, where
                        // their channel joins and leaves are not: it gets none.
                        let wanted = self.filter.as_ref().is_none_or(|users| {
                            users.contains(&event.user_id) && event.channel.is_none()
                        });
                        if wanted {
                            let mut event = pb::PresenceEvent::from(&event);
                            event.position = self.tail.position().to_string();
                            return Some(Ok(event));
                        }
                    }
                    Err(TailError::Expired { bucket, lost }) => {
                        return Some(Err(position_expired(bucket, lost)));
                    }
                    Err(TailError::Closed) => return None,
                },
            }
        }
    }
}

/// Events after the position were trimmed or lost: the client takes a
/// snapshot and watches from its position.
pub(super) fn position_expired(bucket: u16, lost: Option<u64>) -> Status {
    let lost = lost.map_or_else(String::new, |lost| format!(" ({lost} events)"));
    status_with_reason(
        Code::FailedPrecondition,
        ERROR_DOMAIN,
        "position_expired",
        &format!(
            "events after this position in event log {bucket} are no longer kept{lost}; \
             take a Snapshot and watch from its position"
        ),
    )
}
