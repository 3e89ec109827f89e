//! Generates the chat streams (Rust types, hooks trait, server, tonic service) from
//! proto/chat/v1/chat.proto at build time.
fn main() {
    let built =
        kafkasocks_build::configure().include("../../proto").grpc(true).compile(&["../../proto/chat/v1/chat.proto"]);
    if let Err(e) = built {
        panic!("{e}");
    }
}
