//! Compiles the `.proto` contract with a vendored `protoc`, so no system protoc is needed.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "ticketing/v1/admission.proto",
    "ticketing/v1/seat_lock.proto",
    "ticketing/v1/inventory.proto",
    "ticketing/v1/payment.proto",
    "ticketing/v1/notifier.proto",
    "ticketing/v1/errors.proto",
    "ticketing/events/v1/events.proto",
    "ticketing/internal/v1/seat_lock.proto",
    "ticketing/internal/v1/payment.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use_vendored_protoc()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ticketing_descriptor.bin"))
        // Encoded once per zone and version, then shared by every reader and watcher.
        .bytes(".ticketing.v1.ZoneSeatMap.seat_states")
        .codec_path("crate::codec::ProstCodec")
        .compile_protos(PROTOS, &["."])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

fn use_vendored_protoc() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // `set_var` is unsafe in edition 2024 because of other threads; a build script has none,
    // and tonic-prost-build only reads the compiler's path from PROTOC.
    #[allow(unsafe_code)]
    unsafe {
        env::set_var("PROTOC", protoc);
    }
    Ok(())
}
