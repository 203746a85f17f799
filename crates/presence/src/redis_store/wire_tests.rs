//! Holds the Lua and Rust sides of the wire formats together: every script
//! that publishes runs on a real `redis-server`, and what it published is
//! decoded with the serde type the bus uses ([`PresenceEvent`]), every field
//! checked; the user hash value a script wrote is held to [`UserEntry`].

use std::time::Duration;

use futures_util::StreamExt;
use pulse_protocol::{EventKind, PresenceEvent, event::now_ms};

use crate::{
    ConnectionRecord, Presence, RedisOptions,
    buckets::Keys,
    testing::{RedisServer, unique_namespace},
    user_entry::UserEntry,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// Ids the scripts must carry through unchanged: JSON escapes (a quote, a
/// backslash, a slash, a control character), non-ASCII, and `|`, the user
/// hash value's separator, in the instance id.
const USER: &str = "us\"er\\/\u{1}é";
const INSTANCE: &str = "gw|1\"/é";
/// Past 2^53, where a Lua number would round and cjson's `%.14g` would too.
const AT_MS: u64 = 9_007_199_254_740_993;

struct Wire {
    presence: Presence,
    keys: Keys,
    url: String,
    events: redis::aio::PubSubStream,
}

impl Wire {
    async fn new(server: &RedisServer) -> Self {
        let namespace = unique_namespace();
        let options = RedisOptions {
            subscribe_events: false,
            lease_ttl: Duration::from_millis(300),
            ..RedisOptions::new(server.url()).with_namespace(namespace.clone())
        };
        let keys = Keys::new(&namespace);
        let client = redis::Client::open(server.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(keys.channel()).await.unwrap();
        Self {
            presence: Presence::redis(options).unwrap(),
            keys,
            url: server.url().to_owned(),
            events: pubsub.into_on_message(),
        }
    }

    /// The next published payload, decoded with the bus's serde type.
    async fn next_event(&mut self) -> PresenceEvent {
        let message = tokio::time::timeout(DEADLINE, self.events.next())
            .await
            .expect("an event within the deadline")
            .expect("the subscription is open");
        let payload = message.get_payload_bytes();
        serde_json::from_slice(payload).unwrap_or_else(|error| {
            panic!(
                "{error}: {:?} does not decode as a PresenceEvent",
                String::from_utf8_lossy(payload)
            )
        })
    }

    /// Two events of one connection: `first` then `second`, every field
    /// checked; `at_ms` within `at` (the script's clock reading).
    async fn expect_pair(&mut self, kinds: [EventKind; 2], at: std::ops::RangeInclusive<u64>) {
        for kind in kinds {
            let event = self.next_event().await;
            assert!(at.contains(&event.at_ms), "{event:?} not in {at:?}");
            assert_eq!(
                event,
                PresenceEvent {
                    user_id: USER.to_owned(),
                    kind,
                    connection_id: "c\"1".to_owned(),
                    instance_id: INSTANCE.to_owned(),
                    at_ms: event.at_ms,
                    id: event.id,
                    prev: event.prev,
                    channel: None,
                }
            );
        }
    }

    async fn raw_value(&self) -> Option<String> {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("HGET")
            .arg(self.keys.user(USER))
            .arg("c\"1")
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    async fn register(&self) {
        let record = ConnectionRecord {
            connection_id: "c\"1".to_owned(),
            user_id: USER.to_owned(),
            instance_id: INSTANCE.to_owned(),
            connected_at_ms: AT_MS,
        };
        self.presence.register(&record).await.unwrap();
    }
}

#[tokio::test]
async fn every_script_publishes_what_the_bus_decodes_and_writes_what_rust_reads() {
    let server = RedisServer::start().await;
    let mut wire = Wire::new(&server).await;
    use EventKind::{Connected, Disconnected, Offline, Online};

    // register.lua: the value it wrote is UserEntry's, and reads back.
    wire.register().await;
    wire.expect_pair([Connected, Online], AT_MS..=AT_MS).await;
    let value = wire.raw_value().await.expect("registered");
    let entry = UserEntry {
        connected_at_ms: AT_MS,
        instance_id: INSTANCE,
    };
    assert_eq!(value, entry.encode());
    assert_eq!(UserEntry::parse(&value), Some(entry));
    let records = wire.presence.user(USER).await.unwrap();
    assert_eq!(
        (records[0].connected_at_ms, records[0].instance_id.as_str()),
        (AT_MS, INSTANCE)
    );

    // unregister.lua: the instance it reports is read back from the value
    // by prelude.lua's instance_of, bars and all.
    let before = now_ms();
    wire.presence.unregister(USER, "c\"1").await.unwrap();
    wire.expect_pair([Disconnected, Offline], before..=now_ms())
        .await;

    // unregister_instance.lua (purge_instance finds the connection by the
    // instance id in the value).
    wire.register().await;
    wire.expect_pair([Connected, Online], AT_MS..=AT_MS).await;
    let before = now_ms();
    assert_eq!(
        wire.presence.unregister_instance(INSTANCE).await.unwrap(),
        1
    );
    wire.expect_pair([Disconnected, Offline], before..=now_ms())
        .await;
    assert_eq!(wire.raw_value().await, None);

    // reap.lua: the registration's own (unconfirmed) lease runs out.
    wire.register().await;
    wire.expect_pair([Connected, Online], AT_MS..=AT_MS).await;
    let before = now_ms();
    let reaped = tokio::time::timeout(DEADLINE, async {
        loop {
            let reaped = wire.presence.reap_expired().await.unwrap();
            if !reaped.is_empty() {
                return reaped;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lease runs out within the deadline");
    assert_eq!(reaped, [(INSTANCE.to_owned(), 1)]);
    // Redis's clock stamps a reap; it is this machine's clock too.
    wire.expect_pair([Disconnected, Offline], before..=now_ms())
        .await;
}
