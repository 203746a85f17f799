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
}

/// `data_json` as one JSON value, kept as sent.
fn json_data(text: String) -> Result<Box<RawValue>, Status> {
    RawValue::from_string(text)
        .map_err(|error| invalid_argument(&format!("data_json is not JSON: {error}")))
}
