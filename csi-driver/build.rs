// The CSI spec's own csi.proto (v1.12.0, proto/csi.proto, Apache-2.0):
// no maintained crate ships current CSI types.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/csi.proto"], &["proto"])?;
    Ok(())
}
