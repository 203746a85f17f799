//! Holes in a channel's live stream, for namespaces with history: the
//! last position seen per channel, the check after a feed subscription came
//! back, and the `unsubscribed` (code `resubscribe`) that sends the
//! channel's subscribers to recover from history.

use std::sync::Arc;

use pulse_presence::{ChannelName, DeliveryPosition};
use pulse_protocol::StreamPosition;
use tracing::{debug, info};

use super::{Channels, Subscriber, overflowed};
use crate::{cursor::WasPaused, telemetry::Metrics};

impl Channels {
    /// A subscriber's read of history found the stream at `top`: later
    /// deliveries continue from there.
    pub(crate) fn note_top(&self, channel: &str, top: &StreamPosition) {
        let mut table = self.lock();
        if let Some(entry) = table.get_mut(channel) {
            let newer = match entry.last() {
                Some(last) => *last.epoch != *top.epoch || last.offset < top.offset,
                None => true,
            };
            if newer {
                *entry.last_mut() = Some(DeliveryPosition {
                    offset: top.offset,
                    epoch: top.epoch.as_str().into(),
                });
            }
        }
    }

    /// The feed subscription of `channel` was lost and is live again: when
    /// the stream moved past what was delivered here (or its epoch
    /// changed), publications were missed, and the subscribers recover.
    pub(super) async fn check_resumed(
        self: Arc<Self>,
        channel: ChannelName,
        capacity: usize,
        metrics: Metrics,
    ) {
        let has_history = self.lock().get(&channel).is_some_and(|entry| {
            entry
                .subscribers
                .as_slice()
                .iter()
                .any(|s| s.cursor.is_some())
        });
        if !has_history {
            // No offsets: at most once, as documented.
            return;
        }
        // Read from what was delivered here: a stream that holds less than
        // that lost writes (a failover), and the read starts a new epoch
        // (see `history.lua`), so nobody takes the new offsets for the old.
        let last = self
            .lock()
            .get(&channel)
            .and_then(|entry| entry.last().cloned());
        let read = match &last {
            Some(last) => {
                let since = StreamPosition {
                    offset: last.offset,
                    epoch: last.epoch.to_string(),
                };
                let check = pulse_presence::HistoryOptions {
                    size: 1,
                    ttl: std::time::Duration::from_secs(1),
                };
                self.presence
                    .read_stream(&channel, check, Some(&since))
                    .await
                    .map(|read| read.top)
            }
            None => self.presence.stream_top(&channel).await,
        };
        let top = match read {
            Ok(top) => Some(top),
            Err(error) => {
                debug!(%channel, %error, "could not read a resumed channel's stream; its subscribers recover");
                None
            }
        };
        let mut table = self.lock();
        let Some(entry) = table.get_mut(&channel) else {
            return;
        };
        let missed = match (&top, entry.last()) {
            (Some(top), Some(last)) => *last.epoch != *top.epoch || last.offset != top.offset,
            (Some(top), None) => top.offset > 0,
            (None, _) => true,
        };
        if missed {
            info!(%channel, "publications were made while a channel's subscription was lost; its subscribers recover from history");
            metrics.stream_holes.increment(1);
            reposition(&channel, entry.subscribers.as_slice(), capacity, &metrics);
            if let Some(top) = top {
                *entry.last_mut() = Some(DeliveryPosition {
                    offset: top.offset,
                    epoch: top.epoch.into(),
                });
            }
        }
    }
}

/// Moves a channel's last position to `position`; returns a description of
/// the hole when `position` does not follow it.
pub(super) fn advance(
    last: &mut Option<DeliveryPosition>,
    position: &DeliveryPosition,
) -> Option<String> {
    let hole = match last.as_ref() {
        None => None,
        Some(last) if last.epoch != position.epoch => {
            Some(format!("epoch {} became {}", last.epoch, position.epoch))
        }
        Some(last) if position.offset <= last.offset => return None,
        Some(last) if position.offset > last.offset + 1 => Some(format!(
            "offset {} came after {}",
            position.offset, last.offset
        )),
        Some(_) => None,
    };
    *last = Some(position.clone());
    hole
}

/// Pauses every subscriber of `channel` that has a cursor and tells the
/// live ones to subscribe again with `since`; one still reading history is
/// told after its answer (see [`Cursor::pause`](crate::cursor::Cursor::pause)).
pub(super) fn reposition(
    channel: &ChannelName,
    subscribers: &[Subscriber],
    capacity: usize,
    metrics: &Metrics,
) {
    for subscriber in subscribers {
        if let Some(cursor) = &subscriber.cursor
            && cursor.pause() == WasPaused::Live
        {
            let pushed = subscriber
                .member
                .mailbox
                .push_reposition(channel.clone(), capacity);
            overflowed(&subscriber.member.mailbox, pushed, metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channels::tests::subscriber, cursor::Cursor, mailbox::Mailbox};

    /// A hole found while a subscriber's `subscribe` is still reading
    /// history queues nothing: the news goes after that `subscribed` answer
    /// (the session queues it when the release finds the cursor paused), so
    /// a client never hears `unsubscribed` ahead of the answer to its
    /// request.
    #[test]
    fn a_hole_found_while_recovering_is_told_after_the_answer() {
        let metrics = Metrics::new();
        let channel: ChannelName = "feed:1".into();
        let mailbox = Arc::new(Mailbox::new());
        let mut recovering = subscriber(&mailbox, "c");
        let cursor = Arc::new(Cursor::recovering());
        recovering.cursor = Some(cursor.clone());
        reposition(&channel, &[recovering], 16, &metrics);
        assert!(mailbox.is_empty(), "nothing queued ahead of the answer");
        mailbox.push("subscribed".into(), 16).unwrap();
        assert_eq!(
            cursor.release(5, &mailbox, 16),
            crate::cursor::Released::Paused
        );

        // A live subscriber is told at once.
        let live_mailbox = Arc::new(Mailbox::new());
        let mut live = subscriber(&live_mailbox, "d");
        let live_cursor = Arc::new(Cursor::recovering());
        live_cursor.release(5, &live_mailbox, 16);
        live.cursor = Some(live_cursor);
        reposition(&channel, &[live], 16, &metrics);
        assert_eq!(live_mailbox.len(), 1);
    }
}
