//! gRPC errors with a machine-readable reason.
//!
//! Every Pulse service fails with a status code and a `google.rpc.ErrorInfo`
//! detail whose `reason` a program can match on. The status message starts with
//! the same reason, for people and for clients that do not decode details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A status with an `ErrorInfo` detail: `reason` in `domain`, and `message` for people.
pub fn status_with_reason(code: Code, domain: &str, reason: &str, message: &str) -> Status {
    Status::with_error_details(
        code,
        format!("{reason}: {message}"),
        ErrorDetails::with_error_info(reason, domain, []),
    )
}

/// The `ErrorInfo` reason of a status, when it carries one.
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .filter(|reason| !reason.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_survives_the_round_trip() {
        let status = status_with_reason(
            Code::Unauthenticated,
            "pulse.auth",
            "token_expired",
            "token has expired",
        );
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "token_expired: token has expired");
        assert_eq!(reason_of(&status).as_deref(), Some("token_expired"));
        assert_eq!(reason_of(&Status::internal("boom")), None);
    }
}
