use super::*;

/// The design's example: every option.
const FULL_EXAMPLE: &str = r#"
[default]
authorize = "any"

[namespaces.room]
authorize = "any"
presence = true
join_leave = true
allow_publish = true
history_size = 100
history_ttl = "10m"
max_subscribers = 0

[namespaces.order]
authorize = "token"
history_size = 50
history_ttl = "1h"

[personal]
history_size = 20

[hooks]
authorize_url = "http://app:7000"
timeout = "1s"
"#;

/// What this version runs with.
const EXAMPLE: &str = r#"
[default]
authorize = "any"

[namespaces.room]
authorize = "any"
presence = true
join_leave = true
allow_publish = true
max_subscribers = 0

[namespaces.order]
authorize = "token"

[namespaces.team]
authorize = "claim"
"#;

fn parse(text: &str) -> Result<Namespaces, String> {
    Namespaces::parse(text, "pulse.toml").map_err(|e| e.to_string())
}

#[test]
fn reads_the_documented_example() {
    let config = parse(EXAMPLE).unwrap();
    assert!(config.namespaces["room"].allow_publish);
    assert!(!config.namespaces["order"].allow_publish);
    assert_eq!(config.namespaces["order"].authorize, Authorize::Token);
    assert_eq!(config.namespaces["team"].authorize, Authorize::Claim);
    assert_eq!(
        config.namespaces["room"].history_ttl,
        Duration::from_secs(300)
    );
    let room = &config.namespaces["room"];
    assert!(room.presence && room.join_leave);
    assert_eq!(room.presence_max_users, DEFAULT_PRESENCE_MAX_USERS);
    assert_eq!(room.join_leave_cap(), DEFAULT_PRESENCE_MAX_USERS);
    assert_eq!(config.namespaces["order"].join_leave_cap(), 0);
}

#[test]
fn presence_options_are_read_and_bounded() {
    let config = parse(
        "[namespaces.room]
presence = true
max_subscribers = 10
presence_max_users = 5
",
    )
    .unwrap();
    let room = &config.namespaces["room"];
    assert_eq!(room.max_subscribers, 10);
    assert_eq!(room.presence_max_users, 5);
    assert_eq!(room.join_leave_cap(), 0, "no join_leave, no cap");
    let error = parse(
        "[namespaces.room]
presence = true
presence_max_users = 0
",
    )
    .unwrap_err();
    assert!(
        error.contains("namespaces.room.presence_max_users: at least 1"),
        "{error}"
    );
}

#[test]
fn the_designs_full_example_is_read_whole() {
    let namespaces = parse(FULL_EXAMPLE).unwrap();
    let room = namespaces.resolve(&Channel::parse("room:1").unwrap());
    assert!(
        matches!(room, Some(Resolved::Namespace(options)) if options.history() == Some(crate::HistoryOptions { size: 100, ttl: Duration::from_secs(600) })),
        "a namespace's history is read"
    );
    assert_eq!(
        namespaces.personal.history(),
        Some(crate::HistoryOptions {
            size: 20,
            ttl: Duration::from_secs(300)
        }),
        "and the personal channels'"
    );
    let error = parse("[personal]\nhistory_size = 20\nhistory_ttl = \"10ms\"\n").unwrap_err();
    assert!(
        error.contains("personal.history_ttl: at least 1s"),
        "{error}"
    );
}

#[test]
fn a_hook_namespace_reads_its_hook() {
    let config = parse(
        "[namespaces.doc]\nauthorize = \"hook\"\n[hooks]\nauthorize_url = \"http://app:7000\"\ntimeout = \"250ms\"\n",
    )
    .unwrap();
    assert_eq!(config.namespaces["doc"].authorize, Authorize::Hook);
    let hooks = config.hooks.unwrap();
    assert_eq!(hooks.authorize_url, "http://app:7000");
    assert_eq!(hooks.timeout, Duration::from_millis(250));
}

#[test]
fn resolves_channels_to_their_options() {
    let config = parse(EXAMPLE).unwrap();
    let resolve = |name: &str| config.resolve(&Channel::parse(name).unwrap());
    assert!(matches!(resolve("room:1"), Some(Resolved::Namespace(o)) if o.allow_publish));
    assert!(matches!(resolve("lobby"), Some(Resolved::Namespace(o)) if !o.allow_publish));
    assert!(matches!(resolve("#alice"), Some(Resolved::Personal(_))));
    assert_eq!(resolve("nope:1"), None);
}

#[test]
fn nothing_is_open_without_a_file() {
    let config = Namespaces::default();
    assert_eq!(config.resolve(&Channel::parse("lobby").unwrap()), None);
    assert_eq!(config.resolve(&Channel::parse("room:1").unwrap()), None);
    assert!(config.resolve(&Channel::parse("#alice").unwrap()).is_some());
}

