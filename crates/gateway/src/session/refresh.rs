//! A token refresh on a live connection (`{"type":"auth"}` after `connected`).
//!
//! A refresh that cannot be taken is not a reason to drop a socket whose
//! current token is still good: when refreshes come too often, or
//! `pulse-auth` cannot be asked, the client gets an `error` (`rate_limited`,
//! `auth_unavailable`) and keeps its socket on the token it has, until that
//! one expires; it retries the refresh. A refresh that is answered and
//! refused (a bad or expired token, another user's) still closes, as before.

use pulse_protocol::{CloseCode, ErrorCode, ServerMessage};
use tracing::debug;

use super::{Live, channels::ChannelState, expiry_instant, validate};
use crate::{frame::OpCode, limits::Rates, socket::End, telemetry};

impl Live {
    pub(super) async fn refresh(&mut self, token: &str) -> Result<(), End> {
        let settings = &self.shared.settings;
        let rates = Rates::of(settings);
        if !self.rate.allow_refresh(rates) {
            telemetry::limit_rejection("token_refreshes_per_minute");
            let message = format!(
                "more than {} token refreshes per minute; this one was not taken, \
                 the connection keeps its current token",
                rates.refreshes_per_minute
            );
            return self.answer_error(ErrorCode::RATE_LIMITED, &message).await;
        }
        let fresh = match validate(&self.shared, token).await {
            Ok(fresh) => fresh,
            // `pulse-auth` could not be asked (the answer that closes an
            // unauthenticated socket with 1013): the token in hand is as
            // good as it was.
            Err(End::Fail {
                close: CloseCode::TryAgainLater,
                ..
            }) => {
                debug!(user_id = %self.user_id, connection_id = %self.connection_id, "token refresh not checked: auth unavailable");
                return self
                    .answer_error(
                        ErrorCode::AUTH_UNAVAILABLE,
                        "the refreshed token could not be checked: authentication is \
                         unavailable; the connection keeps its current token until it \
                         expires, retry the refresh",
                    )
                    .await;
            }
            Err(end) => return Err(end),
        };
        if *fresh.user_id != *self.user_id {
            return Err(End::fail(
                CloseCode::Forbidden,
                ErrorCode::new("user_mismatch"),
                "a refreshed token must name the same user",
            ));
        }
        self.expires_at = expiry_instant(fresh.expires_at, settings.token_leeway);
        // The refreshed token's `channels` claim decides later subscriptions;
        // those made under the old one stay.
        match &mut self.channels {
            Some(state) => state.set_claim(&fresh.claims),
            None => self.channels = ChannelState::for_connection(&fresh.claims, Vec::new()),
        }
        self.rearm();
        debug!(user_id = %self.user_id, connection_id = %self.connection_id, "token refreshed");
        Ok(())
    }

    /// An `error` that does not end the connection.
    async fn answer_error(&mut self, code: ErrorCode, message: &str) -> Result<(), End> {
        let error = ServerMessage::error(code, message).encode();
        self.write(OpCode::Text, error.as_bytes()).await?;
        self.shared.metrics.messages_out.increment(1);
        Ok(())
    }
}
