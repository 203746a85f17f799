//! Channels: publishing, and a process's feed of the publications of the
//! channels it has local subscribers for.
//!
//! A gateway holds one [`ChannelFeed`]; it calls [`ChannelFeed::subscribe`]
//! when its first local subscriber of a channel appears and
//! [`ChannelFeed::unsubscribe`] when its last one leaves, and writes each
//! [`Delivery`] (one frame, encoded once) to its local subscribers. With
//! Redis the feed is a set of sharded subscriptions (`fanout.rs`); in
//! memory, a table in this process.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use pulse_protocol::{Channel, Command, channel::publication_frame};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

pub use crate::fanout::{Delivery, DeliveryPosition, FeedEvent};
use crate::{
    Backend, MAX_DATA_BYTES, Presence, PresenceError, fanout,
    history::{PublishOptions, check_idempotency_key, memory::Histories},
    observe,
};

/// A channel's name as a process holds it: one allocation per channel,
/// shared by every table that names it (the feed's, a gateway's table of
/// subscribers, each subscribed connection's list), through a pointer of
/// one word (`Arc<str>` takes two: 8 bytes more in each of those tables
/// per channel, for a gateway that holds a channel per connection).
pub type ChannelName = arcstr::ArcStr;

/// A process's subscriptions to channels' publications.
#[derive(Debug)]
pub struct ChannelFeed {
    inner: FeedInner,
}

#[derive(Debug)]
enum FeedInner {
    Redis {
        requests: mpsc::UnboundedSender<fanout::Request>,
    },
    Local {
        hub: Arc<LocalHub>,
        id: u64,
    },
}

impl ChannelFeed {
    /// Starts receiving `channel`'s publications; returns once they flow,
    /// so a publication made after this returns is delivered.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    /// The name is kept as given (a process that holds a channel per
    /// connection shares one allocation of each name).
    pub async fn subscribe(&self, channel: impl Into<ChannelName>) -> Result<(), PresenceError> {
        match &self.inner {
            FeedInner::Redis { requests } => {
                let (done, answer) = oneshot::channel();
                let request = fanout::Request::Subscribe {
                    channel: channel.into(),
                    done,
                };
                let gone = || PresenceError::Unavailable("the channel fan-out stopped".to_owned());
                requests.send(request).map_err(|_| gone())?;
                answer.await.map_err(|_| gone())?
            }
            FeedInner::Local { hub, id } => {
                hub.feeds
                    .lock()
                    .expect("hub lock")
                    .get_mut(id)
                    .map(|feed| feed.channels.insert(channel.into()));
                Ok(())
            }
        }
    }

    /// Stops receiving `channel`'s publications.
    pub fn unsubscribe(&self, channel: &str) {
        match &self.inner {
            FeedInner::Redis { requests } => {
                drop(requests.send(fanout::Request::Unsubscribe {
                    channel: channel.into(),
                }));
            }
            FeedInner::Local { hub, id } => {
                hub.feeds
                    .lock()
                    .expect("hub lock")
                    .get_mut(id)
                    .map(|feed| feed.channels.remove(channel));
            }
        }
    }
}

impl Drop for ChannelFeed {
    fn drop(&mut self) {
        if let FeedInner::Local { hub, id } = &self.inner {
            hub.feeds.lock().expect("hub lock").remove(id);
        }
    }
}

/// The in-memory backend's feeds and channel histories.
#[derive(Debug, Default)]
pub(crate) struct LocalHub {
    next_id: AtomicU64,
    feeds: Mutex<HashMap<u64, LocalFeed>>,
    pub(crate) histories: Histories,
}

#[derive(Debug)]
struct LocalFeed {
    deliveries: mpsc::UnboundedSender<FeedEvent>,
    channels: HashSet<ChannelName>,
}

impl LocalHub {
    /// Hands the frame to every feed subscribed to `channel`; how many.
    pub(crate) fn publish(
        &self,
        channel: &str,
        frame: &str,
        position: Option<DeliveryPosition>,
    ) -> u64 {
        let mut reached = 0;
        let mut shared: Option<(ChannelName, Arc<str>)> = None;
        for feed in self.feeds.lock().expect("hub lock").values() {
            if feed.channels.contains(channel) {
                let (channel, frame) = shared.get_or_insert_with(|| (channel.into(), frame.into()));
                let delivery = FeedEvent::Publication(Delivery {
                    channel: channel.clone(),
                    frame: frame.clone(),
                    position: position.clone(),
                });
                if feed.deliveries.send(delivery).is_ok() {
                    reached += 1;
                }
            }
        }
        reached
    }
}

