//! The fan-out: every publication that arrives for this instance written
//! to its channel's local subscribers (one frame, encoded once by the
//! publisher, queued in every mailbox), and what a full queue does.

use std::sync::Arc;

use pulse_presence::{Delivery, FeedEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Channels, advance, reposition};
use crate::{
    cursor::Admit,
    mailbox::{Mailbox, PushError},
    telemetry::Metrics,
};

impl Channels {
    /// Writes one publication to every local subscriber of its channel:
    /// the list is taken under the table's lock, and written to after it is
    /// let go, so that subscribing and unsubscribing (on every worker
    /// thread) never wait for a fan-out to thousands of sockets.
    pub(super) fn fan_out(&self, delivery: &Delivery, capacity: usize, metrics: &Metrics) {
        let subscribers = {
            let mut table = self.lock();
            let Some(entry) = table.get_mut(&delivery.channel) else {
                // Arrived after the last subscriber left.
                return;
            };
            if let Some(position) = &delivery.position
                && let Some(hole) = advance(entry.last_mut(), position)
            {
                warn!(channel = %delivery.channel, %hole, "a hole in a channel's live stream; its subscribers recover from history");
                metrics.stream_holes.increment(1);
                reposition(
                    &delivery.channel,
                    entry.subscribers.as_slice(),
                    capacity,
                    metrics,
                );
            }
            entry.subscribers.clone()
        };
        let offset = delivery.position.as_ref().map_or(0, |p| p.offset);
        let mut delivered = 0;
        for subscriber in subscribers.as_slice() {
            if let Some(cursor) = &subscriber.cursor
                && cursor.admit(offset, &delivery.frame, capacity) != Admit::Deliver
            {
                continue;
            }
            delivered += 1;
            if deliver(
                &subscriber.member.mailbox,
                &delivery.frame,
                capacity,
                metrics,
            ) {
                warn!(channel = %delivery.channel, "outbound queue full; closing a slow consumer");
            }
        }
        metrics.publications_delivered.increment(delivered);
    }
}

/// Queues `frame` for one connection; a connection whose queue is full is
/// closed as a slow consumer (4429), so that it reconnects and recovers
/// instead of silently missing messages. Returns whether this push closed it.
pub(crate) fn deliver(
    mailbox: &Mailbox,
    frame: &Arc<str>,
    capacity: usize,
    metrics: &Metrics,
) -> bool {
    overflowed(mailbox, mailbox.push(frame.clone(), capacity), metrics)
}

/// What follows a push: a full queue closes the connection as a slow
/// consumer (4429). Returns whether this push closed it.
pub(crate) fn overflowed(
    mailbox: &Mailbox,
    pushed: Result<(), PushError>,
    metrics: &Metrics,
) -> bool {
    match pushed {
        Ok(()) => false,
        Err(PushError::Full) => {
            metrics.queue_overflows.increment(1);
            mailbox.kick(
                pulse_protocol::CloseCode::TooMany,
                pulse_protocol::ErrorCode::SLOW_CONSUMER,
                "too many messages waiting: the connection does not read fast enough",
            )
        }
        // The session is ending; at most once means it goes without.
        Err(PushError::Closing) => false,
    }
}

/// Writes every publication that arrives to its local subscribers, until
/// `sessions_over` (through the drain, for the sockets still open).
pub(crate) async fn run_fan_out(
    channels: Arc<Channels>,
    mut deliveries: mpsc::UnboundedReceiver<FeedEvent>,
    capacity: usize,
    metrics: Metrics,
    sessions_over: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = sessions_over.cancelled() => return,
            event = deliveries.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            FeedEvent::Publication(delivery) => channels.fan_out(&delivery, capacity, &metrics),
            FeedEvent::Resumed(channel) => {
                tokio::spawn(
                    channels
                        .clone()
                        .check_resumed(channel, capacity, metrics.clone()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pulse_presence::PublishOptions;

    use super::*;
    use crate::channels::tests::{data, two_on_room_1};

    #[tokio::test]
    async fn a_full_queue_closes_the_slow_subscriber_only() {
        let (presence, channels, mut deliveries, slow, fine) = two_on_room_1().await;
        slow.push("x".into(), 1).unwrap();
        presence
            .publish("room:1", &data("1"), &PublishOptions::default())
            .await
            .unwrap();
        let Some(FeedEvent::Publication(delivery)) =
            tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
                .await
                .unwrap()
        else {
            panic!("a publication");
        };
        channels.fan_out(&delivery, 1, &Metrics::new());
        assert!(slow.is_kicked());
        assert!(!fine.is_kicked());
        assert_eq!(fine.len(), 1);
    }
}
