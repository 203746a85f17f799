//! The client side of the internal API's keys: every call to
//! `pulse-presence` carries `authorization: Bearer <api key>`.

use std::fmt;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

/// A tonic interceptor that adds `authorization: Bearer <key>` to every
/// call: `PresenceClient::with_interceptor(channel, BearerKey::new(key)?)`.
#[derive(Clone)]
pub struct BearerKey(MetadataValue<Ascii>);

impl BearerKey {
    /// The interceptor for `key`; `None` when the key cannot be a header
    /// value (not printable ASCII).
    pub fn new(key: &str) -> Option<Self> {
        format!("Bearer {key}").parse().ok().map(Self)
    }
}

/// Never shows the key.
impl fmt::Debug for BearerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerKey(..)")
    }
}

impl Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_carries_the_key_and_debug_hides_it() {
        let mut key = BearerKey::new("k-1234567890abcdef").unwrap();
        let request = key.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer k-1234567890abcdef"
        );
        assert!(!format!("{key:?}").contains("k-12"));
        assert!(BearerKey::new("bad\nkey").is_none());
    }
}
