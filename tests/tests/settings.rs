//! Bad settings with the real binaries: each stops at start with exit code 2
//! and one line naming the setting, never a panic, never a key echoed.

use pulse_e2e::*;

/// A bad setting stops a binary at start with one line naming it.
#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    // A `[webhooks]` target pulse-presence cannot use: named, secret unshown.
    let dir = std::env::temp_dir().join(format!("pulse-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_webhooks = dir.join("pulse.toml");
    std::fs::write(
        &bad_webhooks,
        "[webhooks]\nurl = \"ftp://app/events\"\nsecret = \"a-secret-that-must-not-show\"\n",
    )
    .unwrap();
    let bad_webhooks = bad_webhooks.to_str().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "pulse-presence",
            &[
                "--api-key",
                "long-enough-key-0123456789",
                "--config",
                bad_webhooks,
            ],
            "webhooks.url",
        ),
        (
            "pulse-gateway",
            &["--heartbeat-interval", "soon"],
            "--heartbeat-interval",
        ),
        ("pulse-gateway", &[], "--jwt-secret"),
        (
            "pulse-gateway",
            &["--jwt-secret", "s", "--auth-timeout", "0s"],
            "--auth-timeout",
        ),
        (
            "pulse-gateway",
            &["--jwt-secret", "s", "--listen", "nowhere"],
            "--listen",
        ),
        (
            "pulse-gateway",
            &[
                "--jwt-secret",
                "s",
                "--dev-users",
                "/nonexistent/users.json",
            ],
            "--dev-users",
        ),
        ("pulse-auth", &[], "--jwt-secret"),
        (
            "pulse-presence",
            &[
                "--api-key",
                "long-enough-key-0123456789",
                "--event-retention",
                "0s",
            ],
            "--event-retention",
        ),
        (
            "pulse-presence",
            &["--listen", "127.0.0.1:99999"],
            "--listen",
        ),
        // The internal API is never open by accident, and a key is never echoed.
        ("pulse-presence", &[], "--api-key"),
        ("pulse-presence", &["--api-key", "tooshort-1"], "--api-key"),
        // Keys and an open API at once: which one was meant?
        (
            "pulse-presence",
            &[
                "--api-key",
                "tooshort-1-but-long-now",
                "--insecure-open-api",
            ],
            "--insecure-open-api",
        ),
        (
            "pulse-presence",
            &["--api-keys-file", "/nonexistent/keys.toml"],
            "--api-keys-file",
        ),
        (
            "pulse-presence",
            &[
                "--api-key",
                "long-enough-key-0123456789",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            "--tls-cert",
        ),
    ];
    for (binary_name, args, setting) in cases {
        let output = tokio::process::Command::new(binary(binary_name))
            .args(*args)
            .env_clear()
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{binary_name} {args:?}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{binary_name} {args:?} printed {stderr:?}");
        assert!(
            lines[0].contains(setting),
            "{binary_name} {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("tooshort-1") && !stderr.contains("a-secret-that-must-not-show"),
            "a key or secret in an error: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
