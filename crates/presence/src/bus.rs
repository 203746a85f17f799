//! The event bus: one long-lived pub/sub connection per process, forwarding
//! the events channel into a broadcast that every consumer subscribes to,
//! and this instance's command channel into its listener.
//!
//! A command the bus receives is never dropped, since Redis has counted it
//! as delivered: while the gateway's queue is full the bus stops taking
//! commands instead (see `backlog.rs`).
//!
//! The connection speaks RESP3, so that one socket carries the classic
//! events channel (`SUBSCRIBE`) and the sharded command channel
//! (`SSUBSCRIBE`). On a Cluster, a classic channel can be subscribed on any
//! node (every node forwards every `PUBLISH`), but a sharded one only on the
//! master of its slot; so the bus connects to a seed node, and when the
//! command channel's `SSUBSCRIBE` answers `MOVED`, it reconnects to the node
//! named there and subscribes both channels on it. When that slot moves
//! later, Redis ends the sharded subscription (an unasked `sunsubscribe`),
//! and the bus reconnects the same way. A seed that fails is skipped for the
//! next one.

use std::{sync::Arc, time::Duration};

use pulse_protocol::{Command, PresenceEvent};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    RedisError, Value, aio::MultiplexedConnection,
};
use tokio::{
    sync::{Notify, broadcast, mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior, interval_at, sleep, timeout},
};
use tracing::{debug, info, warn};

use crate::{EVENTS_IDLE_AFTER, PresenceError};

mod backlog;

use backlog::{Backlog, Delivered, room_for_one, room_to_resume};

/// The first pause after a failed (re)connection, doubled on each failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long connecting and subscribing may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscription is pinged. A subscriber only reads, so without
/// this a connection silently lost in the network (no FIN, no RST) would look
/// like a quiet channel forever.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How many `MOVED` answers one subscription attempt follows.
const MAX_REDIRECTS: usize = 3;

/// Where commands addressed to this process's instance go: its channel
/// and the receiver's queue.
#[derive(Debug, Clone)]
pub(crate) struct CommandListener {
    pub(crate) channel: String,
    pub(crate) sender: mpsc::Sender<Command>,
}

/// The nodes the bus may subscribe on: the one Redis, or a Cluster's seeds.
#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    seeds: Vec<ConnectionInfo>,
}

impl Nodes {
    /// The nodes of `urls`, which passed [`crate::RedisOptions::validate`]
    /// (one URL, or several in cluster mode).
    pub(crate) fn new(urls: &[&str]) -> Result<Self, PresenceError> {
        let seeds = urls
            .iter()
            .map(|url| {
                let info = crate::redis_conn::connection_info(url).map_err(|error| {
                    PresenceError::InvalidArgument(format!("invalid redis url: {error}"))
                })?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                Ok(info.set_redis_settings(settings))
            })
            .collect::<Result<Vec<_>, PresenceError>>()?;
        Ok(Self { seeds })
    }

    /// The nodes to start at, RESP3 each.
    pub(crate) fn seeds(&self) -> Vec<ConnectionInfo> {
        self.seeds.clone()
    }
}

/// Where decoded events go.
pub(crate) struct Forward {
    /// Whether to subscribe to the events channel at all: a gateway needs
    /// only its commands, and every event of the fleet would cost it a
    /// decode.
    pub(crate) subscribe: bool,
    /// Subscribe only while `events` has a receiver, when no commands are
    /// taken ([`crate::RedisOptions::events_on_demand`]).
    pub(crate) on_demand: bool,
    /// Notified by `Presence::subscribe`: a consumer came.
    pub(crate) wanted: Arc<Notify>,
    pub(crate) events: broadcast::Sender<PresenceEvent>,
}

impl Forward {
    /// Whether the bus may hold no subscription now: on demand, nobody
    /// takes events, and no commands are to be taken.
    fn idle(&self, listener: Option<&CommandListener>) -> bool {
        self.on_demand && listener.is_none() && self.events.receiver_count() == 0
    }
}

/// Spawns the bus task. It runs until `stop` resolves, which happens when
/// the owning `Presence` is dropped (its sender goes with it).
pub(crate) fn spawn(
    nodes: Nodes,
    channel: String,
    events: Forward,
    epoch: watch::Sender<u64>,
    commands: watch::Receiver<Option<CommandListener>>,
    live: watch::Sender<Option<String>>,
    stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop => debug!("presence bus stopped"),
            () = run(nodes, channel, events, epoch, commands, live) => {}
        }
    });
}

