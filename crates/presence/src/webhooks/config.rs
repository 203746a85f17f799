//! The `[webhooks]` part of the config file: where presence events are
//! POSTed, with which secret, which kinds.
//!
//! ```toml
//! [webhooks]
//! url = "https://app.internal/pulse-events"
//! secret_file = "/run/secrets/pulse-webhook"   # or secret = "..."
//! events = ["online", "offline"]               # connected, disconnected, join, leave too
//! timeout = "10s"                              # one POST
//! max_batch = 100                              # events in one POST
//!
//! [[webhooks.targets]]                         # more receivers, each with a name
//! name = "billing"
//! url = "http://billing:8080/pulse"
//! secret = "..."
//! events = ["connected", "disconnected"]
//! ```

use std::{collections::BTreeSet, fmt, path::PathBuf, time::Duration};

use pulse_protocol::EventKind;
use serde::Deserialize;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// The most events one POST carries.
pub const MAX_BATCH: usize = 1000;

/// `[webhooks]` as written: one target inline, and/or `[[webhooks.targets]]`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    #[serde(flatten)]
    inline: TargetConfig,
    /// More targets, each with a name.
    #[serde(default)]
    targets: Vec<TargetConfig>,
}

/// One receiver as written.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    max_batch: Option<usize>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|error| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"10s\": {error}"))
    })
}

/// Never shows a secret.
impl fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self
            .inline
            .url
            .iter()
            .map(|_| "default")
            .chain(self.targets.iter().filter_map(|t| t.name.as_deref()))
            .collect();
        f.debug_struct("WebhooksConfig")
            .field("targets", &names)
            .finish_non_exhaustive()
    }
}

/// One receiver, checked: what the delivery task runs with.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Names its cursor and lease in Redis: renaming a target starts it
    /// from now. `default` for the inline one.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// The kinds POSTed; the others are skipped (and passed).
    pub events: BTreeSet<EventKind>,
    /// How long one POST may take before it counts as failed.
    pub timeout: Duration,
    /// The most events in one POST.
    pub max_batch: usize,
}

/// Never shows the secret.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

fn kind_named(name: &str) -> Result<EventKind, String> {
    Ok(match name {
        "connected" => EventKind::Connected,
        "disconnected" => EventKind::Disconnected,
        "online" => EventKind::Online,
        "offline" => EventKind::Offline,
        "join" => EventKind::Join,
        "leave" => EventKind::Leave,
        other => {
            return Err(format!(
                "{other:?} is not an event kind (connected, disconnected, online, offline, join, leave)"
            ));
        }
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

impl TargetConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn check(&self, key: &str, name: String) -> Result<Target, String> {
        let url = self
            .url
            .clone()
            .ok_or_else(|| format!("{key}.url: every webhook target needs one"))?;
        let parsed: hyper::Uri = url.parse().map_err(|error| format!("{key}.url: {error}"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(format!("{key}.url: an http:// or https:// URL with a host"));
        }
        let secret = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(format!("{key}: secret or secret_file, not both"));
            }
            (Some(secret), None) => secret.clone().into_bytes(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|error| format!("{key}.secret_file {}: {error}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .as_bytes()
                .to_vec(),
            (None, None) => return Err(format!("{key}: a secret (or secret_file) is required")),
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{key}.secret: at least {MIN_SECRET_BYTES} bytes (it is never shown)"
            ));
        }
        let events = match &self.events {
            None => BTreeSet::from([EventKind::Online, EventKind::Offline]),
            Some(names) if names.is_empty() => {
                return Err(format!("{key}.events: name at least one kind"));
            }
            Some(names) => names
                .iter()
                .map(|name| kind_named(name).map_err(|error| format!("{key}.events: {error}")))
                .collect::<Result<_, _>>()?,
        };
        let timeout = self.timeout.unwrap_or(Duration::from_secs(10));
        if timeout < Duration::from_millis(100) {
            return Err(format!("{key}.timeout: at least 100ms"));
        }
        let max_batch = self.max_batch.unwrap_or(100);
        if !(1..=MAX_BATCH).contains(&max_batch) {
            return Err(format!("{key}.max_batch: 1 to {MAX_BATCH}"));
        }
        Ok(Target {
            name,
            url,
            secret,
            events,
            timeout,
            max_batch,
        })
    }
}

impl WebhooksConfig {
    /// Every target, checked; the error names the key.
    pub fn targets(&self) -> Result<Vec<Target>, String> {
        let mut targets = Vec::new();
        if !self.inline.is_empty() {
            if self.inline.name.is_some() {
                return Err("webhooks.name: only [[webhooks.targets]] have names".into());
            }
            targets.push(self.inline.check("webhooks", "default".to_owned())?);
        }
        for (index, target) in self.targets.iter().enumerate() {
            let key = format!("webhooks.targets[{index}]");
            let name = target
                .name
                .clone()
                .ok_or_else(|| format!("{key}.name: every target needs a name"))?;
            if !valid_name(&name) {
                return Err(format!(
                    "{key}.name: 1 to 64 of ASCII letters, digits and - _ ."
                ));
            }
            if targets.iter().any(|known: &Target| known.name == name) {
                return Err(format!("{key}.name: {name:?} is used twice"));
            }
            targets.push(target.check(&key, name)?);
        }
        if targets.is_empty() {
            return Err("webhooks: name a url, or [[webhooks.targets]]".into());
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Target>, String> {
        #[derive(Deserialize)]
        struct File {
            webhooks: WebhooksConfig,
        }
        let file: File = toml::from_str(text).map_err(|error| error.message().to_owned())?;
        file.webhooks.targets()
    }

    #[test]
    fn one_inline_target_and_named_ones() {
        let targets = parse(
            r#"
            [webhooks]
            url = "http://app:7000/events"
            secret = "0123456789abcdef"
            [[webhooks.targets]]
            name = "billing"
            url = "https://billing/pulse"
            secret = "fedcba9876543210"
            events = ["connected", "disconnected"]
            max_batch = 10
            "#,
        )
        .unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].name, "default");
        assert_eq!(
            targets[0].events,
            BTreeSet::from([EventKind::Online, EventKind::Offline])
        );
        assert_eq!(targets[1].max_batch, 10);
        assert!(!format!("{targets:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_targets_name_their_key() {
        let cases = [
            ("[webhooks]\nsecret = \"0123456789abcdef\"", "webhooks.url"),
            (
                "[webhooks]\nurl = \"ftp://x\"\nsecret = \"0123456789abcdef\"",
                "webhooks.url",
            ),
            ("[webhooks]\nurl = \"http://x\"", "webhooks: a secret"),
            (
                "[webhooks]\nurl = \"http://x\"\nsecret = \"short\"",
                "webhooks.secret",
            ),
            (
                "[webhooks]\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"\nevents = [\"typo\"]",
                "webhooks.events",
            ),
            (
                "[[webhooks.targets]]\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"",
                "webhooks.targets[0].name",
            ),
            (
                "[webhooks]\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"\nmax_batch = 0",
                "max_batch",
            ),
            ("[webhooks]", "name a url"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
