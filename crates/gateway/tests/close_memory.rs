//! What a closing connection holds while its channel memberships are
//! removed must not grow with its number of channels: when a load balancer
//! drops every socket at once, every session closes at once, and a few
//! kilobytes per membership would be gigabytes on a full gateway.
//!
//! Its own test binary: it counts the process's live heap bytes with a
//! counting global allocator.

mod support;

use std::{alloc::System, sync::Arc};

use pulse_presence::{
    Namespaces, Presence, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use crate::support::*;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CHANNELS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_connection_holds_no_more_for_more_channels() {
    let redis = RedisServer::start().await;
    let presence =
        Presence::redis(RedisOptions::new(redis.url()).with_namespace(unique_namespace())).unwrap();
    let mut settings = settings();
    settings.max_subscriptions_per_connection = CHANNELS as usize;
    settings.max_messages_per_second = 10_000;
    settings.namespaces = Arc::new(
        Namespaces::parse("[namespaces.room]\nauthorize = \"any\"\n", "test.toml").unwrap(),
    );
    let gateway = Gateway::start_with(settings, presence).await;
    let mut alice = live(&gateway, &token("alice")).await;
    for id in 1..=CHANNELS {
        let answer = subscribe(&mut alice, id, &format!("room:{id}")).await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
    }

    // The memberships' removal waits behind a busy Redis connection, so
    // what the close holds for it is held while it is counted.
    let holder = gateway.presence.clone();
    let held = tokio::spawn(async move { holder.hold_shared_connection(2).await });
    eventually("the shared connection is held", || async {
        queued_behind_hold(redis.url()).await.is_some()
    })
    .await;
    let region = Region::new(ALLOCATOR);
    alice.close(None).await.unwrap();
    eventually("a membership's removal waits behind the hold", || async {
        queued_behind_hold(redis.url()).await.unwrap_or(0) > 0
    })
    .await;
    let change = region.change();
    let live = change.bytes_allocated as i64 + change.bytes_reallocated as i64
        - change.bytes_deallocated as i64;
    let _ = held.await;
    // A membership's removal in flight is several kilobytes: all at once,
    // 200 held 1.4 MB. One at a time, what is left per channel is the
    // feed's unsubscription (its name and command, a few hundred bytes).
    let limit = 64 * 1024 + CHANNELS as i64 * 1024;
    assert!(
        live < limit,
        "a closing connection with {CHANNELS} channels held {live} bytes while its memberships were removed (at most {limit})"
    );
    gateway.stop().await;
}
