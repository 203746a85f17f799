//! `fleet`: what a gateway keeps of the rest of the fleet. Registers the
//! connections of other (simulated) gateway instances in the gateway's Redis
//! namespace, through `pulse-presence`'s own library as those gateways
//! would (publishing their events), then runs [`connect`] against the
//! gateway. Its memory with its own connections should not depend on how
//! many connections other instances hold.
//!
//! Simulated rather than real: a second gateway holding 50,000 sockets
//! would need as many file descriptors on each side, past this machine's
//! limit, and two more cores' worth of work; for the measured gateway the
//! two are alike (the same registration script, the same events on the
//! bus, the same keys).
//!
//! [`connect`]: super::connect

use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt, stream};
use pulse_presence::{ConnectionRecord, Presence, RedisOptions};
use tokio::time::{Instant, sleep};

/// How many registrations are in flight at once.
const IN_FLIGHT: usize = 256;

/// Where the other instances' connections go, and how many.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The gateway's Redis.
    pub redis_url: String,
    /// The gateway's namespace.
    pub namespace: String,
    /// Connections held by other instances.
    pub others: usize,
    /// How many other instances hold them, round robin.
    pub instances: usize,
    /// User ids of the other connections are this prefix and a number, one
    /// connection each.
    pub user_prefix: String,
}

/// Registers the other instances' connections and waits until Redis holds
/// them; returns how many were registered.
pub async fn register_others(options: &FleetOptions) -> anyhow::Result<u64> {
    if options.others == 0 {
        return Ok(0);
    }
    let presence =
        Presence::redis(RedisOptions::new(&options.redis_url).with_namespace(&options.namespace))
            .context("the fleet's presence")?;
    let before = presence.count_online().await?.connections;
    let started = Instant::now();
    let instances = options.instances.max(1);
    let at_ms = pulse_protocol::event::now_ms();
    stream::iter(0..options.others)
        .map(|n| {
            let record = ConnectionRecord {
                connection_id: format!("fleet-{n}"),
                user_id: format!("{}-{n}", options.user_prefix),
                instance_id: format!("fleet-instance-{}", n % instances),
                connected_at_ms: at_ms,
            };
            let presence = presence.clone();
            async move { presence.register(&record).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let registered = presence.count_online().await?.connections - before;
    println!(
        "fleet: {registered} connections of {instances} other instances registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        registered == options.others as u64,
        "asked for {} other connections, Redis holds {registered} more",
        options.others
    );
    // Whatever the gateway does with the others' events happens now, before
    // its memory is read.
    sleep(Duration::from_secs(2)).await;
    Ok(registered)
}
