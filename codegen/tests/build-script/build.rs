//! What a KafkaSocks backend needs in its build script: one line (`compile_protos`), or, as
//! here, the builder with prost-build settings of its own (`compile_with_config`). The
//! `type_attribute` below is checked by the crate's tests: they compare messages with `<`,
//! which compiles only when the derive was applied.
fn main() {
    let mut config = kafkasocks_build::prost_build::Config::new();
    config.type_attribute(".chat.v1.ChatMessage", "#[derive(PartialOrd)]");
    if let Err(e) = kafkasocks_build::configure().compile_with_config(config, &["proto/chat/v1/chat.proto"]) {
        // The error names the file and line; cargo shows it.
        panic!("{e}");
    }
}
