//! The event bus: one long-lived pub/sub connection per process, forwarding
//! the events channel into a broadcast that every consumer subscribes to.

use std::time::Duration;

use futures_util::StreamExt;
use pulse_protocol::{Command, PresenceEvent};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior, interval_at, sleep, timeout},
};
use tracing::{debug, info, warn};

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

/// Where the commands addressed to this process's instance go: its channel
/// and the receiver's queue.
#[derive(Debug, Clone)]
pub(crate) struct CommandListener {
    pub(crate) channel: String,
    pub(crate) sender: mpsc::Sender<Command>,
}

/// Spawns the bus task. It runs until `stop` resolves, which happens when
/// the owning `Presence` is dropped (its sender goes with it).
pub(crate) fn spawn(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<PresenceEvent>,
    epoch: watch::Sender<u64>,
    commands: watch::Receiver<Option<CommandListener>>,
    stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop => debug!("presence bus stopped"),
            () = run(client, channel, events, epoch, commands) => {}
        }
    });
}

/// Subscribes, forwards, and on any failure resubscribes with exponential
/// backoff. Logs once when the bus goes down and once when it is back, not
/// on every attempt, so an outage costs two log lines.
async fn run(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<PresenceEvent>,
    epoch: watch::Sender<u64>,
    mut commands: watch::Receiver<Option<CommandListener>>,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut down = false;
    loop {
        // Whatever listener is current now is subscribed with the events.
        let listener = commands.borrow_and_update().clone();
        match subscribe(&client, &channel, listener.as_ref()).await {
            Ok((sink, stream)) => {
                // Counted before forwarding, so that a consumer that sees the
                // new epoch and re-snapshots cannot miss what follows.
                epoch.send_modify(|epoch| *epoch += 1);
                if down {
                    info!(%channel, "presence bus resubscribed to redis; events may have been missed");
                } else {
                    debug!(%channel, "presence bus subscribed");
                }
                let started = Instant::now();
                let reason =
                    forward(sink, stream, &channel, &events, listener, &mut commands).await;
                warn!(%channel, %reason, "presence bus lost its redis subscription; reconnecting");
                // Stays set through failed attempts, so the outage logs once.
                down = true;
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
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    listener: Option<&CommandListener>,
) -> Result<(PubSubSink, PubSubStream), String> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        if let Some(listener) = listener {
            sink.subscribe(&listener.channel).await?;
        }
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(subscription)) => Ok(subscription),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Forwards messages until the subscription fails, and says why.
async fn forward(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    events_channel: &str,
    events: &broadcast::Sender<PresenceEvent>,
    mut listener: Option<CommandListener>,
    commands: &mut watch::Receiver<Option<CommandListener>>,
) -> String {
    let mut pings = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = commands.changed() => {
                if changed.is_err() {
                    // The owning Presence is going away; the stop signal follows.
                    std::future::pending::<()>().await;
                }
                let next = commands.borrow_and_update().clone();
                if let Some(old) = &listener
                    && let Err(error) = sink.unsubscribe(&old.channel).await
                {
                    return format!("unsubscribe failed: {error}");
                }
                if let Some(new) = &next
                    && let Err(error) = sink.subscribe(&new.channel).await
                {
                    return format!("subscribe failed: {error}");
                }
                listener = next;
            }
            message = stream.next() => {
                let Some(message) = message else {
                    return "connection closed".to_owned();
                };
                if message.get_channel_name() != events_channel {
                    if let Some(listener) = &listener
                        && message.get_channel_name() == listener.channel
                    {
                        deliver_command(listener, message.get_payload_bytes());
                    }
                    continue;
                }
                match serde_json::from_slice::<PresenceEvent>(message.get_payload_bytes()) {
                    // Sending fails only when nobody subscribes, which is fine.
                    Ok(event) => {
                        metrics::counter!("pulse_presence_events_total", "kind" => kind_label(event.kind))
                            .increment(1);
                        drop(events.send(event));
                    }
                    Err(error) => warn!(
                        %error,
                        payload = %String::from_utf8_lossy(message.get_payload_bytes()),
                        "skipping an undecodable presence event"
                    ),
                }
            }
            _ = pings.tick() => {
                match timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return format!("ping failed: {error}"),
                    Err(_) => return format!("no ping answer within {PING_TIMEOUT:?}"),
                }
            }
        }
    }
}

/// Hands a command to this instance's listener. Delivery is at most once: a
/// listener that is this far behind loses the command, with a warning.
fn deliver_command(listener: &CommandListener, payload: &[u8]) {
    match serde_json::from_slice::<Command>(payload) {
        Ok(command) => match listener.sender.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => warn!(
                user_id = command.user_id(),
                "command queue full; dropping a command"
            ),
            // The listener was dropped; nobody on this instance wants commands.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        },
        Err(error) => warn!(%error, "skipping an undecodable command"),
    }
}

fn kind_label(kind: pulse_protocol::EventKind) -> &'static str {
    match kind {
        pulse_protocol::EventKind::Connected => "connected",
        pulse_protocol::EventKind::Disconnected => "disconnected",
        pulse_protocol::EventKind::Online => "online",
        pulse_protocol::EventKind::Offline => "offline",
    }
}
