//! Commands that internal services address to the gateway instances holding a
//! user's connections: push a message, or disconnect.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A command for the connections of one user, carried on the bus to each
/// instance that holds some of them.
///
/// Externally tagged on the wire (`{"send":{...}}`): serde buffers the content
/// of internally tagged enums, which a borrowed-through `RawValue` cannot survive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Deliver `data` as a publication on the user's personal channel
    /// (`{"type":"publication","channel":"#<user_id>","data":...}`) to
    /// every connection of the user.
    Send {
        /// The user whose connections get the message.
        user_id: String,
        /// Any JSON value, kept as its text so that it reaches clients byte for byte.
        data: Box<RawValue>,
    },
    /// Subscribe every connection of the user to a channel (the server API's
    /// `Subscribe`): each gets `{"type":"subscribed","channel":C}`.
    Subscribe {
        /// The user whose connections subscribe.
        user_id: String,
        /// The channel.
        channel: String,
    },
    /// End the subscription of every connection of the user to a channel
    /// (the server API's `Unsubscribe`).
    Unsubscribe {
        /// The user whose connections unsubscribe.
        user_id: String,
        /// The channel.
        channel: String,
    },
    /// Close the user's connections (or one of them) with 4403.
    Disconnect {
        /// The user whose connections close.
        user_id: String,
        /// Only this connection, when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
        /// Why, for the `error` message that precedes the close.
        reason: String,
    },
}

impl Command {
    /// The user the command is for.
    pub fn user_id(&self) -> &str {
        match self {
            Self::Send { user_id, .. }
            | Self::Subscribe { user_id, .. }
            | Self::Unsubscribe { user_id, .. }
            | Self::Disconnect { user_id, .. } => user_id,
        }
    }

    /// Encodes the command for the bus.
    pub fn encode(&self) -> String {
        // Plain strings and already-valid JSON: serialising cannot fail.
        serde_json::to_string(self).expect("commands always serialise")
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn commands_round_trip_and_keep_data_byte_for_byte() {
        let data =
            RawValue::from_string(r#"{"id":12345678901234567890,"x":[1, 2]}"#.into()).unwrap();
        let send = Command::Send {
            user_id: "alice".into(),
            data,
        };
        let decoded: Command = serde_json::from_str(&send.encode()).unwrap();
        match decoded {
            Command::Send { user_id, data } => {
                assert_eq!(user_id, "alice");
                // A u64 beyond 2^53 survives: it is never parsed into a float.
                assert_eq!(data.get(), r#"{"id":12345678901234567890,"x":[1, 2]}"#);
            }
            other => panic!("{other:?}"),
        }
        let kick = Command::Disconnect {
            user_id: "bob".into(),
            connection_id: None,
            reason: "revoked".into(),
        };
        assert_eq!(
            kick.encode(),
            r#"{"disconnect":{"user_id":"bob","reason":"revoked"}}"#
        );
        assert_eq!(kick.user_id(), "bob");
    }
}
