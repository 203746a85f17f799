//! How presence state is spread over Redis: a fixed number of buckets, each
//! one hash slot, so that the same model runs on one Redis and on a Cluster.
//!
//! A user's bucket is [`bucket_of`] their id: FNV-1a (32 bits) of the id's
//! UTF-8 bytes, modulo [`BUCKETS`]. Every process must compute the same
//! bucket for the same user, so neither the function nor the number may
//! change without moving the data (see ARCHITECTURE.md).
//!
//! Every key of bucket `k` starts with `<ns>:{b<k>}:`; the braces make `b<k>`
//! the key's Redis Cluster hash tag, so everything one script touches (the
//! user's hash, the bucket's instance indexes, online set, counter and
//! leases) lives in one slot. The namespace has no braces (it is checked),
//! so the first `{` of a key is always the bucket's.

/// How many buckets presence state is sharded into.
///
/// 128 spreads evenly enough over any realistic number of Cluster masters
/// (3 masters get about 43 each, 16 about 8), while the operations that visit
/// every bucket (lease renewal every third of the ttl, the reaper every
/// interval, counting, an instance purge) stay at 128 small commands.
pub const BUCKETS: u16 = 128;

/// The bucket that holds `user_id`'s state: FNV-1a 32 of its bytes, mod [`BUCKETS`].
pub fn bucket_of(user_id: &str) -> u16 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = user_id.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    });
    // The remainder is below BUCKETS, so it fits.
    (hash % u32::from(BUCKETS)) as u16
}

/// The bucket of a channel's publications and history: [`bucket_of`] its
/// name, except a personal channel (`#<user_id>`), which lives in its
/// user's bucket, so that one script can publish to it and count the
/// user's connections.
pub fn channel_bucket(channel: &str) -> u16 {
    match channel.strip_prefix(pulse_protocol::channel::PERSONAL_PREFIX) {
        Some(user_id) => bucket_of(user_id),
        None => bucket_of(channel),
    }
}

