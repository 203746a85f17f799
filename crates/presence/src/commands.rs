//! Acting on a user's connections wherever they are: `send` and `disconnect`
//! go to the instances that hold the connections, which listen with
//! [`Presence::listen_commands`].
//!
//! Delivery is at most once. A command reaches the instances that hold the
//! user's connections at the moment it is sent; nothing is stored for a user
//! who is offline, and an instance that is down or too far behind does not
//! get it. The counts `send` and `disconnect` return are honest about the
//! last: an instance whose queue is full takes nothing and counts none, and
//! what it counted it gets (see `bus/backlog.rs`).

use std::time::Duration;

use pulse_protocol::Command;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::{
    Backend, Presence, PresenceError, bus::CommandListener, check_id, check_user_id, observe,
};

/// How many commands may wait for this instance's gateway; when they are
/// this many, the instance takes no more (and is counted as not reached)
/// until half are gone.
const COMMAND_CAPACITY: usize = 16_384;
/// The largest `data` a `send` takes, in bytes of JSON text.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// The longest disconnect reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// The longest block [`Presence::block`] takes: 30 days.
pub const MAX_BLOCK: Duration = Duration::from_secs(30 * 24 * 3600);

impl Presence {
    /// Starts receiving the commands addressed to `instance_id`, the instance
    /// this process serves. A later call replaces the earlier listener.
    ///
    /// With Redis, the bus subscribes to this instance's command channel (and
    /// resubscribes after every reconnection); in memory, every command of this
    /// process comes here.
    pub fn listen_commands(&self, instance_id: &str) -> mpsc::Receiver<Command> {
        let (sender, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let channel = match &self.inner.backend {
            Backend::Memory(_) => String::new(),
            Backend::Redis(store) => store.keys().commands(instance_id),
        };
        self.inner
            .commands
            .send_replace(Some(CommandListener { channel, sender }));
        receiver
    }

    /// Completes once commands for `instance_id` reach this process: at once
    /// in memory; with Redis, once the bus has subscribed to the instance's
    /// command channel (after [`Presence::listen_commands`]). A gateway waits
    /// for it before accepting sockets, so that a `Send` to a client it has
    /// greeted cannot find nobody listening. While Redis is away it does not
    /// complete; bound the wait.
    pub async fn commands_ready(&self, instance_id: &str) {
        let Backend::Redis(store) = &self.inner.backend else {
            return;
        };
        let channel = store.keys().commands(instance_id);
        let mut live = self.inner.commands_live.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = live
            .wait_for(|subscribed| subscribed.as_deref() == Some(channel.as_str()))
            .await;
    }

    /// Delivers `data` as a publication on the user's personal channel
    /// (`{"type":"publication","channel":"#<user_id>","data":...}`) to every open
    /// connection of `user_id`; returns how many connections it was handed
    /// to an instance for (0 when the user is offline).
    pub async fn send(&self, user_id: &str, data: Box<RawValue>) -> Result<u64, PresenceError> {
        check_user_id(user_id)?;
        if data.get().len() > MAX_DATA_BYTES {
            return Err(PresenceError::InvalidArgument(format!(
                "data is {} bytes; at most {MAX_DATA_BYTES} are sent",
                data.get().len()
            )));
        }
        if self.personal_history().is_some() {
            // A publication on the personal channel, with an offset.
            let channel = pulse_protocol::Channel::personal(user_id);
            let options = crate::PublishOptions::default();
            return Ok(Box::pin(self.publish(&channel, &data, &options))
                .await?
                .instances);
        }
        self.send_command(user_id, data).await
    }

    /// `Send` without a personal history: a command to the instances that
    /// hold the user's connections.
    pub(crate) async fn send_command(
        &self,
        user_id: &str,
        data: Box<RawValue>,
    ) -> Result<u64, PresenceError> {
        check_user_id(user_id)?;
        let command = Command::Send {
            user_id: user_id.to_owned(),
            data,
        };
        self.dispatch(command, None).await
    }

    /// Closes the connections of `user_id` (or only `connection_id`) with an
    /// `error` carrying `reason`, then 4403; returns how many were asked to close.
    pub async fn disconnect(
        &self,
        user_id: &str,
        connection_id: Option<&str>,
        reason: &str,
    ) -> Result<u64, PresenceError> {
        check_user_id(user_id)?;
        if let Some(connection_id) = connection_id {
            check_id("connection id", connection_id)?;
        }
        check_reason(reason)?;
        let command = Command::Disconnect {
            user_id: user_id.to_owned(),
            connection_id: connection_id.map(str::to_owned),
            reason: reason.to_owned(),
        };
        self.dispatch(command, connection_id).await
    }

    /// Refuses `user_id`'s new connections on every instance for `duration`
    /// ([`Presence::admit`] answers [`Admission::Blocked`] with `reason`);
    /// it does not close the user's open ones, which is
    /// [`Presence::disconnect`]'s. A new block replaces the previous one.
    /// Enforced where registration happens, in Redis, so it holds on every
    /// instance at once; while Redis is unreachable no registration, and so
    /// no block, is checked.
    ///
    /// [`Admission::Blocked`]: crate::Admission::Blocked
    pub async fn block(
        &self,
        user_id: &str,
        duration: Duration,
        reason: &str,
    ) -> Result<(), PresenceError> {
        check_user_id(user_id)?;
        if duration.is_zero() || duration > MAX_BLOCK {
            return Err(PresenceError::InvalidArgument(format!(
                "block_for must be positive and at most {} days, got {duration:?}",
                MAX_BLOCK.as_secs() / 86_400
            )));
        }
        check_reason(reason)?;
        match &self.inner.backend {
            Backend::Memory(store) => {
                store.block(user_id, duration, reason);
                Ok(())
            }
            Backend::Redis(store) => observe("block", store.block(user_id, duration, reason)).await,
        }
    }

    pub(crate) async fn dispatch(
        &self,
        command: Command,
        only: Option<&str>,
    ) -> Result<u64, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => {
                let count = store.count_connections(command.user_id(), only);
                if count == 0 {
                    return Ok(0);
                }
                let listener = self.inner.commands.borrow().clone();
                let Some(listener) = listener else {
                    return Ok(0);
                };
                Ok(match listener.sender.try_send(command) {
                    Ok(()) => count,
                    Err(_) => 0,
                })
            }
            Backend::Redis(store) => observe("command", store.dispatch(&command, only)).await,
        }
    }
}

fn check_reason(reason: &str) -> Result<(), PresenceError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(PresenceError::InvalidArgument(format!(
            "reason is {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    Ok(())
}
