//! Claims between JSON and `google.protobuf.Struct`, the shape they cross gRPC in.
//!
//! `Struct` numbers are `f64`, so integers beyond 2^53 lose precision on the
//! way; whole numbers come back as JSON integers, so `exp` and `iat` round-trip.

use prost_types::{ListValue, Struct, Value as ProtoValue, value::Kind};
use serde_json::{Map, Number, Value};

/// The largest integer an `f64` holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// JSON claims as a protobuf `Struct`.
pub(crate) fn map_to_struct(claims: &Map<String, Value>) -> Struct {
    Struct {
        fields: claims
            .iter()
            .map(|(name, value)| (name.clone(), json_to_proto(value)))
            .collect(),
    }
}

/// A protobuf `Struct` as JSON claims.
pub(crate) fn struct_to_map(claims: Struct) -> Map<String, Value> {
    claims
        .fields
        .into_iter()
        .map(|(name, value)| (name, proto_to_json(value)))
        .collect()
}

fn json_to_proto(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        // Every JSON number has an f64 reading; serde_json gives one for all of them.
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}

fn proto_to_json(value: ProtoValue) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(proto_to_json).collect())
        }
        Some(Kind::StructValue(map)) => Value::Object(struct_to_map(map)),
    }
}

fn number_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        // Exact: a whole f64 within ±2^53 converts without loss.
        return Value::Number(Number::from(n as i64));
    }
    // NaN and the infinities have no JSON form.
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_round_trip() {
        let claims = json!({
            "sub": "user-1",
            "exp": 1_900_000_000u64,
            "neg": -3,
            "ratio": 0.25,
            "admin": true,
            "nothing": null,
            "roles": ["a", "b", 1],
            "org": {"id": 7, "name": "acme", "tags": []},
        });
        let Value::Object(map) = claims else {
            unreachable!()
        };
        assert_eq!(struct_to_map(map_to_struct(&map)), map);
    }

    #[test]
    fn numbers_that_json_cannot_hold_become_null() {
        for n in [f64::NAN, f64::INFINITY] {
            assert_eq!(number_to_json(n), Value::Null);
        }
        assert_eq!(number_to_json(1.5), json!(1.5));
        assert_eq!(number_to_json(-0.0), json!(0));
    }
}
