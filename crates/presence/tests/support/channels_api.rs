//! The channels API served over gRPC and HTTP on a real Redis, with a feed
//! subscribed to some channels: what the channels API tests call.

use std::{net::SocketAddr, sync::Arc};

use pulse_presence::{
    ApiConfig, Delivery, FeedEvent, Namespaces, Presence,
    access::{ApiKey, Permission, Permissions},
    testing::RedisServer,
};
use pulse_protocol::{api_key::BearerKey, proto::channels::v1::channels_client::ChannelsClient};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc::UnboundedReceiver, oneshot},
    time::timeout,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::{DEADLINE, redis_presence};

pub const KEY: &str = "test-key-0123456789abcdef";
pub const READ_ONLY_KEY: &str = "read-only-key-0123456789";

pub const CONFIG: &str = r#"
[namespaces.room]
allow_publish = true
[namespaces.order]
[namespaces.doc]
presence = true
presence_max_users = 2
[namespaces.feed]
history_size = 5
history_ttl = "1m"
"#;

/// The API served over gRPC and HTTP, and a feed subscribed to some channels.
pub struct Served {
    pub presence: Presence,
    pub grpc: Channel,
    pub http: SocketAddr,
    pub deliveries: UnboundedReceiver<FeedEvent>,
    _feed: pulse_presence::ChannelFeed,
    _stop: oneshot::Sender<()>,
    _http_stop: oneshot::Sender<()>,
    _server: RedisServer,
}

impl Served {
    pub async fn start() -> Self {
        let server = RedisServer::start().await;
        let presence: Presence = redis_presence(&server).await;
        let mut api = ApiConfig::with_keys(vec![
            ApiKey::new("test", KEY, Permissions::ALL),
            ApiKey::new(
                "reader",
                READ_ONLY_KEY,
                [Permission::PresenceRead].into_iter().collect(),
            ),
        ]);
        api.namespaces = Arc::new(Namespaces::parse(CONFIG, "test.toml").unwrap());
        api.limits.max_request_bytes = 4096;
        let (feed, deliveries) = presence.channel_feed();
        for channel in ["room:1", "room:2", "order:7"] {
            feed.subscribe(channel).await.unwrap();
        }

        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(pulse_presence::run(
            presence.clone(),
            api.clone(),
            grpc_listener,
            async {
                let _ = stopped.await;
            },
        ));
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        tokio::spawn(pulse_presence::run_http(
            presence.clone(),
            api,
            http_listener,
            async {
                let _ = http_stopped.await;
            },
        ));
        let grpc = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            presence,
            grpc,
            http,
            deliveries,
            _feed: feed,
            _stop: stop,
            _http_stop: http_stop,
            _server: server,
        }
    }

    pub fn client(&self, key: &str) -> ChannelsClient<InterceptedService<Channel, BearerKey>> {
        ChannelsClient::with_interceptor(self.grpc.clone(), BearerKey::new(key).unwrap())
    }

    /// The next publication (a resumed subscription is skipped).
    pub async fn delivery(&mut self) -> Delivery {
        super::next_publication(&mut self.deliveries).await
    }

    /// One HTTP/1.1 request over a fresh connection: the status and the body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.http).await.unwrap();
        let auth = key
            .map(|key| format!("authorization: Bearer {key}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        timeout(DEADLINE, stream.read_to_end(&mut response))
            .await
            .expect("an answer in time")
            .unwrap();
        let response = String::from_utf8(response).unwrap();
        let status: u16 = response[9..12].parse().unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}
