//! Channel publications on Redis: one `SPUBLISH` of the finished frame on
//! the channel's sharded channel (see `fanout.rs` for the subscribing side).

use super::{RedisStore, unavailable};
use crate::PresenceError;

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
}
