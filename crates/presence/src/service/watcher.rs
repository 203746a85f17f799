//! One `Watch` stream: the bus receiver filtered to the users asked for,
//! ended with a status when it can no longer be complete.

use std::collections::HashSet;

use futures_util::{StreamExt, stream};
use pulse_protocol::{PresenceEvent, proto::presence::v1 as pb, status::status_with_reason};
use tokio::sync::{broadcast, watch};
use tonic::{Code, Status};

use super::{ERROR_DOMAIN, WatchStream};
use crate::watch_slots::WatchSlot;

/// One `Watch` call: an adaptor over the bus receiver, so it needs no task
/// of its own and ends as soon as tonic drops it (the client went away).
pub(super) struct Watcher {
    pub(super) events: broadcast::Receiver<PresenceEvent>,
    pub(super) epoch: watch::Receiver<u64>,
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
            // After an error the stream ends: the client re-watches and re-queries.
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
                        "the presence service is shutting down; watch another instance",
                    )));
                }
                changed = self.epoch.changed() => {
                    // The store is gone only when the server is; end quietly.
                    changed.ok()?;
                    return Some(Err(lagged("the event bus reconnected and may have missed events")));
                }
                event = self.events.recv() => match event {
                    Ok(event) => {
                        if self.filter.as_ref().is_none_or(|users| users.contains(&event.user_id)) {
                            return Some(Ok(pb::PresenceEvent::from(&event)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some(Err(lagged(&format!("this watch fell {missed} events behind"))));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// A `Watch` that missed events ends with `ABORTED`: the client watches
/// again and re-reads.
fn lagged(message: &str) -> Status {
    status_with_reason(
        Code::Aborted,
        ERROR_DOMAIN,
        "watch_lagged",
        &format!("{message}; watch again and re-read the users"),
    )
}
