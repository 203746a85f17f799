//! Channel membership on Redis: `enter_channel.lua`, `leave_channel.lua`
//! and `channel_presence.lua` on the channel's bucket, the buckets'
//! `chans` hashes for the active channels, and the re-sync of what one
//! instance holds.

use std::collections::{BTreeMap, HashSet};

use futures_util::future::try_join_all;
use pulse_protocol::ChannelMember;
use redis::Value;

use super::{CHANNEL_PRESENCE, ENTER_CHANNEL, LEAVE_CHANNEL, RedisStore, unavailable};
use crate::{ChannelPresence, Entered, Left, MemberRecord, PresenceError, SyncReport, bucket_of};

impl RedisStore {
    fn enter_invocation(
        &self,
        record: &MemberRecord,
        instance_id: &str,
        max_subscribers: u32,
    ) -> redis::ScriptInvocation<'static> {
        let bucket = bucket_of(&record.channel);
        let mut invocation = ENTER_CHANNEL.prepare_invoke();
        invocation
            .key(self.keys.members(&record.channel))
            .key(self.keys.active_channels(bucket))
            .key(self.keys.member_index(bucket, instance_id))
            .key(self.keys.instances(bucket))
            .key(self.keys.publications(&record.channel))
            .arg(&record.channel)
            .arg(&record.user_id)
            .arg(&record.connection_id)
            .arg(instance_id)
            .arg(self.lease_ttl_ms)
            .arg(max_subscribers)
            .arg(record.join_leave_cap)
            .arg(self.keys.channel());
        invocation
    }

    pub(crate) async fn enter_channel(
        &self,
        record: &MemberRecord,
        instance_id: &str,
        max_subscribers: u32,
    ) -> Result<Entered, PresenceError> {
        let mut handle = self.handle().await?;
        let (status, detail): (i64, i64) = self
            .enter_invocation(record, instance_id, max_subscribers)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(match (status, detail) {
            (1, 1) => Entered::Joined,
            (1, _) => Entered::Added,
            (-1, held) => Entered::Full {
                held: u64::try_from(held).unwrap_or(0),
            },
            _ => Entered::Already,
        })
    }

    fn leave_invocation(
        &self,
        channel: &str,
        connection_id: &str,
        instance_id: &str,
    ) -> redis::ScriptInvocation<'static> {
        let bucket = bucket_of(channel);
        let mut invocation = LEAVE_CHANNEL.prepare_invoke();
        invocation
            .key(self.keys.member_index(bucket, instance_id))
            .key(self.keys.members(channel))
            .key(self.keys.active_channels(bucket))
            .key(self.keys.publications(channel))
            .arg(channel)
            .arg(connection_id)
            .arg(self.keys.channel());
        invocation
    }

    pub(crate) async fn leave_channel(
        &self,
        channel: &str,
        connection_id: &str,
        instance_id: &str,
    ) -> Result<Left, PresenceError> {
        let mut handle = self.handle().await?;
        let answer: i64 = self
            .leave_invocation(channel, connection_id, instance_id)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(match answer {
            2 => Left::UserLeft,
            1 => Left::Removed,
            _ => Left::NotIn,
        })
    }

    pub(crate) async fn channel_presence(
        &self,
        channel: &str,
        list_up_to: u32,
    ) -> Result<ChannelPresence, PresenceError> {
        let mut handle = self.handle().await?;
        let answer: Value = CHANNEL_PRESENCE
            .key(self.keys.members(channel))
            .key(self.keys.active_channels(bucket_of(channel)))
            .arg(channel)
            .arg(list_up_to)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        let unexpected =
            || PresenceError::Unavailable(format!("redis: unexpected presence answer {answer:?}"));
        let Value::Array(fields) = &answer else {
            return Err(unexpected());
        };
        let count = |value: &Value| match value {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::BulkString(digits) => std::str::from_utf8(digits).ok()?.parse().ok(),
            _ => None,
        };
        let (num_users, num_connections, list) = match fields.as_slice() {
            [users, connections] => (count(users), count(connections), None),
            [users, connections, Value::Array(list)] => {
                (count(users), count(connections), Some(list))
            }
            _ => return Err(unexpected()),
        };
        let users = list
            .map(|list| {
                list.chunks(2)
                    .map(|pair| match pair {
                        [Value::BulkString(user_id), connections] => Some(ChannelMember {
                            user_id: String::from_utf8_lossy(user_id).into_owned(),
                            connections: count(connections)?,
                        }),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .map(|users| users.ok_or_else(unexpected))
            .transpose()?;
        Ok(ChannelPresence {
            users,
            num_users: num_users.ok_or_else(unexpected)?,
            num_connections: num_connections.ok_or_else(unexpected)?,
        })
    }

    pub(crate) async fn active_channels(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, u64>, PresenceError> {
        let per_bucket = self
            .each_bucket(|mut handle, bucket| {
                let key = self.keys.active_channels(bucket);
                async move {
                    redis::cmd("HGETALL")
                        .arg(key)
                        .query_async::<Vec<(String, i64)>>(&mut handle)
                        .await
                }
            })
            .await?;
        Ok(per_bucket
            .into_iter()
            .flatten()
            .filter(|(channel, held)| channel.starts_with(prefix) && *held > 0)
            .map(|(channel, held)| (channel, held.unsigned_abs()))
            .collect())
    }

    pub(crate) async fn sync_members(
        &self,
        instance_id: &str,
        local: impl FnOnce() -> Vec<MemberRecord>,
    ) -> Result<SyncReport, PresenceError> {
        let handle = self.handle().await?;
        // What the store holds for the instance: "<channel> <connection id>".
        let held: HashSet<String> =
            Self::each_bucket_read_on(&self.conn, Vec::len, |mut handle, bucket| {
                let key = self.keys.member_index(bucket, instance_id);
                async move {
                    redis::cmd("HKEYS")
                        .arg(key)
                        .query_async::<Vec<String>>(&mut handle)
                        .await
                }
            })
            .await?
            .into_iter()
            .flatten()
            .collect();
        let snapshot = local();
        let wanted: HashSet<String> = snapshot
            .iter()
            .map(|record| format!("{} {}", record.channel, record.connection_id))
            .collect();
        let stale: Vec<(&str, &str)> = held
            .iter()
            .filter(|field| !wanted.contains(*field))
            .filter_map(|field| field.split_once(' '))
            .collect();
        let missing: Vec<&MemberRecord> = snapshot
            .iter()
            .filter(|record| {
                !held.contains(&format!("{} {}", record.channel, record.connection_id))
            })
            .collect();
        let leaving = try_join_all(stale.iter().map(|(channel, connection_id)| {
            let mut handle = handle.clone();
            let invocation = self.leave_invocation(channel, connection_id, instance_id);
            async move { invocation.invoke_async::<i64>(&mut handle).await }
        }));
        // Already admitted: no `max_subscribers` check on the way back in.
        let entering = try_join_all(missing.iter().map(|record| {
            let mut handle = handle.clone();
            let invocation = self.enter_invocation(record, instance_id, 0);
            async move { invocation.invoke_async::<(i64, i64)>(&mut handle).await }
        }));
        let (left, entered) = futures_util::future::try_join(leaving, entering)
            .await
            .map_err(unavailable)?;
        Ok(SyncReport {
            registered: entered.iter().filter(|(status, _)| *status == 1).count() as u64,
            removed: left.iter().filter(|answer| **answer > 0).count() as u64,
        })
    }
}
