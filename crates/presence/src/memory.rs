//! The single-node backend: the same state and events as Redis, in a map.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use pulse_protocol::{
    EventKind, PresenceEvent,
    event::{LogPoint, now_ms},
};
// tokio's clock, so that tests can pause and advance time over a block.
use tokio::{sync::broadcast, time::Instant};

use crate::{
    Admission, ConnectionRecord, OnlineCount,
    event_log::{EventLogOptions, LogRead, Snapshotted, memory::MemoryLog},
    sort_connections,
};

/// Connections in memory. Events are sent while the lock is held, so that
/// they reach subscribers in exactly the order the state changed, as Redis
/// scripts guarantee for the shared backend.
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    events: broadcast::Sender<PresenceEvent>,
}

#[derive(Default)]
struct State {
    /// user id -> connection id -> (instance id, connected at).
    users: HashMap<String, HashMap<String, (String, u64)>>,
    /// instance id -> connection id -> user id.
    instances: HashMap<String, HashMap<String, String>>,
    connections: u64,
    /// user id -> (blocked until, reason).
    blocks: HashMap<String, (Instant, String)>,
    /// user id -> the channels the server API subscribed the user to.
    pub(crate) subscriptions: HashMap<String, std::collections::BTreeSet<String>>,
    /// The event log (the bus carries what is appended to it).
    log: Box<MemoryLog>,
}

