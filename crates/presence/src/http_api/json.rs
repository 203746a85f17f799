//! A call's JSON: decoding its body, encoding its answer, and the
//! `{"error":{"code":..,"message":..}}` response when it fails.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::PresenceError;

/// Why a call failed after it was admitted.
pub(super) enum Failure {
    Presence(PresenceError),
    Body(String),
}

impl From<PresenceError> for Failure {
    fn from(error: PresenceError) -> Self {
        Self::Presence(error)
    }
}

impl Failure {
    pub(super) fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Body(message) => error(StatusCode::BAD_REQUEST, "invalid_argument", &message),
            Self::Presence(PresenceError::InvalidArgument(message)) => {
                error(StatusCode::BAD_REQUEST, "invalid_argument", &message)
            }
            Self::Presence(PresenceError::Unavailable(message)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                &message,
            ),
        }
    }
}

pub(super) fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| Failure::Body(format!("body: {error}")))
}

pub(super) fn encode(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("answers always serialise")
}

pub(super) fn error_response_too_large(limit: usize) -> Response<Full<Bytes>> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is over {limit} bytes"),
    )
}

/// `{"error":{"code":..,"message":..}}` with `status`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}
