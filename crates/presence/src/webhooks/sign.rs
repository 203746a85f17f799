//! What a webhook POST carries: the JSON body and its signature header.
//!
//! `Pulse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`.
//! A receiver recomputes the HMAC over the timestamp and the raw body,
//! compares in constant time, and refuses a timestamp too far from its clock
//! (replay); [`verify`] is that check, for Rust receivers and the tests.

use std::time::{Duration, UNIX_EPOCH};

use pulse_protocol::{EventKind, PresenceEvent};
use ring::hmac;
use serde::Serialize;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "pulse-signature";

/// How far from the receiver's clock a timestamp may be, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct Body<'a> {
    events: Vec<Event<'a>>,
}

#[derive(Serialize)]
struct Event<'a> {
    id: String,
    kind: EventKind,
    user_id: &'a str,
    connection_id: &'a str,
    instance_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    at: String,
    position: &'a str,
}

/// The body of one POST: `{"events":[...]}`, each event with its id, kind,
/// user, connection, instance, time (RFC 3339, milliseconds) and the
/// position after it.
pub fn body(events: &[(PresenceEvent, String)]) -> Vec<u8> {
    let body = Body {
        events: events
            .iter()
            .map(|(event, position)| Event {
                id: event.id.to_string(),
                kind: event.kind,
                user_id: &event.user_id,
                connection_id: &event.connection_id,
                instance_id: &event.instance_id,
                channel: event.channel.as_deref(),
                at: humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(event.at_ms),
                )
                .to_string(),
                position,
            })
            .collect(),
    };
    // Strings and enums only: serializing cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

/// The `Pulse-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex(mac(secret, timestamp, body).as_ref())
    )
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// The HMAC does not match (wrong secret, or the body was changed).
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a `Pulse-Signature` header against the raw body, `now` being the
/// receiver's Unix seconds.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut given = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => given = Some(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(given)) = (timestamp, given) else {
        return Err(VerifyError::Malformed);
    };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::Stale);
    }
    let given = (0..given.len())
        .step_by(2)
        .map(|at| {
            given
                .get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(VerifyError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &given).map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    #[test]
    fn a_signature_verifies_and_any_change_is_refused() {
        let body = br#"{"events":[]}"#;
        let header = signature(SECRET, 1_700_000_000, body);
        let ok = |secret: &[u8], header: &str, body: &[u8], now| {
            verify(secret, header, body, now, DEFAULT_TOLERANCE)
        };
        assert_eq!(ok(SECRET, &header, body, 1_700_000_100), Ok(()));
        assert_eq!(
            ok(b"another secret!!", &header, body, 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok(SECRET, &header, br#"{"events":[1]}"#, 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok(SECRET, &header, body, 1_700_000_301),
            Err(VerifyError::Stale)
        );
        // The timestamp is signed: moving it breaks the HMAC.
        let moved = header.replace("t=1700000000", "t=1700000100");
        assert_eq!(
            ok(SECRET, &moved, body, 1_700_000_100),
            Err(VerifyError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1700000000,v1=0g"] {
            assert_eq!(
                ok(SECRET, bad, body, 1_700_000_000),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: `printf '1.{}' | openssl dgst -sha256 -hmac Jefe`.
        assert_eq!(
            signature(b"Jefe", 1, b"{}"),
            "t=1,v1=dc7943cccf20f64327d263db5e2aca27c2b8175e8e6e7ea04f482091bf456b0f"
        );
    }
}
