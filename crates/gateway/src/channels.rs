//! This instance's channel subscriptions: which local connections are
//! subscribed to which channel, the one feed subscription per channel that
//! brings its publications here, and the fan-out that writes each
//! publication (one frame, encoded once by the publisher) to every local
//! subscriber's mailbox.
//!
//! The first local subscriber of a channel makes the feed subscribe it (one
//! Redis subscription per channel per instance, whatever the number of
//! sockets); the last one leaving ends it. A `subscribe` is answered only
//! once the feed subscription is live, so a publication made after the
//! answer reaches the socket.
//!
//! For a namespace with history each subscriber has a [`Cursor`], and the
//! instance watches each channel's offsets: a publication whose offset is
//! not the next one (or whose epoch changed), or a feed subscription that
//! was lost and came back with publications missed, is a hole. Nothing past
//! a hole is delivered: every subscriber of the channel is paused and told
//! to subscribe again with `since` (`unsubscribed`, code `resubscribe`), and
//! recovers from history.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use pulse_presence::{
    ChannelFeed, Delivery, DeliveryPosition, FeedEvent, MemberRecord, Namespaces, Presence,
    PresenceError, namespaces::Resolved,
};
use pulse_protocol::StreamPosition;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    cursor::{Admit, Cursor},
    mailbox::{Mailbox, PushError},
    telemetry::Metrics,
};

/// The subscriptions of this instance.
#[derive(Debug)]
pub(crate) struct Channels {
    feed: ChannelFeed,
    table: Mutex<HashMap<Arc<str>, Entry>>,
    /// For the check after a feed subscription came back.
    presence: Presence,
}

/// One channel's local subscribers.
///
/// Kept small: an instance may hold a channel per connection (a user's own
/// document, a ticket), so a channel with one subscriber holds it inline
/// and a live one holds no cell to wait on.
#[derive(Debug)]
struct Entry {
    subscribers: Subscribers,
    /// Until the feed subscription is live: the cell the subscribers that
    /// arrived meanwhile wait on. `None` once it is.
    pending: Option<Arc<OnceCell<()>>>,
    /// The furthest position of the channel's stream seen here (a delivery,
    /// or a subscriber's read of history), where the namespace keeps
    /// history: the next publication must be the one after it.
    last: Option<DeliveryPosition>,
}

/// A channel's local subscribers; a connection appears once. A fan-out in
/// progress writes to the list as it was when the publication arrived,
/// without holding the table's lock: it takes a clone (a change meanwhile
/// copies a shared list: `Arc::make_mut`).
#[derive(Debug, Clone)]
enum Subscribers {
    One(Subscriber),
    Many(Arc<Vec<Subscriber>>),
}

impl Subscribers {
    fn as_slice(&self) -> &[Subscriber] {
        match self {
            Self::One(subscriber) => std::slice::from_ref(subscriber),
            Self::Many(list) => list,
        }
    }

    fn push(&mut self, subscriber: Subscriber) {
        match self {
            Self::One(first) => *self = Self::Many(Arc::new(vec![first.clone(), subscriber])),
            Self::Many(list) => Arc::make_mut(list).push(subscriber),
        }
    }

    /// Takes `mailbox`'s subscriber off; `None` when it is not there,
    /// `Some(true)` when nobody is left.
    fn remove(&mut self, mailbox: &Arc<Mailbox>) -> Option<bool> {
        let at = self
            .as_slice()
            .iter()
            .position(|subscriber| Arc::ptr_eq(&subscriber.member.mailbox, mailbox))?;
        let Self::Many(list) = self else {
            return Some(true);
        };
        let list = Arc::make_mut(list);
        list.swap_remove(at);
        if let [last] = list.as_slice() {
            *self = Self::One(last.clone());
        }
        Some(false)
    }
}

/// One local connection subscribed to a channel.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) member: Arc<Member>,
    /// Its place in the stream, where the namespace keeps history.
    pub(crate) cursor: Option<Arc<Cursor>>,
}

