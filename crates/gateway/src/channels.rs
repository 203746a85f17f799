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
    ChannelFeed, ChannelName, DeliveryPosition, FeedEvent, MemberRecord, Namespaces, Presence,
    PresenceError, namespaces::Resolved,
};
use tokio::sync::{OnceCell, mpsc};

use crate::{cursor::Cursor, mailbox::Mailbox};

mod fan_out;
mod holes;

pub(crate) use fan_out::{deliver, overflowed, run_fan_out};
use holes::{advance, reposition};

/// The subscriptions of this instance.
#[derive(Debug)]
pub(crate) struct Channels {
    feed: ChannelFeed,
    table: Mutex<HashMap<ChannelName, Entry>>,
    /// For the check after a feed subscription came back.
    presence: Presence,
}

/// One channel's local subscribers.
///
/// Kept small: an instance may hold a channel per connection (a user's own
/// document, a ticket), so a channel with one subscriber holds it inline,
/// and what only some channels need for a while (a cell to wait on until
/// the feed subscription is live, the stream's last position where the
/// namespace keeps history) is held apart, by those that need it: 24 bytes
/// beside the name's 8 in the table's slot.
#[derive(Debug)]
struct Entry {
    subscribers: Subscribers,
    more: Option<Box<More>>,
}

/// What a channel holds beyond its subscribers, when it holds it.
#[derive(Debug, Default)]
struct More {
    /// Until the feed subscription is live: the cell the subscribers that
    /// arrived meanwhile wait on. `None` once it is.
    pending: Option<Arc<OnceCell<()>>>,
    /// The furthest position of the channel's stream seen here (a delivery,
    /// or a subscriber's read of history), where the namespace keeps
    /// history: the next publication must be the one after it.
    last: Option<DeliveryPosition>,
}

impl Entry {
    fn pending(&self) -> Option<&Arc<OnceCell<()>>> {
        self.more.as_ref()?.pending.as_ref()
    }

    /// The feed subscription is live: nobody waits any more.
    fn live(&mut self) {
        if let Some(more) = &mut self.more {
            more.pending = None;
            if more.last.is_none() {
                self.more = None;
            }
        }
    }

    fn last(&self) -> Option<&DeliveryPosition> {
        self.more.as_ref()?.last.as_ref()
    }

    fn last_mut(&mut self) -> &mut Option<DeliveryPosition> {
        &mut self.more.get_or_insert_with(Box::default).last
    }
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

    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelName, Entry>> {
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
        channel: &ChannelName,
        subscriber: Subscriber,
    ) -> Result<ChannelName, PresenceError> {
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
                    (name.clone(), entry.pending().cloned())
                }
                None => {
                    let pending = Arc::new(OnceCell::new());
                    table.insert(
                        channel.clone(),
                        Entry {
                            subscribers: Subscribers::One(subscriber),
                            more: Some(Box::new(More {
                                pending: Some(pending.clone()),
                                last: None,
                            })),
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
                            .pending()
                            .is_some_and(|cell| Arc::ptr_eq(cell, &pending))
                        {
                            entry.live();
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
            if entry.pending().is_none_or(|cell| cell.initialized()) {
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
    ///
    /// The table is what every fan-out looks up, so under its lock only
    /// reference counts are taken (each channel's name, each subscriber's
    /// member); the records are built once it is let go. Built under it,
    /// 75,000 memberships held every delivery of the gateway for 21-44 ms at
    /// each re-sync; the references alone take 3-5 ms.
    pub(crate) fn members(&self, namespaces: &Namespaces) -> Vec<MemberRecord> {
        let held: Vec<(ChannelName, Arc<Member>)> = {
            let table = self.lock();
            let mut held = Vec::with_capacity(table.len());
            for (channel, entry) in table.iter() {
                held.extend(
                    entry
                        .subscribers
                        .as_slice()
                        .iter()
                        .map(|subscriber| (channel.clone(), subscriber.member.clone())),
                );
            }
            held
        };
        // A channel's subscribers come one after another: its namespace is
        // resolved once.
        let mut last: Option<(ChannelName, Option<u32>)> = None;
        let mut members = Vec::with_capacity(held.len());
        for (channel, member) in held {
            let cap = match &last {
                Some((name, cap)) if *name == channel => *cap,
                _ => {
                    let cap = match pulse_protocol::Channel::parse(&channel)
                        .ok()
                        .and_then(|parsed| namespaces.resolve(&parsed))
                    {
                        Some(Resolved::Namespace(options)) => Some(options.join_leave_cap()),
                        _ => None,
                    };
                    last = Some((channel.clone(), cap));
                    cap
                }
            };
            let Some(join_leave_cap) = cap else {
                continue;
            };
            members.push(MemberRecord {
                channel: channel.to_string(),
                connection_id: member.connection_id.to_string(),
                user_id: member.user_id.to_string(),
                join_leave_cap,
            });
        }
        members
    }

    /// How many channels have local subscribers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use pulse_presence::PublishOptions;
    use serde_json::value::RawValue;

    use super::*;
    use crate::telemetry::Metrics;

    pub(in crate::channels) fn data(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    pub(in crate::channels) fn subscriber(
        mailbox: &Arc<Mailbox>,
        connection_id: &str,
    ) -> Subscriber {
        Subscriber {
            member: Arc::new(Member {
                mailbox: mailbox.clone(),
                connection_id: connection_id.into(),
                user_id: "alice".into(),
            }),
            cursor: None,
        }
    }

    /// An in-memory instance's table with connections `a` and `b`
    /// subscribed to `room:1`, and where its publications arrive.
    pub(in crate::channels) async fn two_on_room_1() -> (
        Presence,
        Channels,
        mpsc::UnboundedReceiver<FeedEvent>,
        Arc<Mailbox>,
        Arc<Mailbox>,
    ) {
        let presence = Presence::in_memory();
        let (channels, deliveries) = Channels::new(&presence);
        let channel: ChannelName = "room:1".into();
        let (a, b) = (Arc::new(Mailbox::new()), Arc::new(Mailbox::new()));
        for (mailbox, id) in [(&a, "a"), (&b, "b")] {
            channels
                .subscribe(&channel, subscriber(mailbox, id))
                .await
                .unwrap();
        }
        (presence, channels, deliveries, a, b)
    }

    #[tokio::test]
    async fn one_feed_subscription_per_channel_and_it_ends_with_the_last_subscriber() {
        let (presence, channels, mut deliveries, a, b) = two_on_room_1().await;
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

    /// A channel of its own per connection is common: its slot in the
    /// table stays at four words (the name, its one subscriber or its list,
    /// the rest when there is any).
    #[test]
    fn a_table_slot_is_32_bytes() {
        assert_eq!(size_of::<Subscribers>(), 16);
        assert_eq!(size_of::<(ChannelName, Entry)>(), 32);
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
        assert!(ChannelName::ptr_eq(&first, &second));
    }
}
