//! The application's authorization hook (`pulse.hooks.v1.Hooks/Authorize`),
//! asked about a `subscribe` in a namespace with `authorize = "hook"`.
//!
//! One lazily connected HTTP/2 channel per gateway (over TLS for an
//! `https://` hook), shared by every session (tonic reconnects it after a
//! failure). A hook that does not answer
//! within `[hooks] timeout`, is down, or answers with an error status
//! refuses the subscription with `unavailable`: the hook being away never
//! lets a subscription through, and the client may retry.

use std::time::Duration;

use pulse_presence::namespaces::HooksConfig;
use pulse_protocol::proto::hooks::v1::{AuthorizeRequest, hooks_client::HooksClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::warn;

/// What the hook said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The user may subscribe.
    Allowed,
    /// The hook said no, with its reason.
    Denied(String),
    /// No answer in time, or an error: refused, try again.
    Unavailable(String),
}

/// A client of the hook.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    /// The client, or why there is none (see [`Hook::broken`]).
    client: Result<HooksClient<Channel>, String>,
    timeout: Duration,
}

impl Hook {
    /// A client for `config`; connects on first use. An `https://` hook
    /// is reached over TLS, trusting `ca_file`'s authorities or else the
    /// web PKI roots. The error names the key.
    pub(crate) fn new(config: &HooksConfig) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(config.authorize_url.clone())
            .map_err(|error| format!("hooks.authorize_url: {error}"))?
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .tcp_nodelay(true);
        if config.authorize_url.starts_with("https://") {
            let tls = match &config.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|error| {
                        format!("hooks.ca_file: {} cannot be read: {error}", path.display())
                    })?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| format!("hooks.authorize_url: TLS: {error}"))?;
        }
        Ok(Self {
            client: Ok(HooksClient::new(endpoint.connect_lazy())),
            timeout: config.timeout,
        })
    }

    /// A hook that could not be built (its CA file went away after the
    /// start's check, say): every question is answered `unavailable` with
    /// the reason, and nothing is let through.
    pub(crate) fn broken(reason: String) -> Self {
        warn!(%reason, "the authorization hook cannot be used; hook subscriptions are refused");
        Self {
            client: Err(reason),
            timeout: Duration::ZERO,
        }
    }

    /// Asks whether `user_id` may subscribe `connection_id` to `channel`.
    pub(crate) async fn authorize(
        &self,
        user_id: &str,
        channel: &str,
        connection_id: &str,
    ) -> Verdict {
        let request = AuthorizeRequest {
            user_id: user_id.to_owned(),
            channel: channel.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => {
                return Verdict::Unavailable(format!(
                    "the authorization hook cannot be used: {reason}"
                ));
            }
        };
        let answer = tokio::time::timeout(self.timeout, client.authorize(request)).await;
        match answer {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                if response.allowed {
                    Verdict::Allowed
                } else if response.reason.is_empty() {
                    Verdict::Denied("the application's hook refused the subscription".to_owned())
                } else {
                    Verdict::Denied(response.reason)
                }
            }
            Ok(Err(status)) => {
                warn!(code = ?status.code(), message = status.message(), "authorization hook failed");
                metrics::counter!("pulse_gateway_hook_failures_total", "reason" => "status")
                    .increment(1);
                Verdict::Unavailable(format!(
                    "the authorization hook failed ({:?})",
                    status.code()
                ))
            }
            Err(_) => {
                warn!(timeout = ?self.timeout, "authorization hook did not answer in time");
                metrics::counter!("pulse_gateway_hook_failures_total", "reason" => "timeout")
                    .increment(1);
                Verdict::Unavailable(format!(
                    "the authorization hook did not answer within {:?}",
                    self.timeout
                ))
            }
        }
    }
}
