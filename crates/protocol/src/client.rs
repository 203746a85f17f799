//! The client protocol on `/ws`: JSON text frames, one object each, tagged by `type`.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest user id Pulse takes, in bytes of UTF-8: the same at the
/// handshake (a token naming a longer one is refused, 4401
/// `user_id_too_long`), in presence and in every API call that names a user.
pub const MAX_USER_ID_BYTES: usize = 256;

/// A message a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first message when no `?token=` was given; later, a refresh before expiry.
    Auth {
        /// The compact JWT.
        token: Token,
    },
    /// An application-level round trip, answered by [`ServerMessage::Pong`] with the same `id`.
    Ping {
        /// Any JSON value the client wants echoed back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Subscribe this connection to a channel; answered by
    /// [`ServerMessage::Subscribed`] or an `error` with the same `id`.
    Subscribe {
        /// The request's id, echoed in its answer.
        id: RequestId,
        /// The channel, `namespace:name`.
        channel: String,
        /// A subscription token, for namespaces that authorize by token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Token>,
        /// Where the client left off, to recover what it missed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition>,
    },
    /// End this connection's subscription; answered by [`ServerMessage::Unsubscribed`].
    Unsubscribe {
        /// The request's id, echoed in its answer.
        id: RequestId,
        /// The channel.
        channel: String,
    },
    /// Who is in a channel the connection is subscribed to; answered by
    /// [`ServerMessage::Presence`], or `presence_disabled` where the
    /// namespace keeps no presence.
    Presence {
        /// The request's id, echoed in its answer.
        id: RequestId,
        /// The channel.
        channel: String,
    },
    /// Publish to a channel whose namespace allows it; answered by
    /// [`ServerMessage::Published`].
    Publish {
        /// The request's id, echoed in its answer.
        id: RequestId,
        /// The channel.
        channel: String,
        /// Any JSON value.
        data: Value,
    },
}

/// One user in a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMember {
    /// The user.
    pub user_id: String,
    /// How many of their connections are subscribed, across every instance.
    pub connections: u64,
}

/// The client-chosen id of a request, echoed in its one answer.
pub type RequestId = u64;

/// A position in a channel's stream: the last offset a client saw, in the
/// history the epoch names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The offset of the last publication the client received.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// A publication replayed in a `subscribed` answer (the channel is the
/// subscription's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    /// Its offset.
    pub offset: u64,
    /// Its data, as published.
    pub data: Value,
}

/// What one text frame from a client turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message of a known shape.
    Message(ClientMessage),
    /// A request of a known `type` whose fields are wrong: it gets an `error`
    /// answer (with its `id`, when one could be read) and the socket stays.
    BadRequest {
        /// The request's id, when it had a readable one.
        id: Option<RequestId>,
        /// What was wrong, for the `error` message.
        message: String,
    },
}

/// The request types: a malformed one is answered, not a protocol violation.
const REQUEST_TYPES: [&str; 4] = ["subscribe", "unsubscribe", "presence", "publish"];

/// Just enough of a frame to answer a malformed request.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<Value>,
}

