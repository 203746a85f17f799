//! Authenticating a socket: a token from the query or from the first
//! message within the deadline, validated (and its user id checked against
//! the one limit), and the instant it stops being good.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulse_auth::{AuthError, Identity};
use pulse_protocol::{ClientMessage, CloseCode, ErrorCode, MAX_USER_ID_BYTES};
use tokio::time::{Instant, sleep_until};

use super::charge;
use crate::{
    limits::{RateLimit, Rates},
    shared::Shared,
    socket::{End, Message, Socket},
};

/// Waits for a valid token: from the query, or from the first message within the deadline.
pub(super) async fn authenticate(
    socket: &mut Socket,
    query_token: Option<String>,
    rate: &mut RateLimit,
    shared: &Shared,
) -> Result<Identity, End> {
    let token = match query_token {
        Some(token) => token,
        None => first_message_token(socket, rate, shared).await?,
    };
    validate(shared, &token).await
}

async fn first_message_token(
    socket: &mut Socket,
    rate: &mut RateLimit,
    shared: &Shared,
) -> Result<String, End> {
    let deadline = Instant::now() + shared.settings.auth_timeout;
    let (shutdown, write_timeout) = (&shared.shutdown, shared.settings.write_timeout);
    let rates = Rates::of(&shared.settings);
    loop {
        let incoming = {
            let reader = socket.reader();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(End::going_away()),
                () = sleep_until(deadline) => {
                    return Err(End::fail(
                        CloseCode::Timeout,
                        ErrorCode::AUTH_TIMEOUT,
                        "no authentication within the timeout",
                    ));
                }
                incoming = reader.next() => incoming,
            }
        };
        charge(rate, rates, &incoming)?;
        match socket.control(incoming, write_timeout).await? {
            Some(Message::Text(text)) => {
                return match ClientMessage::decode(&text) {
                    Ok(ClientMessage::Auth { token }) => Ok(token.0),
                    Ok(_) => Err(End::fail(
                        CloseCode::Unauthorized,
                        ErrorCode::MISSING_TOKEN,
                        "authenticate first: send {\"type\":\"auth\",\"token\":...}",
                    )),
                    Err(error) => Err(End::malformed(&error.to_string())),
                };
            }
            Some(Message::Binary(_)) => return Err(End::binary()),
            None => continue,
        }
    }
}

pub(super) async fn validate(shared: &Shared, token: &str) -> Result<Identity, End> {
    let started = std::time::Instant::now();
    let result = Box::pin(shared.auth.validate(token))
        .await
        .and_then(|identity| {
            // pulse-auth refuses such tokens itself (an older one may not):
            // a user id that presence refuses must never become a socket
            // that nothing can reach or disconnect.
            let len = identity.user_id.len();
            if len > MAX_USER_ID_BYTES {
                return Err(AuthError::UserIdTooLong {
                    len,
                    max: MAX_USER_ID_BYTES,
                });
            }
            Ok(identity)
        });
    shared
        .metrics
        .auth_seconds
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!("pulse_gateway_auth_failures_total", "reason" => error.reason())
            .increment(1);
    }
    result.map_err(|error| match error {
        AuthError::Unavailable(_) => End::fail(
            CloseCode::TryAgainLater,
            ErrorCode::AUTH_UNAVAILABLE,
            "authentication is unavailable, try again later",
        ),
        other => End::fail(
            CloseCode::Unauthorized,
            ErrorCode::from(other.reason()),
            &other.to_string(),
        ),
    })
}

/// The instant a token with `exp` (seconds since the epoch) stops being
/// accepted: the wall clock is read once, here, for how long the token has
/// left (as the validator read it for `exp`); from then on the deadline is
/// on tokio's clock, which tests can pause and advance.
pub(super) fn expiry_instant(exp: u64, leeway: Duration) -> Instant {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    expiry_deadline(exp, leeway, unix_now, Instant::now())
}

/// [`expiry_instant`] with both clocks given: `unix_now` on the wall clock
/// and `now` on tokio's are the same moment.
fn expiry_deadline(exp: u64, leeway: Duration, unix_now: Duration, now: Instant) -> Instant {
    let left = Duration::from_secs(exp.saturating_sub(unix_now.as_secs())) + leeway;
    // Far-future tokens are capped so the instant arithmetic cannot overflow.
    now + left.min(MAX_TOKEN_LIFE)
}

/// The longest a token is taken to last, whatever its `exp` says.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    /// The deadline is `exp` plus the leeway, on tokio's clock: on paused
    /// time a timer set to it fires once that much time has been advanced,
    /// and not before.
    #[tokio::test(start_paused = true)]
    async fn a_token_deadline_is_on_tokios_clock() {
        let unix_now = Duration::from_secs(1_000_000);
        let leeway = Duration::from_secs(30);
        let start = Instant::now();
        let deadline = expiry_deadline(1_000_002, leeway, unix_now, start);
        assert_eq!(deadline, start + Duration::from_secs(32));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(Instant::now() < deadline, "not yet expired");
        let timer = sleep_until(deadline);
        tokio::pin!(timer);
        assert!(futures_util::poll!(timer.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(futures_util::poll!(timer.as_mut()).is_ready());
        // A token already past its `exp` has only the leeway left...
        let past = expiry_deadline(999_000, leeway, unix_now, Instant::now());
        assert_eq!(past, Instant::now() + leeway);
        // ...and one that lasts for ever is capped, not an overflow.
        let far = expiry_deadline(u64::MAX, leeway, unix_now, Instant::now());
        assert_eq!(far, Instant::now() + MAX_TOKEN_LIFE);
    }
}
