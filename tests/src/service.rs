//! The real binaries as child processes: where they are built, how they are
//! started on loopback ports, what they logged, and how they are stopped.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

use crate::{API_KEY, SECRET};

/// The path of a workspace binary, next to the test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running Pulse binary. Killed when dropped.
pub struct Service {
    child: Child,
    /// The address it bound, read back from its `listening` log line.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Starts `binary` with `args` and a clean environment (nothing leaks in
    /// from the test's own, such as `REDIS_URL`), with JSON logs, and waits for
    /// its `listening` line.
    pub async fn start(binary_name: &str, args: &[&str]) -> Self {
        Self::start_with_env(binary_name, args, &[]).await
    }

    /// [`Service::start`] with `env` set too (after the defaults, so
    /// `RUST_LOG` may be raised).
    pub async fn start_with_env(binary_name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary(binary_name))
            .args(args)
            .env_clear()
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {binary_name}: {error}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        let echo = std::env::var_os("PULSE_E2E_LOGS").is_some();
        let name = binary_name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{name}] {line}");
                }
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "{binary_name} did not report a listening address; its output:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Self { child, addr, logs }
    }

    /// `pulse-auth` on loopback ports (gRPC and metrics), with [`SECRET`].
    pub async fn auth() -> Self {
        Self::start(
            "pulse-auth",
            &[
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
            ],
        )
        .await
    }

    /// `pulse-presence` on loopback ports (gRPC and metrics) for a Redis and
    /// namespace, taking [`API_KEY`], with `extra` flags.
    pub async fn presence(redis_url: &str, namespace: &str, extra: &[&str]) -> Self {
        let mut args = presence_args(redis_url, namespace, &["--api-key", API_KEY]);
        args.extend_from_slice(extra);
        Self::start("pulse-presence", &args).await
    }

    /// The address of `pulse-presence`'s HTTP API, read back from its
    /// `serving the HTTP API` log line (logged just after `listening`).
    pub async fn http_addr(&self) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                if value.get("message")?.as_str()? != "serving the HTTP API" {
                    return None;
                }
                value.get("http_addr")?.as_str()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pulse-presence did not log its HTTP API address"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `pulse-gateway` on a loopback port with in-process auth ([`SECRET`]) and
    /// Redis presence in `namespace`, with `extra` flags.
    pub async fn gateway(redis_url: &str, namespace: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--redis-url",
            redis_url,
            "--redis-namespace",
            namespace,
        ];
        args.extend_from_slice(extra);
        Self::start("pulse-gateway", &args).await
    }

    /// Every line the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The string `field` of the first log line whose message contains `message`.
    pub fn log_field(&self, message: &str, field: &str) -> Option<String> {
        self.logs().iter().find_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            if !value.get("message")?.as_str()?.contains(message) {
                return None;
            }
            Some(value.get(field)?.as_str()?.to_owned())
        })
    }

    /// `http://addr`, for gRPC clients.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: the process dies without saying goodbye.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.sigterm().await;
        self.wait_exit().await
    }

    /// Sends SIGTERM (a graceful shutdown begins) and returns at once.
    pub async fn sigterm(&self) {
        self.signal("TERM").await;
    }

    /// Sends the signal named `name` (`STOP`, `CONT`, ...) with `kill`.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("process is running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .await
            .unwrap_or_else(|error| panic!("kill -{name}: {error}"));
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits (at most 30 s) for the process to exit, after [`Service::sigterm`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("process exits within 30 s of SIGTERM")
            .expect("wait")
    }
}

impl Service {
    /// The process id, to read `/proc/<pid>/status` (memory) in tests.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process is running")
    }
}

/// `pulse-presence`'s arguments with every listener (gRPC, metrics, HTTP
/// API) on a free loopback port, Redis at `redis_url` in `namespace`, then
/// `more`; no API key unless `more` has one.
pub fn presence_args<'a>(redis_url: &'a str, namespace: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--redis-url",
        redis_url,
        "--redis-namespace",
        namespace,
    ];
    args.extend_from_slice(more);
    args
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let message = value.get("message")?.as_str()?;
    if !message.contains("listening") {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`: resident memory now and at its peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
