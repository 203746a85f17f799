//! How a socket proves who it is: `?token=`, a first `auth` message, or not at all.
//! Selectable with `cargo test websocket_auth`.

mod support;

mod websocket_auth {
    use std::time::Duration;

    use serde_json::json;

    use crate::support::*;

    #[tokio::test]
    async fn a_valid_jwt_in_the_query_authenticates() {
        let gateway = Gateway::start(settings()).await;
        let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
        let connected = next_json(&mut client).await;
        assert_eq!(connected["type"], "connected");
        assert_eq!(connected["user_id"], "alice");
        assert_eq!(connected["instance_id"], "test-instance");
        assert_eq!(connected["heartbeat_interval_ms"], 30_000);
        assert!(!connected["connection_id"].as_str().unwrap().is_empty());
        gateway.stop().await;
    }

    #[tokio::test]
    async fn a_valid_jwt_in_the_first_message_authenticates() {
        let gateway = Gateway::start(settings()).await;
        let mut client = gateway.connect("").await;
        send_json(&mut client, json!({"type": "auth", "token": token("bob")})).await;
        let connected = next_json(&mut client).await;
        assert_eq!(connected["type"], "connected");
        assert_eq!(connected["user_id"], "bob");
        gateway.stop().await;
    }

    #[tokio::test]
    async fn an_expired_jwt_is_rejected() {
        let gateway = Gateway::start(settings()).await;
        let expired = expired_token("alice");
        let mut client = gateway.connect(&format!("?token={expired}")).await;
        expect_error_then_close(&mut client, "token_expired", 4401).await;

        let mut client = gateway.connect("").await;
        send_json(&mut client, json!({"type": "auth", "token": expired})).await;
        expect_error_then_close(&mut client, "token_expired", 4401).await;
        gateway.stop().await;
    }

    #[tokio::test]
    async fn a_missing_jwt_is_closed_at_the_timeout() {
        let mut settings = settings();
        settings.auth_timeout = Duration::from_millis(200);
        let gateway = Gateway::start(settings).await;
        let mut client = gateway.connect("").await;
        expect_error_then_close(&mut client, "auth_timeout", 4408).await;
        gateway.stop().await;
    }

    #[tokio::test]
    async fn an_invalid_format_is_rejected_at_once() {
        // The timeout is far away: a rejection must not wait for it.
        let mut settings = settings();
        settings.auth_timeout = Duration::from_secs(3600);
        let gateway = Gateway::start(settings).await;
        for bad in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"] {
            let mut client = gateway.connect(&format!("?token={bad}")).await;
            expect_error_then_close(&mut client, "malformed", 4401).await;

            let mut client = gateway.connect("").await;
            send_json(&mut client, json!({"type": "auth", "token": bad})).await;
            expect_error_then_close(&mut client, "malformed", 4401).await;
        }
        gateway.stop().await;
    }

    #[tokio::test]
    async fn a_token_signed_with_another_key_is_rejected() {
        let gateway = Gateway::start(settings()).await;
        let forged = pulse_auth::mint_token(b"another-secret", "alice", Duration::from_secs(60));
        let mut client = gateway.connect(&format!("?token={forged}")).await;
        expect_error_then_close(&mut client, "bad_signature", 4401).await;
        gateway.stop().await;
    }

    #[tokio::test]
    async fn a_token_over_8_kib_is_rejected() {
        let gateway = Gateway::start(settings()).await;
        let mut client = gateway.connect("").await;
        send_json(
            &mut client,
            json!({"type": "auth", "token": "a".repeat(8193)}),
        )
        .await;
        expect_error_then_close(&mut client, "token_too_large", 4401).await;
        gateway.stop().await;
    }

    #[tokio::test]
    async fn a_first_message_that_is_not_auth_is_refused() {
        let gateway = Gateway::start(settings()).await;
        let mut client = gateway.connect("").await;
        send_json(&mut client, json!({"type": "ping", "id": 1})).await;
        expect_error_then_close(&mut client, "missing_token", 4401).await;

        let mut client = gateway.connect("").await;
        send_json(&mut client, json!({"type": "hello"})).await;
        expect_error_then_close(&mut client, "malformed_message", 4400).await;
        gateway.stop().await;
    }

    fn expired_token(user: &str) -> String {
        // Minted with a lifetime that ended long ago.
        use jsonwebtoken::{EncodingKey, Header, encode};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        encode(
            &Header::default(),
            &json!({"sub": user, "iat": now - 7200, "exp": now - 3600}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }
}
