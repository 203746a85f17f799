//! Who may call the internal API, and with what permissions.
//!
//! Every call to `pulse-presence` names an API key in `authorization: Bearer
//! <key>` (gRPC metadata or an HTTP header). A key has a name, used in logs
//! and errors in its place (a key itself never appears in a log line or an
//! error message), and a set of [`Permission`]s. Several keys may be valid at
//! once, so that a key is rotated by adding the new one, moving the callers,
//! then removing the old one.
//!
//! Which permission a call needs is decided in one table,
//! [`required_for_grpc`], by its path; a path that is not in the table needs
//! every permission, so a method added without a line there is closed by
//! default rather than open.

use std::{fmt, sync::Arc};

mod keys_file;

pub use keys_file::{KeysError, load_keys};

/// The shortest key accepted: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read presence: `GetUser`, `GetUsers`, `CountOnline`, `Watch`.
    PresenceRead,
    /// Deliver to users and channels: `Send`.
    Publish,
    /// End and manage connections and subscriptions: `Disconnect`.
    ConnectionsManage,
}

impl Permission {
    /// Every permission, in the order they are documented.
    pub const ALL: [Permission; 3] = [
        Permission::PresenceRead,
        Permission::Publish,
        Permission::ConnectionsManage,
    ];

    /// The name used in the keys file and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PresenceRead => "presence:read",
            Permission::Publish => "publish",
            Permission::ConnectionsManage => "connections:manage",
        }
    }

    /// The permission with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Permission::PresenceRead => 1,
            Permission::Publish => 2,
            Permission::ConnectionsManage => 4,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// Every permission.
    pub const ALL: Permissions = Permissions(7);

    /// Whether the set holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// Whether the set holds every permission of `other`.
    pub fn covers(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Permissions(iter.into_iter().fold(0, |bits, p| bits | p.bit()))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Permission::ALL
            .into_iter()
            .filter(|p| self.allows(*p))
            .map(Permission::as_str)
            .collect();
        f.write_str(&names.join(", "))
    }
}

/// One API key: a name for logs, the secret, and what it allows.
#[derive(Clone)]
pub struct ApiKey {
    name: Arc<str>,
    secret: Box<[u8]>,
    permissions: Permissions,
}

impl ApiKey {
    /// A key; `secret` is what callers send after `Bearer `.
    pub fn new(name: impl Into<Arc<str>>, secret: &str, permissions: Permissions) -> Self {
        Self {
            name: name.into(),
            secret: secret.as_bytes().into(),
            permissions,
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the key allows.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }
}

/// Never shows the secret.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// Who may call: a set of keys, or anyone (only with an explicit flag).
#[derive(Debug, Clone)]
pub enum Access {
    /// Calls must carry one of these keys.
    Keys(Arc<[ApiKey]>),
    /// No key is asked for: every caller has every permission.
    Open,
}

/// The caller of an authorized request, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, or `None` when the API is open.
    pub key_name: Option<Arc<str>>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `authorization: Bearer` header.
    #[error("missing_api_key: send `authorization: Bearer <api key>`")]
    Missing,
    /// A header that names no valid key (or is not `Bearer <key>`).
    #[error("invalid_api_key: the API key is not valid")]
    Invalid,
    /// A valid key without the permission the call needs.
    #[error("permission_denied: API key {key:?} lacks permission {needed}")]
    Permission {
        /// The key's name.
        key: Arc<str>,
        /// The permissions the call needs.
        needed: Permissions,
    },
}

impl Denied {
    /// The machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing_api_key",
            Denied::Invalid => "invalid_api_key",
            Denied::Permission { .. } => "permission_denied",
        }
    }
}

impl Access {
    /// Decides a call that needs `needed` (an empty set: any valid key),
    /// given the value of its `authorization` header.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        needed: Permissions,
    ) -> Result<Caller, Denied> {
        let keys = match self {
            Access::Open => return Ok(Caller { key_name: None }),
            Access::Keys(keys) => keys,
        };
        let header = authorization.ok_or(Denied::Missing)?;
        let presented = bearer(header).ok_or(Denied::Invalid)?;
        // Every key is compared, in time that does not depend on where the
        // bytes differ, so timing tells nothing about a key.
        let mut found: Option<&ApiKey> = None;
        for key in keys.iter() {
            if constant_time_eq(&key.secret, presented) {
                found = Some(key);
            }
        }
        let key = found.ok_or(Denied::Invalid)?;
        if !key.permissions.covers(needed) {
            return Err(Denied::Permission {
                key: key.name.clone(),
                needed,
            });
        }
        Ok(Caller {
            key_name: Some(key.name.clone()),
        })
    }
}

/// The key in `Bearer <key>` (the scheme is case-insensitive, RFC 7235).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let key = rest.trim_ascii();
    (!key.is_empty()).then_some(key)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What a gRPC call needs, by its path (`/package.Service/Method`).
