//! Channel names and the frames a publication travels in.
//!
//! A channel is `namespace:name`, or a bare `name` in the default namespace,
//! or `#<user_id>`, the personal channel of one user (which the server
//! subscribes every connection of the user to, and nobody else may).
//! Validation lives here, once, so that the gateway, the API and the tests
//! refuse the same names with the same code.

use std::fmt;

use serde_json::value::RawValue;

use crate::{ErrorCode, MAX_USER_ID_BYTES};

/// The longest channel name, in bytes. Personal channels are `#` and a user id
/// of up to [`MAX_USER_ID_BYTES`], so they may be one byte longer than this.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// The longest namespace name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// The prefix of a personal channel.
pub const PERSONAL_PREFIX: char = '#';

/// A channel name split into its parts, borrowed from the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `#<user_id>`: the personal channel of one user.
    Personal {
        /// The user the channel belongs to.
        user_id: &'a str,
    },
    /// A channel of a namespace (`None`: the default namespace).
    Named {
        /// The part before the first `:`, when there is one.
        namespace: Option<&'a str>,
        /// The whole name, as clients and the API spell it.
        full: &'a str,
    },
}

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_CHANNEL_BYTES`] (or the namespace than
    /// [`MAX_NAMESPACE_BYTES`], or the user id than [`MAX_USER_ID_BYTES`]).
    TooLong,
    /// A character outside the allowed set, an empty namespace or an empty name.
    BadCharacter,
}

impl ChannelError {
    /// The `code` of the `error` answer to a request naming such a channel.
    pub fn code(self) -> ErrorCode {
        ErrorCode::INVALID_CHANNEL
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the channel name is empty",
            Self::TooLong => "the channel name is too long (255 bytes, a namespace 64)",
            Self::BadCharacter => {
                "a channel name is `namespace:name` or `name` of ASCII letters, digits and - _ . : @ / = , + ! ~ | $ %"
            }
        })
    }
}

impl std::error::Error for ChannelError {}

/// Whether `c` may appear in a channel name (not in a personal channel,
/// whose user id is taken as the token named it).
fn allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_'
                | b'.'
                | b':'
                | b'@'
                | b'/'
                | b'='
                | b','
                | b'+'
                | b'!'
                | b'~'
                | b'|'
                | b'$'
                | b'%'
        )
}

impl<'a> Channel<'a> {
    /// Parses and validates a channel name.
    pub fn parse(name: &'a str) -> Result<Self, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if let Some(user_id) = name.strip_prefix(PERSONAL_PREFIX) {
            if user_id.is_empty() {
                return Err(ChannelError::Empty);
            }
            if user_id.len() > MAX_USER_ID_BYTES {
                return Err(ChannelError::TooLong);
            }
            return Ok(Self::Personal { user_id });
        }
        if name.len() > MAX_CHANNEL_BYTES {
            return Err(ChannelError::TooLong);
        }
        if !name.bytes().all(allowed) {
            return Err(ChannelError::BadCharacter);
        }
        match name.split_once(':') {
            None => Ok(Self::Named {
                namespace: None,
                full: name,
            }),
            Some((namespace, rest)) => {
                if namespace.is_empty() || rest.is_empty() {
                    return Err(ChannelError::BadCharacter);
                }
                if namespace.len() > MAX_NAMESPACE_BYTES {
                    return Err(ChannelError::TooLong);
                }
                Ok(Self::Named {
                    namespace: Some(namespace),
                    full: name,
                })
            }
        }
    }

    /// The personal channel of `user_id`.
    pub fn personal(user_id: &str) -> String {
        let mut name = String::with_capacity(user_id.len() + 1);
        name.push(PERSONAL_PREFIX);
        name.push_str(user_id);
        name
    }

    /// The namespace whose options apply: `None` for the default namespace
    /// and for personal channels (whose options are their own).
    pub fn namespace(&self) -> Option<&'a str> {
        match self {
            Self::Personal { .. } => None,
            Self::Named { namespace, .. } => *namespace,
        }
    }
}

/// Whether a namespace name is valid (for the config file): what may stand
/// before the `:` of a channel name.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_BYTES
        && namespace.bytes().all(|c| allowed(c) && c != b':')
}

/// The text of a `publication` frame, built once per publication and written
/// as it is to every subscriber. `data` is kept byte for byte. Made of the
/// parts in [`crate::history`], which the history script joins the same way.
pub fn publication_frame(channel: &str, offset: Option<u64>, data: &RawValue) -> String {
    use crate::history::{PUBLICATION_DATA, PUBLICATION_END, channel_head, publication_head};
    let data = data.get();
    let mut frame = match offset {
        Some(offset) => {
            let mut head = publication_head(channel);
            head.push_str(&offset.to_string());
            head
        }
        None => channel_head(channel),
    };
    frame.reserve(data.len() + PUBLICATION_DATA.len() + PUBLICATION_END.len());
    frame.push_str(PUBLICATION_DATA);
    frame.push_str(data);
    frame.push_str(PUBLICATION_END);
    frame
}

/// Whether a user came into a channel or went out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Their first subscription to the channel anywhere.
    Join,
    /// Their last one gone.
    Leave,
}

/// The text of a `join` or `leave` frame. The Redis scripts build the same
/// bytes (`member_frame` in `pulse-presence`'s `lua/prelude.lua`; a test
/// there holds the two together).
pub fn member_frame(change: MemberChange, channel: &str, user_id: &str) -> String {
    let kind = match change {
        MemberChange::Join => "join",
        MemberChange::Leave => "leave",
    };
    let channel = serde_json::to_string(channel).expect("a string always serialises");
    let user_id = serde_json::to_string(user_id).expect("a string always serialises");
    format!(r#"{{"type":"{kind}","channel":{channel},"user_id":{user_id}}}"#)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::ServerMessage;

    #[test]
    fn parses_the_three_kinds_of_name() {
        assert_eq!(
            Channel::parse("news").unwrap(),
            Channel::Named {
                namespace: None,
                full: "news"
            }
        );
        let room = Channel::parse("room:7:a").unwrap();
        assert_eq!(room.namespace(), Some("room"));
        assert_eq!(
            Channel::parse("#alice@example.com").unwrap(),
            Channel::Personal {
                user_id: "alice@example.com"
            }
        );
        assert_eq!(Channel::personal("bob"), "#bob");
        // A personal channel takes any user id a token may name.
        assert!(Channel::parse("#ユーザー {1}").is_ok());
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        assert_eq!(Channel::parse("#"), Err(ChannelError::Empty));
        assert_eq!(
            Channel::parse(&"a".repeat(MAX_CHANNEL_BYTES + 1)),
            Err(ChannelError::TooLong)
        );
        assert!(Channel::parse(&"a".repeat(MAX_CHANNEL_BYTES)).is_ok());
        assert_eq!(
            Channel::parse(&format!("#{}", "u".repeat(MAX_USER_ID_BYTES + 1))),
            Err(ChannelError::TooLong)
        );
        assert_eq!(
            Channel::parse(&format!("{}:x", "n".repeat(MAX_NAMESPACE_BYTES + 1))),
            Err(ChannelError::TooLong)
        );
        for bad in [":x", "x:", "a b", "a*", "{b1}", "ä", "a\"b", "a\nb", "a#b"] {
            assert_eq!(
                Channel::parse(bad),
                Err(ChannelError::BadCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(ChannelError::TooLong.code(), ErrorCode::INVALID_CHANNEL);
    }

    #[test]
    fn namespaces_are_names_without_a_colon() {
        assert!(valid_namespace("room"));
        assert!(valid_namespace("a-b_c.d"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a:b"));
        assert!(!valid_namespace("a b"));
        assert!(!valid_namespace(&"n".repeat(MAX_NAMESPACE_BYTES + 1)));
    }

    #[test]
    fn publication_frames_decode_as_server_messages() {
        let data = RawValue::from_string(r#"{"n":12345678901234567890}"#.into()).unwrap();
        let frame = publication_frame("room:\"7\"", Some(3), &data);
        assert!(
            frame.contains("12345678901234567890"),
            "data kept as it came"
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&frame).unwrap(),
            ServerMessage::Publication {
                channel: "room:\"7\"".into(),
                offset: Some(3),
                data: serde_json::from_str(r#"{"n":12345678901234567890}"#).unwrap(),
            }
        );
        let frame: Value = serde_json::from_str(&publication_frame("n", None, &data)).unwrap();
        assert_eq!(frame.get("offset"), None);
        assert_eq!(frame["type"], json!("publication"));
    }

    #[test]
    fn member_frames_decode_as_server_messages() {
        let frame = member_frame(MemberChange::Join, "room:7", "al\"ice");
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&frame).unwrap(),
            ServerMessage::Join {
                channel: "room:7".into(),
                user_id: "al\"ice".into(),
            }
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&member_frame(MemberChange::Leave, "n", "b"))
                .unwrap(),
            ServerMessage::Leave {
                channel: "n".into(),
                user_id: "b".into(),
            }
        );
    }

    proptest! {
        #[test]
        fn any_channel_and_data_make_a_valid_frame(channel in "\\PC{0,40}", s in "\\PC{0,20}", offset in prop::option::of(any::<u64>())) {
            let value = json!({"s": s});
            let data = RawValue::from_string(value.to_string()).unwrap();
            let frame: Value = serde_json::from_str(&publication_frame(&channel, offset, &data)).unwrap();
            prop_assert_eq!(&frame["channel"], &Value::from(channel));
            prop_assert_eq!(&frame["data"], &value);
            prop_assert_eq!(frame.get("offset").and_then(Value::as_u64), offset);
        }

        #[test]
        fn parsing_never_panics(name in "\\PC{0,300}") {
            let _ = Channel::parse(&name);
        }
    }
}
