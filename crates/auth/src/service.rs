//! The `pulse.auth.v1.Auth` gRPC service, with health and reflection beside it.

use std::{collections::HashMap, future::Future, time::Duration};

use pulse_protocol::{
    proto::{
        FILE_DESCRIPTOR_SET,
        auth::v1::{
            ValidateRequest, ValidateResponse,
            auth_server::{Auth, AuthServer},
        },
    },
    status::status_with_reason,
};
use pulse_runtime::health::HealthWatch;
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    claims::map_to_struct,
    error::AuthError,
    validator::{Identity, Validator},
};

/// The `ErrorInfo` domain of every status this service returns.
pub(crate) const DOMAIN: &str = "pulse.auth";

/// `ErrorInfo` metadata: the claim a `missing_claim` is about.
pub(crate) const METADATA_CLAIM: &str = "claim";
/// `ErrorInfo` metadata: the length of a `token_too_large` token.
pub(crate) const METADATA_LEN: &str = "len";
/// `ErrorInfo` metadata: the limit a `token_too_large` token broke.
pub(crate) const METADATA_MAX: &str = "max";

/// How long one RPC may run. Validation is microseconds of CPU; this bounds a
/// stuck handler, not a slow client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often health re-reads whether the key sources can answer.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The names health reports for: the server as a whole and the `Auth` service.
const HEALTH_SERVICES: &[&str] = &[
    "",
    <AuthServer<AuthService> as tonic::server::NamedService>::NAME,
];

/// Serves `pulse.auth.v1.Auth`, `grpc.health.v1.Health` (`Auth` and the
/// overall `""`: `SERVING` once every key source can answer, see
/// [`Validator::is_ready`]) and server reflection (v1 and v1alpha) on an
/// already-bound listener until `shutdown` completes.
///
/// Once `shutdown` completes the listener closes, health turns `NOT_SERVING`,
/// and in-flight RPCs finish before this returns. A streaming call the client
/// keeps open (a health `Watch`) holds the drain open, so callers bound it.
pub async fn run(
    validator: Validator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Health follows the key sources: NOT_SERVING while a configured JWKS has
    // never loaded, so that no traffic is sent to a replica that would answer
    // every JWKS-signed token with UNAVAILABLE.
    let watch = HealthWatch {
        reporter: health.clone(),
        services: HEALTH_SERVICES,
        subject: "key sources",
        interval: HEALTH_INTERVAL,
    };
    let ready = validator.is_ready();
    watch
        .report(if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
        .await;
    let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
    let watched = validator.clone();
    tokio::spawn(watch.run(
        ready,
        move || {
            let ready = watched.is_ready();
            std::future::ready(if ready {
                Ok(())
            } else {
                Err("no JWKS loaded yet")
            })
        },
        health_stopped,
    ));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both builders only decode descriptors compiled into this binary, so a
    // failure here is a build defect, never a runtime condition.
    let reflection_v1 = reflection()
        .build_v1()
        .expect("compiled-in descriptors decode");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("compiled-in descriptors decode");

    let shutdown = async move {
        shutdown.await;
        let _ = stop_health.send(true);
        tracing::info!("pulse-auth shutting down, draining in-flight requests");
        for service in HEALTH_SERVICES {
            health
                .set_service_status(*service, ServingStatus::NotServing)
                .await;
        }
    };

    // Validate calls are tiny and latency-bound: Nagle's algorithm would only delay them.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AuthServer::new(AuthService { validator }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The `Auth` service: the library's [`Validator`] behind gRPC.
struct AuthService {
    validator: Validator,
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let token = request.into_inner().token;
        let started = std::time::Instant::now();
        let result = self.validator.validate(&token).await;
        metrics::histogram!("pulse_auth_validate_seconds").record(started.elapsed().as_secs_f64());
        let outcome = result.as_ref().map_or_else(AuthError::reason, |_| "ok");
        metrics::counter!("pulse_auth_validations_total", "result" => outcome).increment(1);
        match result {
            Ok(identity) => {
                tracing::debug!(user_id = %identity.user_id, "token accepted");
                Ok(Response::new(response_for(&identity)))
            }
            Err(err) => {
                tracing::debug!(reason = err.reason(), "token refused");
                Err(status_for(&err))
            }
        }
    }
}

fn response_for(identity: &Identity) -> ValidateResponse {
    ValidateResponse {
        user_id: identity.user_id.clone(),
        expires_at: i64::try_from(identity.expires_at).unwrap_or(i64::MAX),
        claims: Some(map_to_struct(&identity.claims)),
    }
}

/// The one place an [`AuthError`] becomes a gRPC status: `UNAUTHENTICATED`
/// with the error's reason, or `UNAVAILABLE` when no verdict could be reached
/// (the JWKS has not been loaded), so that callers retry rather than refuse.
fn status_for(err: &AuthError) -> Status {
    let reason = err.reason();
    if let AuthError::Unavailable(_) = err {
        return status_with_reason(Code::Unavailable, DOMAIN, reason, &err.to_string());
    }
    // Figures a client needs to rebuild the exact error travel as ErrorInfo
    // metadata; the message stays for people.
    let metadata: HashMap<String, String> = match err {
        AuthError::MissingClaim(claim) => [(METADATA_CLAIM.to_owned(), claim.to_string())].into(),
        AuthError::TokenTooLarge { len, max } | AuthError::UserIdTooLong { len, max } => [
            (METADATA_LEN.to_owned(), len.to_string()),
            (METADATA_MAX.to_owned(), max.to_string()),
        ]
        .into(),
        _ => return status_with_reason(Code::Unauthenticated, DOMAIN, reason, &err.to_string()),
    };
    // The same shape as `status_with_reason`, with the metadata added.
    Status::with_error_details(
        Code::Unauthenticated,
        format!("{reason}: {err}"),
        ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    )
}

#[cfg(test)]
mod tests {
    use pulse_protocol::status::reason_of;

    use super::*;

    #[test]
    fn every_refusal_is_unauthenticated_with_its_reason() {
        for err in [
            AuthError::Malformed,
            AuthError::TokenExpired,
            AuthError::NotYetValid,
            AuthError::BadSignature,
            AuthError::UnknownKey,
            AuthError::AlgorithmNotAllowed,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingClaim("sub".into()),
            AuthError::TokenTooLarge { len: 9, max: 8 },
            AuthError::UserIdTooLong { len: 300, max: 256 },
        ] {
            let status = status_for(&err);
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(reason_of(&status).as_deref(), Some(err.reason()));
            assert_eq!(status.message(), format!("{}: {err}", err.reason()));
            assert_eq!(status.get_details_error_info().unwrap().domain, DOMAIN);
        }
        let unavailable = status_for(&AuthError::Unavailable("jwks not loaded".into()));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert_eq!(reason_of(&unavailable).as_deref(), Some("auth_unavailable"));
    }
}
