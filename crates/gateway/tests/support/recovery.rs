//! What the recovery tests share: a namespace with history (`feed`), a
//! gateway's settings and a presence client for it, and [`Reader`], a
//! client's view of one channel that checks its offsets follow each other.

use std::{sync::Arc, time::Duration};

use pulse_gateway::Settings;
use pulse_presence::{
    HistoryOptions, Namespaces, Presence, PublishOptions, RedisOptions, testing::RedisServer,
};
use serde_json::{Value, json};

use super::{Client, next_json, settings};

pub const CONFIG: &str = r#"
[namespaces.feed]
allow_publish = true
history_size = 1000
history_ttl = "10m"
"#;

pub const HISTORY: HistoryOptions = HistoryOptions {
    size: 1000,
    ttl: Duration::from_secs(600),
};

pub fn history_settings(instance: &str) -> Settings {
    let mut settings = settings();
    settings.instance_id = instance.to_owned();
    settings.namespaces = Arc::new(Namespaces::parse(CONFIG, "test.toml").unwrap());
    settings
}

/// The tests' settings for `instance` with a personal channel that keeps
/// history (and no namespace).
pub fn personal_history_settings(instance: &str) -> Settings {
    const PERSONAL: &str = "[personal]\nhistory_size = 1000\nhistory_ttl = \"10m\"\n";
    let mut settings = settings();
    settings.instance_id = instance.to_owned();
    settings.namespaces = Arc::new(Namespaces::parse(PERSONAL, "test.toml").unwrap());
    settings
}

/// A presence client of `server` under `namespace` (each gateway and the
/// test's API get their own, as separate processes would).
pub fn redis_presence(server: &RedisServer, namespace: &str) -> Presence {
    Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.to_owned())).unwrap()
}

pub fn with_history() -> PublishOptions<'static> {
    PublishOptions {
        history: Some(HISTORY),
        ..PublishOptions::default()
    }
}

/// A client's view of one channel: the numbers it got, and its position.
#[derive(Default)]
pub struct Reader {
    pub numbers: Vec<u64>,
    pub offset: u64,
    pub epoch: String,
}

impl Reader {
    /// Takes one publication (live or replayed); panics on a doubled or
    /// missing offset.
    fn take(&mut self, offset: u64, data: &Value) {
        assert_eq!(
            offset,
            self.offset + 1,
            "offsets follow each other (got {offset} after {})",
            self.offset
        );
        self.offset = offset;
        self.numbers.push(data["n"].as_u64().unwrap());
    }

    /// Subscribes (with `since` after the first time) and takes the answer.
    pub async fn subscribe(&mut self, client: &mut Client, id: u64) {
        let mut request = json!({"type": "subscribe", "id": id, "channel": "feed:1"});
        if !self.epoch.is_empty() {
            request["since"] = json!({"offset": self.offset, "epoch": self.epoch});
        }
        let answer = super::request(client, request).await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
        let epoch = answer["epoch"].as_str().unwrap().to_owned();
        if self.epoch.is_empty() {
            self.offset = answer["offset"].as_u64().unwrap();
        } else {
            assert_eq!(answer["recovered"], json!(true), "{answer}");
            assert_eq!(epoch, self.epoch);
            for publication in answer["publications"].as_array().unwrap() {
                self.take(
                    publication["offset"].as_u64().unwrap(),
                    &publication["data"],
                );
            }
            assert_eq!(answer["offset"].as_u64().unwrap(), self.offset);
        }
        self.epoch = epoch;
    }

    /// Reads until it holds `n` numbers (resubscribing when told to).
    pub async fn read_until(&mut self, client: &mut Client, n: usize) {
        let mut id = 100;
        while self.numbers.len() < n {
            let message = next_json(client).await;
            match message["type"].as_str() {
                Some("publication") => {
                    self.take(message["offset"].as_u64().unwrap(), &message["data"]);
                }
                Some("unsubscribed") => {
                    assert_eq!(message["code"], "resubscribe", "{message}");
                    id += 1;
                    self.subscribe(client, id).await;
                }
                _ => panic!("unexpected {message}"),
            }
        }
    }
}
