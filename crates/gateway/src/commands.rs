//! The commands internal services address to this instance (`Send`,
//! `Disconnect`), carried out on its live connections.

use std::sync::Arc;

use pulse_protocol::{CloseCode, Command, ErrorCode, command::message_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{PushError, shared::Shared};

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
                let frame: Arc<str> = message_frame(&data).into();
                shared.manager.for_each_connection(&user_id, |connection| {
                    match connection.mailbox.push(frame.clone(), shared.settings.outbound_queue) {
                        Ok(()) => {}
                        Err(PushError::Full) => {
                            shared.metrics.queue_overflows.increment(1);
                            if connection.mailbox.kick(
                                CloseCode::TooMany,
                                ErrorCode::SLOW_CONSUMER,
                                "too many messages waiting: the connection does not read fast enough",
                            ) {
                                warn!(%user_id, connection_id = %connection.connection_id, "outbound queue full; closing a slow consumer");
                            }
                        }
                        // The session is ending; at most once means it goes without.
                        Err(PushError::Closing) => {}
                    }
                });
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
