//! Channel publications, to the processes that have subscribers for them.
//!
//! A channel's publications travel on one sharded pub/sub channel,
//! `<ns>:{b<k>}:pub:<channel>`, in the channel's bucket (`k` is
//! [`crate::bucket_of`] of the channel name), so that a script on that
//! bucket can append to the channel's history and publish in one step. A
//! process subscribes (`SSUBSCRIBE`) to the channels it has local
//! subscribers for and to nothing else, so a publication costs Redis one
//! message per process with subscribers, whatever their number of sockets.
//!
//! On a Cluster a sharded channel can be subscribed only on its slot's
//! master. The fan-out keeps one RESP3 connection per master it needs,
//! learns which master holds a bucket from `MOVED` (starting at a seed), and
//! follows a bucket when its slot moves (Redis ends the subscription with an
//! unasked `sunsubscribe`) or when a master's connection fails (a failover):
//! the channels it held are subscribed again through the seeds, with
//! backoff. Publications sent while a channel was not subscribed are not
//! delivered live (the recovery issue fills such holes from history).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use redis::ConnectionInfo;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tracing::{info, warn};

use crate::{ChannelName, PresenceError, buckets::Keys};

mod batch;
mod nodes;
mod resp;

use nodes::{Answer, Command, Link, address_of};

/// How long connecting or one subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often every node connection is pinged (a subscriber only reads, so a
/// connection lost without a FIN would otherwise look like a quiet channel).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How many `MOVED` answers one subscription follows.
const MAX_REDIRECTS: usize = 3;
/// The first pause before subscribing again what a lost node held.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest such pause.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One publication for this process: the channel and the text of its frame,
/// shared by every socket it is written to.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The channel, as clients name it.
    pub channel: ChannelName,
    /// The whole frame (a `publication`, or a `join`/`leave`).
    pub frame: Arc<str>,
    /// The publication's place in the channel's stream, where the namespace
    /// keeps history (`None` for a `join`/`leave` too).
    pub position: Option<DeliveryPosition>,
}

/// A publication's offset and the epoch of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPosition {
    /// Its offset.
    pub offset: u64,
    /// Its stream's epoch.
    pub epoch: Arc<str>,
}

/// What a process's channel feed hands it.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A publication (or a `join`/`leave`) on a channel it subscribed to.
    Publication(Delivery),
    /// The channel's subscription was lost (a Redis connection failed, its
    /// slot moved) and is live again: publications made in between were not
    /// delivered, and its subscribers must be told or filled from history.
    Resumed(ChannelName),
}

/// The header `publish.lua` puts before a publication with history on the
/// sharded channel: `<offset> <epoch> `, then the frame (which starts with
/// `{`, as a frame without a header does). Returns the position and the frame.
pub(crate) fn split_payload(payload: &str) -> (Option<DeliveryPosition>, &str) {
    if !payload.starts_with(|c: char| c.is_ascii_digit()) {
        return (None, payload);
    }
    let mut parts = payload.splitn(3, ' ');
    let (Some(offset), Some(epoch), Some(frame)) = (parts.next(), parts.next(), parts.next())
    else {
        return (None, payload);
    };
    match offset.parse() {
        Ok(offset) => (
            Some(DeliveryPosition {
                offset,
                epoch: epoch.into(),
            }),
            frame,
        ),
        Err(_) => (None, payload),
    }
}

/// Where a subscription request's answer goes.
pub(crate) type Answered = oneshot::Sender<Result<(), PresenceError>>;

/// What the fan-out task is asked to do; channels as clients name them.
pub(crate) enum Request {
    Subscribe {
        channel: ChannelName,
        done: Answered,
    },
    Unsubscribe {
        channel: Box<str>,
    },
}

/// One master's connection.
struct Node {
    /// Tells this connection's pushes from an earlier one's to the same address.
    generation: u64,
    link: Link,
    /// How many channels are subscribed on it.
    channels: usize,
}

/// What a node's connection tells the task.
#[derive(Debug)]
enum NodeEvent {
    /// A publication on the sharded channel `key`, its frame split off.
    Message {
        key: Box<str>,
        frame: Arc<str>,
        position: Option<DeliveryPosition>,
    },
    /// The server ended the subscription of `key` unasked: its slot moved.
    Unsubscribed(Box<str>),
    /// The connection failed or was closed.
    Closed,
}

