//! How a store error or a bad argument becomes a gRPC status (with the
//! `ErrorInfo` of [`ERROR_DOMAIN`] and a reason), for this service and the
//! channels service.

use pulse_protocol::status::status_with_reason;
use tonic::{Code, Status};

use super::ERROR_DOMAIN;
use crate::PresenceError;

pub(super) fn bad_position(message: &str) -> Status {
    status_with_reason(Code::InvalidArgument, ERROR_DOMAIN, "bad_position", message)
}

pub(crate) fn invalid_argument(message: &str) -> Status {
    status_with_reason(
        Code::InvalidArgument,
        ERROR_DOMAIN,
        "invalid_argument",
        message,
    )
}

/// The one place a store error becomes a gRPC status.
pub(crate) fn to_status(error: PresenceError) -> Status {
    match error {
        PresenceError::InvalidArgument(message) => invalid_argument(&message),
        PresenceError::Unavailable(message) => status_with_reason(
            Code::Unavailable,
            ERROR_DOMAIN,
            "backend_unavailable",
            &message,
        ),
    }
}
