//! A connection that closes while a periodic re-sync is running is its own
//! to deregister: the re-sync must not take it for state presence lost and
//! "repair" it (a warning that sends an operator looking for a failover
//! that never happened, at every mass disconnect).
//!
//! Its own test binary: it captures the process's log with a global
//! subscriber.

mod support;

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use pulse_presence::{
    Namespaces, Presence, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use tracing_subscriber::fmt::MakeWriter;

use crate::support::*;

/// Everything the process logs at warn or above.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closing_during_a_resync_is_not_presence_out_of_step() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(logs.clone())
        .init();

    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || {
        let mut options = RedisOptions::new(redis.url()).with_namespace(&namespace);
        options.lease_ttl = Duration::from_millis(600);
        Presence::redis(options).unwrap()
    };
    let mut settings = settings();
    // A re-sync on every renewal (every 200 ms).
    settings.resync_interval = Duration::from_millis(200);
    settings.namespaces = Arc::new(
        Namespaces::parse("[namespaces.room]\nauthorize = \"any\"\n", "test.toml").unwrap(),
    );
    let gateway = Gateway::start_with(settings, presence()).await;
    let mut alice = live(&gateway, &token("alice")).await;
    assert_eq!(
        subscribe(&mut alice, 1, "room:1").await["type"],
        "subscribed"
    );
    let observer = presence();
    eventually("alice is registered", || async {
        observer.user("alice").await.map(|c| c.len()).ok() == Some(1)
    })
    .await;

    // Keep the store's shared connection busy, so that the next periodic
    // re-sync (it runs on every renewal, which has a connection of its own)
    // is still reading Redis when alice closes.
    // The pause only arranges that race (a re-sync runs every 200 ms, the
    // hold lasts 2 s): on a machine too slow for it the race is missed and
    // the test passes without it; it cannot fail for it.
    let holder = gateway.presence.clone();
    let held = tokio::spawn(async move { holder.hold_shared_connection(2).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    alice.close(None).await.unwrap();
    held.await.unwrap().unwrap();

    eventually("alice is gone", || async {
        observer.user("alice").await.map(|c| c.len()).ok() == Some(0)
    })
    .await;
    // Stopping waits for the lease task, so a re-sync in flight has said
    // what it found.
    gateway.stop().await;
    let text = logs.text();
    assert!(
        !text.contains("out of step"),
        "a closing connection was taken for lost state:\n{text}"
    );
}
