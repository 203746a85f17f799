//! Checking a stream of presence events, whoever delivers it: a `Watch`
//! consumer ([`crate::consume_watch`]) or, the same way, a webhook receiver.
//!
//! A [`Ledger`] starts from a `Snapshot` (every online user's connections
//! and the position at which that is exact) and takes events one by one.
//! Each event must be the next one of its log (bucket): exactly once, no
//! gap, in order; it must change the state as its kind says (`connected` a
//! connection not yet open, `disconnected` an open one); and `online` must
//! come right after the `connected` that made the user's set non-empty,
//! `offline` right after the `disconnected` that emptied it, never
//! otherwise. The first event that breaks a rule is an error naming it,
//! with the user's last events.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use pulse_protocol::{
    event::{EventId, LogPoint, Position},
    proto::presence::v1::{EventKind, PresenceEvent, UserPresence},
};

/// Every user's open connection ids.
pub type PresenceState = BTreeMap<String, BTreeSet<String>>;

/// How the deliverer promises events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `Watch`: each event once; a repeat is an error.
    ExactlyOnce,
    /// Webhooks: a repeat is allowed when it is the same event (same id,
    /// same content) and is then skipped.
    AtLeastOnce,
}

/// How many of a user's events an error message shows.
const RECENT: usize = 8;

/// One event as taken: what a receiver compares a repeat with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The event's kind.
    pub kind: EventKind,
    /// Whose.
    pub user_id: String,
    /// Which connection.
    pub connection_id: String,
    /// On which gateway instance.
    pub instance_id: String,
}

/// The state built from a snapshot and the events after its position, and
/// the checks on the way (see the module's documentation).
#[derive(Debug)]
pub struct Ledger {
    delivery: Delivery,
    state: PresenceState,
    /// Where the snapshot was.
    start: Position,
    /// The last event taken in each log (the snapshot's point before any).
    position: Position,
    /// The `position` string to resume after: the last event's, or the
    /// snapshot's.
    resume: String,
    /// `online` or `offline` owed as the user's next event.
    owed: HashMap<String, EventKind>,
    /// Every event taken, by id.
    taken: BTreeMap<EventId, Taken>,
    /// Repeats skipped (at-least-once delivery only).
    repeats: u64,
    recent: HashMap<String, VecDeque<String>>,
}

impl Ledger {
    /// Starts from a snapshot: its users and its position string.
    ///
    /// # Errors
    ///
    /// When the position does not parse, a user is listed twice, or a
    /// listed user has no connection.
    pub fn from_snapshot(
        users: impl IntoIterator<Item = UserPresence>,
        position: &str,
        delivery: Delivery,
    ) -> Result<Self, String> {
        let start: Position = position
            .parse()
            .map_err(|error| format!("snapshot position {position:?}: {error}"))?;
        let mut state = PresenceState::new();
        for user in users {
            let ids: BTreeSet<String> = user
                .connections
                .iter()
                .map(|c| c.connection_id.clone())
                .collect();
            if ids.is_empty() || !user.online {
                return Err(format!("the snapshot lists {user:?}, who is not online"));
            }
            if state.insert(user.user_id.clone(), ids).is_some() {
                return Err(format!("the snapshot lists {} twice", user.user_id));
            }
        }
        Ok(Self {
            delivery,
            state,
            position: start.clone(),
            start,
            resume: position.to_owned(),
            owed: HashMap::new(),
            taken: BTreeMap::new(),
            repeats: 0,
            recent: HashMap::new(),
        })
    }

    /// Takes the next event delivered.
    ///
    /// # Errors
    ///
    /// The first rule it breaks, in words, with the user's last events.
    pub fn apply(&mut self, event: &PresenceEvent) -> Result<(), String> {
        let id: EventId = event
            .id
            .parse()
            .map_err(|error| format!("event id {:?}: {error}: {event:?}", event.id))?;
        let taken = Taken {
            kind: event.kind(),
            user_id: event.user_id.clone(),
            connection_id: event.connection_id.clone(),
            instance_id: event.instance_id.clone(),
        };
        if let Some(before) = self.taken.get(&id) {
            return match self.delivery {
                Delivery::AtLeastOnce if *before == taken => {
                    self.repeats += 1;
                    Ok(())
                }
                Delivery::AtLeastOnce => Err(format!(
                    "{id} came again with other content: {before:?} then {taken:?}"
                )),
                Delivery::ExactlyOnce => Err(format!("{id} came twice: {taken:?}")),
            };
        }
        let position: Position = event
            .position
            .parse()
            .map_err(|error| format!("{id}: position {:?}: {error}", event.position))?;
        if position.get(id.bucket) != Some(id.point) {
            return Err(format!(
                "{id}: its position is at {:?} in its log, not at the event",
                position.get(id.bucket)
            ));
        }
        let last = self
            .position
            .get(id.bucket)
            .ok_or_else(|| format!("{id}: the snapshot's position does not cover its log"))?;
        if !last.precedes(id.point) {
            let what = if id.point.seq <= last.seq {
                "out of order (or a repeat of an event before the snapshot)"
            } else {
                "after a gap"
            };
            return Err(format!(
                "{id} came {what}: the last event taken in log {} is {last}",
                id.bucket
            ));
        }
        self.check_transition(&id, &taken)?;
        self.position.set(id.bucket, id.point);
        self.resume.clone_from(&event.position);
        let recent = self.recent.entry(taken.user_id.clone()).or_default();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(format!(
            "{id} {:?} {} on {}",
            taken.kind, taken.connection_id, taken.instance_id
        ));
        self.taken.insert(id, taken);
        Ok(())
    }

