//! `kafkasocks_build::compile_protos` in build.rs + `kafkasocks::include_streams!`: the
//! DESIGN's "user's day", compiled. The proto is in `proto/chat/v1/chat.proto`.

/// `package chat.v1;`, as generated into `$OUT_DIR/chat.v1.rs`.
#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
pub mod chat {
    kafkasocks::include_streams!("chat.v1");
}

#[cfg(test)]
mod tests {
    use super::chat;
    use kafkasocks::{BoxFuture, RequestContext, Status};
    use prost::Message as _;

    struct OnlyLoudRooms;

    impl chat::ChatStreamsHooks for OnlyLoudRooms {
        fn authorize_messages(&self, _ctx: &RequestContext, request: &chat::RoomFilter) -> Result<(), Status> {
            if request.room.ends_with('!') { Ok(()) } else { Err(Status::permission_denied("quiet room")) }
        }

        fn prepare_post(
            &self,
            _ctx: &RequestContext,
            mut request: chat::ChatMessage,
        ) -> BoxFuture<Result<chat::ChatMessage, Status>> {
            request.text = request.text.to_uppercase();
            Box::pin(async move { Ok(request) })
        }
    }

    #[test]
    fn the_generated_server_registers_both_methods() {
        let server = chat::ChatStreamsServer::new(chat::ChatStreamsDefaultHooks);
        let streams = server.streams();
        assert_eq!(streams.len(), 2);
        assert_eq!(chat::ChatStreamsServer::<chat::ChatStreamsDefaultHooks>::SERVICE, "chat.v1.ChatStreams");
        let custom = chat::ChatStreamsServer::new(OnlyLoudRooms).streams();
        assert_eq!(format!("{custom:?}"), format!("{streams:?}"));
        let m = chat::ChatMessage { room: "a".into(), user: "b".into(), text: "c".into() };
        assert_eq!(chat::ChatMessage::decode(&m.encode_to_vec()[..]).ok(), Some(m));
    }
}
