//! Channel history on Redis: `publish.lua` (the offset, the history entry
//! and the sharded publish in one step), `publish_once.lua` (an idempotent
//! publication without history) and `history.lua` (the stream's position,
//! a recovery, a page), each on the channel's bucket.

use std::sync::LazyLock;

use pulse_protocol::{
    StreamPosition,
    channel::publication_frame,
    history::{HistoryEntry, PUBLICATION_DATA, PUBLICATION_END, Recovery, publication_head},
};
use redis::{Script, Value};
use serde_json::value::RawValue;

use super::{RedisStore, unavailable};
use crate::{
    PresenceError, Published,
    history::{
        HISTORY_META_TTL, HistoryOptions, HistoryPage, HistoryQuery, PublishOptions, StreamRead,
        millis, new_epoch,
    },
};

static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/publish.lua")));
static PUBLISH_ONCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/publish_once.lua")));
static HISTORY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/history.lua")));

impl RedisStore {
    /// A publication with history, or with an idempotency key, or both.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        options: &PublishOptions<'_>,
    ) -> Result<Published, PresenceError> {
        let keys = self.keys();
        let window = millis(options.idempotency_window);
        let mut handle = self.handle().await?;
        let Some(history) = options.history else {
            let key = options
                .idempotency_key
                .expect("a publication without history comes here only with a key");
            let (instances, _fresh): (u64, i64) = PUBLISH_ONCE
                .key(keys.publications(channel))
                .key(keys.idempotency(channel, key))
                .arg(publication_frame(channel, None, data))
                .arg(window)
                .invoke_async(&mut handle)
                .await
                .map_err(unavailable)?;
            return Ok(Published {
                instances,
                offset: None,
                epoch: None,
            });
        };
        let mut invocation = PUBLISH.prepare_invoke();
        invocation
            .key(keys.history(channel))
            .key(keys.history_meta(channel))
            .key(keys.publications(channel));
        if let Some(key) = options.idempotency_key {
            invocation.key(keys.idempotency(channel, key));
        }
        let personal = channel.strip_prefix(pulse_protocol::channel::PERSONAL_PREFIX);
        if let Some(user_id) = personal {
            invocation.key(keys.user(user_id));
        }
        invocation
            .arg(history.size)
            .arg(millis(history.ttl))
            .arg(millis(HISTORY_META_TTL))
            .arg(new_epoch())
            .arg(publication_head(channel))
            .arg(PUBLICATION_DATA)
            .arg(data.get())
            .arg(PUBLICATION_END)
            .arg(window)
            .arg(if options.idempotency_key.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(if personal.is_some() { "1" } else { "0" });
        let (offset, epoch, instances, _fresh): (u64, String, u64, i64) = invocation
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(Published {
            instances,
            offset: Some(offset),
            epoch: Some(epoch),
        })
    }

    pub(crate) async fn read_stream(
        &self,
        channel: &str,
        history: HistoryOptions,
        since: Option<&StreamPosition>,
    ) -> Result<StreamRead, PresenceError> {
        let (mode, after, epoch) = match since {
            Some(since) => ("recover", since.offset, since.epoch.as_str()),
            None => ("top", 0, ""),
        };
        let (top, status, publications) = self
            .history_script(
                channel,
                mode,
                &HistoryQuery::after(after, history.size as usize),
                epoch,
            )
            .await?;
        Ok(StreamRead {
            top,
            recovery: since.map(|_| Recovery {
                recovered: status == 1,
                publications,
            }),
        })
    }

    pub(crate) async fn stream_top(&self, channel: &str) -> Result<StreamPosition, PresenceError> {
        let (top, _, _) = self
            .history_script(channel, "top", &HistoryQuery::after(0, 1), "")
            .await?;
        Ok(top)
    }

    pub(crate) async fn history_page(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, PresenceError> {
        let (top, _, publications) = self.history_script(channel, "page", query, "").await?;
        Ok(HistoryPage { top, publications })
    }

    /// `history.lua` in `mode`: `query.after` is the recovery's position
    /// there, and the rest of `query` is a page's.
    async fn history_script(
        &self,
        channel: &str,
        mode: &str,
        query: &HistoryQuery,
        epoch: &str,
    ) -> Result<(StreamPosition, i64, Vec<HistoryEntry>), PresenceError> {
        let keys = self.keys();
        let mut handle = self.handle().await?;
        let reply: Vec<Value> = HISTORY
            .key(keys.history(channel))
            .key(keys.history_meta(channel))
            .arg(millis(HISTORY_META_TTL))
            .arg(new_epoch())
            .arg(mode)
            .arg(query.after)
            .arg(epoch)
            .arg(query.limit.max(1))
            .arg(query.before.unwrap_or(0))
            .arg(if query.newest_first { "1" } else { "0" })
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        decode_history(&reply)
    }
}

/// `{offset, epoch, status, offset, data, offset, data, ...}` from
/// `history.lua`.
fn decode_history(
    reply: &[Value],
) -> Result<(StreamPosition, i64, Vec<HistoryEntry>), PresenceError> {
    let bad = || PresenceError::Unavailable("redis: an unexpected history.lua reply".to_owned());
    let int = |value: &Value| match value {
        Value::Int(n) => Ok(*n),
        _ => Err(bad()),
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| bad()),
        Value::SimpleString(text) => Ok(text.clone()),
        _ => Err(bad()),
    };
    let [offset, epoch, status, entries @ ..] = reply else {
        return Err(bad());
    };
    let top = StreamPosition {
        offset: u64::try_from(int(offset)?).map_err(|_| bad())?,
        epoch: text(epoch)?,
    };
    let mut publications = Vec::with_capacity(entries.len() / 2);
    for pair in entries.chunks(2) {
        let [offset, data] = pair else {
            return Err(bad());
        };
        let offset = u64::try_from(int(offset)?).map_err(|_| bad())?;
        let data = RawValue::from_string(text(data)?).map_err(|_| bad())?;
        publications.push(HistoryEntry { offset, data });
    }
    Ok((top, int(status)?, publications))
}
