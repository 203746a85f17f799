//! The API-key check as a tower layer on the gRPC server, so that no
//! handler can forget it: a refused call never reaches the service.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response, header::AUTHORIZATION};
use pulse_protocol::status::status_with_reason;
use tonic::{Code, body::Body};
use tower::{Layer, Service};
use tracing::debug;

use crate::{
    access::{Access, Denied, required_for_grpc},
    service::ERROR_DOMAIN,
};

/// Wraps a gRPC service so that every call is authorized first.
#[derive(Debug, Clone)]
pub(crate) struct AccessLayer {
    access: Arc<Access>,
}

impl AccessLayer {
    pub(crate) fn new(access: Access) -> Self {
        Self {
            access: Arc::new(access),
        }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = RequireAccess<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAccess {
            inner,
            access: self.access.clone(),
        }
    }
}

/// The service [`AccessLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct RequireAccess<S> {
    inner: S,
    access: Arc<Access>,
}

impl<S, B> Service<Request<B>> for RequireAccess<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(needed) = required_for_grpc(request.uri().path()) else {
            return Either::Left(self.inner.call(request));
        };
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes());
        match self.access.authorize(header, needed) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(denied) => {
                debug!(
                    path = request.uri().path(),
                    reason = denied.reason(),
                    "call refused"
                );
                Either::Right(ready(Ok(refusal(&denied).into_http())))
            }
        }
    }
}

/// The status a refused call gets: `UNAUTHENTICATED` without a valid key,
/// `PERMISSION_DENIED` with one that lacks the permission.
fn refusal(denied: &Denied) -> tonic::Status {
    let code = match denied {
        Denied::Missing | Denied::Invalid => Code::Unauthenticated,
        Denied::Permission { .. } => Code::PermissionDenied,
    };
    let text = denied.to_string();
    // The Display starts with the reason; the status message adds it again.
    let message = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, message)| message);
    status_with_reason(code, ERROR_DOMAIN, denied.reason(), message)
}
