//! Channel namespaces: the options of each, read once from the config file
//! (`--config` / `PULSE_CONFIG`) that `pulse-gateway` and `pulse-presence`
//! share, checked at start so that a bad file stops either with one line
//! naming the key.
//!
//! ```toml
//! [default]                 # names without ':'; absent: such names are refused
//! authorize = "any"
//! [namespaces.room]
//! authorize = "any"         # any | claim | token | hook
//! presence = true
//! join_leave = true
//! allow_publish = true
//! history_size = 100
//! history_ttl = "10m"
//! max_subscribers = 0       # 0 = no limit
//! [hooks]
//! authorize_url = "http://app:7000"
//! timeout = "1s"
//! ```
//!
//! Safe by default: with no file, or a file without `[default]`, a channel
//! whose namespace is not configured is refused (`unknown_namespace`).

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use pulse_protocol::{Channel, channel::valid_namespace};
use serde::Deserialize;

/// The most publications a channel's history may keep.
pub const MAX_HISTORY_SIZE: u32 = 10_000;

/// How the `subscribe` of a namespace's channels is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authorize {
    /// Any authenticated connection may subscribe.
    Any,
    /// The connection token's `channels` claim names the channel, exactly or
    /// by a `prefix*` pattern.
    Claim,
    /// The `subscribe` carries a subscription token for the user and channel.
    Token,
    /// The application's `Hooks/Authorize` says yes.
    Hook,
}

impl fmt::Display for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::Claim => "claim",
            Self::Token => "token",
            Self::Hook => "hook",
        })
    }
}

/// The options of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceOptions {
    /// How subscriptions are authorized.
    pub authorize: Authorize,
    /// Per-channel presence and the `presence` request.
    pub presence: bool,
    /// `join`/`leave` messages to subscribers (needs `presence`).
    pub join_leave: bool,
    /// Whether clients may `publish`.
    pub allow_publish: bool,
    /// Publications kept per channel; 0 keeps none (and gives no offsets).
    pub history_size: u32,
    /// How long a channel's history lives after its last publication.
    #[serde(with = "humantime_serde_compat")]
    pub history_ttl: Duration,
    /// The most subscribers (subscribed connections, across every
    /// instance) a channel may have (0: no limit).
    pub max_subscribers: u32,
    /// Above this many users in a channel, `presence` answers only the
    /// counts and no `join`/`leave` is sent (a room of 50,000 viewers would
    /// otherwise send every one of them every arrival).
    pub presence_max_users: u32,
}

/// What [`NamespaceOptions::presence_max_users`] is when not set.
pub const DEFAULT_PRESENCE_MAX_USERS: u32 = 1000;

impl NamespaceOptions {
    /// The namespace's history, when it keeps one.
    pub fn history(&self) -> Option<crate::HistoryOptions> {
        (self.history_size > 0).then_some(crate::HistoryOptions {
            size: self.history_size,
            ttl: self.history_ttl,
        })
    }

    /// The join/leave cap a membership records: 0 when the namespace sends
    /// no `join`/`leave`.
    pub fn join_leave_cap(&self) -> u32 {
        if self.join_leave {
            self.presence_max_users
        } else {
            0
        }
    }
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            authorize: Authorize::Any,
            presence: false,
            join_leave: false,
            allow_publish: false,
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            max_subscribers: 0,
            presence_max_users: DEFAULT_PRESENCE_MAX_USERS,
        }
    }
}

/// The options of personal channels (`#<user_id>`): only history, since
/// who may subscribe is fixed (the user, by the server).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalOptions {
    /// Publications kept per user; 0 keeps none.
    pub history_size: u32,
    /// How long a personal channel's history lives after its last publication.
    #[serde(with = "humantime_serde_compat")]
    pub history_ttl: Duration,
}

impl PersonalOptions {
    /// The history of personal channels, when they keep one.
    pub fn history(&self) -> Option<crate::HistoryOptions> {
        (self.history_size > 0).then_some(crate::HistoryOptions {
            size: self.history_size,
            ttl: self.history_ttl,
        })
    }
}

impl Default for PersonalOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::from_secs(300),
        }
    }
}

/// Where the application's authorization hook is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// The gRPC endpoint serving `pulse.hooks.v1.Hooks`.
    pub authorize_url: String,
    /// How long one call may take; past it the subscription is refused
    /// (`unavailable`).
    #[serde(with = "humantime_serde_compat", default = "default_hook_timeout")]
    pub timeout: Duration,
    /// For an `https://` hook: a PEM file of the certificate authorities
    /// to trust instead of the public ones (the web PKI roots).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(1)
}

