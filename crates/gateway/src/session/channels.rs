//! A live connection's channel requests: `subscribe`, `unsubscribe`,
//! `publish` and `presence`. Each is answered exactly once, by its `id`: a
//! reply, or an `error` with a code, and the socket stays open (a refused
//! request is not a protocol violation).
//!
//! The personal channel (`#<user_id>`) is the user's from the start: it
//! reaches the connection through the connection manager (as `Send` does),
//! so it costs no subscription; a `subscribe` to it is answered (that is how
//! a client asks to recover it), and nobody else may subscribe to it.

use std::sync::Arc;

use pulse_presence::{ChannelName, MAX_DATA_BYTES, PresenceError, namespaces::Resolved};
use pulse_protocol::{
    Channel, ClientMessage, ErrorCode, RequestId, ServerMessage, StreamPosition, Token,
};
use serde_json::{Value, value::RawValue};
use tracing::{debug, warn};

use super::{Live, authorize::channels_claim, recovery::Subscribed};
use crate::{
    channels::{Member, Subscriber},
    cursor::Cursor,
    frame::OpCode,
    socket::End,
};

/// A connection's channels: allocated on its first subscription, or at
/// connect when its token carries a `channels` claim or the server API
/// subscribed its user to channels, so that a connection with none of these
/// pays one pointer.
#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    /// The channels it is subscribed to (the personal channel is not listed).
    pub(super) subscribed: Vec<ChannelName>,
    /// The cursors of those whose namespace keeps history.
    pub(super) cursors: Vec<(ChannelName, Arc<Cursor>)>,
    /// Those whose live stream broke and that the client was told to
    /// subscribe to again (still members, delivered nothing until then).
    pub(super) positioned: Vec<ChannelName>,
    /// The personal channel's cursor, where personal channels keep history.
    pub(super) personal: Option<Arc<Cursor>>,
    /// The connection token's `channels` claim: exact names and `prefix*`
    /// patterns, for namespaces with `authorize = "claim"`.
    pub(super) claim: Option<Box<[Box<str>]>>,
    /// The server API's subscriptions of the user, read when the connection
    /// registered, joined once the client has been greeted.
    joining: Vec<String>,
    /// This connection as the instance's channel table holds it, made on
    /// its first subscription.
    member: Option<Arc<Member>>,
}

impl ChannelState {
    /// The state of a new connection with a token's claims and its user's
    /// server-side subscriptions, when there is something to keep.
    pub(crate) fn for_connection(
        claims: &serde_json::Map<String, Value>,
        server_subscriptions: Vec<String>,
    ) -> Option<Box<Self>> {
        let claim = channels_claim(claims);
        if claim.is_none() && server_subscriptions.is_empty() {
            return None;
        }
        Some(Box::new(Self {
            subscribed: Vec::new(),
            cursors: Vec::new(),
            positioned: Vec::new(),
            personal: None,
            claim,
            joining: server_subscriptions,
            member: None,
        }))
    }

    /// Takes `channel` off every list; whether the connection held it.
    pub(super) fn forget(&mut self, channel: &str) -> Option<ChannelName> {
        let at = self.subscribed.iter().position(|c| **c == *channel)?;
        self.cursors.retain(|(c, _)| **c != *channel);
        self.positioned.retain(|c| **c != *channel);
        Some(self.subscribed.swap_remove(at))
    }

    /// Replaces the claim with a refreshed token's.
    pub(crate) fn set_claim(&mut self, claims: &serde_json::Map<String, Value>) {
        self.claim = channels_claim(claims);
    }
}

/// A refused request: its code and what to tell the client.
pub(super) struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<PresenceError> for Refusal {
    fn from(error: PresenceError) -> Self {
        match error {
            PresenceError::InvalidArgument(message) => Self::new(ErrorCode::BAD_REQUEST, message),
            PresenceError::Unavailable(_) => Self::new(
                ErrorCode::UNAVAILABLE,
                "channels are unavailable right now (Redis cannot be reached); try again",
            ),
        }
    }
}

