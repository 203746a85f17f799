//! Environment overrides of the config file's namespace options, for the
//! ones a deployment changes most (a Kubernetes `env:` entry instead of a
//! new ConfigMap): `PULSE_NS_<NAMESPACE>_<OPTION>=<value>`.
//!
//! `<NAMESPACE>` is the namespace's name in upper case with every character
//! that is not a letter or a digit written `_` (`live-chat` is
//! `LIVE_CHAT`), or `DEFAULT` for `[default]`; `<OPTION>` is one of
//! [`OPTIONS`], in upper case. An override changes a namespace the file
//! configures (a namespace's other options, and whether it exists at all,
//! stay the file's); a variable that names none, names an option that does
//! not exist, or holds a bad value stops the start with one line naming it.

use std::time::Duration;

use super::{Authorize, NamespaceOptions, Namespaces};

/// Every variable's prefix.
pub const PREFIX: &str = "PULSE_NS_";

/// The options an environment variable may set, as they appear in its name.
pub const OPTIONS: [&str; 8] = [
    "AUTHORIZE",
    "PRESENCE",
    "JOIN_LEAVE",
    "ALLOW_PUBLISH",
    "HISTORY_SIZE",
    "HISTORY_TTL",
    "MAX_SUBSCRIBERS",
    "PRESENCE_MAX_USERS",
];

/// How a namespace name appears in a variable's name.
fn env_name(namespace: &str) -> String {
    namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Namespaces {
    /// Applies every `PULSE_NS_*` variable of `vars`; the error names the
    /// variable. The caller checks the result again, as a file is checked.
    pub(super) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), String> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX))
            .collect();
        // The same outcome whatever order the environment lists them in.
        vars.sort();
        for (name, value) in vars {
            let (options, option) = self
                .target(&name)
                .map_err(|message| format!("{name}: {message}"))?;
            set(options, option, &value).map_err(|message| format!("{name}: {message}"))?;
        }
        Ok(())
    }

    /// The namespace and option a variable names.
    fn target(&mut self, name: &str) -> Result<(&mut NamespaceOptions, &'static str), String> {
        let rest = &name[PREFIX.len()..];
        let mut found: Vec<(Option<String>, &'static str)> = Vec::new();
        for option in OPTIONS {
            let Some(namespace) = rest
                .strip_suffix(option)
                .and_then(|rest| rest.strip_suffix('_'))
            else {
                continue;
            };
            if namespace == "DEFAULT" && self.default.is_some() {
                found.push((None, option));
            }
            found.extend(
                self.namespaces
                    .keys()
                    .filter(|configured| env_name(configured) == namespace)
                    .map(|configured| (Some(configured.clone()), option)),
            );
        }
        match found.as_slice() {
            [] => Err(format!(
                "names no namespace of the config file with one of its options \
                 ({PREFIX}<NAMESPACE>_<OPTION>, OPTION one of {}; NAMESPACE a configured \
                 namespace in upper case with `_` for other characters, or DEFAULT for [default])",
                OPTIONS.join(", ")
            )),
            [(namespace, option)] => {
                let option = *option;
                let options = match namespace {
                    None => self.default.as_mut(),
                    Some(namespace) => self.namespaces.get_mut(namespace),
                };
                Ok((options.expect("found among the configured ones"), option))
            }
            _ => Err(format!(
                "names more than one namespace of the config file ({}); rename one",
                found
                    .iter()
                    .map(|(namespace, _)| namespace.as_deref().unwrap_or("[default]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Sets `option` of `options` from the text of a variable.
fn set(options: &mut NamespaceOptions, option: &str, value: &str) -> Result<(), String> {
    let flag = || match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    };
    let number = || {
        value
            .parse::<u32>()
            .map_err(|_| format!("{value:?} is not a whole number"))
    };
    let duration = || -> Result<Duration, String> {
        humantime::parse_duration(value)
            .map_err(|error| format!("{value:?} is not a duration like \"10m\": {error}"))
    };
    match option {
        "AUTHORIZE" => {
            options.authorize = match value {
                "any" => Authorize::Any,
                "claim" => Authorize::Claim,
                "token" => Authorize::Token,
                "hook" => Authorize::Hook,
                _ => return Err(format!("{value:?} is not any, claim, token or hook")),
            }
        }
        "PRESENCE" => options.presence = flag()?,
        "JOIN_LEAVE" => options.join_leave = flag()?,
        "ALLOW_PUBLISH" => options.allow_publish = flag()?,
        "HISTORY_SIZE" => options.history_size = number()?,
        "HISTORY_TTL" => options.history_ttl = duration()?,
        "MAX_SUBSCRIBERS" => options.max_subscribers = number()?,
        "PRESENCE_MAX_USERS" => options.presence_max_users = number()?,
        _ => unreachable!("every option of OPTIONS is handled"),
    }
    Ok(())
}