/// The result of a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// For a channel, how many processes (gateway instances) had subscribers
    /// for it. For a personal channel, which travels as a `Send` to the
    /// instances holding the user's connections, how many connections it
    /// was handed to an instance for (what `Send` returns).
    pub instances: u64,
    /// Its offset in the channel's stream, where the namespace keeps history.
    pub offset: Option<u64>,
    /// The epoch of that stream, with `offset`.
    pub epoch: Option<String>,
}

impl Presence {
    /// This process's feed of channel publications, and where they arrive.
    /// A gateway makes one.
    pub fn channel_feed(&self) -> (ChannelFeed, mpsc::UnboundedReceiver<FeedEvent>) {
        let (deliveries, receiver) = mpsc::unbounded_channel();
        let inner = match &self.inner.backend {
            Backend::Redis(store) => {
                let (requests, requests_rx) = mpsc::unbounded_channel();
                fanout::spawn(
                    store.keys().clone(),
                    store.subscriber().seeds(),
                    requests_rx,
                    deliveries,
                );
                FeedInner::Redis { requests }
            }
            Backend::Memory(_) => {
                let hub = self.inner.local_hub.clone();
                let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                hub.feeds.lock().expect("hub lock").insert(
                    id,
                    LocalFeed {
                        deliveries,
                        channels: HashSet::new(),
                    },
                );
                FeedInner::Local { hub, id }
            }
        };
        (ChannelFeed { inner }, receiver)
    }

