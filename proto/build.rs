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

/// The files of the public contract: [`PROTOS`] without `ticketing/internal`, whose RPCs only
/// the mutual-TLS listeners serve.
fn public_protos() -> impl Iterator<Item = &'static str> {
    PROTOS.iter().copied().filter(|proto| !proto.starts_with("ticketing/internal/"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use_vendored_protoc()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ticketing_descriptor.bin"))
        // Encoded once per zone and version, then shared by every reader and watcher.
        .bytes(".ticketing.v1.ZoneSeatMap.seat_states")
        .codec_path("crate::codec::ProstCodec")
        .compile_protos(PROTOS, &["."])?;
    public_descriptor_set(&out_dir.join("public_descriptor.bin"))?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

/// Writes the descriptor set that server reflection serves on the public listener: the public
/// files with every file they import (`--include_imports`: google/protobuf/timestamp.proto,
/// the event messages), so a reflection client resolves each of them.
fn public_descriptor_set(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let output = std::process::Command::new(protoc_bin_vendored::protoc_bin_path()?)
        .args(["--include_imports", "--include_source_info", "-I", "."])
        .arg("-o")
        .arg(path)
        .args(public_protos())
        .output()?;
    if !output.status.success() {
        return Err(
            format!("protoc (public descriptor set): {}", String::from_utf8_lossy(&output.stderr)).into()
        );
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
