//! Admitting an authenticated socket as a live connection: this instance's
//! own count first (exact, and still there while Redis is away), then
//! presence, which counts every instance's connections and checks blocks in
//! the same atomic step that registers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use pulse_presence::{Admission, ConnectionRecord};
use pulse_protocol::{CloseCode, ErrorCode};
use tracing::{debug, warn};

use crate::{LocalConnection, shared::Shared, socket::End, telemetry};

/// Adds the connection to the manager and registers it with presence, or
/// answers how the socket must close (and leaves nothing behind). Admitted,
/// it answers the channels the server API subscribed the user to (read with
/// the registration, in one step).
///
/// A presence failure never costs the client its socket: the connection is
/// live locally either way (within the local limit, and unchecked against
/// blocks) and the failure is logged at warn at most once per
/// [`WARN_EVERY`] with how many more there were (one line per socket
/// would drown an outage that the lease task reports anyway), at debug
/// each time: while Redis is away the lease task re-registers everything
/// when it returns.
pub(crate) async fn admit(
    shared: &Shared,
    user_id: &Arc<str>,
    local: LocalConnection,
    record: &ConnectionRecord,
) -> Result<Vec<String>, End> {
    let limit = shared.settings.max_connections_per_user;
    let connection_id = local.connection_id.clone();
    if let Err(held) = shared.manager.try_add(user_id, local, limit) {
        return Err(too_many(user_id, held as u64, limit));
    }
    let refusal = match shared.presence.admit(record, limit as u64).await {
        Ok(Admission::Admitted {
            server_subscriptions,
        }) => return Ok(server_subscriptions),
        Ok(Admission::TooMany { held }) => too_many(user_id, held, limit),
        Ok(Admission::Blocked { reason, remaining }) => blocked(user_id, &reason, remaining),
        Err(error) => {
            debug!(%user_id, %connection_id, %error, "presence registration failed");
            if let Some(more) = FAILURES.warn_now() {
                warn!(%error, more, "a connection was admitted unregistered (presence failed; not checked against blocks or the fleet-wide limit); `more` such since the last line");
            }
            return Ok(Vec::new());
        }
    };
    // The manager held the connection while presence was asked, so a re-sync
    // that ran meanwhile may have registered it (unconditionally, as it does
    // every open socket): wait for any to finish, take it out, and remove
    // what it registered. A re-sync that starts later no longer sees it.
    let _resync = shared.resync.read().await;
    shared.manager.remove(user_id, &connection_id);
    if let Err(error) = shared.presence.unregister(user_id, &connection_id).await {
        debug!(%user_id, %connection_id, %error, "presence deregistration of a refused connection failed");
    }
    Err(refusal)
}

/// How often an admission that presence failed is logged at warn.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Admissions presence failed: when the last warning went out, and how
/// many failed since.
static FAILURES: Throttle = Throttle {
    last_ms: AtomicU64::new(0),
    since: AtomicU64::new(0),
};

struct Throttle {
    last_ms: AtomicU64,
    since: AtomicU64,
}

impl Throttle {
    /// Counts one failure; `Some(others since the last warning)` when this
    /// one is to be logged.
    fn warn_now(&self) -> Option<u64> {
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.since.swap(0, Ordering::Relaxed));
        }
        self.since.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The end of a connection refused because its user holds `held` of at most `limit`.
fn too_many(user_id: &str, held: u64, limit: usize) -> End {
    debug!(%user_id, held, "connection refused: too many for the user");
    telemetry::limit_rejection("connections_per_user");
    End::fail(
        CloseCode::TooMany,
        ErrorCode::TOO_MANY_CONNECTIONS,
        &format!("this user already holds {held} connections; at most {limit} are allowed"),
    )
}

/// The end of a connection refused because its user is blocked for `remaining` more.
fn blocked(user_id: &str, reason: &str, remaining: Duration) -> End {
    debug!(%user_id, ?remaining, "connection refused: the user is blocked");
    telemetry::limit_rejection("blocked");
    // Whole seconds, rounded up: "0 s" would read as "try now".
    let seconds = remaining.as_millis().div_ceil(1000);
    End::fail(
        CloseCode::Forbidden,
        ErrorCode::BLOCKED,
        &format!("{reason} (new connections are refused for another {seconds} s)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_warns_and_the_next_ones_are_counted_in_the_next_line() {
        let throttle = Throttle {
            last_ms: AtomicU64::new(0),
            since: AtomicU64::new(0),
        };
        assert_eq!(throttle.warn_now(), Some(0));
        assert_eq!(throttle.warn_now(), None);
        assert_eq!(throttle.warn_now(), None);
        // Long after the last line: the next one tells the two in between.
        throttle.last_ms.store(1, Ordering::Relaxed);
        assert_eq!(throttle.warn_now(), Some(2));
    }
}