impl Live {
    /// Answers one channel request.
    pub(super) async fn channel_request(&mut self, request: ClientMessage) -> Result<(), End> {
        let (id, answer) = match request {
            ClientMessage::Subscribe {
                id,
                channel,
                token,
                since,
            } => match self.subscribe(id, channel, token, since).await {
                Ok(subscribed) => return self.send_subscribed(subscribed).await,
                Err(refusal) => (id, Err(refusal)),
            },
            ClientMessage::Unsubscribe { id, channel } => (id, self.unsubscribe(id, channel).await),
            ClientMessage::Publish { id, channel, data } => {
                (id, self.publish(id, &channel, &data).await)
            }
            ClientMessage::Presence { id, channel } => (id, self.presence(id, channel).await),
            ClientMessage::Auth { .. } | ClientMessage::Ping { .. } => {
                unreachable!("not a channel request")
            }
        };
        let message = answer.unwrap_or_else(|refusal| {
            debug!(user_id = %self.user_id, connection_id = %self.connection_id, code = %refusal.code, "channel request refused");
            ServerMessage::refusal(Some(id), refusal.code, refusal.message)
        });
        self.answer(&message).await
    }

    /// Answers a request whose fields could not be read.
    pub(super) async fn bad_request(
        &mut self,
        id: Option<RequestId>,
        message: String,
    ) -> Result<(), End> {
        self.answer(&ServerMessage::refusal(id, ErrorCode::BAD_REQUEST, message))
            .await
    }

    async fn answer(&mut self, message: &ServerMessage) -> Result<(), End> {
        self.write(OpCode::Text, message.encode().as_bytes())
            .await?;
        self.shared.metrics.messages_out.increment(1);
        Ok(())
    }

    pub(super) fn state(&mut self) -> &mut ChannelState {
        self.channels.get_or_insert_with(Box::default)
    }

    /// This connection as a subscriber of one channel (`cursor` where its
    /// namespace keeps history).
    pub(super) fn subscriber(&mut self, cursor: Option<Arc<Cursor>>) -> Subscriber {
        let (mailbox, connection_id, user_id) = (&self.mailbox, &self.connection_id, &self.user_id);
        let state = self.channels.get_or_insert_with(Box::default);
        let member = state.member.get_or_insert_with(|| {
            Arc::new(Member {
                mailbox: mailbox.clone(),
                connection_id: connection_id.clone(),
                user_id: user_id.clone(),
            })
        });
        Subscriber {
            member: member.clone(),
            cursor,
        }
    }

    pub(super) fn is_subscribed(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_some_and(|state| state.subscribed.iter().any(|c| **c == *channel))
    }

    async fn subscribe(
        &mut self,
        id: RequestId,
        channel: String,
        token: Option<Token>,
        since: Option<StreamPosition>,
    ) -> Result<Subscribed, Refusal> {
        let parsed = Channel::parse(&channel)
            .map_err(|error| Refusal::new(ErrorCode::INVALID_CHANNEL, error.to_string()))?;
        let options = match self.shared.settings.namespaces.resolve(&parsed) {
            Some(Resolved::Personal(_)) => {
                return match parsed {
                    Channel::Personal { user_id } if *user_id == *self.user_id => {
                        self.recover_personal(id, &channel, since.as_ref()).await
                    }
                    _ => Err(Refusal::new(
                        ErrorCode::PERMISSION_DENIED,
                        "a personal channel is its user's only",
                    )),
                };
            }
            Some(Resolved::Namespace(options)) => options.clone(),
            None => return Err(unknown_namespace(&parsed)),
        };
        let channel: ChannelName = channel.into();
        if self
            .channels
            .as_ref()
            .is_some_and(|state| state.positioned.iter().any(|c| **c == *channel))
        {
            return self
                .resume(id, &channel, options.history(), since.as_ref())
                .await;
        }
        if self.is_subscribed(&channel) {
            return Err(Refusal::new(
                ErrorCode::ALREADY_SUBSCRIBED,
                "this connection is subscribed to the channel already",
            ));
        }
        let limit = self.shared.settings.max_subscriptions_per_connection;
        let held = self
            .channels
            .as_ref()
            .map_or(0, |state| state.subscribed.len());
        if held >= limit {
            crate::telemetry::limit_rejection("subscriptions_per_connection");
            return Err(Refusal::new(
                ErrorCode::TOO_MANY_SUBSCRIPTIONS,
                format!("a connection holds at most {limit} subscriptions"),
            ));
        }
        self.authorize(options.authorize, &channel, token).await?;
        self.enter(Some(id), channel, &options, options.max_subscribers, since)
            .await
    }

