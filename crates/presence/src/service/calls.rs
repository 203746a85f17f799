//! The `pulse.presence.v1.Presence` calls: each request checked and
//! answered from [`Presence`]; `Watch` and `Snapshot` hand their streams to
//! `watcher.rs` and `snapshot.rs`.

use std::{pin::Pin, time::Duration};

use futures_util::Stream;
use pulse_protocol::{
    event::timestamp_from_ms,
    proto::presence::v1::{self as pb, presence_server},
    status::status_with_reason,
};
use serde_json::value::RawValue;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

use super::{
    ERROR_DOMAIN, MAX_IDS, snapshot,
    status::{bad_position, invalid_argument, to_status},
    watcher::Watcher,
};
use crate::{ConnectionRecord, Presence, PresenceError, access::Caller, watch_slots::WatchSlots};

pub(super) struct PresenceService {
    pub(super) presence: Presence,
    pub(super) stopping: watch::Receiver<bool>,
    pub(super) watch_slots: WatchSlots,
}

/// The stream `Watch` returns.
pub(super) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::PresenceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl presence_server::Presence for PresenceService {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::UserPresence>, Status> {
        let user_id = request.into_inner().user_id;
        let connections = self.presence.user(&user_id).await.map_err(to_status)?;
        let mut presence = user_presence(user_id, connections);
        if !presence.online {
            presence.last_seen = self
                .presence
                .last_seen(&presence.user_id)
                .await
                .map_err(to_status)?
                .map(timestamp_from_ms);
        }
        Ok(Response::new(presence))
    }

    async fn get_users(
        &self,
        request: Request<pb::GetUsersRequest>,
    ) -> Result<Response<pb::GetUsersResponse>, Status> {
        let user_ids = request.into_inner().user_ids;
        check_id_count(user_ids.len())?;
        let users = self.presence.users(&user_ids).await.map_err(to_status)?;
        Ok(Response::new(pb::GetUsersResponse {
            users: user_ids
                .into_iter()
                .zip(users)
                .map(|(user_id, connections)| user_presence(user_id, connections))
                .collect(),
        }))
    }

    async fn count_online(
        &self,
        _request: Request<pb::CountOnlineRequest>,
    ) -> Result<Response<pb::CountOnlineResponse>, Status> {
        let count = self.presence.count_online().await.map_err(to_status)?;
        Ok(Response::new(pb::CountOnlineResponse {
            users: count.users,
            connections: count.connections,
        }))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(invalid_argument("user_id must not be empty"));
        }
        // RawValue checks that the text is one JSON value and keeps it as sent.
        let data = RawValue::from_string(request.data_json)
            .map_err(|error| invalid_argument(&format!("data_json is not JSON: {error}")))?;
        let connections = self
            .presence
            .send(&request.user_id, data)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SendResponse { connections }))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(invalid_argument("user_id must not be empty"));
        }
        let connection_id = Some(request.connection_id.as_str()).filter(|id| !id.is_empty());
        let reason = if request.reason.is_empty() {
            "disconnected by the server"
        } else {
            request.reason.as_str()
        };
        // The block first, so that a client that reconnects the moment it
        // is kicked is already refused.
        if let Some(block_for) = block_duration(request.block_for)? {
            self.presence
                .block(&request.user_id, block_for, reason)
                .await
                .map_err(to_status)?;
        }
        let connections = self
            .presence
            .disconnect(&request.user_id, connection_id, reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DisconnectResponse { connections }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        // Watches are counted per key, or per client address when the API is open.
        let holder = match request.extensions().get::<Caller>() {
            Some(Caller {
                key_name: Some(name),
            }) => format!("key {name:?}"),
            _ => request
                .remote_addr()
                .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string()),
        };
        let slot = self.watch_slots.acquire(holder).ok_or_else(|| {
            status_with_reason(
                Code::ResourceExhausted,
                ERROR_DOMAIN,
                "too_many_watches",
                &format!(
                    "at most {} Watch streams at once per API key; close one first",
                    self.watch_slots.max()
                ),
            )
        })?;
        let request = request.into_inner();
        let filter: Option<std::collections::HashSet<String>> =
            match (request.all, request.user_ids.is_empty()) {
                (true, true) => None,
                (false, false) => {
                    check_id_count(request.user_ids.len())?;
                    if request.user_ids.iter().any(String::is_empty) {
                        return Err(invalid_argument("user_ids must not contain an empty id"));
                    }
                    for user_id in &request.user_ids {
                        crate::check_user_id(user_id).map_err(to_status)?;
                    }
                    Some(request.user_ids.into_iter().collect())
                }
                (false, true) => return Err(invalid_argument("name some user_ids, or set all")),
                (true, false) => {
                    return Err(invalid_argument("set either user_ids or all, not both"));
                }
            };
        let buckets = match &filter {
            None => self.presence.log_buckets(),
            Some(users) => users
                .iter()
                .map(|user| self.presence.log_of(user))
                .collect(),
        };
        let since = match request.since.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|error| bad_position(&format!("since: {error}")))?,
            ),
        };
        let tail =
            self.presence
                .tail_events(buckets, since)
                .await
                .map_err(|error| match error {
                    PresenceError::InvalidArgument(message) => bad_position(&message),
                    error => to_status(error),
                })?;
        let watcher = Watcher {
            tail,
            stopping: self.stopping.clone(),
            filter,
            _slot: slot,
        };
        Ok(Response::new(watcher.into_stream()))
    }

    type SnapshotStream = snapshot::SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Ok(Response::new(snapshot::snapshot(self.presence.clone())))
    }
}

pub(super) fn user_presence(
    user_id: String,
    connections: Vec<ConnectionRecord>,
) -> pb::UserPresence {
    pb::UserPresence {
        user_id,
        online: !connections.is_empty(),
        connections: connections
            .into_iter()
            .map(|record| pb::Connection {
                connection_id: record.connection_id,
                instance_id: record.instance_id,
                connected_at: Some(timestamp_from_ms(record.connected_at_ms)),
            })
            .collect(),
        last_seen: None,
    }
}

/// `block_for` as a duration: `None` when unset or zero; negative or
/// malformed is `INVALID_ARGUMENT` (the upper bound is [`Presence::block`]'s).
fn block_duration(block_for: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(block_for) = block_for else {
        return Ok(None);
    };
    let invalid = || {
        invalid_argument(&format!(
            "block_for must be a non-negative duration, got {}s {}ns",
            block_for.seconds, block_for.nanos
        ))
    };
    let seconds = u64::try_from(block_for.seconds).map_err(|_| invalid())?;
    let nanos = u32::try_from(block_for.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(invalid)?;
    let duration = Duration::new(seconds, nanos);
    Ok((!duration.is_zero()).then_some(duration))
}

fn check_id_count(count: usize) -> Result<(), Status> {
    if count > MAX_IDS {
        return Err(invalid_argument(&format!(
            "at most {MAX_IDS} user_ids per request, got {count}"
        )));
    }
    Ok(())
}
