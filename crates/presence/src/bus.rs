//! The event bus: one long-lived pub/sub connection per process, forwarding
//! the events channel into a broadcast that every consumer subscribes to.

use std::time::Duration;

use futures_util::StreamExt;
use pulse_protocol::PresenceEvent;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::{
    sync::{broadcast, oneshot, watch},
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

/// Spawns the bus task. It runs until `stop` resolves, which happens when
/// the owning `Presence` is dropped (its sender goes with it).
pub(crate) fn spawn(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<PresenceEvent>,
    epoch: watch::Sender<u64>,
    stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop => debug!("presence bus stopped"),
            () = run(client, channel, events, epoch) => {}
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
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut down = false;
    loop {
        match subscribe(&client, &channel).await {
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
                let reason = forward(sink, stream, &events).await;
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
) -> Result<(PubSubSink, PubSubStream), String> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
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
    events: &broadcast::Sender<PresenceEvent>,
) -> String {
    let mut pings = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "connection closed".to_owned();
                };
                match serde_json::from_slice::<PresenceEvent>(message.get_payload_bytes()) {
                    // Sending fails only when nobody subscribes, which is fine.
                    Ok(event) => drop(events.send(event)),
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
