//! Each HTTP API method: its JSON body decoded, the [`crate::Presence`] or
//! channels-service call it makes, and its JSON answer.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    Api,
    json::{Failure, decode, encode},
};

impl Api {
    pub(super) async fn publish(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PublishBody {
            channel: String,
            data: Box<RawValue>,
            idempotency_key: Option<String>,
        }
        let request: PublishBody = decode(body)?;
        let options = self.namespaces.publish_options(
            &request.channel,
            request.idempotency_key.as_deref(),
            self.idempotency_window,
        )?;
        let published = self
            .presence
            .publish(&request.channel, &request.data, &options)
            .await?;
        Ok(encode(&PublishAnswer::from(published)))
    }

    pub(super) async fn broadcast(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct BroadcastBody {
            channels: Vec<String>,
            data: Box<RawValue>,
            idempotency_key: Option<String>,
        }
        #[derive(Serialize)]
        struct Answer {
            responses: Vec<PublishAnswer>,
        }
        let request: BroadcastBody = decode(body)?;
        let published = crate::channels_service::broadcast(
            &self.presence,
            &self.namespaces,
            &request.channels,
            &request.data,
            request.idempotency_key.as_deref(),
            self.idempotency_window,
        )
        .await?;
        Ok(encode(&Answer {
            responses: published.into_iter().map(PublishAnswer::from).collect(),
        }))
    }

    pub(super) async fn history(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HistoryBody {
            channel: String,
            #[serde(default)]
            after_offset: u64,
            #[serde(default)]
            before_offset: u64,
            #[serde(default)]
            limit: u32,
            #[serde(default)]
            newest_first: bool,
        }
        #[derive(Serialize)]
        struct One<'a> {
            offset: u64,
            data: &'a RawValue,
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            publications: Vec<One<'a>>,
            offset: u64,
            epoch: &'a str,
        }
        let request: HistoryBody = decode(body)?;
        let page = crate::channels_service::history(
            &self.presence,
            &self.namespaces,
            &request.channel,
            crate::channels_service::HistoryArgs {
                after: request.after_offset,
                before: request.before_offset,
                limit: request.limit,
                newest_first: request.newest_first,
            },
        )
        .await?;
        Ok(encode(&Answer {
            publications: page
                .publications
                .iter()
                .map(|entry| One {
                    offset: entry.offset,
                    data: &entry.data,
                })
                .collect(),
            offset: page.top.offset,
            epoch: &page.top.epoch,
        }))
    }
}

/// The answer to one publication: `offset` and `epoch` where the namespace
/// keeps history.
#[derive(Serialize)]
struct PublishAnswer {
    instances: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

impl From<crate::Published> for PublishAnswer {
    fn from(published: crate::Published) -> Self {
        Self {
            instances: published.instances,
            offset: published.offset,
            epoch: published.epoch,
        }
    }
}

impl Api {
    pub(super) async fn subscription(
        &self,
        body: &[u8],
        subscribe: bool,
    ) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SubscriptionBody {
            user_id: String,
            channel: String,
        }
        #[derive(Serialize)]
        struct Answer {
            connections: u64,
        }
        let request: SubscriptionBody = decode(body)?;
        let connections = crate::channels_service::set_subscription(
            &self.presence,
            &self.namespaces,
            &request.user_id,
            &request.channel,
            subscribe,
        )
        .await?;
        Ok(encode(&Answer { connections }))
    }
}

impl Api {
    /// `presence` (`list`) or `presence_stats`.
    pub(super) async fn presence(&self, body: &[u8], list: bool) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PresenceBody {
            channel: String,
        }
        #[derive(Serialize)]
        struct Answer {
            #[serde(skip_serializing_if = "Option::is_none")]
            users: Option<Vec<pulse_protocol::ChannelMember>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            truncated: Option<bool>,
            num_users: u64,
            num_connections: u64,
        }
        let request: PresenceBody = decode(body)?;
        let answer = if list {
            crate::channels_service::channel_presence(
                &self.presence,
                &self.namespaces,
                &request.channel,
            )
            .await?
        } else {
            crate::channels_service::channel_stats(
                &self.presence,
                &self.namespaces,
                &request.channel,
            )
            .await?
        };
        Ok(encode(&Answer {
            truncated: list.then_some(answer.users.is_none()),
            users: if list {
                Some(answer.users.unwrap_or_default())
            } else {
                None
            },
            num_users: answer.num_users,
            num_connections: answer.num_connections,
        }))
    }

    pub(super) async fn channels(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct ChannelsBody {
            prefix: String,
            limit: Option<usize>,
        }
        #[derive(Serialize)]
        struct One {
            channel: String,
            subscribers: u64,
        }
        #[derive(Serialize)]
        struct Answer {
            channels: Vec<One>,
            truncated: bool,
        }
        let request: ChannelsBody = if body.is_empty() {
            ChannelsBody::default()
        } else {
            decode(body)?
        };
        let limit = request
            .limit
            .unwrap_or(crate::channels_service::DEFAULT_CHANNELS_LIMIT);
        let (channels, truncated) = self
            .presence
            .active_channels(&request.prefix, limit)
            .await?;
        Ok(encode(&Answer {
            channels: channels
                .into_iter()
                .map(|(channel, subscribers)| One {
                    channel,
                    subscribers,
                })
                .collect(),
            truncated,
        }))
    }
}
