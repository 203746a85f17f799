//! The one definition of a user hash value, `"<connected_at_ms>|<instance_id>"`
//! (`<ns>:{b<k>}:user:<user_id>`: connection id -> this value).
//!
//! `register.lua` writes it (`at_ms .. '|' .. instance_id`, from the
//! decimal string [`UserEntry::encode`]'s digits come from) and
//! `prelude.lua`'s `instance_of` reads it back the same way as
//! [`UserEntry::instance_of`]; `redis_store/wire_tests.rs` runs the scripts
//! on a real Redis and holds both sides to this type.

/// One connection's entry in its user's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserEntry<'a> {
    /// When the connection opened, milliseconds since the Unix epoch.
    pub(crate) connected_at_ms: u64,
    /// The instance that holds the connection; may itself contain `|`.
    pub(crate) instance_id: &'a str,
}

impl<'a> UserEntry<'a> {
    /// The value as the scripts write it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn encode(&self) -> String {
        format!("{}|{}", self.connected_at_ms, self.instance_id)
    }

    /// Decodes a value; `None` when the part before the first `|` is not a
    /// number of milliseconds or there is no `|`.
    pub(crate) fn parse(value: &'a str) -> Option<Self> {
        let (at, instance_id) = value.split_once('|')?;
        Some(Self {
            connected_at_ms: at.parse().ok()?,
            instance_id,
        })
    }

    /// Only the instance id of a value, as `instance_of` in `prelude.lua`
    /// reads it: the digits cannot hold a `|`, so it is everything after the
    /// first one (empty when there is none).
    pub(crate) fn instance_of(value: &str) -> &str {
        value.split_once('|').map_or("", |(_, instance)| instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_is_everything_after_the_first_bar() {
        assert_eq!(
            UserEntry::instance_of("1712345678901|gw|with|bars"),
            "gw|with|bars"
        );
        assert_eq!(UserEntry::instance_of("no separator"), "");
    }

    #[test]
    fn values_round_trip_and_bad_ones_do_not_parse() {
        let entry = UserEntry {
            connected_at_ms: 1_712_345_678_901,
            instance_id: "gw|with|bars",
        };
        assert_eq!(entry.encode(), "1712345678901|gw|with|bars");
        assert_eq!(UserEntry::parse(&entry.encode()), Some(entry));
        for bad in ["not a number|gw", "no separator", "|gw", "-1|gw"] {
            assert_eq!(UserEntry::parse(bad), None, "{bad}");
        }
    }
}
