//! The fan-out's connections to Redis nodes: one RESP3 connection per
//! address, made on first use, whose pushes a small task forwards to the
//! fan-out tagged with the connection's generation.

use std::sync::Arc;

use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, aio::MultiplexedConnection};
use tokio::{sync::mpsc, time::timeout};

use super::{CONNECT_TIMEOUT, Fanout, Node, NodeEvent, PING_TIMEOUT, unavailable};
use crate::PresenceError;

impl Fanout {
    /// The connection to `address`, made if there is none.
    pub(super) async fn connection(
        &mut self,
        address: &Arc<str>,
    ) -> Result<&MultiplexedConnection, PresenceError> {
        if !self.nodes.contains_key(address) {
            let info = self.info_for(address)?;
            let (pushes, mut receiver) = mpsc::unbounded_channel();
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(PING_TIMEOUT))
                .set_push_sender(pushes);
            let client = redis::Client::open(info).map_err(|e| unavailable(&e))?;
            let connection = match timeout(
                CONNECT_TIMEOUT,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    self.next_seed += 1;
                    return Err(unavailable(&error));
                }
                Err(_) => {
                    self.next_seed += 1;
                    return Err(PresenceError::Unavailable(format!(
                        "no connection to {address} within {CONNECT_TIMEOUT:?}"
                    )));
                }
            };
            self.generation += 1;
            let generation = self.generation;
            let events = self.events.clone();
            let owner = address.to_string();
            tokio::spawn(async move {
                while let Some(push) = receiver.recv().await {
                    if events
                        .send((owner.clone(), generation, NodeEvent::Push(push)))
                        .is_err()
                    {
                        return;
                    }
                }
                drop(events.send((owner, generation, NodeEvent::Closed)));
            });
            self.nodes.insert(
                address.clone(),
                Node {
                    generation,
                    connection,
                    channels: 0,
                },
            );
        }
        Ok(&self.nodes[address].connection)
    }

    /// Connection settings for `address`: a seed's own, or a seed's with
    /// the address replaced (TLS and credentials kept).
    fn info_for(&self, address: &str) -> Result<ConnectionInfo, PresenceError> {
        if let Some(seed) = self.seeds.iter().find(|seed| address_of(seed) == address) {
            return Ok(seed.clone());
        }
        let bad =
            || PresenceError::Unavailable(format!("cannot follow a redirection to {address:?}"));
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let seed = &self.seeds[0];
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        Ok(seed.clone().set_addr(addr))
    }
}

/// `host:port` of a node, as `MOVED` names it.
pub(super) fn address_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}
