//! Prometheus metrics for the binaries: the recorder every `metrics::` macro
//! in Pulse writes to, and a small HTTP server for `/metrics`.
//!
//! Libraries only call the `metrics` macros, which do nothing until a binary
//! installs the recorder here.

use std::{convert::Infallible, net::SocketAddr, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Latency buckets, in seconds: from half a millisecond to ten seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// How often the recorder's histogram samples are folded into their
/// buckets when nothing scrapes `/metrics` (a scrape folds them too).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle) and returns the handle that renders the exposition text.
///
/// A histogram keeps each recorded sample until it is folded into its
/// buckets, which a render does; a thread of its own folds them every
/// five seconds, so a process whose `/metrics` nobody scrapes does
/// not keep a sample per Redis call and per login for ever (8 bytes each:
/// 1.6 MB per 100,000 subscriptions on a gateway).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed; /metrics shows this one's view");
            }
            let upkeep = handle.clone();
            if let Err(error) = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
            {
                warn!(%error, "the metrics upkeep thread did not start; histogram samples are folded only when /metrics is scraped");
            }
            handle
        })
        .clone()
}

/// A `/metrics` response.
pub fn response(handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Serves `GET /metrics` on `listener` (for the gRPC services, whose own port
/// speaks only HTTP/2 gRPC) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let handle = handle.clone();
                async move {
                    Ok::<_, Infallible>(if request.uri().path() == "/metrics" {
                        response(&handle)
                    } else {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(b"not found\n")));
                        *response.status_mut() = StatusCode::NOT_FOUND;
                        response
                    })
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }
}

/// Binds `addr` for [`serve`]; the error names the setting.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|error| {
        format!("--metrics-listen / METRICS_LISTEN: cannot listen on {addr}: {error}")
    })
}
