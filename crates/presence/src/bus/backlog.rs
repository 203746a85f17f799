//! Commands for this instance that its gateway's queue had no room for:
//! kept, never dropped, because Redis has already counted them.
//!
//! `SPUBLISH` answers how many subscribers a command was pushed to, and that
//! is what `Send` and `Disconnect` return: a command the bus receives has
//! been counted as delivered. So when the gateway's queue is full the bus
//! keeps what arrives here, in order, and unsubscribes from the instance's
//! channel: what is published from then on finds no subscriber and is
//! counted as not delivered. Once the backlog has gone into the queue and
//! the queue has room again, the bus subscribes again. The backlog holds
//! only what Redis had pushed before it handled the unsubscribe: commands
//! that were already in this process's memory (in the connection's push
//! queue), so it adds no unbounded growth of its own.

use std::collections::VecDeque;

use pulse_protocol::Command;
use tokio::sync::mpsc::{self, OwnedPermit};

use super::CommandListener;

/// How much of the queue must be free before the instance takes commands
/// again: half, so that a gateway that is just keeping up does not flap
/// between subscribed and not on every command.
const RESUME_AT: usize = 2;

/// What [`Backlog::deliver`] did with a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivered {
    /// It is in the listener's queue (or the listener is gone).
    Queued,
    /// The queue was full, or older commands wait: it waits in the backlog.
    Held,
}

/// The commands waiting for room in one listener's queue, oldest first.
#[derive(Default)]
pub(super) struct Backlog {
    /// The command channel they came on.
    channel: String,
    commands: VecDeque<Command>,
}

impl Backlog {
    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// How many commands wait.
    pub(super) fn len(&self) -> usize {
        self.commands.len()
    }

    /// Forgets commands that came for another channel than `listener`'s: the
    /// instance they were for no longer listens in this process.
    pub(super) fn keep_for(&mut self, listener: Option<&CommandListener>) {
        if listener.is_none_or(|listener| listener.channel != self.channel) {
            self.commands.clear();
        }
    }

    /// Hands `command` to the listener's queue, or keeps it when the queue
    /// is full or older commands wait (so that order is kept).
    pub(super) fn deliver(&mut self, listener: &CommandListener, command: Command) -> Delivered {
        if self.commands.is_empty() {
            match listener.sender.try_send(command) {
                Ok(()) => return Delivered::Queued,
                Err(mpsc::error::TrySendError::Full(command)) => {
                    self.channel.clone_from(&listener.channel);
                    self.commands.push_back(command);
                }
                // The listener was dropped; nobody on this instance wants commands.
                Err(mpsc::error::TrySendError::Closed(_)) => return Delivered::Queued,
            }
        } else {
            self.commands.push_back(command);
        }
        Delivered::Held
    }

    /// Moves the oldest waiting command into the room `permit` holds.
    pub(super) fn release(&mut self, permit: OwnedPermit<Command>) {
        if let Some(command) = self.commands.pop_front() {
            permit.send(command);
        }
    }
}

/// Completes with room for one command in `listener`'s queue; never while
/// there is no listener.
pub(super) async fn room_for_one(
    listener: Option<CommandListener>,
) -> Option<OwnedPermit<Command>> {
    match listener {
        Some(listener) => listener.sender.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// Completes once `listener`'s queue has room for half its capacity: when
/// the instance may take commands again.
pub(super) async fn room_to_resume(listener: Option<CommandListener>) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    let room = (listener.sender.max_capacity() / RESUME_AT).max(1);
    // The permits only measure the room; dropping them gives it back.
    drop(listener.sender.reserve_many(room).await);
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn command(n: u32) -> Command {
        Command::Send {
            user_id: "alice".into(),
            data: RawValue::from_string(n.to_string()).unwrap(),
        }
    }

    fn number(command: Command) -> String {
        match command {
            Command::Send { data, .. } => data.get().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_commands_in_order_and_drops_none() {
        let (sender, mut receiver) = mpsc::channel(2);
        let listener = CommandListener {
            channel: "c".into(),
            sender,
        };
        let mut backlog = Backlog::default();
        assert_eq!(backlog.deliver(&listener, command(1)), Delivered::Queued);
        assert_eq!(backlog.deliver(&listener, command(2)), Delivered::Queued);
        assert_eq!(backlog.deliver(&listener, command(3)), Delivered::Held);
        assert_eq!(number(receiver.recv().await.unwrap()), "1");
        // Room again, but an older command waits: the new one queues behind it.
        assert_eq!(backlog.deliver(&listener, command(4)), Delivered::Held);
        assert_eq!(backlog.len(), 2);
        while !backlog.is_empty() {
            let permit = room_for_one(Some(listener.clone())).await.unwrap();
            backlog.release(permit);
            if backlog.len() == 1 {
                assert_eq!(number(receiver.recv().await.unwrap()), "2");
            }
        }
        let rest: Vec<String> = [
            receiver.recv().await.unwrap(),
            receiver.recv().await.unwrap(),
        ]
        .into_iter()
        .map(number)
        .collect();
        assert_eq!(rest, ["3", "4"]);
        // A listener for another channel does not get them.
        backlog.deliver(&listener, command(5));
        backlog.deliver(&listener, command(6));
        backlog.deliver(&listener, command(7));
        assert_eq!(backlog.len(), 1);
        backlog.keep_for(Some(&CommandListener {
            channel: "other".into(),
            sender: listener.sender.clone(),
        }));
        assert!(backlog.is_empty());
    }
}