/// The whole channels part of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// Options for names without `:`; `None` refuses such names.
    #[serde(default)]
    pub default: Option<NamespaceOptions>,
    /// Options by namespace name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    /// Options of personal channels.
    #[serde(default)]
    pub personal: PersonalOptions,
    /// The authorization hook, for namespaces with `authorize = "hook"`.
    #[serde(default)]
    pub hooks: Option<HooksConfig>,
    /// Where `pulse-presence` POSTs presence events. Gateways ignore it;
    /// `pulse-presence` checks it at start (`WebhooksConfig::targets`: the
    /// secret file is read there, and gateways need not have it).
    #[serde(default)]
    pub webhooks: Option<crate::webhooks::WebhooksConfig>,
}

/// A config file that cannot be used, said in one line that names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config file {path}: {message}")]
pub struct NamespacesError {
    /// The file (or `<inline>`).
    pub path: String,
    /// What is wrong, naming the key (and the line, for a parse error).
    pub message: String,
}

/// What a channel resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// A personal channel, with its options.
    Personal(&'a PersonalOptions),
    /// A channel of a configured namespace (or the default), with its options.
    Namespace(&'a NamespaceOptions),
}

impl Namespaces {
    /// What a service runs with: the config file at `path` (no namespaces
    /// without one), then the `PULSE_NS_<NAMESPACE>_<OPTION>` overrides
    /// among `vars` (see [`mod@env`]), checked as a whole; the error is one line
    /// naming the file's key or the variable.
    pub fn configure(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, NamespacesError> {
        let (mut namespaces, shown) = match path {
            None => (Self::default(), "(none)".to_owned()),
            Some(path) => (Self::load(path)?, path.display().to_string()),
        };
        let fail = |message: String| NamespacesError {
            path: shown.clone(),
            message,
        };
        namespaces.apply_env(vars).map_err(fail)?;
        namespaces.check().map_err(|message| {
            fail(format!(
                "{message} (with the {}* environment overrides)",
                env::PREFIX
            ))
        })?;
        Ok(namespaces)
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, NamespacesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| NamespacesError {
            path: shown.clone(),
            message: format!("cannot be read: {error}"),
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and checks the text of a config file; `path` only names it in
    /// errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, NamespacesError> {
        let fail = |message: String| NamespacesError {
            path: path.to_owned(),
            message,
        };
        let namespaces: Self = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = error.message().replace('\n', " ");
            fail(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        namespaces.check().map_err(fail)?;
        Ok(namespaces)
    }

    /// The checks serde cannot make: names, bounds, and what needs what.
    fn check(&self) -> Result<(), String> {
        let named = self
            .default
            .iter()
            .map(|options| ("default".to_owned(), options))
            .chain(
                self.namespaces
                    .iter()
                    .map(|(name, options)| (format!("namespaces.{name}"), options)),
            );
        for name in self.namespaces.keys() {
            if !valid_namespace(name) {
                return Err(format!(
                    "namespaces.{name}: a namespace name is 1 to 64 of ASCII letters, digits and - _ . @ / = , + ! ~ | $ %"
                ));
            }
        }
        for (key, options) in named {
            if options.history_size > MAX_HISTORY_SIZE {
                return Err(format!(
                    "{key}.history_size: at most {MAX_HISTORY_SIZE}, got {}",
                    options.history_size
                ));
            }
            if options.history_size > 0 {
                check_history_ttl(&format!("{key}.history_ttl"), options.history_ttl)?;
            }
            if options.join_leave && !options.presence {
                return Err(format!(
                    "{key}.join_leave: needs presence = true (join and leave are presence transitions)"
                ));
            }
            if options.presence_max_users == 0 {
                return Err(format!(
                    "{key}.presence_max_users: at least 1 (the most users `presence` lists)"
                ));
            }
            if options.authorize == Authorize::Hook && self.hooks.is_none() {
                return Err(format!(
                    "{key}.authorize: \"hook\" needs [hooks] authorize_url"
                ));
            }
        }
        if self.personal.history_size > MAX_HISTORY_SIZE {
            return Err(format!(
                "personal.history_size: at most {MAX_HISTORY_SIZE}, got {}",
                self.personal.history_size
            ));
        }
        if self.personal.history_size > 0 {
            check_history_ttl("personal.history_ttl", self.personal.history_ttl)?;
        }
        if let Some(hooks) = &self.hooks {
            let https = hooks.authorize_url.starts_with("https://");
            let uri = hooks.authorize_url.parse::<http::Uri>();
            if !(https || hooks.authorize_url.starts_with("http://"))
                || uri.as_ref().map_or(true, |uri| uri.host().is_none())
            {
                return Err(
                    "hooks.authorize_url: an http:// or https:// URL with a host".to_owned(),
                );
            }
            if let Some(ca_file) = &hooks.ca_file {
                if !https {
                    return Err("hooks.ca_file: only for an https:// authorize_url".to_owned());
                }
                if let Err(error) = std::fs::metadata(ca_file) {
                    return Err(format!(
                        "hooks.ca_file: {} cannot be read: {error}",
                        ca_file.display()
                    ));
                }
            }
            if hooks.timeout.is_zero() {
                return Err("hooks.timeout: more than zero".to_owned());
            }
        }
        Ok(())
    }

    /// The options that apply to `channel`, or `None` when its namespace is
    /// not configured (and, for a name without `:`, there is no default).
    pub fn resolve<'a>(&'a self, channel: &Channel<'_>) -> Option<Resolved<'a>> {
        match channel {
            Channel::Personal { .. } => Some(Resolved::Personal(&self.personal)),
            Channel::Named {
                namespace: None, ..
            } => self.default.as_ref().map(Resolved::Namespace),
            Channel::Named {
                namespace: Some(namespace),
                ..
            } => self.namespaces.get(*namespace).map(Resolved::Namespace),
        }
    }
}

impl Namespaces {
    /// Whether the server API may publish to `channel`: a valid name whose
    /// namespace is configured (a typo must not publish into the void).
    ///
    /// # Errors
    ///
    /// [`crate::PresenceError::InvalidArgument`] naming what is wrong.
    pub fn check_publishable(&self, channel: &str) -> Result<(), crate::PresenceError> {
        self.publish_options(channel, None, std::time::Duration::ZERO)
            .map(drop)
    }

    /// How the server API publishes on `channel`: checked as
    /// [`Namespaces::check_publishable`], with its namespace's history.
    ///
    /// # Errors
    ///
    /// As [`Namespaces::check_publishable`].
    pub fn publish_options<'a>(
        &self,
        channel: &str,
        idempotency_key: Option<&'a str>,
        idempotency_window: Duration,
    ) -> Result<crate::PublishOptions<'a>, crate::PresenceError> {
        let parsed = Channel::parse(channel).map_err(|error| {
            crate::PresenceError::InvalidArgument(format!("channel {channel:?}: {error}"))
        })?;
        let history = match self.resolve(&parsed) {
            None => {
                let namespace = parsed.namespace().unwrap_or("(default)");
                return Err(crate::PresenceError::InvalidArgument(format!(
                    "channel {channel:?}: unknown_namespace: namespace {namespace} is not configured"
                )));
            }
            Some(Resolved::Namespace(options)) => options.history(),
            Some(Resolved::Personal(options)) => options.history(),
        };
        Ok(crate::PublishOptions {
            history,
            idempotency_key,
            idempotency_window,
        })
    }

    /// The history of `channel`'s namespace, for the History API.
    ///
    /// # Errors
    ///
    /// [`crate::PresenceError::InvalidArgument`] for a bad name, an
    /// unconfigured namespace, or one that keeps no history.
    pub fn history_of(&self, channel: &str) -> Result<crate::HistoryOptions, crate::PresenceError> {
        self.publish_options(channel, None, Duration::ZERO)?
            .history
            .ok_or_else(|| {
                crate::PresenceError::InvalidArgument(format!(
                    "channel {channel:?}: its namespace keeps no history (history_size = 0)"
                ))
            })
    }
}

/// `"10m"`-style durations in the file, read with `humantime`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|error| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"10m\": {error}"))
        })
    }
}

pub mod env;

/// A history's TTL: at least a second, and at most as long as a channel's
/// epoch and last offset are kept after its last use
/// ([`crate::history::HISTORY_META_TTL`], 7 days): past that a quiet channel's
/// history starts again under a new epoch, whatever it still held.
fn check_history_ttl(key: &str, ttl: Duration) -> Result<(), String> {
    if ttl < Duration::from_secs(1) {
        return Err(format!("{key}: at least 1s with a history"));
    }
    if ttl > crate::history::HISTORY_META_TTL {
        return Err(format!(
            "{key}: at most 7d (a channel's epoch is kept 7 days after its last publication or read; a longer history could not be told from a new one)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
