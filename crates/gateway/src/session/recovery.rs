//! A live connection's streams, for namespaces with history: the
//! `subscribed` answer with the stream's position and, for a `subscribe`
//! with `since`, the publications missed (read after the subscription is
//! live, then the held live ones queued after them: see `cursor.rs`); the
//! news that a live stream broke (`unsubscribed`, code `resubscribe`); and
//! the `subscribe` that follows it, which recovers without entering the
//! channel again (the membership held all along, so nobody sees a
//! `leave`/`join`).

use std::sync::Arc;

use pulse_presence::{ChannelName, HistoryOptions};
use pulse_protocol::{
    ErrorCode, RequestId, ServerMessage, StreamPosition,
    history::{Recovery, subscribed_frame},
};
use tracing::{debug, warn};

use super::{Live, channels::Refusal};
use crate::{
    cursor::{Cursor, Released},
    socket::End,
};

/// A `subscribed` answer, and what to do once it is written.
pub(super) struct Subscribed {
    pub(super) frame: String,
    pub(super) release: Option<Release>,
}

/// A recovering cursor to release once the answer is written.
pub(super) struct Release {
    channel: ChannelName,
    cursor: Arc<Cursor>,
    pub(super) top: StreamPosition,
}

impl Subscribed {
    /// The answer for a channel that keeps no history: `recovered: false`
    /// for a `since` (nothing can be recovered).
    pub(super) fn without_history(id: Option<RequestId>, channel: &str, since: bool) -> Self {
        let lost = Recovery {
            recovered: false,
            publications: Vec::new(),
        };
        Self {
            frame: subscribed_frame(id, channel, None, since.then_some(&lost)),
            release: None,
        }
    }
}

impl Live {
    /// With personal history: subscribes this connection to its user's
    /// personal channel (the instance's feed holds one subscription per
    /// user with connections here) and reads where its stream is, for
    /// `connected`. Redis away closes with 1013 (try again later): a
    /// connection that could not hear its personal channel would miss what
    /// `Send` publishes to it, silently.
    pub(super) async fn open_personal(&mut self, history: HistoryOptions) -> Result<Release, End> {
        let channel: ChannelName = pulse_protocol::Channel::personal(&self.user_id).into();
        let cursor = Arc::new(Cursor::recovering());
        let subscriber = self.subscriber(Some(cursor.clone()));
        let shared = Arc::clone(&self.shared);
        let opened = match shared.channels.subscribe(&channel, subscriber).await {
            Ok(_) => {
                let read = shared.presence.read_stream(&channel, history, None).await;
                if read.is_err() {
                    shared.channels.unsubscribe(&channel, &self.mailbox);
                }
                read
            }
            Err(error) => Err(error),
        };
        match opened {
            Ok(read) => {
                self.state().personal = Some(cursor.clone());
                Ok(Release {
                    channel,
                    cursor,
                    top: read.top,
                })
            }
            Err(error) => {
                warn!(user_id = %self.user_id, %error, "could not open the personal channel's stream; closing with 1013");
                Err(End::fail(
                    pulse_protocol::CloseCode::TryAgainLater,
                    ErrorCode::UNAVAILABLE,
                    "the personal channel cannot be subscribed right now (Redis away); try again",
                ))
            }
        }
    }