/// Spawns the fan-out task of one process; it ends when `requests` closes
/// (the `ChannelFeed` is dropped).
pub(crate) fn spawn(
    keys: Keys,
    seeds: Vec<ConnectionInfo>,
    requests: mpsc::UnboundedReceiver<Request>,
    deliveries: mpsc::UnboundedSender<FeedEvent>,
) {
    let (events, events_rx) = mpsc::unbounded_channel();
    let fanout = Fanout {
        keys,
        seeds,
        next_seed: 0,
        nodes: HashMap::new(),
        routes: HashMap::new(),
        subscribed: HashSet::new(),
        pending: HashSet::new(),
        generation: 0,
        events,
        deliveries,
    };
    tokio::spawn(fanout.run(requests, events_rx));
}

struct Fanout {
    /// Names the sharded channel of a channel (made when it is needed, not
    /// kept).
    keys: Keys,
    seeds: Vec<ConnectionInfo>,
    next_seed: usize,
    /// Connections by `host:port`.
    nodes: HashMap<Arc<str>, Node>,
    /// The master that holds a bucket, as `MOVED` said, and on which the
    /// bucket's subscribed channels are: every channel here and not
    /// `pending` is subscribed on its bucket's route (a bucket is one slot,
    /// so its channels move together).
    routes: HashMap<u16, Arc<str>>,
    /// The channels held, by name (shared with the process's own table of
    /// subscribers: a process may hold a channel per connection, so this
    /// keeps nothing else per channel).
    subscribed: HashSet<ChannelName>,
    /// Channels to subscribe again (their node was lost or their slot moved).
    pending: HashSet<ChannelName>,
    generation: u64,
    events: mpsc::UnboundedSender<(Arc<str>, u64, NodeEvent)>,
    deliveries: mpsc::UnboundedSender<FeedEvent>,
}

