//! The in-memory backend's channel histories: the same semantics as the
//! Redis scripts (offsets from 1, an epoch per unbroken history, trimming
//! to the size, expiry after the TTL, idempotency keys), for a single node.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use pulse_protocol::{
    StreamPosition,
    channel::publication_frame,
    history::{HistoryEntry, Recovery},
};
use serde_json::value::RawValue;

use super::{HISTORY_META_TTL, HistoryPage, HistoryQuery, PublishOptions, StreamRead, new_epoch};
use crate::{Published, channels::LocalHub, fanout::DeliveryPosition};

/// Every channel's history, and the idempotency keys of recent publications.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    /// `(channel, key)` -> the first call's result, until when.
    idempotent: HashMap<(String, String), (Published, Instant)>,
}

#[derive(Debug)]
struct Stream {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<HistoryEntry>,
    /// When the entries expire (`history_ttl` after the last publication).
    entries_until: Instant,
    /// When the epoch and offset expire.
    meta_until: Instant,
}

impl Stream {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch().into(),
            top: 0,
            entries: VecDeque::new(),
            entries_until: now,
            meta_until: now + HISTORY_META_TTL,
        }
    }
}

impl State {
    /// The channel's stream, made anew when it had none or it expired.
    fn stream(&mut self, channel: &str, now: Instant) -> &mut Stream {
        let stream = self
            .streams
            .entry(channel.to_owned())
            .or_insert_with(|| Stream::new(now));
        if stream.meta_until <= now {
            *stream = Stream::new(now);
        }
        if stream.entries_until <= now {
            stream.entries.clear();
        }
        stream
    }
}

impl Histories {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a publication and hands it to the feeds in one step (the
    /// lock is held across both, so feeds see offsets in order).
    pub(crate) fn publish(
        &self,
        hub: &LocalHub,
        channel: &str,
        data: &RawValue,
        options: &PublishOptions<'_>,
    ) -> Published {
        let now = Instant::now();
        let mut state = self.lock();
        let idempotency = options
            .idempotency_key
            .map(|key| (channel.to_owned(), key.to_owned()));
        if let Some(key) = &idempotency {
            if state.idempotent.len() > 4096 {
                state.idempotent.retain(|_, (_, until)| *until > now);
            }
            if let Some((first, until)) = state.idempotent.get(key)
                && *until > now
            {
                return first.clone();
            }
        }
        let published = match options.history {
            None => Published {
                instances: hub.publish(channel, &publication_frame(channel, None, data), None),
                offset: None,
                epoch: None,
            },
            Some(history) => {
                let stream = state.stream(channel, now);
                stream.top += 1;
                stream.entries.push_back(HistoryEntry {
                    offset: stream.top,
                    data: data.to_owned(),
                });
                while stream.entries.len() > history.size as usize {
                    stream.entries.pop_front();
                }
                stream.entries_until = now + history.ttl;
                stream.meta_until = now + HISTORY_META_TTL;
                let (offset, epoch) = (stream.top, stream.epoch.clone());
                let frame = publication_frame(channel, Some(offset), data);
                let position = DeliveryPosition {
                    offset,
                    epoch: epoch.clone(),
                };
                Published {
                    instances: hub.publish(channel, &frame, Some(position)),
                    offset: Some(offset),
                    epoch: Some(epoch.to_string()),
                }
            }
        };
        if let Some(key) = idempotency {
            state
                .idempotent
                .insert(key, (published.clone(), now + options.idempotency_window));
        }
        published
    }

    pub(crate) fn read(&self, channel: &str, since: Option<&StreamPosition>) -> StreamRead {
        let now = Instant::now();
        let mut state = self.lock();
        let stream = state.stream(channel, now);
        stream.meta_until = now + HISTORY_META_TTL;
        let recovery = since.map(|since| {
            let lost = Recovery {
                recovered: false,
                publications: Vec::new(),
            };
            if *since.epoch != *stream.epoch {
                return lost;
            }
            if since.offset > stream.top {
                // Past the end of this history: not the one the client saw.
                stream.epoch = new_epoch().into();
                stream.entries.clear();
                return lost;
            }
            let first = stream.entries.front().map_or(stream.top + 1, |e| e.offset);
            if since.offset + 1 < first {
                return lost;
            }
            Recovery {
                recovered: true,
                publications: stream
                    .entries
                    .iter()
                    .filter(|entry| entry.offset > since.offset)
                    .cloned()
                    .collect(),
            }
        });
        StreamRead {
            top: StreamPosition {
                offset: stream.top,
                epoch: stream.epoch.to_string(),
            },
            recovery,
        }
    }

    pub(crate) fn page(&self, channel: &str, query: &HistoryQuery) -> HistoryPage {
        let now = Instant::now();
        let mut state = self.lock();
        let stream = state.stream(channel, now);
        let in_range = stream
            .entries
            .iter()
            .filter(|entry| query.holds(entry.offset));
        let publications = if query.newest_first {
            in_range.rev().take(query.limit).cloned().collect()
        } else {
            in_range.take(query.limit).cloned().collect()
        };
        HistoryPage {
            top: StreamPosition {
                offset: stream.top,
                epoch: stream.epoch.to_string(),
            },
            publications,
        }
    }
}
