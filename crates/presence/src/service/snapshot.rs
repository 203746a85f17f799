//! `Snapshot`: every online user, log by log, then the position at which
//! the whole is exact.

use futures_util::{StreamExt, stream};
use pulse_protocol::{event::Position, proto::presence::v1 as pb};
use tonic::Status;

use super::{calls::user_presence, to_status};
use crate::Presence;

/// The most users one chunk carries, so that a chunk stays far below
/// gRPC's 4 MiB default message limit.
const CHUNK_USERS: usize = 1000;

/// The stream `Snapshot` returns.
pub(super) type SnapshotStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

/// Reads one log at a time (each in one step with its point) and sends its
/// users in chunks; the last chunk carries the position.
pub(super) fn snapshot(presence: Presence) -> SnapshotStream {
    let buckets: Vec<u16> = presence.log_buckets().into_iter().collect();
    let state = (presence, buckets.into_iter(), Position::default(), false);
    stream::unfold(
        state,
        |(presence, mut buckets, mut position, done)| async move {
            if done {
                return None;
            }
            let Some(bucket) = buckets.next() else {
                let last = pb::SnapshotChunk {
                    users: Vec::new(),
                    position: position.to_string(),
                };
                return Some((vec![Ok(last)], (presence, buckets, position, true)));
            };
            match presence.snapshot_log(bucket).await {
                Ok(read) => {
                    position.set(bucket, read.at);
                    let users: Vec<pb::UserPresence> = read
                        .users
                        .into_iter()
                        .map(|(user_id, connections)| user_presence(user_id, connections))
                        .collect();
                    let chunks = users
                        .chunks(CHUNK_USERS)
                        .map(|users| {
                            Ok(pb::SnapshotChunk {
                                users: users.to_vec(),
                                position: String::new(),
                            })
                        })
                        .collect();
                    Some((chunks, (presence, buckets, position, false)))
                }
                Err(error) => Some((
                    vec![Err(to_status(error))],
                    (presence, buckets, position, true),
                )),
            }
        },
    )
    .flat_map(stream::iter)
    .boxed()
}