impl Fanout {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut events: mpsc::UnboundedReceiver<(Arc<str>, u64, NodeEvent)>,
    ) {
        let mut pings = interval(PING_INTERVAL);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = INITIAL_BACKOFF;
        let mut retry_at: Option<Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = requests.recv() => match request {
                    None => return,
                    Some(Request::Subscribe { channel, done }) => {
                        // With those queued behind it, up to an
                        // unsubscription (answered after them, in order).
                        let mut batch = vec![(channel, done)];
                        let mut after = None;
                        while let Ok(request) = requests.try_recv() {
                            match request {
                                Request::Subscribe { channel, done } => batch.push((channel, done)),
                                Request::Unsubscribe { channel } => {
                                    after = Some(channel);
                                    break;
                                }
                            }
                        }
                        self.subscribe_requests(batch).await;
                        if let Some(channel) = after {
                            self.unsubscribe(&channel).await;
                        }
                    }
                    Some(Request::Unsubscribe { channel }) => self.unsubscribe(&channel).await,
                },
                Some((address, generation, event)) = events.recv() => {
                    self.on_event(&address, generation, event);
                    if !self.pending.is_empty() && retry_at.is_none() {
                        retry_at = Some(Instant::now());
                    }
                }
                () = retry => {
                    retry_at = None;
                    if self.resubscribe_pending().await {
                        backoff = INITIAL_BACKOFF;
                    } else {
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                _ = pings.tick() => {
                    self.ping_all().await;
                    if !self.pending.is_empty() && retry_at.is_none() {
                        retry_at = Some(Instant::now());
                    }
                }
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) {
        if !self.subscribed.remove(channel) || self.pending.remove(channel) {
            // Not held, or held but subscribed nowhere.
            return;
        }
        let Some(address) = self
            .routes
            .get(&crate::buckets::channel_bucket(channel))
            .cloned()
        else {
            return;
        };
        let Some(node) = self.nodes.get_mut(&address) else {
            return;
        };
        node.channels = node.channels.saturating_sub(1);
        drop(node.link.send(Command::Unsubscribe {
            key: self.keys.publications(channel),
        }));
        if let Some(node) = self.nodes.get(&address)
            && node.channels == 0
            && self.nodes.len() > 1
        {
            // A Cluster master nothing is subscribed on any more. Let go of
            // as a lost one is: should the count ever be short, what its
            // buckets still hold is subscribed again, not silently dropped
            // with the connection.
            self.drop_node(&address);
        }
    }

    fn on_event(&mut self, address: &str, generation: u64, event: NodeEvent) {
        if self.nodes.get(address).map(|n| n.generation) != Some(generation) {
            return;
        }
        match event {
            NodeEvent::Closed => {
                warn!(%address, "channel fan-out lost a redis connection; subscribing its channels again");
                self.drop_node(address);
            }
            NodeEvent::Message {
                key,
                frame,
                position,
            } => {
                let Some(channel) = self
                    .keys
                    .publications_channel(&key)
                    .and_then(|channel| self.subscribed.get(channel))
                else {
                    return;
                };
                drop(self.deliveries.send(FeedEvent::Publication(Delivery {
                    channel: channel.clone(),
                    frame,
                    position,
                })));
            }
            NodeEvent::Unsubscribed(key) => {
                // Unasked (our own unsubscriptions removed the entry
                // first): the slot moved to another master.
                let Some(channel) = self.keys.publications_channel(&key) else {
                    return;
                };
                let bucket = crate::buckets::channel_bucket(channel);
                if self.subscribed.contains(channel)
                    && !self.pending.contains(channel)
                    && self.routes.get(&bucket).is_some_and(|to| **to == *address)
                {
                    info!(%channel, bucket, "a channel's slot moved; subscribing its bucket on the new master");
                    self.bucket_moved(bucket, address, |_| false);
                }
            }
        }
    }

    /// `bucket` is no longer served at `address` (its slot moved): when its
    /// channels were subscribed there, they wait to be subscribed again
    /// (but those `subscribing` says are on their way to the new master).
    fn bucket_moved(
        &mut self,
        bucket: u16,
        address: &str,
        subscribing: impl Fn(&ChannelName) -> bool,
    ) {
        if self.routes.get(&bucket).is_none_or(|to| **to != *address) {
            return;
        }
        self.routes.remove(&bucket);
        let mut moved = 0;
        for channel in &self.subscribed {
            if !subscribing(channel)
                && crate::buckets::channel_bucket(channel) == bucket
                && self.pending.insert(channel.clone())
            {
                moved += 1;
            }
        }
        if let Some(node) = self.nodes.get_mut(address) {
            node.channels = node.channels.saturating_sub(moved);
        }
    }

    /// Forgets a node; what it held waits to be subscribed again, through
    /// the seeds (its master may have changed).
    fn drop_node(&mut self, address: &str) {
        if self.nodes.remove(address).is_none() {
            return;
        }
        let mut lost = HashSet::new();
        self.routes.retain(|bucket, to| {
            let kept = **to != *address;
            if !kept {
                lost.insert(*bucket);
            }
            kept
        });
        if !lost.is_empty() {
            for channel in &self.subscribed {
                if lost.contains(&crate::buckets::channel_bucket(channel)) {
                    self.pending.insert(channel.clone());
                }
            }
        }
        self.next_seed += 1;
    }

    async fn ping_all(&mut self) {
        let pings = self.nodes.iter().map(|(address, node)| {
            let (done, answer) = oneshot::channel();
            drop(node.link.send(Command::Ping { done }));
            let address = address.clone();
            async move {
                let answer = timeout(PING_TIMEOUT, answer).await;
                (address, matches!(answer, Ok(Ok(Answer::Done))))
            }
        });
        for (address, alive) in futures_util::future::join_all(pings).await {
            if !alive {
                warn!(%address, "channel fan-out connection does not answer pings; subscribing its channels again");
                self.drop_node(&address);
            }
        }
    }

    fn seed_address(&mut self) -> String {
        let seed = &self.seeds[self.next_seed % self.seeds.len()];
        address_of(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_with_a_header_splits_into_position_and_frame() {
        let (position, frame) = split_payload(r#"17 ab12 {"type":"publication"}"#);
        assert_eq!(
            position,
            Some(DeliveryPosition {
                offset: 17,
                epoch: "ab12".into()
            })
        );
        assert_eq!(frame, r#"{"type":"publication"}"#);
        let plain = r#"{"type":"join","channel":"a b"}"#;
        assert_eq!(split_payload(plain), (None, plain));
        assert_eq!(split_payload("17 ab12"), (None, "17 ab12"));
    }
}
