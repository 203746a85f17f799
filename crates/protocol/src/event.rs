//! Presence events: what instances publish to each other on the bus and what
//! `Presence/Watch` streams to internal services.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::proto::presence::v1 as pb;

pub mod log;

pub use log::{BadPosition, EventId, LogPoint, Position};

/// What happened to a user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A connection opened.
    Connected,
    /// A connection closed.
    Disconnected,
    /// The user's first connection anywhere opened; follows its `Connected`.
    Online,
    /// The user's last connection anywhere closed; follows its `Disconnected`.
    Offline,
    /// The user's first connection in a channel (with presence) subscribed.
    Join,
    /// The user's last connection in a channel unsubscribed or closed.
    Leave,
}

/// One presence change, as published on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The user whose presence changed.
    pub user_id: String,
    /// What happened.
    pub kind: EventKind,
    /// The connection that opened or closed.
    pub connection_id: String,
    /// The instance that holds (or held) the connection.
    pub instance_id: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Where the event is in the durable log: unique, and what a consumer
    /// resumes after.
    pub id: EventId,
    /// The entry before it in the same log (`0-0` for the first), so a
    /// reader of the live bus can tell a missed event from the next one.
    pub prev: LogPoint,
    /// The channel of a `join` or `leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A protobuf timestamp for milliseconds since the Unix epoch.
pub fn timestamp_from_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

impl From<EventKind> for pb::EventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Connected => Self::Connected,
            EventKind::Disconnected => Self::Disconnected,
            EventKind::Online => Self::Online,
            EventKind::Offline => Self::Offline,
            EventKind::Join => Self::Join,
            EventKind::Leave => Self::Leave,
        }
    }
}

impl From<&PresenceEvent> for pb::PresenceEvent {
    fn from(event: &PresenceEvent) -> Self {
        Self {
            user_id: event.user_id.clone(),
            kind: pb::EventKind::from(event.kind).into(),
            connection_id: event.connection_id.clone(),
            instance_id: event.instance_id.clone(),
            at: Some(timestamp_from_ms(event.at_ms)),
            id: event.id.to_string(),
            position: String::new(),
            channel: event.channel.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Connected),
            Just(EventKind::Disconnected),
            Just(EventKind::Online),
            Just(EventKind::Offline),
            Just(EventKind::Join),
            Just(EventKind::Leave),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip_through_json(
            user_id in "\\PC{0,20}",
            kind in kind(),
            connection_id in "[a-z0-9-]{0,36}",
            instance_id in "\\PC{0,20}",
            at_ms in 0u64..4_000_000_000_000,
            bucket in 0u16..128,
            seq in 1u64..u64::MAX,
        ) {
            let id = EventId { bucket, point: LogPoint { ms: at_ms, seq } };
            let prev = LogPoint { ms: at_ms, seq: seq - 1 };
            let event = PresenceEvent { user_id, kind, connection_id, instance_id, at_ms, id, prev, channel: None };
            let text = serde_json::to_string(&event).unwrap();
            prop_assert_eq!(serde_json::from_str::<PresenceEvent>(&text).unwrap(), event.clone());

            let proto = pb::PresenceEvent::from(&event);
            prop_assert_eq!(proto.kind(), pb::EventKind::from(kind));
            let at = proto.at.unwrap();
            prop_assert_eq!(at.seconds as u64 * 1000 + at.nanos as u64 / 1_000_000, at_ms);
        }
    }

    #[test]
    fn kinds_are_snake_case_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&EventKind::Offline).unwrap(),
            r#""offline""#
        );
    }
}
