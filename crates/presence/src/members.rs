//! Channel membership: which connections are subscribed to which channel,
//! across every instance. It is what per-channel presence answers (who is
//! in a channel, with how many connections), what sends `join` and `leave`
//! exactly once per user transition, what enforces `max_subscribers`, and
//! what the `Channels` API lists.
//!
//! A gateway enters a membership when a connection subscribes
//! ([`Presence::enter_channel`]) and leaves it when the subscription ends
//! ([`Presence::leave_channel`]). With Redis each is one script on the
//! channel's bucket, so concurrent subscriptions on any number of instances
//! send one `join` for a user's first and one `leave` for their last; the
//! entry is also indexed under the instance in that bucket, so an instance
//! that dies without a word is cleaned by the reaper with the same leases as
//! user presence (one `leave` per user it was the last holder of), and an
//! instance that lost its lease puts back what it holds with
//! [`Presence::sync_members`]. `join` and `leave` travel as frames on the
//! channel's own publication channel, so they reach subscribers in order
//! with its publications. Personal channels are not memberships.

use std::collections::BTreeMap;

use pulse_protocol::{Channel, ChannelMember};

use crate::{Backend, Presence, PresenceError, SyncReport, check_id, check_user_id, observe};

mod memory;

pub(crate) use memory::MemberTable;

/// One connection's subscription to a channel, as a membership.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberRecord {
    /// The channel (not a personal one).
    pub channel: String,
    /// The subscribed connection.
    pub connection_id: String,
    /// Its user.
    pub user_id: String,
    /// The namespace's join/leave cap ([`crate::NamespaceOptions::join_leave_cap`]).
    pub join_leave_cap: u32,
}

/// How [`Presence::enter_channel`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// The connection is in, and it is its user's first in the channel
    /// (a `join` went out where the namespace sends them).
    Joined,
    /// The connection is in; its user was in already.
    Added,
    /// The connection was in already; nothing changed.
    Already,
    /// Refused: the channel holds `held` subscribers, its limit.
    Full {
        /// How many connections are subscribed.
        held: u64,
    },
}

/// How [`Presence::leave_channel`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The connection was not in the channel.
    NotIn,
    /// It left; its user still has another connection in.
    Removed,
    /// It left and it was its user's last (a `leave` went out where the
    /// namespace sends them).
    UserLeft,
}

/// Who is in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPresence {
    /// Every user with their subscribed connections, by user id; `None`
    /// when there are more users than were asked to be listed.
    pub users: Option<Vec<ChannelMember>>,
    /// How many users are subscribed.
    pub num_users: u64,
    /// How many connections are subscribed.
    pub num_connections: u64,
}

/// The most channels [`Presence::active_channels`] answers at once.
pub const MAX_LISTED_CHANNELS: usize = 10_000;

impl Presence {
    /// Records `record`'s subscription, refusing it when the channel holds
    /// `max_subscribers` already (0: no limit), in one atomic step with the
    /// `join` of the user's first subscription to it anywhere.
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] for a bad channel (a personal one
    /// included) or id; [`PresenceError::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn enter_channel(
        &self,
        record: &MemberRecord,
        instance_id: &str,
        max_subscribers: u32,
    ) -> Result<Entered, PresenceError> {
        check_member(record, instance_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => Ok(self.inner.members.enter(
                record,
                instance_id,
                max_subscribers,
                &self.inner.local_hub,
                store,
            )),
            Backend::Redis(store) => {
                observe(
                    "enter_channel",
                    store.enter_channel(record, instance_id, max_subscribers),
                )
                .await
            }
        }
    }

    /// Ends `connection_id`'s subscription to `channel`, with the `leave`
    /// of its user's last one anywhere.
    ///
    /// # Errors
    ///
    /// As [`Presence::enter_channel`].
    pub async fn leave_channel(
        &self,
        channel: &str,
        connection_id: &str,
        instance_id: &str,
    ) -> Result<Left, PresenceError> {
        check_channel(channel)?;
        check_id("connection_id", connection_id)?;
        check_id("instance_id", instance_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => Ok(self.inner.members.leave(
                channel,
                connection_id,
                instance_id,
                &self.inner.local_hub,
                store,
            )),
            Backend::Redis(store) => {
                observe(
                    "leave_channel",
                    store.leave_channel(channel, connection_id, instance_id),
                )
                .await
            }
        }
    }

    /// Who is in `channel` across every instance: the counts, and the users
    /// when there are at most `list_up_to`.
    ///
    /// # Errors
    ///
    /// As [`Presence::enter_channel`].
    pub async fn channel_presence(
        &self,
        channel: &str,
        list_up_to: u32,
    ) -> Result<ChannelPresence, PresenceError> {
        check_channel(channel)?;
        let mut presence = match &self.inner.backend {
            Backend::Memory(_) => self.inner.members.presence(channel, list_up_to),
            Backend::Redis(store) => {
                observe(
                    "channel_presence",
                    store.channel_presence(channel, list_up_to),
                )
                .await?
            }
        };
        if let Some(users) = &mut presence.users {
            users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        }
        Ok(presence)
    }

    /// The channels with subscribers whose names start with `prefix`, each
    /// with how many connections are subscribed, by name; at most `limit`
    /// (and [`MAX_LISTED_CHANNELS`]), with whether more matched.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn active_channels(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, bool), PresenceError> {
        let all: BTreeMap<String, u64> = match &self.inner.backend {
            Backend::Memory(_) => self.inner.members.channels(prefix),
            Backend::Redis(store) => {
                observe("active_channels", store.active_channels(prefix)).await?
            }
        };
        let limit = limit.clamp(1, MAX_LISTED_CHANNELS);
        let more = all.len() > limit;
        Ok((all.into_iter().take(limit).collect(), more))
    }

    /// Makes the store hold exactly the memberships `local` returns for
    /// `instance_id`, entering what is missing and leaving what is stale,
    /// with the `join`s and `leave`s that makes. `local` is called after the
    /// store's view is read, so a membership entered meanwhile is never
    /// taken for stale; the caller keeps memberships from changing while
    /// this runs (as the gateway's re-sync lock does). Nothing to repair in
    /// memory.
    ///
    /// # Errors
    ///
    /// As [`Presence::enter_channel`].
    pub async fn sync_members(
        &self,
        instance_id: &str,
        local: impl FnOnce() -> Vec<MemberRecord>,
    ) -> Result<SyncReport, PresenceError> {
        check_id("instance id", instance_id)?;
        match &self.inner.backend {
            Backend::Memory(_) => Ok(SyncReport::default()),
            Backend::Redis(store) => {
                observe("sync_members", store.sync_members(instance_id, local)).await
            }
        }
    }
}

/// A channel that can be a membership: valid, and not a personal channel.
fn check_channel(channel: &str) -> Result<(), PresenceError> {
    match Channel::parse(channel) {
        Ok(Channel::Named { .. }) => Ok(()),
        Ok(Channel::Personal { .. }) => Err(PresenceError::InvalidArgument(format!(
            "channel {channel:?}: a personal channel has no members"
        ))),
        Err(error) => Err(PresenceError::InvalidArgument(format!(
            "channel {channel:?}: {error}"
        ))),
    }
}

fn check_member(record: &MemberRecord, instance_id: &str) -> Result<(), PresenceError> {
    check_channel(&record.channel)?;
    check_user_id(&record.user_id)?;
    check_id("connection_id", &record.connection_id)?;
    check_id("instance_id", instance_id)
}