///
/// Health is open (load balancers and kubelets ask it without a key);
/// reflection needs a valid key with any permission. A path not listed
/// needs every permission.
pub fn required_for_grpc(path: &str) -> Option<Permissions> {
    let needs = |permission: Permission| Some([permission].into_iter().collect());
    match path {
        "/pulse.presence.v1.Presence/GetUser"
        | "/pulse.presence.v1.Presence/GetUsers"
        | "/pulse.presence.v1.Presence/CountOnline"
        | "/pulse.presence.v1.Presence/Watch"
        | "/pulse.presence.v1.Presence/Snapshot"
        | "/pulse.channels.v1.Channels/Presence"
        | "/pulse.channels.v1.Channels/PresenceStats"
        | "/pulse.channels.v1.Channels/History"
        | "/pulse.channels.v1.Channels/Channels" => needs(Permission::PresenceRead),
        "/pulse.presence.v1.Presence/Send"
        | "/pulse.channels.v1.Channels/Publish"
        | "/pulse.channels.v1.Channels/Broadcast" => needs(Permission::Publish),
        "/pulse.presence.v1.Presence/Disconnect"
        | "/pulse.channels.v1.Channels/Subscribe"
        | "/pulse.channels.v1.Channels/Unsubscribe" => needs(Permission::ConnectionsManage),
        _ if path.starts_with("/grpc.health.v1.Health/") => None,
        _ if path.starts_with("/grpc.reflection.") => Some(Permissions::default()),
        _ => Some(Permissions::ALL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Access {
        Access::Keys(
            vec![
                ApiKey::new("all", "aaaaaaaaaaaaaaaaaaaa", Permissions::ALL),
                ApiKey::new(
                    "reader",
                    "rrrrrrrrrrrrrrrrrrrr",
                    [Permission::PresenceRead].into_iter().collect(),
                ),
            ]
            .into(),
        )
    }

    fn needs(permission: Permission) -> Permissions {
        [permission].into_iter().collect()
    }

    #[test]
    fn a_call_needs_a_valid_key_with_the_permission() {
        let access = keys();
        let read = needs(Permission::PresenceRead);
        assert_eq!(access.authorize(None, read), Err(Denied::Missing));
        assert_eq!(
            access.authorize(Some(b"Bearer nope-nope-nope-nope"), read),
            Err(Denied::Invalid)
        );
        assert_eq!(
            access.authorize(Some(b"Basic aaaaaaaaaaaaaaaaaaaa"), read),
            Err(Denied::Invalid)
        );
        assert_eq!(
            access.authorize(Some(b"Bearer "), read),
            Err(Denied::Invalid)
        );
        let caller = access
            .authorize(Some(b"bearer rrrrrrrrrrrrrrrrrrrr"), read)
            .unwrap();
        assert_eq!(caller.key_name.as_deref(), Some("reader"));
        let denied = access
            .authorize(
                Some(b"Bearer rrrrrrrrrrrrrrrrrrrr"),
                needs(Permission::Publish),
            )
            .unwrap_err();
        assert_eq!(denied.reason(), "permission_denied");
        assert!(!denied.to_string().contains("rrrr"), "{denied}");
        assert!(denied.to_string().contains("publish"), "{denied}");
        assert!(
            access
                .authorize(Some(b"Bearer aaaaaaaaaaaaaaaaaaaa"), Permissions::ALL)
                .is_ok()
        );
        assert_eq!(
            Access::Open.authorize(None, Permissions::ALL),
            Ok(Caller { key_name: None })
        );
    }

    #[test]
    fn the_table_closes_what_it_does_not_name() {
        assert_eq!(
            required_for_grpc("/pulse.presence.v1.Presence/Send"),
            Some(needs(Permission::Publish))
        );
        assert_eq!(
            required_for_grpc("/pulse.presence.v1.Presence/Disconnect"),
            Some(needs(Permission::ConnectionsManage))
        );
        assert_eq!(required_for_grpc("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            required_for_grpc("/pulse.presence.v1.Presence/SomethingNew"),
            Some(Permissions::ALL)
        );
    }

    /// Every method `pulse-presence` serves names its permission: one left
    /// out of the table would need every permission, and a key made for it
    /// could not call it.
    #[test]
    fn every_method_served_has_its_own_permission() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(pulse_protocol::proto::FILE_DESCRIPTOR_SET)
                .unwrap();
        let mut seen = 0;
        for file in &set.file {
            let package = file.package();
            if package != "pulse.presence.v1" && package != "pulse.channels.v1" {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    let needed = required_for_grpc(&path);
                    assert!(
                        Permission::ALL
                            .iter()
                            .any(|&one| needed == Some(needs(one))),
                        "{path} needs {needed:?}, not one permission of its own"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 15, "the descriptor set names {seen} methods");
    }

    #[test]
    fn debug_never_shows_a_key() {
        let key = ApiKey::new("ci", "sssssssssssssssssssss", Permissions::ALL);
        assert!(!format!("{key:?}").contains("sss"));
    }

    #[test]
    fn keys_are_checked_at_start() {
        let error = load_keys(&["short".into()], None).unwrap_err().to_string();
        assert!(error.starts_with("--api-key / API_KEYS"), "{error}");
        assert!(!error.contains("short"), "{error}");
        let same = "k".repeat(20);
        let error = load_keys(&[same.clone(), same], None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is the same as"), "{error}");

        let dir = std::env::temp_dir().join(format!("pulse-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.toml");
        std::fs::write(
            &file,
            "[[keys]]\nname = \"billing\"\nkey = \"bbbbbbbbbbbbbbbbbbbbbbbb\"\npermissions = [\"publish\", \"presence:read\"]\n",
        )
        .unwrap();
        let keys = load_keys(&[], Some(&file)).unwrap();
        assert_eq!(keys[0].name(), "billing");
        assert!(keys[0].permissions().allows(Permission::Publish));
        assert!(!keys[0].permissions().allows(Permission::ConnectionsManage));

        std::fs::write(
            &file,
            "[[keys]]\nname = \"x\"\nkey = \"bbbbbbbbbbbbbbbbbbbbbbbb\"\npermissions = [\"root\"]\n",
        )
        .unwrap();
        let error = load_keys(&[], Some(&file)).unwrap_err().to_string();
        assert!(error.contains("unknown permission \"root\""), "{error}");
        assert!(!error.contains("bbbb"), "{error}");

        std::fs::write(&file, "[[keys]]\nname = \"x\"\nkey = 3\n").unwrap();
        let error = load_keys(&[], Some(&file)).unwrap_err().to_string();
        assert!(error.starts_with("--api-keys-file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