/// Key and channel names under one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    namespace: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
        }
    }

    /// The namespace every key starts with.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `<ns>:{b<k>}:`, the start of every key of bucket `k`.
    fn bucket(&self, bucket: u16) -> String {
        format!("{}:{{b{bucket}}}:", self.namespace)
    }

    /// The prefix of the user hashes in `bucket`; the user id follows.
    pub(crate) fn user_prefix(&self, bucket: u16) -> String {
        format!("{}user:", self.bucket(bucket))
    }

    /// One user's hash, in the user's bucket.
    pub(crate) fn user(&self, user_id: &str) -> String {
        format!("{}{user_id}", self.user_prefix(bucket_of(user_id)))
    }

    /// The prefix of the instance indexes in `bucket`; the instance id follows.
    pub(crate) fn instance_prefix(&self, bucket: u16) -> String {
        format!("{}instance:", self.bucket(bucket))
    }

    /// What `instance_id` holds in `bucket` (connection id -> user id).
    pub(crate) fn instance(&self, bucket: u16, instance_id: &str) -> String {
        format!("{}{instance_id}", self.instance_prefix(bucket))
    }

    /// Whether a user is blocked: a string (the reason) that expires with
    /// the block, in the user's bucket so that registration can read it.
    pub(crate) fn blocked(&self, user_id: &str) -> String {
        format!("{}blocked:{user_id}", self.bucket(bucket_of(user_id)))
    }

    /// The channels the server API subscribed a user to (a set), in the
    /// user's bucket: what the user's later connections subscribe to.
    pub(crate) fn subscriptions(&self, user_id: &str) -> String {
        format!("{}subs:{user_id}", self.bucket(bucket_of(user_id)))
    }

    /// The bucket's online users.
    /// The bucket's durable event log (a stream, ids `<ms>-<seq>`).
    pub(crate) fn events(&self, bucket: u16) -> String {
        format!("{}events", self.bucket(bucket))
    }

    /// When the bucket's users went offline (ZSET user id -> ms).
    pub(crate) fn seen(&self, bucket: u16) -> String {
        format!("{}seen", self.bucket(bucket))
    }

    pub(crate) fn online(&self, bucket: u16) -> String {
        format!("{}online", self.bucket(bucket))
    }

    /// The bucket's connection counter.
    pub(crate) fn connections(&self, bucket: u16) -> String {
        format!("{}connections", self.bucket(bucket))
    }

    /// The bucket's `instances` key: its copy of the instance leases
    /// (instance id -> deadline).
    pub(crate) fn instances(&self, bucket: u16) -> String {
        format!("{}instances", self.bucket(bucket))
    }

    /// The sharded channel that carries `channel`'s publications, in the
    /// channel's bucket (so that one script can append to its history and
    /// publish).
    pub(crate) fn publications(&self, channel: &str) -> String {
        format!("{}pub:{channel}", self.bucket(channel_bucket(channel)))
    }

    /// The channel whose publications `key` carries: the inverse of
    /// [`Keys::publications`] (`None` for any other key).
    pub(crate) fn publications_channel<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&*self.namespace)?.strip_prefix(":{b")?;
        let (bucket, rest) = rest.split_once("}:pub:")?;
        (!bucket.is_empty() && bucket.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
    }

    /// A channel's history (a list of `<offset> <data>`, oldest first), in
    /// the channel's bucket. (Earlier versions kept a stream under
    /// `hist:`: a new name, so that the two layouts never meet in one key.)
    pub(crate) fn history(&self, channel: &str) -> String {
        format!("{}history:{channel}", self.bucket(channel_bucket(channel)))
    }

    /// A channel's stream metadata (`e` the epoch, `o` the last offset).
    pub(crate) fn history_meta(&self, channel: &str) -> String {
        format!("{}meta:{channel}", self.bucket(channel_bucket(channel)))
    }

    /// The first result of a publication with idempotency key `key` on
    /// `channel` (a channel name holds no space, so the two cannot blur).
    pub(crate) fn idempotency(&self, channel: &str, key: &str) -> String {
        format!(
            "{}idem:{channel} {key}",
            self.bucket(channel_bucket(channel))
        )
    }

    /// A channel's members (user id -> subscribed connections), in the
    /// channel's bucket. The scripts build the same names from the bucket
    /// prefix (see the membership notes in `lua/prelude.lua`).
    pub(crate) fn members(&self, channel: &str) -> String {
        format!("{}members:{channel}", self.bucket(bucket_of(channel)))
    }

    /// A bucket's active channels (channel -> subscribed connections).
    pub(crate) fn active_channels(&self, bucket: u16) -> String {
        format!("{}chans", self.bucket(bucket))
    }

    /// What `instance_id`'s connections hold in a bucket's channels.
    pub(crate) fn member_index(&self, bucket: u16, instance_id: &str) -> String {
        format!("{}cmi:{instance_id}", self.bucket(bucket))
    }

    /// The events channel (classic pub/sub: every subscriber wants every event).
    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.namespace)
    }

    /// The sharded channel that carries commands for one instance, in the
    /// slot of the instance id.
    pub(crate) fn commands(&self, instance_id: &str) -> String {
        format!("{}:commands:{{{instance_id}}}", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_function_is_pinned() {
        // FNV-1a 32 test vectors: "" -> 0x811c9dc5, "a" -> 0xe40c292c,
        // "foobar" -> 0xbf9cf968. Changing these moves every user.
        assert_eq!(bucket_of(""), (0x811c_9dc5_u32 % 128) as u16);
        assert_eq!(bucket_of("a"), (0xe40c_292c_u32 % 128) as u16);
        assert_eq!(bucket_of("foobar"), (0xbf9c_f968_u32 % 128) as u16);
    }

    #[test]
    fn users_spread_over_every_bucket() {
        let mut counts = [0_u32; BUCKETS as usize];
        for n in 0..12_800 {
            counts[usize::from(bucket_of(&format!("user-{n}")))] += 1;
        }
        // 100 expected per bucket; FNV spreads sequential ids well.
        assert!(
            counts.iter().all(|&count| (50..=150).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_publications_key_names_its_channel_back() {
        let keys = Keys::new("ns");
        for channel in ["room:1", "a:b}:pub:c", "x", "chat:{b3}:pub:y"] {
            assert_eq!(
                keys.publications_channel(&keys.publications(channel)),
                Some(channel)
            );
        }
        assert_eq!(keys.publications_channel("ns:{b1}:history:room:1"), None);
        assert_eq!(keys.publications_channel("other:{b1}:pub:room:1"), None);
        assert_eq!(keys.publications_channel("nsx:{b1}:pub:room:1"), None);
        assert_eq!(keys.publications_channel("ns:{b}:pub:room:1"), None);
    }

    #[test]
    fn keys_of_one_user_share_the_bucket_tag() {
        let keys = Keys::new("ns");
        let bucket = bucket_of("u1");
        let tag = format!("ns:{{b{bucket}}}:");
        assert_eq!(keys.user("u1"), format!("{tag}user:u1"));
        for key in [
            keys.instance(bucket, "i1"),
            keys.online(bucket),
            keys.connections(bucket),
            keys.instances(bucket),
            keys.blocked("u1"),
            keys.user_prefix(bucket),
            keys.instance_prefix(bucket),
        ] {
            assert!(key.starts_with(&tag), "{key}");
        }
        assert_eq!(keys.channel(), "ns:events");
        assert_eq!(keys.commands("i1"), "ns:commands:{i1}");
        // A user id with braces does not change the tag: Redis hashes the first {...}.
        assert!(
            keys.user("{x}")
                .starts_with(&format!("ns:{{b{}}}:", bucket_of("{x}")))
        );
    }
}
