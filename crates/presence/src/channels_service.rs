//! `pulse.channels.v1.Channels` over gRPC: publishing to channels. The same
//! calls over HTTP JSON are in `http_api.rs`; both end in the functions of
//! [`crate::channels`], so the two cannot disagree.

use pulse_protocol::proto::channels::v1::{self as pb, channels_server};
use serde_json::value::RawValue;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::{
    ChannelPresence, Namespaces, Presence,
    namespaces::Resolved,
    service::{invalid_argument, to_status},
};
use pulse_protocol::Channel;

/// The most channels one `Broadcast` may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct ChannelsService {
    pub(crate) presence: Presence,
    pub(crate) namespaces: Arc<Namespaces>,
    pub(crate) idempotency_window: std::time::Duration,
}

#[tonic::async_trait]
impl channels_server::Channels for ChannelsService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let request = request.into_inner();
        let data = json_data(request.data_json)?;
        let options = self
            .namespaces
            .publish_options(
                &request.channel,
                non_empty(&request.idempotency_key),
                self.idempotency_window,
            )
            .map_err(to_status)?;
        let published = self
            .presence
            .publish(&request.channel, &data, &options)
            .await
            .map_err(to_status)?;
        Ok(Response::new(publish_response(published)))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let request = request.into_inner();
        let data = json_data(request.data_json)?;
        let published = broadcast(
            &self.presence,
            &self.namespaces,
            &request.channels,
            &data,
            non_empty(&request.idempotency_key),
            self.idempotency_window,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::BroadcastResponse {
            responses: published.into_iter().map(publish_response).collect(),
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let request = request.into_inner();
        let page = history(
            &self.presence,
            &self.namespaces,
            &request.channel,
            HistoryArgs {
                after: request.after_offset,
                before: request.before_offset,
                limit: request.limit,
                newest_first: request.newest_first,
            },
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::HistoryResponse {
            publications: page
                .publications
                .into_iter()
                .map(|entry| pb::Publication {
                    offset: entry.offset,
                    data_json: entry.data.get().to_owned(),
                })
                .collect(),
            offset: page.top.offset,
            epoch: page.top.epoch,
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

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let channel = request.into_inner().channel;
        let answer = channel_presence(&self.presence, &self.namespaces, &channel)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PresenceResponse {
            truncated: answer.users.is_none(),
            users: answer
                .users
                .unwrap_or_default()
                .into_iter()
                .map(|member| pb::ChannelMember {
                    user_id: member.user_id,
                    connections: member.connections,
                })
                .collect(),
            num_users: answer.num_users,
            num_connections: answer.num_connections,
        }))
    }

    async fn presence_stats(
        &self,
        request: Request<pb::PresenceStatsRequest>,
    ) -> Result<Response<pb::PresenceStatsResponse>, Status> {
        let channel = request.into_inner().channel;
        let answer = channel_stats(&self.presence, &self.namespaces, &channel)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PresenceStatsResponse {
            num_users: answer.num_users,
            num_connections: answer.num_connections,
        }))
    }

    async fn channels(
        &self,
        request: Request<pb::ChannelsRequest>,
    ) -> Result<Response<pb::ChannelsResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_CHANNELS_LIMIT,
            limit => limit as usize,
        };
        let (channels, truncated) = self
            .presence
            .active_channels(&request.prefix, limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ChannelsResponse {
            channels: channels
                .into_iter()
                .map(|(channel, subscribers)| pb::ChannelInfo {
                    channel,
                    subscribers,
                })
                .collect(),
            truncated,
        }))
    }
}

/// The `Presence` call's checks, shared by gRPC and HTTP: a configured
/// namespace with `presence = true`, listing up to its `presence_max_users`.
pub(crate) async fn channel_presence(
    presence: &Presence,
    namespaces: &Namespaces,
    channel: &str,
) -> Result<ChannelPresence, crate::PresenceError> {
    let options = namespace_of(namespaces, channel)?;
    if !options.presence {
        return Err(crate::PresenceError::InvalidArgument(format!(
            "channel {channel:?}: presence_disabled: its namespace has presence = false"
        )));
    }
    presence
        .channel_presence(channel, options.presence_max_users)
        .await
}

/// The `PresenceStats` call's checks, shared by gRPC and HTTP: a
/// configured namespace (subscribers are counted in every one).
pub(crate) async fn channel_stats(
    presence: &Presence,
    namespaces: &Namespaces,
    channel: &str,
) -> Result<ChannelPresence, crate::PresenceError> {
    namespace_of(namespaces, channel)?;
    presence.channel_presence(channel, 0).await
}

/// The options of a channel of a configured namespace (not a personal one).
fn namespace_of<'a>(
    namespaces: &'a Namespaces,
    channel: &str,
) -> Result<&'a crate::NamespaceOptions, crate::PresenceError> {
    namespaces.check_publishable(channel)?;
    match Channel::parse(channel)
        .ok()
        .and_then(|parsed| namespaces.resolve(&parsed))
    {
        Some(Resolved::Namespace(options)) => Ok(options),
        _ => Err(crate::PresenceError::InvalidArgument(format!(
            "channel {channel:?}: a personal channel has no channel presence (GetUser tells a user's connections)"
        ))),
    }
}

/// What `Channels` lists when it is not given a limit.
pub const DEFAULT_CHANNELS_LIMIT: usize = 1000;

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
fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn publish_response(published: crate::Published) -> pb::PublishResponse {
    pb::PublishResponse {
        instances: published.instances,
        offset: published.offset.unwrap_or(0),
        epoch: published.epoch.unwrap_or_default(),
    }
}

/// `Broadcast`, over gRPC and HTTP: every channel checked, then each
/// published with its namespace's history.
pub(crate) async fn broadcast(
    presence: &Presence,
    namespaces: &Namespaces,
    channels: &[String],
    data: &RawValue,
    idempotency_key: Option<&str>,
    idempotency_window: std::time::Duration,
) -> Result<Vec<crate::Published>, crate::PresenceError> {
    let mut each = Vec::with_capacity(channels.len());
    for channel in channels {
        let options = namespaces.publish_options(channel, idempotency_key, idempotency_window)?;
        each.push((channel.clone(), options));
    }
    presence.broadcast(&each, data).await
}

/// The page size of `History` when the request names none.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;

/// A `History` request's range as the wire has it (0: none, for the
/// offsets and the limit).
pub(crate) struct HistoryArgs {
    pub(crate) after: u64,
    pub(crate) before: u64,
    pub(crate) limit: u32,
    pub(crate) newest_first: bool,
}

/// `History`, over gRPC and HTTP.
pub(crate) async fn history(
    presence: &Presence,
    namespaces: &Namespaces,
    channel: &str,
    args: HistoryArgs,
) -> Result<crate::HistoryPage, crate::PresenceError> {
    // Only a namespace with history has pages.
    namespaces.history_of(channel)?;
    let limit = if args.limit == 0 {
        DEFAULT_HISTORY_LIMIT
    } else {
        args.limit
    };
    let query = crate::HistoryQuery {
        after: args.after,
        before: (args.before > 0).then_some(args.before),
        limit: limit as usize,
        newest_first: args.newest_first,
    };
    presence.history(channel, &query).await
}

fn json_data(text: String) -> Result<Box<RawValue>, Status> {
    RawValue::from_string(text)
        .map_err(|error| invalid_argument(&format!("data_json is not JSON: {error}")))
}
