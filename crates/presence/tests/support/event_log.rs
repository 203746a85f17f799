//! Reading an event tail in the event log tests: the next event in time,
//! events up to a position, where every log ends now, and events by user.

use std::collections::BTreeMap;

use pulse_presence::{EventTail, Presence};
use pulse_protocol::{EventKind, PresenceEvent, event::Position};
use tokio::time::timeout;

use super::DEADLINE;

/// One connection's whole life, for its user's only connection.
pub const LIFECYCLE: [EventKind; 4] = [
    EventKind::Connected,
    EventKind::Online,
    EventKind::Disconnected,
    EventKind::Offline,
];

pub async fn next(tail: &mut EventTail) -> PresenceEvent {
    timeout(DEADLINE, tail.next())
        .await
        .expect("an event in time")
        .expect("the tail goes on")
}

/// Reads `tail` until its position has reached `end` in every bucket.
pub async fn read_until(tail: &mut EventTail, end: &Position) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    while end
        .iter()
        .any(|(bucket, point)| tail.position().get(bucket).is_none_or(|at| at < point))
    {
        events.push(next(tail).await);
    }
    events
}

/// Where every log ends now.
pub async fn now_position(presence: &Presence) -> Position {
    presence
        .tail_events(presence.log_buckets(), None)
        .await
        .unwrap()
        .position()
        .clone()
}

pub fn per_user(events: &[PresenceEvent]) -> BTreeMap<String, Vec<PresenceEvent>> {
    let mut users: BTreeMap<String, Vec<PresenceEvent>> = BTreeMap::new();
    for event in events {
        users
            .entry(event.user_id.clone())
            .or_default()
            .push(event.clone());
    }
    users
}