impl MemoryStore {
    pub(crate) fn new(events: broadcast::Sender<PresenceEvent>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in
        // a way later calls would trip on, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an event to the log and sends it on the bus, under the lock.
    fn publish(
        &self,
        state: &mut State,
        kind: EventKind,
        user_id: &str,
        connection_id: &str,
        instance_id: &str,
        at_ms: u64,
    ) {
        let event = state
            .log
            .append(kind, user_id, connection_id, instance_id, at_ms, None);
        // Sending fails only when nobody subscribes, which is fine.
        let _ = self.events.send(event);
    }

    /// Logs a channel `join` or `leave` (and sends it on the bus).
    pub(crate) fn log_member(
        &self,
        kind: EventKind,
        user_id: &str,
        connection_id: &str,
        instance_id: &str,
        channel: &str,
    ) {
        let mut state = self.lock();
        let mut event = state.log.append(
            kind,
            user_id,
            connection_id,
            instance_id,
            now_ms(),
            Some(channel),
        );
        event.channel = Some(channel.to_owned());
        let _ = self.events.send(event);
    }

    pub(crate) fn set_log_options(&self, options: EventLogOptions) {
        self.lock().log.set_options(options);
    }

    pub(crate) fn read_log(&self, after: LogPoint, count: usize) -> LogRead {
        self.lock().log.read(after, count)
    }

    pub(crate) fn log_tail(&self) -> LogPoint {
        self.lock().log.tail()
    }

    pub(crate) fn last_seen(&self, user_id: &str) -> Option<u64> {
        self.lock().log.last_seen(user_id)
    }

    /// Every online user and where the log is, under one lock.
    pub(crate) fn snapshot(&self) -> Snapshotted {
        let state = self.lock();
        let users = state
            .users
            .keys()
            .map(|user_id| {
                let mut records = records_of(&state, user_id);
                sort_connections(&mut records);
                (user_id.clone(), records)
            })
            .collect();
        state.log.snapshot(users)
    }

    pub(crate) fn register(&self, record: &ConnectionRecord) {
        let mut state = self.lock();
        self.insert(&mut state, record);
    }

    /// Registers `record` unless its user already holds `max_per_user`
    /// connections (0: no limit); the count and the insert share the lock,
    /// as they share one script with Redis.
    pub(crate) fn admit(&self, record: &ConnectionRecord, max_per_user: u64) -> Admission {
        let mut state = self.lock();
        let held = state.users.get(&record.user_id);
        let known = held.is_some_and(|held| held.contains_key(&record.connection_id));
        let held = held.map_or(0, |held| held.len() as u64);
        if !known && let Some((until, reason)) = state.blocks.get(&record.user_id) {
            let now = Instant::now();
            if now < *until {
                return Admission::Blocked {
                    reason: reason.clone(),
                    remaining: *until - now,
                };
            }
            state.blocks.remove(&record.user_id);
        }
        if !known && max_per_user > 0 && held >= max_per_user {
            return Admission::TooMany { held };
        }
        self.insert(&mut state, record);
        Admission::Admitted {
            server_subscriptions: state
                .subscriptions
                .get(&record.user_id)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Blocks a user's new connections until `duration` from now, replacing
    /// any block they had; blocks that ended are dropped on the way.
    /// Records (`subscribe`) or forgets a server-side subscription of a
    /// user; whether the set changed. Refuses past `limit` channels.
    pub(crate) fn set_subscription(
        &self,
        user_id: &str,
        channel: &str,
        subscribe: bool,
        limit: usize,
    ) -> Result<bool, usize> {
        let mut state = self.lock();
        let set = state.subscriptions.entry(user_id.to_owned()).or_default();
        let changed = if subscribe {
            if !set.contains(channel) && set.len() >= limit {
                return Err(set.len());
            }
            set.insert(channel.to_owned())
        } else {
            set.remove(channel)
        };
        if set.is_empty() {
            state.subscriptions.remove(user_id);
        }
        Ok(changed)
    }

    /// The channels the server API subscribed `user_id` to.
    pub(crate) fn subscriptions(&self, user_id: &str) -> Vec<String> {
        self.lock()
            .subscriptions
            .get(user_id)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn block(&self, user_id: &str, duration: Duration, reason: &str) {
        let mut state = self.lock();
        let now = Instant::now();
        state.blocks.retain(|_, (until, _)| *until > now);
        state
            .blocks
            .insert(user_id.to_owned(), (now + duration, reason.to_owned()));
    }

    /// Adds a connection and publishes its events; nothing when the user
    /// already has its id.
    fn insert(&self, state: &mut State, record: &ConnectionRecord) {
        let connections = state.users.entry(record.user_id.clone()).or_default();
        if connections.contains_key(&record.connection_id) {
            return;
        }
        connections.insert(
            record.connection_id.clone(),
            (record.instance_id.clone(), record.connected_at_ms),
        );
        let first = connections.len() == 1;
        state
            .instances
            .entry(record.instance_id.clone())
            .or_default()
            .insert(record.connection_id.clone(), record.user_id.clone());
        state.connections += 1;
        let (user, connection, instance) =
            (&record.user_id, &record.connection_id, &record.instance_id);
        self.publish(
            state,
            EventKind::Connected,
            user,
            connection,
            instance,
            record.connected_at_ms,
        );
        if first {
            self.publish(
                state,
                EventKind::Online,
                user,
                connection,
                instance,
                record.connected_at_ms,
            );
        }
    }

    pub(crate) fn unregister(&self, user_id: &str, connection_id: &str) {
        let mut state = self.lock();
        self.remove(&mut state, user_id, connection_id, None, now_ms());
    }

    pub(crate) fn unregister_instance(&self, instance_id: &str) -> u64 {
        let mut state = self.lock();
        let Some(held) = state.instances.remove(instance_id) else {
            return 0;
        };
        let at_ms = now_ms();
        let mut removed = 0;
        for (connection_id, user_id) in held {
            if self.remove(
                &mut state,
                &user_id,
                &connection_id,
                Some(instance_id),
                at_ms,
            ) {
                removed += 1;
            }
        }
        removed
    }

    /// Removes one connection (only if `instance` holds it, when given) and
    /// publishes its events; false when there was nothing to remove.
    fn remove(
        &self,
        state: &mut State,
        user_id: &str,
        connection_id: &str,
        instance: Option<&str>,
        at_ms: u64,
    ) -> bool {
        let Some(connections) = state.users.get_mut(user_id) else {
            return false;
        };
        let held_elsewhere = instance.is_some_and(|instance| {
            connections
                .get(connection_id)
                .is_some_and(|(held_by, _)| held_by != instance)
        });
        if held_elsewhere {
            return false;
        }
        let Some((instance_id, _)) = connections.remove(connection_id) else {
            return false;
        };
        let last = connections.is_empty();
        if last {
            state.users.remove(user_id);
        }
        if let Some(index) = state.instances.get_mut(&instance_id) {
            index.remove(connection_id);
            if index.is_empty() {
                state.instances.remove(&instance_id);
            }
        }
        state.connections -= 1;
        self.publish(
            state,
            EventKind::Disconnected,
            user_id,
            connection_id,
            &instance_id,
            at_ms,
        );
        if last {
            self.publish(
                state,
                EventKind::Offline,
                user_id,
                connection_id,
                &instance_id,
                at_ms,
            );
        }
        true
    }

    /// How many connections the user has (0 or 1 with `only`).
    pub(crate) fn count_connections(&self, user_id: &str, only: Option<&str>) -> u64 {
        let state = self.lock();
        let Some(connections) = state.users.get(user_id) else {
            return 0;
        };
        match only {
            Some(connection_id) => u64::from(connections.contains_key(connection_id)),
            None => connections.len() as u64,
        }
    }

    pub(crate) fn user(&self, user_id: &str) -> Vec<ConnectionRecord> {
        let state = self.lock();
        let mut records = records_of(&state, user_id);
        drop(state);
        sort_connections(&mut records);
        records
    }

    pub(crate) fn count_online(&self) -> OnlineCount {
        let state = self.lock();
        OnlineCount {
            users: state.users.len() as u64,
            connections: state.connections,
        }
    }
}

fn records_of(state: &State, user_id: &str) -> Vec<ConnectionRecord> {
    state
        .users
        .get(user_id)
        .map_or_else(Vec::new, |connections| {
            connections
                .iter()
                .map(
                    |(connection_id, (instance_id, connected_at_ms))| ConnectionRecord {
                        connection_id: connection_id.clone(),
                        user_id: user_id.to_owned(),
                        instance_id: instance_id.clone(),
                        connected_at_ms: *connected_at_ms,
                    },
                )
                .collect()
        })
}
