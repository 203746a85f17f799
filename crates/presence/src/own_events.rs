//! Leaving out an instance's own events: a gateway knows its own
//! connections, and every connect and disconnect it makes comes back to it
//! on the bus as one or two events. [`Presence::ignore_events_of`] drops
//! them before they are decoded.
//!
//! [`Presence::ignore_events_of`]: crate::Presence::ignore_events_of

use std::sync::{Arc, OnceLock};

use memchr::memmem::Finder;
use pulse_protocol::PresenceEvent;

/// The instance whose events the subscribers of this process do not get;
/// set at most once, shared with the bus task.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnEvents(Arc<OnceLock<Own>>);

#[derive(Debug)]
struct Own {
    instance_id: String,
    /// `"instance_id":"<id>"` as the scripts write it, when the id needs no
    /// JSON escaping; other ids are compared after decoding.
    needle: Option<Finder<'static>>,
}

impl OwnEvents {
    /// Ignores `instance_id`'s events from now on; `false` when an instance
    /// was already set (it stays).
    pub(crate) fn set(&self, instance_id: &str) -> bool {
        let plain = instance_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:@".contains(&byte));
        let needle = plain.then(|| {
            Finder::new(format!("\"instance_id\":\"{instance_id}\"").as_bytes()).into_owned()
        });
        let set = self.0.set(Own {
            instance_id: instance_id.to_owned(),
            needle,
        });
        set.is_ok()
            || self
                .0
                .get()
                .is_some_and(|own| own.instance_id == instance_id)
    }

    /// Whether an encoded event is surely the ignored instance's, without
    /// decoding it. `false` may still be one (see [`OwnEvents::is_own`]).
    pub(crate) fn is_own_payload(&self, payload: &[u8]) -> bool {
        self.0
            .get()
            .and_then(|own| own.needle.as_ref())
            .is_some_and(|needle| needle.find(payload).is_some())
    }

    /// Whether a decoded event is the ignored instance's.
    pub(crate) fn is_own(&self, event: &PresenceEvent) -> bool {
        self.0
            .get()
            .is_some_and(|own| own.instance_id == event.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use pulse_protocol::EventKind;

    use super::*;

    fn event(instance_id: &str) -> (PresenceEvent, Vec<u8>) {
        let event = PresenceEvent {
            user_id: "u".into(),
            kind: EventKind::Connected,
            connection_id: "c".into(),
            instance_id: instance_id.into(),
            at_ms: 1,
        };
        let json = serde_json::to_vec(&event).unwrap();
        (event, json)
    }

    #[test]
    fn matches_only_the_instance_set() {
        let own = OwnEvents::default();
        let (mine, mine_json) = event("gw-1");
        assert!(
            !own.is_own(&mine) && !own.is_own_payload(&mine_json),
            "nothing set"
        );
        assert!(own.set("gw-1"));
        assert!(own.set("gw-1"), "the same again is fine");
        assert!(!own.set("gw-2"), "the first stays");
        assert!(own.is_own(&mine) && own.is_own_payload(&mine_json));
        for other in ["gw-10", "gw-", "xgw-1", "gw-1\"x"] {
            let (event, json) = event(other);
            assert!(!own.is_own(&event), "{other}");
            assert!(!own.is_own_payload(&json), "{other}");
        }
    }

    #[test]
    fn ids_that_need_escaping_are_compared_decoded() {
        let own = OwnEvents::default();
        own.set("gw/\"1\"");
        let (mine, json) = event("gw/\"1\"");
        assert!(!own.is_own_payload(&json), "no needle for an escaped id");
        assert!(own.is_own(&mine));
    }
}
