//! A live connection's channel memberships: joining a channel (the
//! membership in presence, which counts toward `max_subscribers` and sends
//! `join` for the user's first, then this instance's feed), leaving it, and
//! the `presence` request.
//!
//! Joining and leaving hold the re-sync lock for reading, and the lease
//! task's re-sync holds it for writing, so a re-sync sees every connection's
//! table entry and presence membership agree: it never takes a membership
//! being entered for stale, nor puts back one being left.

use std::sync::Arc;

use pulse_presence::{ChannelName, Entered, MemberRecord, NamespaceOptions, namespaces::Resolved};
use pulse_protocol::{Channel, ErrorCode, RequestId, ServerMessage};
use tracing::debug;

use super::{
    Live,
    channels::{Refusal, not_subscribed, unknown_namespace},
};
use crate::cursor::Cursor;

impl Live {
    /// Subscribes this connection to `channel` (checked and authorized
    /// already): its membership first, refused when the channel holds
    /// `max_subscribers` (0: no limit), then this instance's feed.
    pub(super) async fn join_channel(
        &mut self,
        channel: ChannelName,
        options: &NamespaceOptions,
        max_subscribers: u32,
        cursor: Option<Arc<Cursor>>,
    ) -> Result<(), Refusal> {
        let shared = Arc::clone(&self.shared);
        let instance_id = shared.settings.instance_id.as_str();
        let _sync = shared.resync.read().await;
        let record = MemberRecord {
            channel: channel.to_string(),
            connection_id: self.connection_id.to_string(),
            user_id: self.user_id.to_string(),
            join_leave_cap: options.join_leave_cap(),
        };
        if let Entered::Full { held } = shared
            .presence
            .enter_channel(&record, instance_id, max_subscribers)
            .await?
        {
            crate::telemetry::limit_rejection("subscribers_per_channel");
            return Err(Refusal::new(
                ErrorCode::CHANNEL_FULL,
                format!("the channel holds {held} subscribers, the most its namespace allows"),
            ));
        }
        let subscriber = self.subscriber(cursor.clone());
        let channel = match shared.channels.subscribe(&channel, subscriber).await {
            Ok(name) => name,
            Err(error) => {
                if let Err(error) = shared
                    .presence
                    .leave_channel(&channel, &self.connection_id, instance_id)
                    .await
                {
                    debug!(connection_id = %self.connection_id, %channel, %error, "membership of a failed subscription not removed; the next re-sync removes it");
                }
                return Err(error.into());
            }
        };
        let state = self.state();
        if let Some(cursor) = cursor {
            state.cursors.push((channel.clone(), cursor));
        }
        // Grown one at a time (the allocator grows a block in place within
        // its size class): a subscription is rare next to what it delivers,
        // and doubling would hold a third more than the list on average.
        state.subscribed.reserve_exact(1);
        state.subscribed.push(channel);
        Ok(())
    }

    /// Ends this connection's subscription to `channel` (taken off its list
    /// already): the feed, then the membership, with `leave` for the
    /// user's last. A membership presence could not remove is left to the
    /// next re-sync (after an outage, or every `--resync-interval`).
    pub(super) async fn leave_channel(&self, channel: &ChannelName) {
        let shared = &self.shared;
        let _sync = shared.resync.read().await;
        shared.channels.unsubscribe(channel, &self.mailbox);
        if let Err(error) = shared
            .presence
            .leave_channel(channel, &self.connection_id, &shared.settings.instance_id)
            .await
        {
            debug!(connection_id = %self.connection_id, %channel, %error, "membership not removed; the next re-sync removes it");
        }
    }

    /// Ends every subscription of a connection that is closing: the feed
    /// subscriptions at once, then the memberships one by one. The caller
    /// holds the re-sync's read lock.
    pub(super) async fn leave_every_channel(&self) {
        let Some(state) = &self.channels else {
            return;
        };
        let shared = &self.shared;
        if state.personal.is_some() {
            let personal = Channel::personal(&self.user_id);
            shared.channels.unsubscribe(&personal, &self.mailbox);
        }
        for channel in &state.subscribed {
            shared.channels.unsubscribe(channel, &self.mailbox);
        }
        // One membership at a time, in one boxed future: what a close
        // holds is one removal in flight (a few kilobytes) whatever its
        // channels, where all at once held a few kilobytes per channel, and
        // every session closes at once when a load balancer drops every
        // socket. Boxed so that the session's task does not grow by it.
        // The first failure ends it (Redis is away or slow: the others would
        // each wait out the same timeout, and the close's handshake after
        // them); the next re-sync removes what is left.
        let instance_id = shared.settings.instance_id.as_str();
        Box::pin(async {
            for (done, channel) in state.subscribed.iter().enumerate() {
                if let Err(error) = shared
                    .presence
                    .leave_channel(channel, &self.connection_id, instance_id)
                    .await
                {
                    let left = state.subscribed.len() - done;
                    debug!(connection_id = %self.connection_id, left, %error, "memberships not removed; the next re-sync removes them");
                    break;
                }
            }
        })
        .await;
    }

    /// Who is in a channel this connection is subscribed to, across every
    /// instance: the users (up to the namespace's `presence_max_users`)
    /// and the counts.
    pub(super) async fn presence(
        &self,
        id: RequestId,
        channel: String,
    ) -> Result<ServerMessage, Refusal> {
        let parsed = Channel::parse(&channel)
            .map_err(|error| Refusal::new(ErrorCode::INVALID_CHANNEL, error.to_string()))?;
        let options = match self.shared.settings.namespaces.resolve(&parsed) {
            None => return Err(unknown_namespace(&parsed)),
            Some(Resolved::Personal(_)) => {
                return Err(Refusal::new(
                    ErrorCode::PRESENCE_DISABLED,
                    "a personal channel has no channel presence (the Presence API tells a user's connections)",
                ));
            }
            Some(Resolved::Namespace(options)) => options,
        };
        if !options.presence {
            return Err(Refusal::new(
                ErrorCode::PRESENCE_DISABLED,
                "per-channel presence is off for this namespace (presence = false)",
            ));
        }
        if !self.is_subscribed(&channel) {
            return Err(not_subscribed());
        }
        let presence = self
            .shared
            .presence
            .channel_presence(&channel, options.presence_max_users)
            .await?;
        Ok(ServerMessage::Presence {
            id,
            channel,
            users: presence.users,
            num_users: presence.num_users,
            num_connections: presence.num_connections,
        })
    }
}
