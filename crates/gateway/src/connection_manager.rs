//! Which connections this instance holds, by user.
//!
//! Only this instance's: what other instances hold is in presence, and the
//! per-user limit across instances is enforced where registration happens
//! (`Presence::admit`), so a gateway's memory follows its own connections
//! and not the size of the fleet.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

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

/// Tracks every open connection of this instance by user.
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
    /// on this instance (0: no limit). `Err` carries the count that refused
    /// it. The limit across instances is presence's (`Presence::admit`);
    /// this one is exact locally and still holds while Redis is away.
    pub fn try_add(
        &self,
        user_id: &Arc<str>,
        connection: LocalConnection,
        limit: usize,
    ) -> Result<usize, usize> {
        let mut inner = self.lock();
        if limit > 0 {
            let held = inner.local.get(&**user_id).map_or(0, Vec::len);
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
    fn the_local_limit_counts_this_instances_connections() {
        let manager = ConnectionManager::new();
        assert_eq!(manager.try_add(&"alice".into(), conn("a1"), 2), Ok(1));
        assert_eq!(manager.try_add(&"alice".into(), conn("a2"), 2), Ok(2));
        assert_eq!(manager.try_add(&"alice".into(), conn("a3"), 2), Err(2));
        assert_eq!(manager.local_count("alice"), 2);
        assert_eq!(manager.try_add(&"bob".into(), conn("b1"), 2), Ok(1));
        assert_eq!(
            manager.try_add(&"alice".into(), conn("a3"), 0),
            Ok(3),
            "0 is no limit"
        );
    }
}
