//! The whole stack in one call: a private Redis, `pulse-auth`,
//! `pulse-presence` and two gateways that use them, in a namespace of their own.

use crate::{Grpc, RedisServer, Service, presence_client, unique_namespace};

/// A running stack; every process (and the Redis) stops when it is dropped.
pub struct Stack {
    /// Kept for its lifetime: the Redis every service here uses.
    pub redis: RedisServer,
    /// `pulse-auth`, which the gateways validate tokens with.
    pub auth_service: Service,
    /// `pulse-presence`, on the same Redis and namespace as the gateways.
    pub presence_service: Service,
    /// Two gateways, instances `gw-a` and `gw-b`, validating tokens through
    /// `pulse-auth` and draining over 300 ms.
    pub gateways: Vec<Service>,
    /// A gRPC client of `pulse-presence`.
    pub presence: Grpc,
    /// The Redis key namespace of every service here.
    pub namespace: String,
}

impl Stack {
    /// Starts Redis, `pulse-auth`, `pulse-presence` and the two gateways.
    pub async fn start() -> Self {
        let redis = RedisServer::start().await;
        let namespace = unique_namespace();
        let auth = Service::auth().await;
        let presence = Service::presence(redis.url(), &namespace, &[]).await;
        let auth_url = auth.grpc_url();
        let mut gateways = Vec::new();
        for instance in ["gw-a", "gw-b"] {
            gateways.push(
                Service::start(
                    "pulse-gateway",
                    &[
                        "--listen",
                        "127.0.0.1:0",
                        "--auth-url",
                        &auth_url,
                        "--redis-url",
                        redis.url(),
                        "--redis-namespace",
                        &namespace,
                        "--instance-id",
                        instance,
                        "--drain-spread",
                        "300ms",
                    ],
                )
                .await,
            );
        }
        let client = presence_client(presence.grpc_url()).await;
        Self {
            redis,
            auth_service: auth,
            presence_service: presence,
            gateways,
            presence: client,
            namespace,
        }
    }
}
