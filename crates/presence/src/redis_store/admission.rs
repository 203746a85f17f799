//! Admission on the Redis backend: `register.lua` with the per-user limit
//! and the block check, and setting a block.

use std::time::Duration;

use redis::Value;

use super::{RedisStore, unavailable};
use crate::{Admission, ConnectionRecord, PresenceError};

impl RedisStore {
    pub(crate) async fn admit(
        &self,
        record: &ConnectionRecord,
        max_per_user: u64,
    ) -> Result<Admission, PresenceError> {
        let mut handle = self.handle().await?;
        let answer: Value = self
            .admit_invocation(record, max_per_user, true)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        admission(&answer)
    }

    /// `SET` the user's block key with the reason, expiring with the block.
    pub(crate) async fn block(
        &self,
        user_id: &str,
        duration: Duration,
        reason: &str,
    ) -> Result<(), PresenceError> {
        let mut handle = self.handle().await?;
        // Whole milliseconds, at least one: PX takes no less.
        let ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        redis::cmd("SET")
            .arg(self.keys.blocked(user_id))
            .arg(reason)
            .arg("PX")
            .arg(ms.max(1))
            .exec_async(&mut handle)
            .await
            .map_err(unavailable)
    }
}

/// What register.lua answered: `{1 or 0, {channel...}}` (added, or
/// already there, with the user's server-side subscriptions), `{-1, held}` (the user holds the limit) or `{-2, ms left, reason}` (the
/// user is blocked).
fn admission(answer: &Value) -> Result<Admission, PresenceError> {
    match answer {
        Value::Array(fields) => match fields.as_slice() {
            [Value::Int(0 | 1), Value::Array(channels)] => Ok(Admission::Admitted {
                server_subscriptions: channels
                    .iter()
                    .map(|channel| match channel {
                        Value::BulkString(name) => Ok(String::from_utf8_lossy(name).into_owned()),
                        _ => Err(unexpected(answer)),
                    })
                    .collect::<Result<_, _>>()?,
            }),
            [Value::Int(-1), Value::Int(held)] => Ok(Admission::TooMany {
                held: u64::try_from(*held).unwrap_or(0),
            }),
            [
                Value::Int(-2),
                Value::Int(left_ms),
                Value::BulkString(reason),
            ] => {
                Ok(Admission::Blocked {
                    reason: String::from_utf8_lossy(reason).into_owned(),
                    // PTTL is -1 for a key without expiry, which block never writes.
                    remaining: Duration::from_millis(u64::try_from(*left_ms).unwrap_or(0)),
                })
            }
            _ => Err(unexpected(answer)),
        },
        _ => Err(unexpected(answer)),
    }
}

fn unexpected(answer: &Value) -> PresenceError {
    PresenceError::Unavailable(format!("redis: unexpected script answer {answer:?}"))
}
