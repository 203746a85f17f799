//! The presence-event scenarios (issue 17), and what they share: a
//! `Presence` client on a fresh gRPC channel, and the writer that makes
//! events the way a gateway does, through `pulse-presence`'s own library
//! (`register` / `unregister`: the same scripts, the same log entries, the
//! same bus messages), with ids of the sizes a gateway writes.
//!
//! `resume` times a `Watch` that reconnects with `since` beside a unary
//! call and a fresh `Watch`; `memory` reads what a retained event costs
//! Redis beside bare `XADD`s; `webhooks` times events to a webhook receiver
//! (`receiver`) beside the same events on a `Watch` stream.

use std::sync::Arc;

use anyhow::Context;
use pulse_presence::{ConnectionRecord, DEFAULT_LEASE_TTL, Presence, RedisOptions};
use pulse_protocol::{
    api_key::BearerKey,
    proto::presence::v1::{EventKind, presence_client::PresenceClient},
};
use tokio::task::JoinHandle;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::bearer;

pub mod memory;
pub mod receiver;
pub mod resume;
pub mod webhooks;

/// A `Presence` client of `pulse-presence`, with its API key.
pub type PresenceApi = PresenceClient<InterceptedService<Channel, BearerKey>>;

/// The instance id the events carry: as long as a gateway's default
/// (`<hostname>-<6 hex>`, README's `myhost-1a2b3c`), a little longer.
pub const INSTANCE_ID: &str = "bench-gateway-1a2b3c";

/// A `Presence` client on a new HTTP/2 connection to `url`
/// (`http://127.0.0.1:PORT`): what a consumer that reconnects makes.
pub async fn presence_api(url: &str, api_key: &str) -> anyhow::Result<PresenceApi> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    Ok(PresenceClient::with_interceptor(channel, bearer(api_key)?))
}

/// A connection id as a gateway makes them: a UUID v7 in text, 36 bytes.
pub fn connection_id(n: u64) -> String {
    let hex = format!(
        "{:032x}",
        0x0193_0000_0000_7000_8000_0000_0000_0000_u128 | u128::from(n)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A user id: the prefix and a six-digit number.
pub fn user_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:06}")
}

/// Makes presence events through `pulse-presence`'s library, as a gateway
/// registers and unregisters its connections, and renews the instance's
/// lease as a gateway does (every third of its ttl), so that
/// `pulse-presence`'s reaper never takes the connections away.
#[derive(Clone)]
pub struct Writer {
    presence: Presence,
    _renewal: Arc<Renewal>,
}

/// The lease renewal task, stopped with the last writer.
struct Renewal(JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Writer {
    /// A writer into `namespace` of the Redis at `url`, which does not
    /// subscribe to the events it makes.
    pub fn new(url: &str, namespace: &str) -> anyhow::Result<Self> {
        let mut options = RedisOptions::new(url).with_namespace(namespace);
        options.subscribe_events = false;
        let presence = Presence::redis(options).context("the event writer's presence store")?;
        let every = presence.lease_ttl().unwrap_or(DEFAULT_LEASE_TTL) / 3;
        let renewing = presence.clone();
        let renewal = tokio::spawn(async move {
            loop {
                let _ = renewing.renew_lease(INSTANCE_ID).await;
                tokio::time::sleep(every).await;
            }
        });
        Ok(Self {
            presence,
            _renewal: Arc::new(Renewal(renewal)),
        })
    }

    /// Registers `connection` of `user`: `connected`, and `online` when it
    /// is the user's first.
    pub async fn connect(&self, user: &str, connection: &str) -> anyhow::Result<()> {
        self.presence
            .register(&ConnectionRecord {
                connection_id: connection.to_owned(),
                user_id: user.to_owned(),
                instance_id: INSTANCE_ID.to_owned(),
                connected_at_ms: pulse_protocol::event::now_ms(),
            })
            .await?;
        Ok(())
    }

    /// Unregisters it: `disconnected`, and `offline` when it was the last.
    pub async fn disconnect(&self, user: &str, connection: &str) -> anyhow::Result<()> {
        self.presence.unregister(user, connection).await?;
        Ok(())
    }
}

/// A kind's name as a webhook body spells it.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Connected => "connected",
        EventKind::Disconnected => "disconnected",
        EventKind::Online => "online",
        EventKind::Offline => "offline",
        EventKind::Join => "join",
        EventKind::Leave => "leave",
        EventKind::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_a_gateways_sizes() {
        let id = connection_id(7);
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4);
        assert!(id.ends_with("000000000007"), "{id}");
        assert_ne!(connection_id(8), id);
        assert_eq!(user_id("u", 42), "u-000042");
    }
}