impl ClientMessage {
    /// Decodes one text frame. Anything that is not exactly one known message is an error.
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Decodes one text frame, telling a malformed request (answered with
    /// an `error`, the socket kept) from a frame that is not the protocol at
    /// all (the `Err`: a 4400 close).
    pub fn decode_frame(text: &str) -> Result<Decoded, serde_json::Error> {
        match Self::decode(text) {
            Ok(message) => Ok(Decoded::Message(message)),
            Err(error) => match serde_json::from_str::<Envelope>(text) {
                Ok(envelope) if REQUEST_TYPES.contains(&envelope.kind.as_str()) => {
                    Ok(Decoded::BadRequest {
                        id: envelope.id.as_ref().and_then(Value::as_u64),
                        message: format!("malformed {} request: {error}", envelope.kind),
                    })
                }
                _ => Err(error),
            },
        }
    }
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once, when the connection has authenticated.
    Connected {
        /// This connection's id, unique across the fleet.
        connection_id: String,
        /// The user the token names.
        user_id: String,
        /// The gateway instance that holds the socket.
        instance_id: String,
        /// How often the server pings; a client that sees no traffic for about
        /// twice this long may treat the connection as dead.
        heartbeat_interval_ms: u64,
        /// The user's personal channel (`#<user_id>`), which the server has
        /// subscribed this connection to: what `Send` publishes on.
        channel: String,
        /// The personal channel's last offset, where personal channels keep
        /// history: where this connection's stream starts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The epoch of that stream, with `offset`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// The answer to [`ClientMessage::Ping`].
    Pong {
        /// The ping's `id`, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// The connection is subscribed: the answer to a `subscribe` (with its
    /// `id`), or the server subscribed it (no `id`).
    Subscribed {
        /// The request's id; absent when the server subscribed the connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The channel.
        channel: String,
        /// The offset of the channel's latest publication: where this
        /// subscription's stream starts. Present where the namespace keeps
        /// history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The history that offset belongs to, with `offset`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// Whether what was missed since the `subscribe`'s `since` was
        /// recovered; present only when it had a `since`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// What was missed since `since`, oldest first; present only when
        /// the `subscribe` had a `since` (empty when it was not recovered).
        /// Built by [`crate::history::subscribed_frame`] in the gateway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        publications: Option<Vec<Replayed>>,
    },
    /// The subscription ended: the answer to an `unsubscribe` (with its
    /// `id`), or the server ended it (no `id`, and a `code` saying why).
    Unsubscribed {
        /// The request's id; absent when the server ended the subscription.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The channel.
        channel: String,
        /// Why the server ended it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
    },
    /// A publication on a channel the connection is subscribed to. Built by
    /// [`crate::channel::publication_frame`] on the hot path.
    Publication {
        /// The channel.
        channel: String,
        /// The publication's offset, where the namespace keeps history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// Any JSON value.
        data: Value,
    },
    /// A user's first subscription to the channel anywhere (`join`) or
    /// their last one gone (`leave`), where the namespace has `join_leave`.
    /// Built by [`crate::channel::member_frame`] where it happens.
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        user_id: String,
    },
    /// See [`ServerMessage::Join`].
    Leave {
        /// The channel.
        channel: String,
        /// Who left.
        user_id: String,
    },
    /// The answer to a `presence`: who is in the channel across every
    /// instance. Above the namespace's `presence_max_users`, only the counts.
    Presence {
        /// The request's id.
        id: RequestId,
        /// The channel.
        channel: String,
        /// Each user with their subscribed connections, by user id;
        /// absent when the channel holds more users than the namespace lists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users: Option<Vec<ChannelMember>>,
        /// How many users are subscribed.
        num_users: u64,
        /// How many connections are subscribed.
        num_connections: u64,
    },
    /// The answer to a `publish`.
    Published {
        /// The request's id.
        id: RequestId,
        /// The publication's offset, where the namespace keeps history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// An error: the answer to a refused request (with its `id`; the socket
    /// stays open), or the explanation of the close frame that follows it.
    Error {
        /// The refused request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// A machine-readable reason, such as `token_expired`.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
}

impl ServerMessage {
    /// Builds an [`ServerMessage::Error`].
    pub fn error(code: impl Into<ErrorCode>, message: impl Into<String>) -> Self {
        Self::Error {
            id: None,
            code: code.into(),
            message: message.into(),
        }
    }

    /// The answer to a refused request: an `error` with the request's `id`.
    pub fn refusal(
        id: Option<RequestId>,
        code: impl Into<ErrorCode>,
        message: impl Into<String>,
    ) -> Self {
        Self::Error {
            id,
            code: code.into(),
            message: message.into(),
        }
    }

    /// Encodes the message as the text of one frame.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: every key is a string and every
        // value is plain data.
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// The machine-readable `code` of an [`ServerMessage::Error`].
///
/// A string on the wire so that new reasons (token validation grows more) are
/// not a breaking change; the constants are the ones Pulse sends today.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub Cow<'static, str>);

impl ErrorCode {
    /// The frame was not a JSON object of a known `type`, or not text.
    pub const MALFORMED_MESSAGE: Self = Self::new("malformed_message");
    /// A token was required and none came.
    pub const MISSING_TOKEN: Self = Self::new("missing_token");
    /// No `auth` message within the authentication timeout.
    pub const AUTH_TIMEOUT: Self = Self::new("auth_timeout");
    /// The token expired.
    pub const TOKEN_EXPIRED: Self = Self::new("token_expired");
    /// The client stopped answering pings.
    pub const HEARTBEAT_TIMEOUT: Self = Self::new("heartbeat_timeout");
    /// The authentication service could not be reached.
    pub const AUTH_UNAVAILABLE: Self = Self::new("auth_unavailable");
    /// The connection's outbound queue overflowed: it does not read fast enough.
    pub const SLOW_CONSUMER: Self = Self::new("slow_consumer");
    /// An internal service disconnected the connection.
    pub const DISCONNECTED: Self = Self::new("disconnected");
    /// The token's user id is longer than [`MAX_USER_ID_BYTES`].
    pub const USER_ID_TOO_LONG: Self = Self::new("user_id_too_long");
    /// The user is blocked for a while (a `Disconnect` with `block_for`):
    /// new connections are refused with 4403 until it ends.
    pub const BLOCKED: Self = Self::new("blocked");
    /// The user already holds the most connections allowed.
    pub const TOO_MANY_CONNECTIONS: Self = Self::new("too_many_connections");
    /// The connection sent more messages per second than allowed.
    pub const RATE_LIMITED: Self = Self::new("rate_limited");
    /// The server is shutting down.
    pub const GOING_AWAY: Self = Self::new("going_away");
    /// A request of a known type with missing or wrong fields.
    pub const BAD_REQUEST: Self = Self::new("bad_request");
    /// A channel name that is empty, too long or has a character not allowed.
    pub const INVALID_CHANNEL: Self = Self::new("invalid_channel");
    /// The channel's namespace is not configured (and there is no default).
    pub const UNKNOWN_NAMESPACE: Self = Self::new("unknown_namespace");
    /// The user may not subscribe to (or publish on) the channel.
    pub const PERMISSION_DENIED: Self = Self::new("permission_denied");
    /// The connection is already subscribed to the channel.
    pub const ALREADY_SUBSCRIBED: Self = Self::new("already_subscribed");
    /// The connection is not subscribed to the channel.
    pub const NOT_SUBSCRIBED: Self = Self::new("not_subscribed");
    /// The connection holds the most subscriptions allowed.
    pub const TOO_MANY_SUBSCRIPTIONS: Self = Self::new("too_many_subscriptions");
    /// The namespace does not let clients publish.
    pub const PUBLISH_NOT_ALLOWED: Self = Self::new("publish_not_allowed");
    /// The channel's namespace keeps no per-channel presence.
    pub const PRESENCE_DISABLED: Self = Self::new("presence_disabled");
    /// The channel holds its namespace's `max_subscribers` already.
    pub const CHANNEL_FULL: Self = Self::new("channel_full");
    /// The `code` of an `unsubscribed` the server sent because the server
    /// API's `Unsubscribe` ended the subscription.
    pub const UNSUBSCRIBED_BY_SERVER: Self = Self::new("unsubscribed_by_server");
    /// An `unsubscribed` (no `id`): the live stream of the channel broke
    /// (this instance's Redis subscription was lost, or a publication went
    /// missing), so nothing more is delivered; the client subscribes again
    /// with `since` its last position, and recovers from history.
    pub const RESUBSCRIBE: Self = Self::new("resubscribe");
    /// Shared state (Redis) could not be reached; try again.
    pub const UNAVAILABLE: Self = Self::new("unavailable");

    /// A code from a static string.
    pub const fn new(code: &'static str) -> Self {
        Self(Cow::Borrowed(code))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for ErrorCode {
    fn from(code: &'static str) -> Self {
        Self::new(code)
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        Self(Cow::Owned(code))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JWT as it travels in a message. Its `Debug` never shows the token, so a
/// message can be logged without leaking a credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl Token {
    /// The compact JWT.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes redacted>)", self.0.len())
    }
}

/// WebSocket close codes Pulse sends: the graphql-ws family, so that client
/// libraries already know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: the session ended normally.
    Normal = 1000,
    /// 1001: the server is going away (drain, shutdown).
    GoingAway = 1001,
    /// 1002: a WebSocket protocol violation (RFC 6455 framing).
    ProtocolError = 1002,
    /// 1007: a text message or close reason that is not UTF-8.
    InvalidPayload = 1007,
    /// 1009: a message was larger than the server takes.
    MessageTooBig = 1009,
    /// 1013: a dependency (the auth service) is unavailable; try again later.
    TryAgainLater = 1013,
    /// 4400: a message that is not valid for the protocol.
    Malformed = 4400,
    /// 4401: a missing, invalid or expired token.
    Unauthorized = 4401,
    /// 4403: disconnected by the server (kicked, revoked, another user's token).
    Forbidden = 4403,
    /// 4408: no authentication within the timeout, or no pong within the heartbeat.
    Timeout = 4408,
    /// 4429: too many connections or messages.
    TooMany = 4429,
}

impl CloseCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, where it is one of Pulse's.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1007 => Self::InvalidPayload,
            1009 => Self::MessageTooBig,
            1013 => Self::TryAgainLater,
            4400 => Self::Malformed,
            4401 => Self::Unauthorized,
            4403 => Self::Forbidden,
            4408 => Self::Timeout,
            4429 => Self::TooMany,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
