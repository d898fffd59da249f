//! Generates the admin service from `proto/` with a vendored `protoc`, so
//! that building needs nothing installed (`PROTOC` still wins when set).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/barn/admin/v1/admin.proto";
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("barn_admin_descriptor.bin"))
        .compile_with_config(config, &[proto], &["../../proto"])?;
    println!("cargo:rerun-if-changed={proto}");
    Ok(())
}
