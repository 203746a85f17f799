//! The conformance echo (`--echo-path`): a socket with the gateway's
//! framing and nothing else.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::{
    shared::Shared,
    socket::{End, Message, Socket},
};

/// The conformance echo (`--echo-path`): no authentication, no presence;
/// every message comes back as it came, through the same framing, limits
/// and closing as a live connection.
pub(crate) async fn echo(stream: TcpStream, shared: Arc<Shared>) {
    let mut socket = Socket::new(stream, &shared.settings);
    let limit = shared.settings.write_timeout;
    let end = loop {
        let incoming = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break End::going_away(),
            incoming = socket.reader().next() => incoming,
        };
        let sent = match socket.control(incoming, limit).await {
            Ok(Some(Message::Text(text))) => socket.send_text(&text, limit).await,
            Ok(Some(Message::Binary(data))) => socket.send_binary(&data, limit).await,
            Ok(None) => Ok(()),
            Err(end) => break end,
        };
        if let Err(end) = sent {
            break end;
        }
    };
    socket.finish(end, limit).await;
}
