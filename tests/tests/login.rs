//! The gateway's dev login checkpoint with the real binary: `hash-password`,
//! `/auth/login` with a users file, and the token it answers used to connect.

use futures_util::SinkExt;
use pulse_e2e::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_login_checkpoint() {
    let users = std::env::temp_dir().join(format!("pulse-dev-users-{}.json", unique_namespace()));
    let hash = hash_password("test123").await;
    std::fs::write(
        &users,
        json!({"users": [{"email": "test@test.com", "user_id": "test-user", "password_hash": hash}]})
            .to_string(),
    )
    .unwrap();
    let gateway = Service::start(
        "pulse-gateway",
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--dev-users",
            users.to_str().unwrap(),
        ],
    )
    .await;

    let (status, body) = post_json(
        gateway.addr,
        "/auth/login",
        r#"{"email":"test@test.com","password":"test123"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = body["token"].as_str().unwrap();

    let query = format!("?token={token}");
    let mut first = connect(gateway.addr, &query).await;
    let connected = next_json(&mut first).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["user_id"], "test-user");
    // A second tab with the same token, and the first stays connected.
    let mut second = connect(gateway.addr, &query).await;
    assert_eq!(next_json(&mut second).await["type"], "connected");
    first
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut first).await,
        json!({"type": "pong", "id": 1})
    );

    let (status, body) = post_json(
        gateway.addr,
        "/auth/login",
        r#"{"email":"test@test.com","password":"wrong"}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_credentials"));
    let (status, _) = post_json(gateway.addr, "/auth/login", "not json").await;
    assert_eq!(status, 400);
    std::fs::remove_file(users).ok();
}

async fn hash_password(password: &str) -> String {
    let mut child = tokio::process::Command::new(binary("pulse-gateway"))
        .arg("hash-password")
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(password.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
