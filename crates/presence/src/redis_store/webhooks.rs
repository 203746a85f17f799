//! Webhook delivery's lease and cursor in Redis, one pair per target under
//! the hash tag `{<target>}` (`<ns>:webhooks:{<target>}:lease`, `:cursor`).

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use super::{RedisStore, unavailable};
use crate::PresenceError;

static LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/webhook_lease.lua")));
static CURSOR: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/webhook_cursor.lua")));

impl RedisStore {
    fn webhook_key(&self, target: &str, what: &str) -> String {
        format!("{}:webhooks:{{{target}}}:{what}", self.keys.namespace())
    }

    pub(crate) async fn webhook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let mut handle = self.handle().await?;
        let held: u8 = LEASE
            .key(self.webhook_key(target, "lease"))
            .arg(holder)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    pub(crate) async fn webhook_cursor(
        &self,
        target: &str,
    ) -> Result<Option<String>, PresenceError> {
        let mut handle = self.handle().await?;
        redis::cmd("GET")
            .arg(self.webhook_key(target, "cursor"))
            .query_async(&mut handle)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn store_webhook_cursor(
        &self,
        target: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, PresenceError> {
        let mut handle = self.handle().await?;
        let stored: u8 = CURSOR
            .key(self.webhook_key(target, "lease"))
            .key(self.webhook_key(target, "cursor"))
            .arg(holder)
            .arg(position)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(stored == 1)
    }
}