/// Why a subscription ended.
enum End {
    /// The connection failed; say why.
    Lost(String),
    /// The command channel lives on another node now: follow it at once.
    Moved,
    /// On demand, nobody took events for [`EVENTS_IDLE_AFTER`].
    Idle,
}

/// How often an on-demand bus looks for consumers it was not told of (a
/// receiver made by `resubscribe`), and for the last one gone.
const CONSUMER_CHECK: Duration = Duration::from_secs(1);

/// Subscribes, forwards, and on any failure resubscribes with exponential
/// backoff. Logs once when the bus goes down and once when it is back, not
/// on every attempt, so an outage costs two log lines.
async fn run(
    nodes: Nodes,
    channel: String,
    events: Forward,
    epoch: watch::Sender<u64>,
    mut commands: watch::Receiver<Option<CommandListener>>,
    live: watch::Sender<Option<String>>,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut down = false;
    // The seed to try first; moves on after each failure.
    let mut seed = 0;
    // Survives reconnections: what it holds was counted as delivered.
    let mut backlog = Backlog::default();
    loop {
        // Whatever listener is current now is subscribed with the events,
        // unless commands still wait for room in its queue.
        let listener = commands.borrow_and_update().clone();
        if events.idle(listener.as_ref()) && backlog.is_empty() {
            wait_for_consumer(&events, &mut commands).await;
            continue;
        }
        backlog.keep_for(listener.as_ref());
        let taking = listener.clone().filter(|_| backlog.is_empty());
        let events_channel = events.subscribe.then_some(channel.as_str());
        match subscribe(&nodes, seed, events_channel, taking.as_ref()).await {
            Ok(subscription) => {
                // Counted before forwarding, so that a consumer that sees the
                // new epoch and re-reads cannot miss what follows.
                epoch.send_modify(|epoch| *epoch += 1);
                live.send_replace(taking.as_ref().map(|l| l.channel.clone()));
                if down {
                    info!(%channel, "presence bus resubscribed to redis; events may have been missed");
                } else {
                    debug!(%channel, "presence bus subscribed");
                }
                let started = Instant::now();
                let end = forward(
                    subscription,
                    &channel,
                    &events,
                    listener,
                    &mut backlog,
                    &mut commands,
                    &live,
                )
                .await;
                live.send_replace(None);
                match end {
                    End::Moved => {
                        debug!(%channel, "the command channel is on another node; resubscribing there");
                        continue;
                    }
                    End::Idle => {
                        debug!(%channel, "no event consumer for a while; the presence bus unsubscribed");
                        continue;
                    }
                    End::Lost(reason) => {
                        warn!(%channel, %reason, "presence bus lost its redis subscription; reconnecting");
                    }
                }
                // Stays set through failed attempts, so the outage logs once.
                down = true;
                seed += 1;
                // A subscription that held for a while earns a fresh backoff;
                // one that keeps dropping at once backs off like a failure.
                if started.elapsed() >= MAX_BACKOFF {
                    backoff = INITIAL_BACKOFF;
                }
            }
            Err(error) => {
                if !down {
                    warn!(%channel, %error, "presence bus cannot subscribe to redis; retrying with backoff");
                    down = true;
                }
                seed += 1;
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits until something takes events (or a command listener comes).
async fn wait_for_consumer(
    events: &Forward,
    commands: &mut watch::Receiver<Option<CommandListener>>,
) {
    while events.events.receiver_count() == 0 {
        tokio::select! {
            () = events.wanted.notified() => {}
            changed = commands.changed() => {
                if changed.is_err() {
                    // The owning Presence is going away; the stop signal follows.
                    std::future::pending::<()>().await;
                }
                return;
            }
            () = sleep(CONSUMER_CHECK) => {}
        }
    }
}

/// A live subscription: the connection, and the pushes it receives.
struct Subscription {
    connection: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

async fn subscribe(
    nodes: &Nodes,
    seed: usize,
    channel: Option<&str>,
    listener: Option<&CommandListener>,
) -> Result<Subscription, String> {
    let mut node = nodes.seeds[seed % nodes.seeds.len()].clone();
    for _ in 0..=MAX_REDIRECTS {
        let attempt = timeout(CONNECT_TIMEOUT, subscribe_on(&node, channel, listener)).await;
        match attempt {
            Ok(Ok(subscription)) => return Ok(subscription),
            Ok(Err(error)) => match error.redirect_node() {
                Some((address, _slot)) => node = redirected(&node, address)?,
                None => return Err(error.to_string()),
            },
            Err(_) => return Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(format!("still redirected after {MAX_REDIRECTS} tries"))
}

/// Connects to `node` and subscribes the events channel (unless `None`)
/// and, if a listener waits, its sharded command channel.
async fn subscribe_on(
    node: &ConnectionInfo,
    channel: Option<&str>,
    listener: Option<&CommandListener>,
) -> Result<Subscription, RedisError> {
    let (sender, pushes) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(PING_TIMEOUT))
        .set_push_sender(sender);
    let client = redis::Client::open(node.clone())?;
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if let Some(channel) = channel {
        connection.subscribe(channel).await?;
    }
    if let Some(listener) = listener {
        ssubscribe(&mut connection, &listener.channel).await?;
    }
    Ok(Subscription { connection, pushes })
}

/// `node` with its address replaced by `address` (`host:port`, from `MOVED`).
fn redirected(node: &ConnectionInfo, address: &str) -> Result<ConnectionInfo, String> {
    let bad = || format!("cannot follow a redirection to {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.to_owned();
    let addr = match node.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    Ok(node.clone().set_addr(addr))
}

async fn ssubscribe(
    connection: &mut MultiplexedConnection,
    channel: &str,
) -> redis::RedisResult<()> {
    redis::cmd("SSUBSCRIBE")
        .arg(channel)
        .exec_async(connection)
        .await
}

/// Forwards messages until the subscription fails or has to move.
///
/// The command channel is subscribed unless the backlog holds commands
/// (then the bus is paused: it waits for room before subscribing again).
#[allow(clippy::too_many_arguments)]
async fn forward(
    subscription: Subscription,
    events_channel: &str,
    events: &Forward,
    mut listener: Option<CommandListener>,
    backlog: &mut Backlog,
    commands: &mut watch::Receiver<Option<CommandListener>>,
    live: &watch::Sender<Option<String>>,
) -> End {
    let Subscription {
        mut connection,
        mut pushes,
    } = subscription;
    let mut pings = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut paused = listener.is_some() && !backlog.is_empty();
    let mut consumers = interval_at(Instant::now() + CONSUMER_CHECK, CONSUMER_CHECK);
    consumers.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unwanted_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = consumers.tick(), if events.on_demand => {
                if !events.idle(listener.as_ref()) || !backlog.is_empty() {
                    unwanted_since = None;
                } else if unwanted_since.get_or_insert_with(Instant::now).elapsed() >= EVENTS_IDLE_AFTER {
                    return End::Idle;
                }
            }
            Some(permit) = room_for_one(listener.clone()), if !backlog.is_empty() => {
                backlog.release(permit);
            }
            () = room_to_resume(listener.clone()), if paused && backlog.is_empty() => {
                let Some(channel) = listener.as_ref().map(|l| l.channel.clone()) else {
                    continue;
                };
                if let Err(error) = ssubscribe(&mut connection, &channel).await {
                    if error.redirect_node().is_some() {
                        return End::Moved;
                    }
                    return End::Lost(format!("subscribe failed: {error}"));
                }
                paused = false;
                info!(%channel, "command queue has room again; taking commands");
                live.send_replace(Some(channel));
            }
            changed = commands.changed() => {
                if changed.is_err() {
                    // The owning Presence is going away; the stop signal follows.
                    std::future::pending::<()>().await;
                }
                let next = commands.borrow_and_update().clone();
                let old = listener.as_ref().map(|l| l.channel.clone());
                let new = next.as_ref().map(|l| l.channel.clone());
                listener = next;
                if old == new {
                    continue;
                }
                backlog.keep_for(listener.as_ref());
                paused = false;
                if let Some(old) = old
                    && let Err(error) = redis::cmd("SUNSUBSCRIBE").arg(&old).exec_async(&mut connection).await
                {
                    return End::Lost(format!("unsubscribe failed: {error}"));
                }
                live.send_replace(None);
                if let Some(new) = &new
                    && let Err(error) = ssubscribe(&mut connection, new).await
                {
                    if error.redirect_node().is_some() {
                        return End::Moved;
                    }
                    return End::Lost(format!("subscribe failed: {error}"));
                }
                live.send_replace(new);
            }
            push = pushes.recv() => {
                let Some(PushInfo { kind, data }) = push else {
                    return End::Lost("connection closed".to_owned());
                };
                match kind {
                    PushKind::Message if channel_of(&data) == Some(events_channel) => {
                        forward_event(events, payload_of(&data));
                    }
                    PushKind::SMessage => {
                        if let Some(listener) = &listener
                            && channel_of(&data) == Some(listener.channel.as_str())
                            && deliver_command(listener, backlog, payload_of(&data))
                                == Delivered::Held
                            && !paused
                        {
                            // Whatever is published from now on finds no
                            // subscriber here and is counted as not delivered.
                            if let Err(error) = redis::cmd("SUNSUBSCRIBE")
                                .arg(&listener.channel)
                                .exec_async(&mut connection)
                                .await
                            {
                                return End::Lost(format!("unsubscribe failed: {error}"));
                            }
                            paused = true;
                            live.send_replace(None);
                            warn!(
                                channel = %listener.channel,
                                held = backlog.len(),
                                "command queue full; taking no commands until it has room \
                                 (Send and Disconnect count this instance's connections as not reached)"
                            );
                        }
                    }
                    PushKind::Disconnection => return End::Lost("connection closed".to_owned()),
                    // Redis ends a sharded subscription when its slot moves
                    // to another node; our own SUNSUBSCRIBE names the old
                    // channel, or the current one while paused.
                    PushKind::SUnsubscribe
                        if !paused
                            && listener.as_ref().map(|l| l.channel.as_str()) == channel_of(&data) =>
                    {
                        return End::Moved;
                    }
                    PushKind::Unsubscribe if channel_of(&data) == Some(events_channel) => {
                        return End::Lost("the server ended the events subscription".to_owned());
                    }
                    _ => {}
                }
            }
            _ = pings.tick() => {
                let ping = redis::cmd("PING");
                match timeout(PING_TIMEOUT, ping.query_async::<Value>(&mut connection)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return End::Lost(format!("ping failed: {error}")),
                    Err(_) => return End::Lost(format!("no ping answer within {PING_TIMEOUT:?}")),
                }
            }
        }
    }
}

fn channel_of(data: &[Value]) -> Option<&str> {
    match data.first() {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

fn payload_of(data: &[Value]) -> &[u8] {
    match data.get(1) {
        Some(Value::BulkString(bytes)) => bytes,
        _ => &[],
    }
}

fn forward_event(forward: &Forward, payload: &[u8]) {
    match serde_json::from_slice::<PresenceEvent>(payload) {
        // Sending fails only when nobody subscribes, which is fine.
        Ok(event) => {
            metrics::counter!("pulse_presence_events_total", "kind" => kind_label(event.kind))
                .increment(1);
            drop(forward.events.send(event));
        }
        Err(error) => warn!(
            %error,
            payload = %String::from_utf8_lossy(payload),
            "skipping an undecodable presence event"
        ),
    }
}

/// Hands a command to this instance's listener, or to the backlog when its
/// queue is full: never dropped, since Redis counted it as delivered.
fn deliver_command(listener: &CommandListener, backlog: &mut Backlog, payload: &[u8]) -> Delivered {
    match serde_json::from_slice::<Command>(payload) {
        Ok(command) => backlog.deliver(listener, command),
        Err(error) => {
            warn!(%error, "skipping an undecodable command");
            Delivered::Queued
        }
    }
}

fn kind_label(kind: pulse_protocol::EventKind) -> &'static str {
    match kind {
        pulse_protocol::EventKind::Connected => "connected",
        pulse_protocol::EventKind::Disconnected => "disconnected",
        pulse_protocol::EventKind::Online => "online",
        pulse_protocol::EventKind::Offline => "offline",
        pulse_protocol::EventKind::Join => "join",
        pulse_protocol::EventKind::Leave => "leave",
    }
}
