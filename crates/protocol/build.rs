//! Compiles `proto/` with a vendored `protoc`, so a fresh machine needs nothing installed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        root.join("pulse/auth/v1/auth.proto"),
        root.join("pulse/presence/v1/presence.proto"),
        root.join("pulse/channels/v1/channels.proto"),
        root.join("pulse/hooks/v1/hooks.proto"),
    ];
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("pulse_descriptor.bin"))
        .compile_with_config(
            config,
            &protos,
            &[root.clone(), protoc_bin_vendored::include_path()?],
        )?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