/// A local connection as its subscriptions know it: where its frames go,
/// and who it is (for the re-sync of channel memberships). Made once per
/// connection, on its first subscription, and shared by all of them.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) connection_id: Arc<str>,
    pub(crate) user_id: Arc<str>,
}

impl Channels {
    /// The subscriptions of a new instance, and where its publications arrive.
    pub(crate) fn new(presence: &Presence) -> (Self, mpsc::UnboundedReceiver<FeedEvent>) {
        let (feed, deliveries) = presence.channel_feed();
        (
            Self {
                feed,
                table: Mutex::default(),
                presence: presence.clone(),
            },
            deliveries,
        )
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes `subscriber` to `channel`; returns once publications
    /// flow, with the channel's name as the table holds it (for the
    /// connection to keep instead of its own copy: one allocation per
    /// channel name, whatever the number of subscribers).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when the feed could not subscribe
    /// (Redis away); the connection is then not subscribed.
    pub(crate) async fn subscribe(
        &self,
        channel: &Arc<str>,
        subscriber: Subscriber,
    ) -> Result<Arc<str>, PresenceError> {
        let mailbox = subscriber.member.mailbox.clone();
        let (channel, pending) = {
            let mut table = self.lock();
            let held = table.get_key_value(channel).map(|(name, _)| name.clone());
            match held
                .as_ref()
                .and_then(|name| table.get_mut(name).map(|e| (name, e)))
            {
                Some((name, entry)) => {
                    entry.subscribers.push(subscriber);
                    (name.clone(), entry.pending.clone())
                }
                None => {
                    let pending = Arc::new(OnceCell::new());
                    table.insert(
                        channel.clone(),
                        Entry {
                            subscribers: Subscribers::One(subscriber),
                            pending: Some(pending.clone()),
                            last: None,
                        },
                    );
                    (channel.clone(), Some(pending))
                }
            }
        };
        let Some(pending) = pending else {
            return Ok(channel);
        };
        let subscribed = pending
            .get_or_try_init(|| self.feed.subscribe(channel.clone()))
            .await
            .copied();
        match subscribed {
            Ok(()) => {
                let mut table = self.lock();
                match table.get_mut(&channel) {
                    Some(entry) => {
                        if entry
                            .pending
                            .as_ref()
                            .is_some_and(|cell| Arc::ptr_eq(cell, &pending))
                        {
                            entry.pending = None;
                        }
                    }
                    // Everyone may have left while the feed subscribed: then
                    // the entry is gone, and nothing would end the feed
                    // subscription.
                    None => self.feed.unsubscribe(&channel),
                }
                Ok(channel)
            }
            Err(error) => {
                self.unsubscribe(&channel, &mailbox);
                Err(error)
            }
        }
    }

    /// Ends `mailbox`'s subscription to `channel`; whether it had one.
    pub(crate) fn unsubscribe(&self, channel: &str, mailbox: &Arc<Mailbox>) -> bool {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(channel) else {
            return false;
        };
        let Some(emptied) = entry.subscribers.remove(mailbox) else {
            return false;
        };
        if emptied {
            let entry = table.remove(channel).expect("the entry was just found");
            // A subscription still in flight ends it itself once live (it
            // finds the entry gone).
            if entry.pending.is_none_or(|cell| cell.initialized()) {
                self.feed.unsubscribe(channel);
            }
        }
        true
    }

    /// Every local subscription as a channel membership (what presence
    /// must hold for this instance), with its namespace's join/leave cap.
    /// Channels whose namespace this instance no longer configures are left
    /// out (their subscriptions predate a config change; they end with
    /// their connections).
    pub(crate) fn members(&self, namespaces: &Namespaces) -> Vec<MemberRecord> {
        let table = self.lock();
        let mut members = Vec::new();
        for (channel, entry) in table.iter() {
            let Some(Resolved::Namespace(options)) = pulse_protocol::Channel::parse(channel)
                .ok()
                .and_then(|parsed| namespaces.resolve(&parsed))
            else {
                continue;
            };
            let cap = options.join_leave_cap();
            members.extend(
                entry
                    .subscribers
                    .as_slice()
                    .iter()
                    .map(|subscriber| MemberRecord {
                        channel: channel.to_string(),
                        connection_id: subscriber.member.connection_id.to_string(),
                        user_id: subscriber.member.user_id.to_string(),
                        join_leave_cap: cap,
                    }),
            );
        }
        members
    }

    /// How many channels have local subscribers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Writes one publication to every local subscriber of its channel:
    /// the list is taken under the table's lock, and written to after it is
    /// let go, so that subscribing and unsubscribing (on every worker
    /// thread) never wait for a fan-out to thousands of sockets.
    fn fan_out(&self, delivery: &Delivery, capacity: usize, metrics: &Metrics) {
        let subscribers = {
            let mut table = self.lock();
            let Some(entry) = table.get_mut(&delivery.channel) else {
                // Arrived after the last subscriber left.
                return;
            };
            if let Some(position) = &delivery.position
                && let Some(hole) = advance(&mut entry.last, position)
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

    /// A subscriber's read of history found the stream at `top`: later
    /// deliveries continue from there.
    pub(crate) fn note_top(&self, channel: &str, top: &StreamPosition) {
        let mut table = self.lock();
        if let Some(entry) = table.get_mut(channel) {
            let newer = match &entry.last {
                Some(last) => *last.epoch != *top.epoch || last.offset < top.offset,
                None => true,
            };
            if newer {
                entry.last = Some(DeliveryPosition {
                    offset: top.offset,
                    epoch: top.epoch.as_str().into(),
                });
            }
        }
    }

    /// The feed subscription of `channel` was lost and is live again: when
    /// the stream moved past what was delivered here (or its epoch
    /// changed), publications were missed, and the subscribers recover.
    async fn check_resumed(self: Arc<Self>, channel: Arc<str>, capacity: usize, metrics: Metrics) {
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
            .and_then(|entry| entry.last.clone());
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
        let missed = match (&top, &entry.last) {
            (Some(top), Some(last)) => *last.epoch != *top.epoch || last.offset != top.offset,
            (Some(top), None) => top.offset > 0,
            (None, _) => true,
        };
        if missed {
            info!(%channel, "publications were made while a channel's subscription was lost; its subscribers recover from history");
            metrics.stream_holes.increment(1);
            reposition(&channel, entry.subscribers.as_slice(), capacity, &metrics);
            if let Some(top) = top {
                entry.last = Some(DeliveryPosition {
                    offset: top.offset,
                    epoch: top.epoch.into(),
                });
            }
        }
    }
}

/// Moves a channel's last position to `position`; returns a description of
/// the hole when `position` does not follow it.
fn advance(last: &mut Option<DeliveryPosition>, position: &DeliveryPosition) -> Option<String> {
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

/// Pauses every subscriber of `channel` that has a cursor and tells it to
/// subscribe again with `since`.
fn reposition(channel: &Arc<str>, subscribers: &[Subscriber], capacity: usize, metrics: &Metrics) {
    for subscriber in subscribers {
        if let Some(cursor) = &subscriber.cursor
            && cursor.pause()
        {
            let pushed = subscriber
                .member
                .mailbox
                .push_reposition(channel.clone(), capacity);
            overflowed(&subscriber.member.mailbox, pushed, metrics);
        }
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
    use serde_json::value::RawValue;

    use super::*;

    fn data(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn subscriber(mailbox: &Arc<Mailbox>, connection_id: &str) -> Subscriber {
        Subscriber {
            member: Arc::new(Member {
                mailbox: mailbox.clone(),
                connection_id: connection_id.into(),
                user_id: "alice".into(),
            }),
            cursor: None,
        }
    }

    #[tokio::test]
    async fn one_feed_subscription_per_channel_and_it_ends_with_the_last_subscriber() {
        let presence = Presence::in_memory();
        let (channels, mut deliveries) = Channels::new(&presence);
        let channel: Arc<str> = "room:1".into();
        let (a, b) = (Arc::new(Mailbox::new()), Arc::new(Mailbox::new()));
        channels
            .subscribe(&channel, subscriber(&a, "a"))
            .await
            .unwrap();
        channels
            .subscribe(&channel, subscriber(&b, "b"))
            .await
            .unwrap();
        assert_eq!(channels.len(), 1);
        assert_eq!(
            presence
                .publish("room:1", &data("1"), &PublishOptions::default())
                .await
                .unwrap()
                .instances,
            1
        );
        let Some(FeedEvent::Publication(delivery)) = deliveries.recv().await else {
            panic!("a publication");
        };
        channels.fan_out(&delivery, 8, &Metrics::new());
        assert_eq!((a.len(), b.len()), (1, 1));

        let namespaces = Namespaces::parse(
            "[namespaces.room]\npresence = true\njoin_leave = true\n",
            "t",
        )
        .unwrap();
        let mut members = channels.members(&namespaces);
        members.sort();
        assert_eq!(
            members
                .iter()
                .map(|m| (&*m.connection_id, m.join_leave_cap))
                .collect::<Vec<_>>(),
            [("a", 1000), ("b", 1000)]
        );
        assert!(
            channels.members(&Namespaces::default()).is_empty(),
            "an unconfigured namespace holds no memberships"
        );
        assert!(channels.unsubscribe("room:1", &a));
        assert!(!channels.unsubscribe("room:1", &a), "only once");
        assert_eq!(
            presence
                .publish("room:1", &data("2"), &PublishOptions::default())
                .await
                .unwrap()
                .instances,
            1
        );
        assert!(channels.unsubscribe("room:1", &b));
        assert_eq!(channels.len(), 0);
        assert_eq!(
            presence
                .publish("room:1", &data("3"), &PublishOptions::default())
                .await
                .unwrap()
                .instances,
            0,
            "the feed subscription ended with the last subscriber"
        );
    }

    #[test]
    fn a_subscriber_list_goes_from_one_to_many_and_back() {
        let mailboxes: Vec<Arc<Mailbox>> = (0..3).map(|_| Arc::new(Mailbox::new())).collect();
        let mut list = Subscribers::One(subscriber(&mailboxes[0], "0"));
        list.push(subscriber(&mailboxes[1], "1"));
        // A fan-out in progress holds the list as it was.
        let in_flight = list.clone();
        list.push(subscriber(&mailboxes[2], "2"));
        assert_eq!((in_flight.as_slice().len(), list.as_slice().len()), (2, 3));
        assert_eq!(list.remove(&Arc::new(Mailbox::new())), None);
        assert_eq!(list.remove(&mailboxes[1]), Some(false));
        assert_eq!(list.remove(&mailboxes[0]), Some(false));
        assert!(matches!(&list, Subscribers::One(s) if &*s.member.connection_id == "2"));
        assert_eq!(list.remove(&mailboxes[0]), None);
        assert_eq!(list.remove(&mailboxes[2]), Some(true), "nobody is left");
    }

    #[tokio::test]
    async fn subscribers_of_a_channel_share_one_copy_of_its_name() {
        let presence = Presence::in_memory();
        let (channels, _deliveries) = Channels::new(&presence);
        let (a, b) = (Arc::new(Mailbox::new()), Arc::new(Mailbox::new()));
        let first = channels
            .subscribe(&"room:1".into(), subscriber(&a, "a"))
            .await
            .unwrap();
        let second = channels
            .subscribe(&"room:1".into(), subscriber(&b, "b"))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_slow_subscriber_only() {
        let presence = Presence::in_memory();
        let (channels, mut deliveries) = Channels::new(&presence);
        let channel: Arc<str> = "room:1".into();
        let (slow, fine) = (Arc::new(Mailbox::new()), Arc::new(Mailbox::new()));
        channels
            .subscribe(&channel, subscriber(&slow, "s"))
            .await
            .unwrap();
        channels
            .subscribe(&channel, subscriber(&fine, "f"))
            .await
            .unwrap();
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
