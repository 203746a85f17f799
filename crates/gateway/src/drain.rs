//! The drain: how the live connections are closed once shutdown begins, and
//! what the gateway reports about it.

use std::sync::Arc;

use pulse_protocol::{CloseCode, ErrorCode};
use rand::seq::SliceRandom;

use crate::{Mailbox, shared::Shared};

/// What happened during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Sockets open when shutdown began.
    pub open_at_shutdown: usize,
    /// Whether every session finished before the drain timeout.
    pub completed: bool,
}

/// Closes every live connection with `going_away`, evenly spread over
/// `--drain-spread` after shutdown begins (the k-th of n at k/n of it), in a
/// random order, so that clients reconnect at a steady rate rather than all
/// in the same second. A connection serves normally until its turn: still
/// registered, renewed by the lease, reached by commands. Connections that
/// go live after this list was taken see the shutdown themselves.
pub(crate) async fn drain(shared: Arc<Shared>) {
    let mut mailboxes: Vec<Arc<Mailbox>> = shared
        .manager
        .snapshot()
        .into_iter()
        .map(|(_, connection)| connection.mailbox)
        .collect();
    mailboxes.shuffle(&mut rand::rng());
    let count = u32::try_from(mailboxes.len()).unwrap_or(u32::MAX);
    let spread = shared.settings.drain_spread;
    let started = tokio::time::Instant::now();
    for (k, mailbox) in (0_u32..).zip(mailboxes) {
        tokio::time::sleep_until(started + spread * k / count).await;
        mailbox.kick(
            CloseCode::GoingAway,
            ErrorCode::GOING_AWAY,
            "server shutting down",
        );
    }
}
