//! Channels on Redis: a publication is one `SPUBLISH` of the finished frame
//! on the channel's sharded channel (see `fanout.rs` for the subscribing
//! side); the server API's subscriptions of a user are a set in the user's
//! bucket.

use std::sync::LazyLock;

use redis::Script;

use super::{RedisStore, unavailable};
use crate::PresenceError;

/// Adds (`ARGV[2]` = 1) or removes a channel from a user's server-side
/// subscriptions; -1 when adding would pass the limit (`ARGV[3]`), else
/// whether the set changed.
static SET_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '1' then
  if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
     and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return -1
  end
  return redis.call('SADD', KEYS[1], ARGV[1])
end
return redis.call('SREM', KEYS[1], ARGV[1])
",
    )
});

impl RedisStore {
    /// `SPUBLISH`es `payload` on `channel`; how many subscribers (processes)
    /// it reached.
    pub(crate) async fn spublish(
        &self,
        channel: &str,
        payload: &str,
    ) -> Result<u64, PresenceError> {
        let mut handle = self.handle().await?;
        redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut handle)
            .await
            .map_err(unavailable)
    }

    /// Records or forgets a server-side subscription; `Err(held)` when the
    /// user holds `limit` already.
    pub(crate) async fn set_subscription(
        &self,
        user_id: &str,
        channel: &str,
        subscribe: bool,
        limit: usize,
    ) -> Result<Result<bool, usize>, PresenceError> {
        let mut handle = self.handle().await?;
        let answer: i64 = SET_SUBSCRIPTION
            .key(self.keys().subscriptions(user_id))
            .arg(channel)
            .arg(if subscribe { "1" } else { "0" })
            .arg(limit)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(if answer < 0 {
            Err(limit)
        } else {
            Ok(answer > 0)
        })
    }

    /// The channels the server API subscribed `user_id` to.
    pub(crate) async fn subscriptions(&self, user_id: &str) -> Result<Vec<String>, PresenceError> {
        let mut handle = self.handle().await?;
        redis::cmd("SMEMBERS")
            .arg(self.keys().subscriptions(user_id))
            .query_async(&mut handle)
            .await
            .map_err(unavailable)
    }
}
