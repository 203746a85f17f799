//! Code generated from `proto/` by `tonic-prost-build`.

/// `pulse.auth.v1`: token validation.
pub mod auth {
    /// Version 1 of the auth API.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("pulse.auth.v1");
    }
}

/// `pulse.presence.v1`: presence queries and the `Watch` stream.
pub mod presence {
    /// Version 1 of the presence API.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("pulse.presence.v1");
    }
}

/// `pulse.channels.v1`: publishing to channels.
pub mod channels {
    /// Version 1 of the channels API.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("pulse.channels.v1");
    }
}

/// `pulse.hooks.v1`: what the application serves for Pulse to call.
pub mod hooks {
    /// Version 1 of the hooks API.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("pulse.hooks.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Pulse proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pulse_descriptor.bin"));
