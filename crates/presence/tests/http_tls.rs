//! The HTTP API over TLS, configured by the same flags as gRPC's TLS
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`), over real TCP: a client
//! with a certificate the CA signed is served (and still needs its key);
//! one without, one the CA did not sign, and plaintext get nothing.

mod support;

use std::{net::SocketAddr, sync::Arc};

use clap::Parser;
use pulse_presence::{Presence, config::Config};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use support::{DEADLINE, pki::pki};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    time::timeout,
};

const KEY: &str = "http-tls-key-0123456789";

/// A TLS client trusting `ca`, presenting `identity` when given.
fn connector(ca: &str, identity: Option<&(String, String)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs `/api/v1/channels` over TLS; the status, or `None` when the
/// connection gave no answer (a refused handshake).
async fn channels(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
    key: Option<&str>,
) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = connector(ca, identity)
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .ok()?;
    let auth = key
        .map(|key| format!("authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /api/v1/channels HTTP/1.1\r\nhost: localhost\r\n{auth}content-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("an answer or an end in time")
        .ok()?;
    let response = String::from_utf8_lossy(&response);
    response.get(9..12)?.parse().ok()
}

#[tokio::test]
async fn the_http_api_is_served_over_tls_with_client_certificates() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("pulse-http-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca) = (
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
        write("ca.pem", &pki.ca),
    );
    let config = Config::try_parse_from([
        "pulse-presence",
        "--api-key",
        KEY,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ])
    .unwrap();
    let api = config.api.api_config().unwrap();
    assert!(api.http_tls.is_some());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(pulse_presence::run_http(
        Presence::in_memory(),
        api,
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    assert_eq!(
        channels(addr, &pki.ca, Some(&pki.client), Some(KEY)).await,
        Some(200)
    );
    assert_eq!(
        channels(addr, &pki.ca, Some(&pki.client), None).await,
        Some(401),
        "TLS does not replace the key"
    );
    for identity in [None, Some(&pki.stranger)] {
        assert_eq!(
            channels(addr, &pki.ca, identity, Some(KEY)).await,
            None,
            "a client without a signed certificate was served"
        );
    }
    // Plaintext to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"POST /api/v1/channels HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = timeout(DEADLINE, plain.read_to_end(&mut response)).await;
    assert!(
        !response.starts_with(b"HTTP/1.1 200"),
        "plaintext was served"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
