//! A store served over gRPC on a loopback port, as `pulse-presence` serves it.

use std::{net::SocketAddr, time::Duration};

use pulse_presence::{ApiConfig, Presence};
use pulse_protocol::{api_key::BearerKey, proto::presence::v1::presence_client::PresenceClient};
use tokio::{
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
    time::{sleep, timeout},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::DEADLINE;

/// A `Presence` client that presents an API key.
pub type Client = PresenceClient<InterceptedService<Channel, BearerKey>>;

/// A served store: its address, a plaintext channel to it, the stop switch
/// and the server task.
pub struct Served {
    pub addr: SocketAddr,
    /// Connects on first use, so a server that speaks only TLS is not
    /// dialled in plaintext unless a test asks.
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    /// Serves `presence` with `api` on `127.0.0.1:0`.
    pub async fn start(presence: Presence, api: ApiConfig) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(pulse_presence::run(presence, api, listener, async {
            let _ = stopped.await;
        }));
        // The listener is already bound, so connecting cannot race the server.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Self {
            addr,
            channel,
            stop,
            task,
        }
    }

    /// The plaintext channel every client here shares.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A client on [`Served::channel`] that presents `key`.
    pub fn client(&self, key: &str) -> Client {
        PresenceClient::with_interceptor(self.channel(), BearerKey::new(key).unwrap())
    }

    /// The health of `service` (`""`: the server as a whole).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = HealthClient::new(self.channel())
            .check(request)
            .await
            .unwrap();
        response.into_inner().status()
    }

    /// Polls the health of `service` until it is `status`.
    pub async fn wait_health(&self, service: &str, status: ServingStatus) {
        let polls = async {
            while self.health(service).await != status {
                sleep(Duration::from_millis(50)).await;
            }
        };
        timeout(DEADLINE, polls)
            .await
            .unwrap_or_else(|_| panic!("health of {service:?} never became {status:?}"));
    }

    /// Stops the server and waits (within [`DEADLINE`]) for it to end cleanly.
    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