    /// Publishes `data` on `channel` to every subscriber, on every instance:
    /// with an offset in the channel's history where `options.history` is
    /// set (the namespace's), appended and fanned out in one step; once per
    /// `options.idempotency_key` within its window (a retry returns the
    /// first call's result and publishes nothing).
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] for a channel name that is not
    /// valid, data over [`MAX_DATA_BYTES`] or a bad idempotency key;
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        options: &PublishOptions<'_>,
    ) -> Result<Published, PresenceError> {
        let parsed = Channel::parse(channel)
            .map_err(|error| PresenceError::InvalidArgument(format!("channel: {error}")))?;
        check_data(data)?;
        check_idempotency_key(options.idempotency_key)?;
        let mut options = *options;
        if let Channel::Personal { user_id } = parsed {
            let Some(history) = self.personal_history() else {
                // Without a history a personal channel travels as a `Send`,
                // to the instances that hold the user's connections (see
                // `Published::instances`).
                let connections = self.send_command(user_id, data.to_owned()).await?;
                return Ok(Published {
                    instances: connections,
                    offset: None,
                    epoch: None,
                });
            };
            options.history = Some(history);
        }
        let options = &options;
        match &self.inner.backend {
            Backend::Memory(store) => {
                let hub = &self.inner.local_hub;
                let mut published = hub.histories.publish(hub, channel, data, options);
                if let Channel::Personal { user_id } = parsed {
                    published.instances = store.count_connections(user_id, None);
                }
                Ok(published)
            }
            Backend::Redis(store) => {
                if options.history.is_none() && options.idempotency_key.is_none() {
                    let frame = publication_frame(channel, None, data);
                    return observe("publish", async {
                        let instances = store
                            .spublish(&store.keys().publications(channel), &frame)
                            .await?;
                        Ok(Published {
                            instances,
                            offset: None,
                            epoch: None,
                        })
                    })
                    .await;
                }
                observe("publish", store.publish(channel, data, options)).await
            }
        }
    }

    /// Publishes `data` on each of `channels` (at most
    /// [`crate::channels_service::MAX_BROADCAST_CHANNELS`]), each as its own
    /// publication; the results in the order asked. Every name is checked
    /// before anything is published.
    ///
    /// # Errors
    ///
    /// As [`Presence::publish`], and [`PresenceError::InvalidArgument`] for
    /// no channel or too many.
    pub async fn broadcast(
        &self,
        channels: &[(String, PublishOptions<'_>)],
        data: &RawValue,
    ) -> Result<Vec<Published>, PresenceError> {
        use crate::channels_service::MAX_BROADCAST_CHANNELS;
        if channels.is_empty() || channels.len() > MAX_BROADCAST_CHANNELS {
            return Err(PresenceError::InvalidArgument(format!(
                "channels: 1 to {MAX_BROADCAST_CHANNELS}, got {}",
                channels.len()
            )));
        }
        for (channel, options) in channels {
            Channel::parse(channel).map_err(|error| {
                PresenceError::InvalidArgument(format!("channel {channel:?}: {error}"))
            })?;
            check_idempotency_key(options.idempotency_key)?;
        }
        check_data(data)?;
        futures_util::future::try_join_all(
            channels
                .iter()
                .map(|(channel, options)| self.publish(channel, data, options)),
        )
        .await
    }
}

fn check_data(data: &RawValue) -> Result<(), PresenceError> {
    if data.get().len() > MAX_DATA_BYTES {
        return Err(PresenceError::InvalidArgument(format!(
            "data is {} bytes; at most {MAX_DATA_BYTES} are published",
            data.get().len()
        )));
    }
    Ok(())
}

/// The most channels the server API may subscribe one user to.
pub const MAX_SERVER_SUBSCRIPTIONS: usize = 128;

impl Presence {
    /// Subscribes every connection of `user_id`, on every instance, to
    /// `channel`, and the connections the user opens later, until
    /// [`Presence::unsubscribe_user`]. Returns how many open connections it
    /// was handed to an instance for (as `send` counts).
    ///
    /// The set is written before the command goes out, and a new
    /// connection reads it after it registered, so no connection is missed.
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] for a bad user id or channel (a
    /// personal channel included), or past [`MAX_SERVER_SUBSCRIPTIONS`];
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn subscribe_user(&self, user_id: &str, channel: &str) -> Result<u64, PresenceError> {
        self.set_subscription(user_id, channel, true).await
    }

    /// Ends what [`Presence::subscribe_user`] started: every connection of
    /// the user leaves `channel` (with `unsubscribed`, code
    /// `unsubscribed_by_server`), and later ones do not join it.
    ///
    /// # Errors
    ///
    /// As [`Presence::subscribe_user`].
    pub async fn unsubscribe_user(
        &self,
        user_id: &str,
        channel: &str,
    ) -> Result<u64, PresenceError> {
        self.set_subscription(user_id, channel, false).await
    }

    async fn set_subscription(
        &self,
        user_id: &str,
        channel: &str,
        subscribe: bool,
    ) -> Result<u64, PresenceError> {
        crate::check_user_id(user_id)?;
        match Channel::parse(channel) {
            Ok(Channel::Named { .. }) => {}
            Ok(Channel::Personal { .. }) => {
                return Err(PresenceError::InvalidArgument(
                    "channel: a personal channel is its user's from the start".to_owned(),
                ));
            }
            Err(error) => {
                return Err(PresenceError::InvalidArgument(format!("channel: {error}")));
            }
        }
        let stored = match &self.inner.backend {
            Backend::Memory(store) => {
                store.set_subscription(user_id, channel, subscribe, MAX_SERVER_SUBSCRIPTIONS)
            }
            Backend::Redis(store) => {
                observe(
                    "set_subscription",
                    store.set_subscription(user_id, channel, subscribe, MAX_SERVER_SUBSCRIPTIONS),
                )
                .await?
            }
        };
        if let Err(held) = stored {
            return Err(PresenceError::InvalidArgument(format!(
                "the user holds {held} server-side subscriptions already; at most {MAX_SERVER_SUBSCRIPTIONS}"
            )));
        }
        let command = if subscribe {
            Command::Subscribe {
                user_id: user_id.to_owned(),
                channel: channel.to_owned(),
            }
        } else {
            Command::Unsubscribe {
                user_id: user_id.to_owned(),
                channel: channel.to_owned(),
            }
        };
        self.dispatch(command, None).await
    }

    /// The channels the server API subscribed `user_id` to: what a new
    /// connection of the user subscribes to once it registered.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn server_subscriptions(&self, user_id: &str) -> Result<Vec<String>, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.subscriptions(user_id)),
            Backend::Redis(store) => observe("subscriptions", store.subscriptions(user_id)).await,
        }
    }
}
