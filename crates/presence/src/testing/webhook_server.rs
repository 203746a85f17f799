//! The HTTP side of a webhook receiver, for tests and benchmarks: POSTs
//! served over HTTP/1, each handed to the caller with its signature header.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::webhooks::sign;

/// Serves `listener` until the returned task is aborted: every request's
/// `Pulse-Signature` header (empty when absent) and whole body go to
/// `handle`, whose status is the answer, with an empty body. What the
/// receiver checks and keeps is `handle`'s business.
pub fn serve_webhooks<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = StatusCode> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let header = request
                            .headers()
                            .get(sign::SIGNATURE_HEADER)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = request.into_body().collect().await?.to_bytes();
                        let status = handle(header, body).await;
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .expect("a status and an empty body make a response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