    /// Subscribes to `channel` (checked and authorized) and answers: with
    /// the stream's position and what was missed since `since` where the
    /// namespace keeps history.
    async fn enter(
        &mut self,
        id: Option<RequestId>,
        channel: ChannelName,
        options: &pulse_presence::NamespaceOptions,
        max_subscribers: u32,
        since: Option<StreamPosition>,
    ) -> Result<Subscribed, Refusal> {
        let Some(history) = options.history() else {
            self.join_channel(channel.clone(), options, max_subscribers, None)
                .await?;
            return Ok(Subscribed::without_history(id, &channel, since.is_some()));
        };
        let cursor = Arc::new(Cursor::recovering());
        self.join_channel(
            channel.clone(),
            options,
            max_subscribers,
            Some(cursor.clone()),
        )
        .await?;
        match self
            .open_stream(id, &channel, history, since.as_ref(), cursor)
            .await
        {
            Ok(subscribed) => Ok(subscribed),
            Err(refusal) => {
                if let Some(held) = self.state().forget(&channel) {
                    self.leave_channel(&held).await;
                }
                Err(refusal)
            }
        }
    }

    /// Subscribes a new connection to what the server API subscribed its
    /// user to, as read in the registration's step: a `Subscribe` made
    /// concurrently is either in that list or finds the connection
    /// registered and reaches it as a command (twice is harmless).
    pub(super) async fn join_server_subscriptions(&mut self) -> Result<(), End> {
        let channels = match self.channels.as_mut() {
            Some(state) => std::mem::take(&mut state.joining),
            None => return Ok(()),
        };
        for channel in channels {
            self.server_subscribe(channel.into()).await?;
        }
        Ok(())
    }

    /// A subscription the server API made (no authorization: the server
    /// decided), announced with `subscribed` without an `id`.
    pub(super) async fn server_subscribe(&mut self, channel: ChannelName) -> Result<(), End> {
        if self.is_subscribed(&channel) {
            return Ok(());
        }
        let options = Channel::parse(&channel).ok().and_then(|parsed| {
            match self.shared.settings.namespaces.resolve(&parsed) {
                Some(Resolved::Namespace(options)) => Some(options.clone()),
                _ => None,
            }
        });
        let Some(options) = options else {
            warn!(user_id = %self.user_id, %channel, "a server-side subscription to a namespace this gateway does not configure; not subscribed (is --config the same everywhere?)");
            return Ok(());
        };
        // The server decided: no subscriber limit.
        match self.enter(None, channel.clone(), &options, 0, None).await {
            Ok(subscribed) => self.send_subscribed(subscribed).await,
            Err(refusal) => {
                warn!(user_id = %self.user_id, connection_id = %self.connection_id, %channel, reason = %refusal.message, "server-side subscription failed");
                Ok(())
            }
        }
    }

    /// The server API ended a subscription: `unsubscribed` with
    /// `unsubscribed_by_server`, when the connection had it.
    pub(super) async fn server_unsubscribe(&mut self, channel: &str) -> Result<(), End> {
        let Some(state) = self.channels.as_mut() else {
            return Ok(());
        };
        let Some(held) = state.forget(channel) else {
            return Ok(());
        };
        self.leave_channel(&held).await;
        self.answer(&ServerMessage::Unsubscribed {
            id: None,
            channel: channel.to_owned(),
            code: Some(ErrorCode::UNSUBSCRIBED_BY_SERVER),
        })
        .await
    }

