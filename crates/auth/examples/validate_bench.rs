//! Token validations per second per core, for HS256, RS256, ES256 and EdDSA,
//! through the library and through gRPC. Run it in release, through
//! `scripts/bench-auth.sh`, which prints the machine beside the table.
//!
//! The tokens and keys are the committed fixtures (made by PyJWT), so the
//! figures are for tokens an identity provider would issue.
//!
//! - Library: `Validator::validate_cached` in a loop on one thread.
//! - gRPC: `pulse-auth`'s server on a single-threaded runtime on its own
//!   thread, driven over one HTTP/2 connection by `RemoteValidator` with 64
//!   calls in flight from a second single-threaded runtime. The per-core
//!   figure divides the calls by the CPU time of the server's thread (from
//!   `/proc/thread-self/schedstat`), so it holds whichever side saturates first.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pulse_auth::{PublicKey, RemoteValidator, Validator, ValidatorSettings};
use serde_json::Value;
use tokio::{net::TcpListener, runtime::Builder, sync::oneshot};

/// Calls kept in flight against the gRPC server.
const IN_FLIGHT: usize = 64;

struct Case {
    algorithm: &'static str,
    token: String,
    settings: ValidatorSettings,
}

fn main() {
    let seconds = std::env::args()
        .skip_while(|arg| arg != "--seconds")
        .nth(1)
        .map_or(3.0, |value| {
            value.parse::<f64>().expect("--seconds takes a number")
        });
    let duration = Duration::from_secs_f64(seconds);
    println!(
        "| algorithm | library, 1 thread (validations/s) | gRPC, 64 in flight (validations/s) | gRPC server thread CPU | gRPC per server core (validations/CPU-s) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for case in cases() {
        let library = library(&case, duration);
        let grpc = grpc(&case, duration);
        let cpu = grpc.cpu.map_or("n/a".to_owned(), |cpu| {
            format!("{:.0}%", 100.0 * cpu / grpc.wall)
        });
        let per_core = grpc
            .cpu
            .map_or("n/a".to_owned(), |cpu| group(grpc.calls as f64 / cpu));
        println!(
            "| {} | {} | {} | {cpu} | {per_core} |",
            case.algorithm,
            group(library),
            group(grpc.calls as f64 / grpc.wall),
        );
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The four algorithms' valid fixture tokens, each with its one key.
fn cases() -> Vec<Case> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("tokens.json")).unwrap()).unwrap();
    let token = |name: &str| {
        manifest["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["name"] == name)
            .and_then(|case| case["token"].as_str())
            .unwrap_or_else(|| panic!("no fixture {name}"))
            .to_owned()
    };
    let public = |file: &str| ValidatorSettings {
        public_keys: vec![PublicKey::from_pem_file(&fixtures().join("keys").join(file)).unwrap()],
        ..ValidatorSettings::default()
    };
    let secret = std::fs::read(fixtures().join("keys/hs_secret.txt")).unwrap();
    vec![
        Case {
            algorithm: "HS256",
            token: token("hs256_valid"),
            settings: ValidatorSettings::with_secret(secret),
        },
        Case {
            algorithm: "RS256",
            token: token("rs256_valid"),
            settings: public("rsa.pem"),
        },
        Case {
            algorithm: "ES256",
            token: token("es256_valid"),
            settings: public("ec_p256.pem"),
        },
        Case {
            algorithm: "EdDSA",
            token: token("eddsa_valid"),
            settings: public("ed25519.pem"),
        },
    ]
}

/// Validations per second on this thread.
fn library(case: &Case, duration: Duration) -> f64 {
    let validator = Validator::new(case.settings.clone()).unwrap();
    // Warm up caches and the branch predictor before the clock starts.
    for _ in 0..200 {
        validator.validate_cached(&case.token).unwrap();
    }
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for _ in 0..100 {
            std::hint::black_box(validator.validate_cached(std::hint::black_box(&case.token)))
                .unwrap();
        }
        count += 100;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

struct GrpcRun {
    calls: u64,
    wall: f64,
    /// CPU seconds the server's thread used during the run.
    cpu: Option<f64>,
}

fn grpc(case: &Case, duration: Duration) -> GrpcRun {
    let server = Builder::new_current_thread().enable_all().build().unwrap();
    let validator = Validator::new(case.settings.clone()).unwrap();
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = server.handle().clone();
    let server_thread = std::thread::spawn(move || {
        server.block_on(pulse_auth::run(validator, listener, async {
            let _ = stopped.await;
        }))
    });
    // Reads the server thread's CPU time from a task running on it.
    let server_cpu = || {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(thread_cpu());
        });
        rx.recv().ok().flatten()
    };

    let client = Builder::new_current_thread().enable_all().build().unwrap();
    let token = Arc::new(case.token.clone());
    let run = client.block_on(async {
        let remote = RemoteValidator::new(&url, Duration::from_secs(5)).unwrap();
        for _ in 0..200 {
            remote.validate(&token).await.unwrap();
        }
        let calls = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let cpu_before = server_cpu();
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (remote, token, calls, done) =
                (remote.clone(), token.clone(), calls.clone(), done.clone());
            workers.spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    remote.validate(&token).await.unwrap();
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(duration).await;
        done.store(true, Ordering::Relaxed);
        let calls_at_stop = calls.load(Ordering::Relaxed);
        let wall = started.elapsed().as_secs_f64();
        let cpu_after = server_cpu();
        while workers.join_next().await.is_some() {}
        GrpcRun {
            calls: calls_at_stop,
            wall,
            cpu: cpu_before
                .zip(cpu_after)
                .map(|(before, after)| after - before),
        }
    });
    // The client's connection lives on its runtime: dropping the runtime
    // closes it, without which the server's drain would wait for it forever.
    drop(client);
    let _ = stop.send(());
    server_thread.join().unwrap().unwrap();
    run
}

/// CPU seconds the calling thread has used, where Linux tells.
fn thread_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

/// A figure with thousands separators, to three significant digits.
fn group(value: f64) -> String {
    let magnitude = value.max(1.0).log10().floor() as i32;
    let step = 10f64.powi((magnitude - 2).max(0));
    let rounded = ((value / step).round() * step) as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
