//! Client message decoding (`ClientMessage::decode`), the first code that
//! touches every text frame a client sends: any input is an answer, never a
//! panic, and whatever decodes encodes and decodes back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_protocol::ClientMessage;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The gateway hands decode only text that passed UTF-8 validation.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = ClientMessage::decode(text) else {
        return;
    };
    let encoded = serde_json::to_string(&message).expect("a decoded message encodes");
    let again = ClientMessage::decode(&encoded).expect("an encoded message decodes");
    let same = match (&message, &again) {
        (ClientMessage::Auth { token: a }, ClientMessage::Auth { token: b }) => a == b,
        (ClientMessage::Ping { id: a }, ClientMessage::Ping { id: b }) => match (a, b) {
            (Some(a), Some(b)) => same_value(a, b),
            (a, b) => a == b,
        },
        _ => false,
    };
    assert!(
        same,
        "round trip of {text:?} through {encoded:?}: {message:?} became {again:?}"
    );
});

/// Equality, except that a float may move by a few units in the last place:
/// serde_json's default number parser is fast but not correctly rounded, so
/// a float that went through text once can come back a neighbour.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same_value(x, y)))
        }
        (a, b) => a == b,
    }
}