#[test]
fn a_bad_file_is_one_line_naming_the_key() {
    for (text, expected) in [
        (
            "[namespaces.room]\npresense = true\n",
            "line 2: unknown field `presense`",
        ),
        (
            "[namespaces.room]\nauthorize = \"maybe\"\n",
            "line 2: unknown variant `maybe`",
        ),
        (
            "[namespaces.room]\nhistory_ttl = \"soon\"\n",
            "line 2: \"soon\" is not a duration",
        ),
        ("[namespaces.room]\nhistory_size = -1\n", "line 2:"),
        (
            "[namespaces.room]\nhistory_size = 100001\n",
            "namespaces.room.history_size: at most 10000",
        ),
        (
            "[namespaces.room]\nhistory_size = 10\nhistory_ttl = \"8d\"\n",
            "namespaces.room.history_ttl: at most 7d",
        ),
        (
            "[personal]\nhistory_size = 10\nhistory_ttl = \"30d\"\n",
            "personal.history_ttl: at most 7d",
        ),
        (
            "[namespaces.room]\njoin_leave = true\n",
            "namespaces.room.join_leave: needs presence",
        ),
        ("[namespaces.\"a:b\"]\n", "namespaces.a:b: a namespace name"),
        (
            "[namespaces.room]\nauthorize = \"hook\"\n",
            "namespaces.room.authorize",
        ),
        ("[default]\nauthorize = \"hook\"\n", "default.authorize"),
        (
            "[hooks]\nauthorize_url = \"app:7000\"\n",
            "hooks.authorize_url",
        ),
        (
            "[hooks]\nauthorize_url = \"http://a\"\ntimeout = \"0s\"\n",
            "hooks.timeout",
        ),
        (
            "[hooks]\nauthorize_url = \"ftp://app:7000\"\n",
            "hooks.authorize_url: an http:// or https:// URL",
        ),
        (
            "[hooks]\nauthorize_url = \"http://app:7000\"\nca_file = \"/etc/ssl/ca.pem\"\n",
            "hooks.ca_file: only for an https:// authorize_url",
        ),
        (
            "[hooks]\nauthorize_url = \"https://app:7000\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "hooks.ca_file: /nonexistent/ca.pem cannot be read",
        ),
        (
            "[personal]\nhistory_size = 20000\n",
            "personal.history_size",
        ),
        ("[typo]\n", "line 1: unknown field `typo`"),
        ("[default\n", "line 1:"),
    ] {
        let error = parse(text).unwrap_err();
        assert!(error.starts_with("config file pulse.toml: "), "{error}");
        assert!(error.contains(expected), "{text:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
}

#[test]
fn a_missing_file_names_itself() {
    let error = Namespaces::load(Path::new("/nonexistent/pulse.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("config file /nonexistent/pulse.toml: cannot be read")
    );
}

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn configure(text: &str, env: &[(&str, &str)]) -> Result<Namespaces, String> {
    let dir = std::env::temp_dir().join(format!(
        "pulse-ns-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pulse.toml");
    std::fs::write(&path, text).unwrap();
    let result = Namespaces::configure(Some(&path), vars(env)).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

#[test]
fn environment_variables_override_configured_namespaces() {
    let config = configure(
        "[default]\n[namespaces.room]\n[namespaces.live-chat]\nallow_publish = true\n",
        &[
            ("PULSE_NS_ROOM_PRESENCE", "true"),
            ("PULSE_NS_ROOM_JOIN_LEAVE", "true"),
            ("PULSE_NS_ROOM_PRESENCE_MAX_USERS", "50"),
            ("PULSE_NS_ROOM_MAX_SUBSCRIBERS", "7"),
            ("PULSE_NS_LIVE_CHAT_ALLOW_PUBLISH", "false"),
            ("PULSE_NS_LIVE_CHAT_AUTHORIZE", "claim"),
            ("PULSE_NS_DEFAULT_ALLOW_PUBLISH", "true"),
            ("PULSE_OTHER_SETTING", "not ours"),
        ],
    )
    .unwrap();
    let room = &config.namespaces["room"];
    assert!(room.presence && room.join_leave);
    assert_eq!((room.presence_max_users, room.max_subscribers), (50, 7));
    let chat = &config.namespaces["live-chat"];
    assert!(!chat.allow_publish);
    assert_eq!(chat.authorize, Authorize::Claim);
    assert!(config.default.as_ref().unwrap().allow_publish);
}

#[test]
fn a_bad_override_names_its_variable() {
    for (env, expected) in [
        (
            ("PULSE_NS_CHAT_PRESENCE", "true"),
            "PULSE_NS_CHAT_PRESENCE: names no namespace",
        ),
        (
            ("PULSE_NS_ROOM_COLOUR", "red"),
            "PULSE_NS_ROOM_COLOUR: names no namespace",
        ),
        (
            ("PULSE_NS_ROOM_PRESENCE", "yes"),
            "PULSE_NS_ROOM_PRESENCE: \"yes\" is not true or false",
        ),
        (
            ("PULSE_NS_ROOM_MAX_SUBSCRIBERS", "-1"),
            "PULSE_NS_ROOM_MAX_SUBSCRIBERS: \"-1\" is not a whole number",
        ),
        (
            ("PULSE_NS_DEFAULT_PRESENCE", "true"),
            "PULSE_NS_DEFAULT_PRESENCE: names no namespace",
        ),
        (
            ("PULSE_NS_ROOM_JOIN_LEAVE", "true"),
            "namespaces.room.join_leave: needs presence = true (join and leave are presence transitions) (with the PULSE_NS_* environment overrides)",
        ),
    ] {
        let error = configure("[namespaces.room]\n", &[env]).unwrap_err();
        assert!(error.contains(expected), "{env:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    let error = Namespaces::configure(None, vars(&[("PULSE_NS_ROOM_PRESENCE", "true")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("names no namespace"), "{error}");
    assert_eq!(
        Namespaces::configure(None, vars(&[])).unwrap(),
        Namespaces::default()
    );
}
