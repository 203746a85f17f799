//! Which connections this instance holds, by user, and how many every other
//! instance holds, as learnt from the presence bus.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use pulse_presence::ConnectionRecord;
use pulse_protocol::{EventKind, PresenceEvent};

use crate::mailbox::Mailbox;

/// A connection held by this instance: what is needed to reach its socket.
#[derive(Debug, Clone)]
pub struct LocalConnection {
    /// The connection's id, unique across the fleet.
    pub connection_id: Arc<str>,
    /// When it authenticated, milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Its bounded queue of encoded server messages, and the way to close
    /// it from outside its session.
    pub mailbox: Arc<Mailbox>,
}

/// Tracks every open connection of this instance by user, and the connections
/// of other instances as the presence bus reports them.
///
/// All methods take `&self` and hold an internal lock only for the map
/// operation itself, never across an `.await`.
#[derive(Debug, Default)]
pub struct ConnectionManager {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A user's connections, in a vector: a user holds a few, and one entry
    /// costs 32 bytes where a map of one costs hundreds.
    local: HashMap<Arc<str>, Vec<LocalConnection>>,
    local_connections: usize,
    /// user id -> connection id -> instance id, for every other instance.
    remote: HashMap<String, HashMap<String, String>>,
    remote_connections: usize,
}