    /// A `subscribe` to the connection's own personal channel, where it
    /// keeps history: the position, and what was missed since `since`. On
    /// failure the stream stays paused and the client is told to subscribe
    /// again.
    pub(super) async fn recover_personal(
        &mut self,
        id: RequestId,
        channel: &str,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, Refusal> {
        let cursor = self
            .channels
            .as_ref()
            .and_then(|state| state.personal.clone());
        let (Some(cursor), Some(history)) = (cursor, self.shared.presence.personal_history())
        else {
            return Ok(Subscribed::without_history(
                Some(id),
                channel,
                since.is_some(),
            ));
        };
        let channel: ChannelName = channel.into();
        cursor.recover();
        match self
            .open_stream(Some(id), &channel, history, since, cursor.clone())
            .await
        {
            Ok(subscribed) => Ok(subscribed),
            Err(refusal) => {
                // Recovering or paused by a hole found meanwhile: either way
                // nobody has told the client yet (the fan-out tells only live
                // cursors).
                cursor.pause();
                let capacity = self.shared.settings.outbound_queue;
                let pushed = self.mailbox.push_reposition(channel, capacity);
                crate::channels::overflowed(&self.mailbox, pushed, &self.shared.metrics);
                Err(refusal)
            }
        }
    }

    /// Lets the held live publications after `release`'s position go; when
    /// the live stream broke meanwhile, tells the client (after the answer
    /// queued before this).
    pub(super) fn release(&self, release: &Release) {
        let shared = &self.shared;
        shared.channels.note_top(&release.channel, &release.top);
        let capacity = shared.settings.outbound_queue;
        let pushed = match release
            .cursor
            .release(release.top.offset, &self.mailbox, capacity)
        {
            Released::Live => Ok(()),
            Released::Paused => self
                .mailbox
                .push_reposition(release.channel.clone(), capacity),
            Released::Overflowed => Err(crate::mailbox::PushError::Full),
        };
        crate::channels::overflowed(&self.mailbox, pushed, &shared.metrics);
    }

    /// Reads the stream of `channel` (subscribed, its cursor recovering):
    /// the answer, with what was missed since `since`.
    pub(super) async fn open_stream(
        &self,
        id: Option<RequestId>,
        channel: &ChannelName,
        history: HistoryOptions,
        since: Option<&StreamPosition>,
        cursor: Arc<Cursor>,
    ) -> Result<Subscribed, Refusal> {
        let read = self
            .shared
            .presence
            .read_stream(channel, history, since)
            .await?;
        Ok(Subscribed {
            frame: subscribed_frame(id, channel, Some(&read.top), read.recovery.as_ref()),
            release: Some(Release {
                channel: channel.clone(),
                cursor,
                top: read.top,
            }),
        })
    }

    /// Sends a `subscribed` answer, then lets the held live publications
    /// after it go. An answer with a stream goes through the mailbox, behind
    /// the frames queued before it: the personal channel's live frames may
    /// be waiting there, and written after a replay that has them they would
    /// reach the client twice.
    pub(super) async fn send_subscribed(&mut self, subscribed: Subscribed) -> Result<(), End> {
        let Some(release) = subscribed.release else {
            self.write(crate::frame::OpCode::Text, subscribed.frame.as_bytes())
                .await?;
            self.shared.metrics.messages_out.increment(1);
            return Ok(());
        };
        let capacity = self.shared.settings.outbound_queue;
        let pushed = self.mailbox.push(subscribed.frame.into(), capacity);
        if crate::channels::overflowed(&self.mailbox, pushed, &self.shared.metrics) {
            return Ok(());
        }
        self.release(&release);
        Ok(())
    }

    /// The instance found a hole in `channel`'s live stream and paused this
    /// connection's cursor: tell the client to subscribe again with `since`.
    pub(super) async fn reposition(&mut self, channel: ChannelName) -> Result<(), End> {
        let Some(state) = self.channels.as_mut() else {
            return Ok(());
        };
        let personal = channel
            .strip_prefix(pulse_protocol::channel::PERSONAL_PREFIX)
            .is_some_and(|user_id| *user_id == *self.user_id);
        if personal {
            // Always subscribed; a `subscribe` with `since` recovers it.
        } else if !state.subscribed.iter().any(|c| **c == *channel)
            || state.positioned.iter().any(|c| **c == *channel)
        {
            return Ok(());
        }
        if !personal {
            state.positioned.push(channel.clone());
        }
        debug!(user_id = %self.user_id, connection_id = %self.connection_id, %channel, "told to recover");
        let unsubscribed = ServerMessage::Unsubscribed {
            id: None,
            channel: channel.to_string(),
            code: Some(ErrorCode::RESUBSCRIBE),
        };
        self.write(crate::frame::OpCode::Text, unsubscribed.encode().as_bytes())
            .await?;
        self.shared.metrics.messages_out.increment(1);
        Ok(())
    }

    /// A `subscribe` to a channel this connection was told to subscribe to
    /// again: it recovers from `since` on the same membership.
    pub(super) async fn resume(
        &mut self,
        id: RequestId,
        channel: &ChannelName,
        history: Option<HistoryOptions>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, Refusal> {
        let Some(state) = self.channels.as_mut() else {
            return Err(super::channels::not_subscribed());
        };
        let cursor = state
            .cursors
            .iter()
            .find(|(c, _)| **c == **channel)
            .map(|(_, cursor)| cursor.clone());
        let (Some(cursor), Some(history)) = (cursor, history) else {
            // The namespace's history was turned off by a config change
            // since: nothing to recover from.
            warn!(%channel, "a repositioned channel has no history any more");
            return Err(Refusal::new(
                ErrorCode::UNAVAILABLE,
                "this channel's history is not available; unsubscribe and subscribe again",
            ));
        };
        cursor.recover();
        match self
            .open_stream(Some(id), channel, history, since, cursor.clone())
            .await
        {
            Ok(subscribed) => {
                if let Some(state) = self.channels.as_mut() {
                    state.positioned.retain(|c| **c != **channel);
                }
                Ok(subscribed)
            }
            Err(refusal) => {
                cursor.pause();
                Err(refusal)
            }
        }
    }
}
