//! The commands internal services address to this instance (`Send`,
//! `Disconnect`), carried out on its live connections.

use std::sync::Arc;

use pulse_presence::ChannelName;
use pulse_protocol::{Channel, CloseCode, Command, ErrorCode, channel::publication_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    channels::{deliver, overflowed},
    shared::Shared,
};

/// Carries out the commands internal services address to this instance,
/// until `sessions_over`: through the drain, for the sockets still open.
pub(crate) async fn run_commands(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    sessions_over: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            () = sessions_over.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
        };
        match command {
            Command::Send { user_id, data } => {
                // Encoded once, shared by every connection of the user.
                let frame: Arc<str> =
                    publication_frame(&Channel::personal(&user_id), None, &data).into();
                shared.manager.for_each_connection(&user_id, |connection| {
                    let capacity = shared.settings.outbound_queue;
                    if deliver(&connection.mailbox, &frame, capacity, &shared.metrics) {
                        warn!(%user_id, connection_id = %connection.connection_id, "outbound queue full; closing a slow consumer");
                    }
                });
            }
            Command::Subscribe { user_id, channel } => {
                server_subscription(&shared, &user_id, channel.into(), true);
            }
            Command::Unsubscribe { user_id, channel } => {
                server_subscription(&shared, &user_id, channel.into(), false);
            }
            Command::Disconnect {
                user_id,
                connection_id,
                reason,
            } => {
                shared.manager.for_each_connection(&user_id, |connection| {
                    if connection_id
                        .as_deref()
                        .is_none_or(|id| id == &*connection.connection_id)
                    {
                        info!(%user_id, connection_id = %connection.connection_id, %reason, "disconnect requested");
                        connection.mailbox.kick(
                            CloseCode::Forbidden,
                            ErrorCode::DISCONNECTED,
                            reason.clone(),
                        );
                    }
                });
            }
        }
    }
}

/// Hands a server-side subscription (or its end) to every connection of
/// the user here; the session carries it out in order with its messages.
fn server_subscription(shared: &Shared, user_id: &str, channel: ChannelName, subscribe: bool) {
    shared.manager.for_each_connection(user_id, |connection| {
        let capacity = shared.settings.outbound_queue;
        let pushed = connection
            .mailbox
            .push_subscription(channel.clone(), subscribe, capacity);
        if overflowed(&connection.mailbox, pushed, &shared.metrics) {
            warn!(%user_id, connection_id = %connection.connection_id, "outbound queue full; closing a slow consumer");
        }
    });
}