impl ConnectionManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connection of `user_id`; returns how many local connections the user has now.
    pub fn add(&self, user_id: &Arc<str>, connection: LocalConnection) -> usize {
        self.try_add(user_id, connection, 0)
            .expect("no limit, never refused")
    }

    /// Adds a connection unless the user already holds `limit` connections
    /// across every instance (0: no limit). `Err` carries the count that
    /// refused it. Local counts are exact; other instances' are as recent as
    /// the presence bus.
    pub fn try_add(
        &self,
        user_id: &Arc<str>,
        connection: LocalConnection,
        limit: usize,
    ) -> Result<usize, usize> {
        let mut inner = self.lock();
        if limit > 0 {
            let held = inner.local.get(&**user_id).map_or(0, Vec::len)
                + inner.remote.get(&**user_id).map_or(0, HashMap::len);
            if held >= limit {
                return Err(held);
            }
        }
        let connections = inner.local.entry(user_id.clone()).or_default();
        let added = match connections
            .iter_mut()
            .find(|held| held.connection_id == connection.connection_id)
        {
            Some(held) => {
                *held = connection;
                false
            }
            None => {
                connections.push(connection);
                true
            }
        };
        let count = connections.len();
        if added {
            inner.local_connections += 1;
        }
        Ok(count)
    }

    /// Removes one connection; returns whether it was there.
    pub fn remove(&self, user_id: &str, connection_id: &str) -> bool {
        let mut inner = self.lock();
        let Some(connections) = inner.local.get_mut(user_id) else {
            return false;
        };
        let Some(position) = connections
            .iter()
            .position(|held| &*held.connection_id == connection_id)
        else {
            return false;
        };
        connections.swap_remove(position);
        if connections.is_empty() {
            inner.local.remove(user_id);
        } else if connections.capacity() > 2 * connections.len() + 4 {
            connections.shrink_to_fit();
        }
        inner.local_connections -= 1;
        true
    }

    /// Removes and returns every local connection of a user.
    pub fn remove_user(&self, user_id: &str) -> Vec<LocalConnection> {
        let mut inner = self.lock();
        let removed = inner.local.remove(user_id).unwrap_or_default();
        inner.local_connections -= removed.len();
        removed
    }

    /// The local connections of a user.
    pub fn connections(&self, user_id: &str) -> Vec<LocalConnection> {
        self.lock().local.get(user_id).cloned().unwrap_or_default()
    }

    /// Calls `f` with each local connection of a user, under the lock: `f`
    /// must not block (a `try_send` or a kick, not an `.await`).
    pub fn for_each_connection(&self, user_id: &str, mut f: impl FnMut(&LocalConnection)) {
        if let Some(connections) = self.lock().local.get(user_id) {
            connections.iter().for_each(&mut f);
        }
    }

    /// How many connections this instance holds for a user.
    pub fn local_count(&self, user_id: &str) -> usize {
        self.lock().local.get(user_id).map_or(0, Vec::len)
    }

    /// How many connections other instances hold for a user.
    pub fn remote_count(&self, user_id: &str) -> usize {
        self.lock().remote.get(user_id).map_or(0, HashMap::len)
    }

    /// How many connections this instance holds in all.
    pub fn len(&self) -> usize {
        self.lock().local_connections
    }

    /// Whether this instance holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many users have at least one connection on this instance.
    pub fn user_count(&self) -> usize {
        self.lock().local.len()
    }

    /// Every local connection, with its user id.
    pub fn snapshot(&self) -> Vec<(Arc<str>, LocalConnection)> {
        self.lock()
            .local
            .iter()
            .flat_map(|(user_id, connections)| {
                connections
                    .iter()
                    .map(move |connection| (user_id.clone(), connection.clone()))
            })
            .collect()
    }

    /// How many connections other instances hold in all.
    pub fn remote_len(&self) -> usize {
        self.lock().remote_connections
    }

    /// Applies a presence event of another instance (`own_instance` is skipped).
    pub fn apply_remote_event(&self, own_instance: &str, event: &PresenceEvent) {
        if event.instance_id == own_instance {
            return;
        }
        let mut inner = self.lock();
        match event.kind {
            EventKind::Connected => {
                let added = inner
                    .remote
                    .entry(event.user_id.clone())
                    .or_default()
                    .insert(event.connection_id.clone(), event.instance_id.clone())
                    .is_none();
                if added {
                    inner.remote_connections += 1;
                }
            }
            EventKind::Disconnected => {
                let Some(connections) = inner.remote.get_mut(&event.user_id) else {
                    return;
                };
                let removed = connections.remove(&event.connection_id).is_some();
                if connections.is_empty() {
                    inner.remote.remove(&event.user_id);
                }
                if removed {
                    inner.remote_connections -= 1;
                }
            }
            // Online and offline follow a connected or disconnected event,
            // which already carried the change.
            EventKind::Online | EventKind::Offline => {}
        }
    }

    /// Replaces the whole view of other instances with a snapshot.
    pub fn replace_remote(&self, own_instance: &str, records: Vec<ConnectionRecord>) {
        let mut remote: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut count = 0;
        for record in records {
            if record.instance_id == own_instance {
                continue;
            }
            if remote
                .entry(record.user_id)
                .or_default()
                .insert(record.connection_id, record.instance_id)
                .is_none()
            {
                count += 1;
            }
        }
        let mut inner = self.lock();
        inner.remote = remote;
        inner.remote_connections = count;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in
        // a way that matters more than losing the gateway, so recover the data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str) -> LocalConnection {
        LocalConnection {
            connection_id: id.into(),
            connected_at_ms: 1,
            mailbox: Arc::new(Mailbox::new()),
        }
    }

    fn ids(connections: &[LocalConnection]) -> Vec<String> {
        let mut ids: Vec<String> = connections
            .iter()
            .map(|c| c.connection_id.to_string())
            .collect();
        ids.sort();
        ids
    }

    fn event(kind: EventKind, user: &str, conn: &str, instance: &str) -> PresenceEvent {
        PresenceEvent {
            user_id: user.into(),
            kind,
            connection_id: conn.into(),
            instance_id: instance.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn tracks_connections_by_user_id() {
        let manager = ConnectionManager::new();
        manager.add(&"alice".into(), conn("a1"));
        manager.add(&"bob".into(), conn("b1"));
        assert_eq!(ids(&manager.connections("alice")), ["a1"]);
        assert_eq!(ids(&manager.connections("bob")), ["b1"]);
        assert!(manager.connections("carol").is_empty());
        assert_eq!(manager.user_count(), 2);
    }

    #[test]
    fn adding_increments_the_count() {
        let manager = ConnectionManager::new();
        assert_eq!(manager.add(&"alice".into(), conn("a1")), 1);
        assert_eq!(manager.add(&"alice".into(), conn("a2")), 2);
        assert_eq!(manager.local_count("alice"), 2);
        assert_eq!(manager.len(), 2);
        assert_eq!(manager.user_count(), 1);
    }

    #[test]
    fn removing_decrements_the_count() {
        let manager = ConnectionManager::new();
        manager.add(&"alice".into(), conn("a1"));
        manager.add(&"alice".into(), conn("a2"));
        assert!(manager.remove("alice", "a1"));
        assert_eq!(manager.local_count("alice"), 1);
        assert_eq!(manager.len(), 1);
        assert!(!manager.remove("alice", "a1"), "a second remove is a no-op");
        assert!(!manager.remove("bob", "a2"), "the user must match");
        assert!(manager.remove("alice", "a2"));
        assert_eq!(manager.local_count("alice"), 0);
        assert_eq!(manager.user_count(), 0);
        assert!(manager.is_empty());
    }

    #[test]
    fn a_users_connections_are_exactly_that_set() {
        let manager = ConnectionManager::new();
        for id in ["a1", "a2", "a3"] {
            manager.add(&"alice".into(), conn(id));
        }
        manager.add(&"bob".into(), conn("b1"));
        manager.remove("alice", "a2");
        assert_eq!(ids(&manager.connections("alice")), ["a1", "a3"]);
    }

    #[test]
    fn clean_up_removes_all_of_a_users_connections() {
        let manager = ConnectionManager::new();
        for id in ["a1", "a2", "a3"] {
            manager.add(&"alice".into(), conn(id));
        }
        manager.add(&"bob".into(), conn("b1"));
        assert_eq!(ids(&manager.remove_user("alice")), ["a1", "a2", "a3"]);
        assert!(manager.connections("alice").is_empty());
        assert_eq!(manager.len(), 1);
        assert_eq!(ids(&manager.connections("bob")), ["b1"]);
        assert!(manager.remove_user("alice").is_empty());
    }

    #[test]
    fn the_same_connection_id_is_counted_once() {
        let manager = ConnectionManager::new();
        assert_eq!(manager.add(&"alice".into(), conn("a1")), 1);
        assert_eq!(manager.add(&"alice".into(), conn("a1")), 1);
        assert_eq!(manager.len(), 1);
    }

    #[test]
    fn the_per_user_limit_counts_every_instance() {
        let manager = ConnectionManager::new();
        assert_eq!(manager.try_add(&"alice".into(), conn("a1"), 3), Ok(1));
        manager.apply_remote_event("me", &event(EventKind::Connected, "alice", "r1", "other"));
        assert_eq!(manager.try_add(&"alice".into(), conn("a2"), 3), Ok(2));
        assert_eq!(manager.try_add(&"alice".into(), conn("a3"), 3), Err(3));
        assert_eq!(manager.local_count("alice"), 2);
        assert_eq!(manager.try_add(&"bob".into(), conn("b1"), 3), Ok(1));
        assert_eq!(
            manager.try_add(&"alice".into(), conn("a3"), 0),
            Ok(3),
            "0 is no limit"
        );
    }

    #[test]
    fn counts_other_instances_from_the_bus() {
        let manager = ConnectionManager::new();
        manager.add(&"alice".into(), conn("a1"));
        manager.apply_remote_event("me", &event(EventKind::Connected, "alice", "r1", "other"));
        manager.apply_remote_event("me", &event(EventKind::Online, "alice", "r1", "other"));
        manager.apply_remote_event("me", &event(EventKind::Connected, "alice", "r2", "third"));
        // Our own events are already in the local map.
        manager.apply_remote_event("me", &event(EventKind::Connected, "alice", "a1", "me"));
        assert_eq!(manager.remote_count("alice"), 2);
        assert_eq!(manager.local_count("alice"), 1);

        manager.apply_remote_event(
            "me",
            &event(EventKind::Disconnected, "alice", "r1", "other"),
        );
        manager.apply_remote_event(
            "me",
            &event(EventKind::Disconnected, "alice", "r1", "other"),
        );
        assert_eq!(manager.remote_count("alice"), 1);

        manager.replace_remote(
            "me",
            vec![
                ConnectionRecord {
                    connection_id: "x".into(),
                    user_id: "bob".into(),
                    instance_id: "other".into(),
                    connected_at_ms: 1,
                },
                ConnectionRecord {
                    connection_id: "a1".into(),
                    user_id: "alice".into(),
                    instance_id: "me".into(),
                    connected_at_ms: 1,
                },
            ],
        );
        assert_eq!(manager.remote_count("alice"), 0);
        assert_eq!(manager.remote_count("bob"), 1);
    }
}
