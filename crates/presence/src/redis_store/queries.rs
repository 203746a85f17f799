//! The read side of the Redis backend: users and counts.

use std::collections::{BTreeMap, HashMap};

use futures_util::future::try_join_all;
use tracing::warn;

use super::{RedisStore, unavailable};
use crate::{
    ConnectionRecord, OnlineCount, PresenceError, buckets::bucket_of, redis_conn::Handle,
    sort_connections, user_entry::UserEntry,
};

impl RedisStore {
    pub(crate) async fn user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>, PresenceError> {
        let mut handle = self.handle().await?;
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.user(user_id))
            .query_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(decode_user(user_id, hash))
    }

    /// Several users, one pipelined `HGETALL` per bucket they fall in, all at once.
    pub(crate) async fn users(
        &self,
        user_ids: &[String],
    ) -> Result<Vec<Vec<ConnectionRecord>>, PresenceError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let handle = self.handle().await?;
        let mut per_bucket: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (position, user_id) in user_ids.iter().enumerate() {
            per_bucket
                .entry(bucket_of(user_id))
                .or_default()
                .push(position);
        }
        let fetched = try_join_all(per_bucket.into_values().map(|positions| {
            let handle = handle.clone();
            async move {
                let ids: Vec<&str> = positions.iter().map(|&p| user_ids[p].as_str()).collect();
                let users = self.fetch_users(handle, &ids).await?;
                Ok::<_, PresenceError>(positions.into_iter().zip(users))
            }
        }))
        .await?;
        let mut answer = vec![Vec::new(); user_ids.len()];
        for (position, records) in fetched.into_iter().flatten() {
            answer[position] = records;
        }
        Ok(answer)
    }

    /// One pipelined `HGETALL` per user, for users of one bucket (one slot).
    async fn fetch_users(
        &self,
        mut handle: Handle,
        user_ids: &[&str],
    ) -> Result<Vec<Vec<ConnectionRecord>>, PresenceError> {
        let mut pipe = redis::pipe();
        for user_id in user_ids {
            pipe.cmd("HGETALL").arg(self.keys.user(user_id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut handle).await.map_err(unavailable)?;
        Ok(user_ids
            .iter()
            .zip(hashes)
            .map(|(user_id, hash)| decode_user(user_id, hash))
            .collect())
    }

    /// The sums over buckets. Each bucket's two numbers come from one
    /// instant (MULTI/EXEC); the buckets are read at once, not atomically.
    pub(crate) async fn count_online(&self) -> Result<OnlineCount, PresenceError> {
        let counts = self
            .each_bucket(|mut handle, bucket| {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .scard(self.keys.online(bucket))
                    .get(self.keys.connections(bucket));
                async move { pipe.query_async::<(u64, Option<i64>)>(&mut handle).await }
            })
            .await?;
        Ok(counts
            .into_iter()
            .fold(OnlineCount::default(), |total, (users, connections)| {
                OnlineCount {
                    users: total.users + users,
                    connections: total.connections
                        + connections.map_or(0, |n| u64::try_from(n).unwrap_or(0)),
                }
            }))
    }

    /// Every master answers (a Cluster sends `PING` to each).
    pub(crate) async fn ping(&self) -> Result<(), PresenceError> {
        let mut handle = self.handle().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut handle)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// `CONFIG GET maxmemory*` of the one Redis, or of every master of a
    /// Cluster (each named by its address): `None` for a node that refused
    /// the command (a managed Redis may).
    pub(crate) async fn memory_settings(
        &self,
    ) -> Result<Vec<(Option<String>, Option<HashMap<String, String>>)>, PresenceError> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};

        let mut handle = self.handle().await?;
        let mut command = redis::cmd("CONFIG");
        command.arg("GET").arg("maxmemory*");
        let answers: Vec<(Option<String>, Option<redis::Value>)> = match &mut handle {
            Handle::Single(connection) => match command.query_async(connection).await {
                Ok(answer) => vec![(None, Some(answer))],
                Err(error) if matches!(error.kind(), redis::ErrorKind::Server(_)) => {
                    vec![(None, None)]
                }
                Err(error) => return Err(unavailable(error)),
            },
            Handle::Cluster(connection) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let redis::Value::Map(answers) = connection
                    .route_command(command, routing)
                    .await
                    .map_err(unavailable)?
                else {
                    return Err(PresenceError::Unavailable(
                        "redis: an unexpected answer to CONFIG GET on every master".to_owned(),
                    ));
                };
                answers
                    .into_iter()
                    .map(|(node, answer)| {
                        let refused = matches!(answer, redis::Value::ServerError(_));
                        (
                            redis::from_redis_value::<String>(node).ok(),
                            (!refused).then_some(answer),
                        )
                    })
                    .collect()
            }
        };
        Ok(answers
            .into_iter()
            .map(|(node, answer)| {
                let settings = answer.and_then(|answer| redis::from_redis_value(answer).ok());
                (node, settings)
            })
            .collect())
    }
}

/// Turns a user hash into records, skipping (and reporting) any value that
/// is not `"<connected_at_ms>|<instance_id>"` rather than failing the query.
pub(super) fn decode_user(user_id: &str, hash: HashMap<String, String>) -> Vec<ConnectionRecord> {
    let mut records: Vec<_> = hash
        .into_iter()
        .filter_map(|(connection_id, value)| {
            let Some(UserEntry {
                connected_at_ms,
                instance_id,
            }) = UserEntry::parse(&value)
            else {
                warn!(
                    user_id,
                    connection_id, value, "skipping a malformed presence entry"
                );
                return None;
            };
            Some(ConnectionRecord {
                instance_id: instance_id.to_owned(),
                connection_id,
                user_id: user_id.to_owned(),
                connected_at_ms,
            })
        })
        .collect();
    sort_connections(&mut records);
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_hash_values_decode_and_bad_ones_are_skipped() {
        let hash = HashMap::from([
            ("c2".to_owned(), "1712345678901|gw|with|bars".to_owned()),
            ("c1".to_owned(), "1712345678901|gw-1".to_owned()),
            ("bad".to_owned(), "not a number|gw".to_owned()),
            ("worse".to_owned(), "no separator".to_owned()),
        ]);
        let records = decode_user("u", hash);
        let ids: Vec<_> = records
            .iter()
            .map(|r| (r.connection_id.as_str(), r.instance_id.as_str()))
            .collect();
        assert_eq!(ids, [("c1", "gw-1"), ("c2", "gw|with|bars")]);
        assert!(
            records
                .iter()
                .all(|r| r.connected_at_ms == 1_712_345_678_901 && r.user_id == "u")
        );
    }
}
