//! A channel feed asked for many channels at once, whose Redis connections
//! are then all killed, on one Redis and on a private three-master Cluster:
//! every channel is subscribed (the queued requests together, per node,
//! `fanout/batch.rs`), subscribed again after the kill, told once as
//! resumed, and live again.

mod support;

use std::collections::HashSet;

use pulse_presence::{
    FeedEvent, Presence, PublishOptions, RedisOptions,
    testing::{RedisCluster, RedisServer, unique_namespace},
};
use serde_json::value::RawValue;
use support::DEADLINE;
use tokio::time::timeout;

const CHANNELS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_one_redis_every_channel_comes_back() {
    let server = RedisServer::spawn().await;
    let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
    every_channel_comes_back(
        Presence::redis(options).unwrap(),
        &[server.url().to_owned()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_every_channel_comes_back() {
    let cluster = RedisCluster::spawn().await;
    let options = cluster.options().with_namespace(unique_namespace());
    every_channel_comes_back(Presence::redis(options).unwrap(), cluster.urls()).await;
}

async fn every_channel_comes_back(presence: Presence, nodes: &[String]) {
    let (feed, mut deliveries) = presence.channel_feed();
    let channels: Vec<String> = (0..CHANNELS).map(|n| format!("room:many-{n}")).collect();
    // All at once, as a storm of connects asks (the fan-out answers the
    // requests queued behind one another together).
    let subscribed =
        futures_util::future::join_all(channels.iter().map(|c| feed.subscribe(c.as_str()))).await;
    assert!(subscribed.iter().all(Result::is_ok), "{subscribed:?}");
    for url in nodes {
        support::kill_pubsub(url).await;
    }
    let mut resumed = HashSet::new();
    while resumed.len() < CHANNELS {
        let event = timeout(DEADLINE, deliveries.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {CHANNELS} channels came back", resumed.len()))
            .expect("the feed is open");
        if let FeedEvent::Resumed(channel) = event {
            assert!(resumed.insert(channel.to_string()), "{channel} told twice");
        }
    }
    let data = RawValue::from_string("\"live\"".to_owned()).unwrap();
    for channel in &channels {
        let published = presence
            .publish(channel, &data, &PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(published.instances, 1, "{channel} is subscribed again");
    }
    let mut delivered = HashSet::new();
    while delivered.len() < CHANNELS {
        let delivery = support::next_publication(&mut deliveries).await;
        assert!(
            delivered.insert(delivery.channel.to_string()),
            "{} delivered twice",
            delivery.channel
        );
    }
}