    async fn unsubscribe(
        &mut self,
        id: RequestId,
        channel: String,
    ) -> Result<ServerMessage, Refusal> {
        let parsed = Channel::parse(&channel)
            .map_err(|error| Refusal::new(ErrorCode::INVALID_CHANNEL, error.to_string()))?;
        if matches!(parsed, Channel::Personal { .. }) {
            return Err(Refusal::new(
                ErrorCode::PERMISSION_DENIED,
                "the personal channel is the connection's for its whole life",
            ));
        }
        let Some(state) = self.channels.as_mut() else {
            return Err(not_subscribed());
        };
        let Some(held) = state.forget(&channel) else {
            return Err(not_subscribed());
        };
        self.leave_channel(&held).await;
        Ok(ServerMessage::Unsubscribed {
            id: Some(id),
            channel,
            code: None,
        })
    }

    async fn publish(
        &mut self,
        id: RequestId,
        channel: &str,
        data: &Value,
    ) -> Result<ServerMessage, Refusal> {
        let parsed = Channel::parse(channel)
            .map_err(|error| Refusal::new(ErrorCode::INVALID_CHANNEL, error.to_string()))?;
        let options = match self.shared.settings.namespaces.resolve(&parsed) {
            Some(Resolved::Namespace(options)) => options,
            Some(Resolved::Personal(_)) => {
                return Err(Refusal::new(
                    ErrorCode::PUBLISH_NOT_ALLOWED,
                    "clients do not publish to personal channels",
                ));
            }
            None => return Err(unknown_namespace(&parsed)),
        };
        if !options.allow_publish {
            return Err(Refusal::new(
                ErrorCode::PUBLISH_NOT_ALLOWED,
                "this namespace does not let clients publish (allow_publish)",
            ));
        }
        if !self.is_subscribed(channel) {
            return Err(Refusal::new(
                ErrorCode::NOT_SUBSCRIBED,
                "a client publishes only to channels it is subscribed to",
            ));
        }
        let data: Box<RawValue> =
            serde_json::value::to_raw_value(data).expect("a JSON value always serialises");
        if data.get().len() > MAX_DATA_BYTES {
            return Err(Refusal::new(
                ErrorCode::BAD_REQUEST,
                format!("data is over {MAX_DATA_BYTES} bytes"),
            ));
        }
        let publish = pulse_presence::PublishOptions {
            history: options.history(),
            ..Default::default()
        };
        let published = self
            .shared
            .presence
            .publish(channel, &data, &publish)
            .await?;
        Ok(ServerMessage::Published {
            id,
            offset: published.offset,
        })
    }
}

pub(super) fn unknown_namespace(channel: &Channel<'_>) -> Refusal {
    Refusal::new(
        ErrorCode::UNKNOWN_NAMESPACE,
        match channel.namespace() {
            Some(namespace) => format!("namespace {namespace:?} is not configured"),
            None => "channels without a namespace are refused (no [default] namespace)".to_owned(),
        },
    )
}

pub(super) fn not_subscribed() -> Refusal {
    Refusal::new(
        ErrorCode::NOT_SUBSCRIBED,
        "this connection is not subscribed to the channel",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_array_of_strings_is_a_channels_claim() {
        let claims = |value: Value| {
            let mut map = serde_json::Map::new();
            map.insert("channels".into(), value);
            map
        };
        let state = |claims| ChannelState::for_connection(&claims, Vec::new());
        assert!(state(serde_json::Map::new()).is_none());
        assert!(state(claims(Value::from("room:1"))).is_none());
        let held = state(claims(serde_json::json!(["a", 1, "b*"]))).unwrap();
        assert_eq!(held.claim.as_deref().unwrap().len(), 2);
    }

    #[test]
    fn server_subscriptions_alone_allocate_the_state() {
        let state =
            ChannelState::for_connection(&serde_json::Map::new(), vec!["room:1".into()]).unwrap();
        assert!(state.claim.is_none());
        assert_eq!(state.joining, ["room:1"]);
    }
}
