//! Channel membership in memory: the same answers and the same `join` and
//! `leave` frames as the Redis scripts, for one instance. Frames go out
//! while the table's lock is held, so they reach feeds in the order the
//! table changed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
};

use pulse_protocol::{
    ChannelMember,
    channel::{MemberChange, member_frame},
};

use super::{ChannelPresence, Entered, Left, MemberRecord};
use crate::{channels::LocalHub, memory::MemoryStore};
use pulse_protocol::EventKind;

/// Every channel's members, and each membership by where it is held.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// channel -> its members.
    channels: HashMap<String, Members>,
    /// (instance id, channel, connection id) -> (user id, join/leave cap).
    held: HashMap<(String, String, String), (String, u32)>,
}

#[derive(Debug, Default)]
struct Members {
    /// user id -> how many of their connections are in.
    users: HashMap<String, u64>,
    connections: u64,
}

impl MemberTable {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enter(
        &self,
        record: &MemberRecord,
        instance_id: &str,
        max_subscribers: u32,
        hub: &LocalHub,
        log: &MemoryStore,
    ) -> Entered {
        let mut state = self.lock();
        let key = (
            instance_id.to_owned(),
            record.channel.clone(),
            record.connection_id.clone(),
        );
        if state.held.contains_key(&key) {
            return Entered::Already;
        }
        let held = state
            .channels
            .get(&record.channel)
            .map_or(0, |members| members.connections);
        if max_subscribers > 0 && held >= u64::from(max_subscribers) {
            return Entered::Full { held };
        }
        state
            .held
            .insert(key, (record.user_id.clone(), record.join_leave_cap));
        let members = state.channels.entry(record.channel.clone()).or_default();
        members.connections += 1;
        let count = members.users.entry(record.user_id.clone()).or_default();
        *count += 1;
        if *count > 1 {
            return Entered::Added;
        }
        let users = members.users.len();
        if record.join_leave_cap > 0 && users <= record.join_leave_cap as usize {
            hub.publish(
                &record.channel,
                &member_frame(MemberChange::Join, &record.channel, &record.user_id),
                None,
            );
        }
        // Under the table's lock, so a channel's joins and leaves are logged
        // in the order they happened.
        log.log_member(
            EventKind::Join,
            &record.user_id,
            &record.connection_id,
            instance_id,
            &record.channel,
        );
        Entered::Joined
    }

    pub(crate) fn leave(
        &self,
        channel: &str,
        connection_id: &str,
        instance_id: &str,
        hub: &LocalHub,
        log: &MemoryStore,
    ) -> Left {
        let mut state = self.lock();
        let key = (
            instance_id.to_owned(),
            channel.to_owned(),
            connection_id.to_owned(),
        );
        let Some((user_id, cap)) = state.held.remove(&key) else {
            return Left::NotIn;
        };
        let members = state
            .channels
            .get_mut(channel)
            .expect("a held membership has its channel");
        members.connections -= 1;
        let users = members.users.len();
        let count = members
            .users
            .get_mut(&user_id)
            .expect("a held membership counts its user");
        *count -= 1;
        let left = *count == 0;
        if left {
            members.users.remove(&user_id);
        }
        if members.connections == 0 {
            state.channels.remove(channel);
        }
        if !left {
            return Left::Removed;
        }
        if cap > 0 && users <= cap as usize {
            hub.publish(
                channel,
                &member_frame(MemberChange::Leave, channel, &user_id),
                None,
            );
        }
        log.log_member(
            EventKind::Leave,
            &user_id,
            connection_id,
            instance_id,
            channel,
        );
        Left::UserLeft
    }

    pub(crate) fn presence(&self, channel: &str, list_up_to: u32) -> ChannelPresence {
        let state = self.lock();
        let Some(members) = state.channels.get(channel) else {
            return ChannelPresence {
                users: Some(Vec::new()),
                num_users: 0,
                num_connections: 0,
            };
        };
        let num_users = members.users.len() as u64;
        ChannelPresence {
            users: (num_users <= u64::from(list_up_to)).then(|| {
                members
                    .users
                    .iter()
                    .map(|(user_id, connections)| ChannelMember {
                        user_id: user_id.clone(),
                        connections: *connections,
                    })
                    .collect()
            }),
            num_users,
            num_connections: members.connections,
        }
    }

    pub(crate) fn channels(&self, prefix: &str) -> BTreeMap<String, u64> {
        self.lock()
            .channels
            .iter()
            .filter(|(channel, _)| channel.starts_with(prefix))
            .map(|(channel, members)| (channel.clone(), members.connections))
            .collect()
    }

    /// Takes every membership `instance_id` holds out, with their `leave`s
    /// (an instance that unregisters).
    pub(crate) fn purge_instance(&self, instance_id: &str, hub: &LocalHub, log: &MemoryStore) {
        let held: Vec<(String, String)> = self
            .lock()
            .held
            .keys()
            .filter(|(instance, _, _)| instance == instance_id)
            .map(|(_, channel, connection)| (channel.clone(), connection.clone()))
            .collect();
        for (channel, connection_id) in held {
            self.leave(&channel, &connection_id, instance_id, hub, log);
        }
    }
}
