//! Leases on a connection of their own. A gateway's store sends everything
//! on one multiplexed connection (one pipeline, answered in order), so a
//! renewal sent behind a burst of registrations or of a drain's
//! deregistrations waited for all of them: with 7,858 sockets closing, each
//! with ten channel memberships, a renewal waited more than its 3 s answer
//! timeout on a slow machine, and the lease could have expired with every
//! connection on the instance still open (a false `disconnected` for each).
//! Redis serves its connections in turn, so a renewal on a connection of its
//! own is answered in one pass whatever the other one holds.

use std::collections::BTreeMap;

use super::{REAP, REAP_BATCH, RENEW_LEASE, RedisStore};
use crate::PresenceError;

impl RedisStore {
    /// Renews an instance's lease in every bucket; `false` when some bucket
    /// held none (see renew_lease.lua): the caller re-syncs. On the lease
    /// connection, so never behind the store's other commands.
    pub(crate) async fn renew_lease(&self, instance_id: &str) -> Result<bool, PresenceError> {
        let held = Self::each_bucket_paced_on(&self.lease_conn, |mut handle, bucket| {
            let invocation = {
                let mut invocation = RENEW_LEASE.prepare_invoke();
                invocation
                    .key(self.keys.instances(bucket))
                    .arg(instance_id)
                    .arg(self.lease_ttl_ms);
                invocation
            };
            async move { invocation.invoke_async::<i64>(&mut handle).await }
        })
        .await?;
        Ok(held.iter().all(|held| *held == 1))
    }

    /// Reaps instances whose lease expired, bucket by bucket; returns each
    /// reaped instance with the connections this call removed.
    pub(crate) async fn reap(&self) -> Result<Vec<(String, u64)>, PresenceError> {
        // Each bucket's script returns a flat list of pairs, which decodes as tuples.
        let per_bucket = Self::each_bucket_answered_on(&self.conn, |mut handle, bucket| {
            let invocation = {
                let mut invocation = REAP.prepare_invoke();
                invocation
                    .key(self.keys.instances(bucket))
                    .key(self.keys.online(bucket))
                    .key(self.keys.connections(bucket))
                    .arg(self.keys.channel())
                    .arg(self.keys.instance_prefix(bucket))
                    .arg(self.keys.user_prefix(bucket))
                    .arg(REAP_BATCH);
                invocation
            };
            async move {
                invocation
                    .invoke_async::<Vec<(String, u64)>>(&mut handle)
                    .await
            }
        })
        .await?;
        let mut reaped: BTreeMap<String, u64> = BTreeMap::new();
        for (instance_id, removed) in per_bucket.into_iter().flatten() {
            *reaped.entry(instance_id).or_default() += removed;
        }
        Ok(reaped.into_iter().collect())
    }

    /// Keeps the store's shared connection busy for `seconds` (a `BLPOP`
    /// on a key nobody writes), as a burst of other commands would.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) async fn hold_shared_connection(&self, seconds: u64) -> Result<(), PresenceError> {
        let mut handle = self.handle().await?;
        let key = format!("{}-hold", self.keys.instances(0));
        redis::cmd("BLPOP")
            .arg(key)
            .arg(seconds)
            .query_async::<redis::Value>(&mut handle)
            .await
            .map(drop)
            .map_err(super::unavailable)
    }
}
