//! Loading the API keys at start: `--api-key` values and the TOML keys file
//! (`--api-keys-file`), each checked once, with errors that name the setting
//! and never a key.

use std::path::Path;

use serde::Deserialize;

use super::{ApiKey, MIN_KEY_LEN, Permission, Permissions};

/// A bad key setting; the message names the setting and never a key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The keys file could not be read.
    #[error("--api-keys-file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The keys file is not valid TOML of the expected shape.
    #[error("--api-keys-file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, as the TOML parser says (it quotes no value).
        message: String,
    },
    /// A key or an entry is unacceptable.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting (and the key's name or position).
        setting: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: String,
    permissions: Vec<String>,
}

/// Builds the key set from `--api-key` values (each with every permission,
/// named `api-key-1`, `api-key-2`, ...) and an optional keys file, checking
/// lengths, names and permissions, and that no key appears twice.
pub fn load_keys(plain: &[String], file: Option<&Path>) -> Result<Vec<ApiKey>, KeysError> {
    let mut keys = Vec::new();
    for (index, secret) in plain.iter().enumerate() {
        let setting = format!("--api-key / API_KEYS (key {})", index + 1);
        check_secret(&setting, secret)?;
        keys.push(ApiKey::new(
            format!("api-key-{}", index + 1),
            secret,
            Permissions::ALL,
        ));
    }
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| KeysError::Read {
            path: shown.clone(),
            error,
        })?;
        let parsed: KeysFile = toml::from_str(&text).map_err(|error| KeysError::Parse {
            path: shown.clone(),
            message: error.message().to_owned(),
        })?;
        if parsed.keys.is_empty() {
            return Err(KeysError::Invalid {
                setting: format!("--api-keys-file {shown}"),
                message: "holds no [[keys]]".into(),
            });
        }
        for (index, entry) in parsed.keys.into_iter().enumerate() {
            let setting = format!("--api-keys-file {shown}: keys[{index}]");
            if entry.name.trim().is_empty() {
                return Err(KeysError::Invalid {
                    setting,
                    message: "name must not be empty".into(),
                });
            }
            let setting = format!("--api-keys-file {shown}: key {:?}", entry.name);
            check_secret(&setting, &entry.key)?;
            if entry.permissions.is_empty() {
                return Err(KeysError::Invalid {
                    setting,
                    message: "permissions must name at least one of presence:read, publish, connections:manage".into(),
                });
            }
            let mut permissions = Vec::new();
            for name in &entry.permissions {
                let permission = Permission::parse(name).ok_or_else(|| KeysError::Invalid {
                    setting: setting.clone(),
                    message: format!(
                        "unknown permission {name:?} (presence:read, publish, connections:manage)"
                    ),
                })?;
                permissions.push(permission);
            }
            if keys.iter().any(|key: &ApiKey| *key.name == *entry.name) {
                return Err(KeysError::Invalid {
                    setting,
                    message: "the name is used twice".into(),
                });
            }
            keys.push(ApiKey::new(
                entry.name,
                &entry.key,
                permissions.into_iter().collect(),
            ));
        }
    }
    for (index, key) in keys.iter().enumerate() {
        if let Some(other) = keys[..index]
            .iter()
            .find(|other| other.secret == key.secret)
        {
            return Err(KeysError::Invalid {
                setting: "--api-key / API_KEYS / --api-keys-file".into(),
                message: format!(
                    "key {:?} is the same as key {:?} (each key must be distinct)",
                    key.name, other.name
                ),
            });
        }
    }
    Ok(keys)
}

fn check_secret(setting: &str, secret: &str) -> Result<(), KeysError> {
    let invalid = |message: String| KeysError::Invalid {
        setting: setting.to_owned(),
        message,
    };
    if secret.len() < MIN_KEY_LEN {
        return Err(invalid(format!(
            "a key must be at least {MIN_KEY_LEN} characters (make one with `head -c 32 /dev/urandom | base64`)"
        )));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "a key must be printable ASCII without spaces (it travels in a header)".into(),
        ));
    }
    Ok(())
}
