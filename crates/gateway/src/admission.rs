//! Admitting an authenticated socket as a live connection: this instance's
//! own count first (exact, and still there while Redis is away), then
//! presence, which counts every instance's connections and checks blocks in
//! the same atomic step that registers.

use std::{sync::Arc, time::Duration};

use pulse_presence::{Admission, ConnectionRecord};
use pulse_protocol::{CloseCode, ErrorCode};
use tracing::debug;

use crate::{LocalConnection, shared::Shared, socket::End, telemetry};

/// Adds the connection to the manager and registers it with presence, or
/// answers how the socket must close (and leaves nothing behind). Admitted,
/// it answers the channels the server API subscribed the user to (read with
/// the registration, in one step).
///
/// A presence failure never costs the client its socket: the connection is
/// live locally either way (within the local limit) and the failure is
/// logged, at debug level: while Redis is away the lease task reports the
/// outage once and re-registers everything when it returns, and one line
/// per socket would drown it.
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
