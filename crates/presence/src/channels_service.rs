//! `pulse.channels.v1.Channels` over gRPC: publishing to channels. The same
//! calls over HTTP JSON are in `http_api.rs`; both end in the functions of
//! [`crate::channels`], so the two cannot disagree.

use pulse_protocol::proto::channels::v1::{self as pb, channels_server};
use serde_json::value::RawValue;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::{
    Namespaces, Presence,
    service::{invalid_argument, to_status},
};

/// The most channels one `Broadcast` may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct ChannelsService {
    pub(crate) presence: Presence,
    pub(crate) namespaces: Arc<Namespaces>,
}

#[tonic::async_trait]
impl channels_server::Channels for ChannelsService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let request = request.into_inner();
        let data = json_data(request.data_json)?;
        self.namespaces
            .check_publishable(&request.channel)
            .map_err(to_status)?;
        let published = self
            .presence
            .publish(&request.channel, &data)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PublishResponse {
            instances: published.instances,
        }))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let request = request.into_inner();
        let data = json_data(request.data_json)?;
        for channel in &request.channels {
            self.namespaces
                .check_publishable(channel)
                .map_err(to_status)?;
        }
        let published = self
            .presence
            .broadcast(&request.channels, &data)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::BroadcastResponse {
            responses: published
                .into_iter()
                .map(|published| pb::PublishResponse {
                    instances: published.instances,
                })
                .collect(),
        }))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let request = request.into_inner();
        let connections = set_subscription(
            &self.presence,
            &self.namespaces,
            &request.user_id,
            &request.channel,
            true,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::SubscribeResponse { connections }))
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let request = request.into_inner();
        let connections = set_subscription(
            &self.presence,
            &self.namespaces,
            &request.user_id,
            &request.channel,
            false,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::UnsubscribeResponse { connections }))
    }
}

/// A server-side subscription's checks, shared by gRPC and HTTP: the
/// channel's namespace must be configured (a typo must not subscribe to
/// nothing).
pub(crate) async fn set_subscription(
    presence: &Presence,
    namespaces: &Namespaces,
    user_id: &str,
    channel: &str,
    subscribe: bool,
) -> Result<u64, crate::PresenceError> {
    namespaces.check_publishable(channel)?;
    if subscribe {
        presence.subscribe_user(user_id, channel).await
    } else {
        presence.unsubscribe_user(user_id, channel).await
    }
}

/// `data_json` as one JSON value, kept as sent.
fn json_data(text: String) -> Result<Box<RawValue>, Status> {
    RawValue::from_string(text)
        .map_err(|error| invalid_argument(&format!("data_json is not JSON: {error}")))
}
