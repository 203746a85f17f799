//! gRPC clients of `pulse-presence`, presenting [`API_KEY`].

use crate::API_KEY;

/// A `pulse.presence.v1.Presence` client that presents [`API_KEY`].
pub type Grpc = pulse_protocol::proto::presence::v1::presence_client::PresenceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        pulse_protocol::api_key::BearerKey,
    >,
>;

/// Connects a [`Grpc`] client to `url` (`http://host:port`); panics when it cannot.
pub async fn presence_client(url: String) -> Grpc {
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("a valid URL")
        .connect()
        .await
        .expect("pulse-presence accepts connections");
    pulse_protocol::proto::presence::v1::presence_client::PresenceClient::with_interceptor(
        channel,
        pulse_protocol::api_key::BearerKey::new(API_KEY).expect("an ASCII key"),
    )
}

/// `Presence/GetUser` for `user_id`, over gRPC; panics on an error status.
pub async fn get_user(
    presence: &mut Grpc,
    user_id: &str,
) -> pulse_protocol::proto::presence::v1::UserPresence {
    presence
        .get_user(pulse_protocol::proto::presence::v1::GetUserRequest {
            user_id: user_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `Presence/Watch` over gRPC: the events of `user_ids`, or of everyone when
/// `user_ids` is empty; panics on an error status.
pub async fn watch(
    presence: &mut Grpc,
    user_ids: &[&str],
) -> tonic::Streaming<pulse_protocol::proto::presence::v1::PresenceEvent> {
    presence
        .watch(pulse_protocol::proto::presence::v1::WatchRequest {
            user_ids: user_ids.iter().map(|&id| id.to_owned()).collect(),
            all: user_ids.is_empty(),
            since: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `Presence/CountOnline` over gRPC, on a clone of `presence` (so that
/// polling closures can share one client): users and connections online.
pub async fn online_counts(presence: &Grpc) -> Result<(u64, u64), tonic::Status> {
    let count = presence
        .clone()
        .count_online(pulse_protocol::proto::presence::v1::CountOnlineRequest {})
        .await?
        .into_inner();
    Ok((count.users, count.connections))
}