    fn check_transition(&mut self, id: &EventId, event: &Taken) -> Result<(), String> {
        let user = &event.user_id;
        let fail = |ledger: &Self, what: String| {
            Err(format!(
                "{id} {:?} of {user} ({}): {what}; the user's last events: {:?}",
                event.kind,
                event.connection_id,
                ledger.recent.get(user)
            ))
        };
        let owed = self.owed.get(user).copied();
        if let Some(owed) = owed
            && owed != event.kind
        {
            return fail(self, format!("{owed:?} was owed first"));
        }
        let ids = self.state.entry(user.clone()).or_default();
        match event.kind {
            EventKind::Connected => {
                let was_empty = ids.is_empty();
                if !ids.insert(event.connection_id.clone()) {
                    return fail(self, "the connection was open already".into());
                }
                if was_empty {
                    self.owed.insert(user.clone(), EventKind::Online);
                }
            }
            EventKind::Disconnected => {
                if !ids.remove(&event.connection_id) {
                    let open = ids.clone();
                    return fail(
                        self,
                        format!("the connection was not open (open: {open:?})"),
                    );
                }
                if ids.is_empty() {
                    self.owed.insert(user.clone(), EventKind::Offline);
                }
            }
            EventKind::Online | EventKind::Offline => {
                if owed.is_none() {
                    let open = ids.clone();
                    return fail(self, format!("not at a transition (open: {open:?})"));
                }
                self.owed.remove(user);
            }
            other => return fail(self, format!("an unexpected kind {other:?}")),
        }
        if self.state.get(user).is_some_and(BTreeSet::is_empty) {
            self.state.remove(user);
        }
        Ok(())
    }

    /// Every user's open connections, as the events say (users with none
    /// left out).
    pub fn state(&self) -> &PresenceState {
        &self.state
    }

    /// The `position` to resume after: the last event's, or the snapshot's.
    pub fn resume_position(&self) -> &str {
        &self.resume
    }

    /// Whether every log `target` covers has been taken up to its point
    /// there (a fresh snapshot's position: nothing before it is missing).
    pub fn reached(&self, target: &Position) -> bool {
        target
            .iter()
            .all(|(bucket, point)| self.position.get(bucket).is_some_and(|at| at >= point))
    }

    /// Where the ledger is, log by log.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Where it started, log by log.
    pub fn start(&self) -> &Position {
        &self.start
    }

    /// Every event taken, by id.
    pub fn taken(&self) -> &BTreeMap<EventId, Taken> {
        &self.taken
    }

    /// Users owed an `online` or `offline` (none once a stream has settled).
    pub fn owed(&self) -> &HashMap<String, EventKind> {
        &self.owed
    }

    /// Repeats skipped (at-least-once delivery).
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// The ids taken in `bucket` after the start and up to `until`, in order.
    pub fn ids_in(&self, bucket: u16, until: LogPoint) -> Vec<LogPoint> {
        let from = self.start.get(bucket).unwrap_or_default();
        self.taken
            .keys()
            .filter(|id| id.bucket == bucket && id.point > from && id.point <= until)
            .map(|id| id.point)
            .collect()
    }

    /// Panics unless, in every log up to `target`, the ids taken after the
    /// start are exactly those `logs` (every log's ids, as Redis holds
    /// them) has there: `who` names the deliverer.
    pub fn assert_holds(&self, logs: &BTreeMap<u16, Vec<LogPoint>>, target: &Position, who: &str) {
        for (bucket, until) in target.iter() {
            let from = self.start.get(bucket).unwrap_or_default();
            let in_log: Vec<_> = logs
                .get(&bucket)
                .into_iter()
                .flatten()
                .filter(|id| **id > from && **id <= until)
                .copied()
                .collect();
            assert_eq!(
                self.ids_in(bucket, until),
                in_log,
                "log {bucket}: the ids {who} (left) against the log (right)"
            );
        }
    }
}

/// Users' connection ids from `GetUsers`/`Snapshot` answers (users with
/// none left out).
pub fn state_of<'a>(users: impl IntoIterator<Item = &'a UserPresence>) -> PresenceState {
    users
        .into_iter()
        .filter(|u| !u.connections.is_empty())
        .map(|u| {
            (
                u.user_id.clone(),
                u.connections
                    .iter()
                    .map(|c| c.connection_id.clone())
                    .collect(),
            )
        })
        .collect()
}

/// The users whose connections differ between two states, each with both
/// sides: what a failure prints.
pub fn differences(left: &PresenceState, right: &PresenceState) -> Vec<String> {
    let empty = BTreeSet::new();
    let users: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    users
        .into_iter()
        .filter_map(|user| {
            let (l, r) = (
                left.get(user).unwrap_or(&empty),
                right.get(user).unwrap_or(&empty),
            );
            (l != r).then(|| {
                format!(
                    "{user}: only left {:?}, only right {:?}",
                    l.difference(r).collect::<Vec<_>>(),
                    r.difference(l).collect::<Vec<_>>()
                )
            })
        })
        .collect()
}
