//! Admitting a new connection: the per-user limit across every instance
//! and blocks, checked where registration happens (`register.lua`, or the
//! in-memory store's lock), in the same step that registers.

use std::time::Duration;

use crate::{Backend, ConnectionRecord, Presence, PresenceError, check_id, check_user_id, observe};

/// How [`Presence::admit`] answered a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The connection is registered (or already was).
    Admitted {
        /// The channels the server API subscribed the user to
        /// ([`Presence::subscribe_user`]), read in the same atomic step as
        /// the registration: a `Subscribe` made concurrently is either listed
        /// here or finds the connection registered and reaches it.
        server_subscriptions: Vec<String>,
    },
    /// Refused: the user already holds `held` connections, at least the
    /// limit asked, counting every instance. Nothing changed.
    TooMany {
        /// How many connections the user holds.
        held: u64,
    },
    /// Refused: the user is blocked ([`Presence::block`]) for `remaining`
    /// more. Nothing changed.
    Blocked {
        /// The reason the block was given with.
        reason: String,
        /// How long the block lasts from now.
        remaining: Duration,
    },
}

impl Presence {
    /// Registers a new connection unless the user is blocked
    /// ([`Presence::block`]) or already holds `max_per_user` connections
    /// across every instance (0: no limit).
    ///
    /// The count and the registration are one atomic step (one script on
    /// the user's bucket with Redis, one lock in memory), so any number of
    /// concurrent admissions on any number of instances admit exactly up to
    /// the limit. A connection id the user already has is
    /// [`Admission::Admitted`] again without a change, as with
    /// [`Presence::register`], which records a connection unconditionally
    /// (for connections that are open already, as a re-sync does).
    pub async fn admit(
        &self,
        record: &ConnectionRecord,
        max_per_user: u64,
    ) -> Result<Admission, PresenceError> {
        check_user_id(&record.user_id)?;
        check_id("connection_id", &record.connection_id)?;
        check_id("instance_id", &record.instance_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.admit(record, max_per_user)),
            // Labelled as the registration it is, so dashboards keep one series.
            Backend::Redis(store) => observe("register", store.admit(record, max_per_user)).await,
        }
    }
}
