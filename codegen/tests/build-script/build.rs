//! The one line a KafkaSocks backend needs in its build script.
fn main() {
    if let Err(e) = kafkasocks_build::compile_protos("proto/chat/v1/chat.proto") {
        // The error names the file and line; cargo shows it.
        panic!("{e}");
    }
}
