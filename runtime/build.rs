//! Compiles the wire protocol (`proto/kafkasocks/v1/frame.proto`) with protox and
//! prost-build: no protoc binary is needed.

fn main() {
    // Read at run time: a build script binary may be reused by another checkout that
    // shares the target directory, and must not carry this one's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    // `proto` links to the repository's proto/ folder; in a packaged crate it is a folder.
    let proto_dir = std::path::Path::new(&manifest_dir).join("proto");
    let frame = proto_dir.join("kafkasocks/v1/frame.proto");
    let options = proto_dir.join("kafkasocks/options.proto");
    println!("cargo:rerun-if-changed={}", frame.display());
    println!("cargo:rerun-if-changed={}", options.display());
    let fds = match protox::compile([&frame, &options], [&proto_dir]) {
        Ok(fds) => fds,
        Err(e) => panic!("frame.proto does not compile: {e}"),
    };
    let mut config = prost_build::Config::new();
    // Payloads and keys are shared, not copied, on the fan-out path.
    config.bytes([".kafkasocks.v1"]);
    if let Err(e) = config.compile_fds(fds) {
        panic!("prost-build failed on frame.proto: {e}");
    }
}
