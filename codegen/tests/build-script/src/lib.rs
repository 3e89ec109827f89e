//! `kafkasocks_build` in build.rs + `kafkasocks::include_streams!`: the DESIGN's "user's
//! day", compiled. The proto is in `proto/chat/v1/chat.proto`; `build.rs` passes a
//! `prost_build::Config` with a `type_attribute`.

/// `package chat.v1;`, as generated into `$OUT_DIR/chat.v1.rs`.
#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
pub mod chat {
    kafkasocks::include_streams!("chat.v1");
}

#[cfg(test)]
mod tests {
    use super::chat;
    use kafkasocks::{RequestContext, Status};
    use prost::Message as _;

    /// Hooks written as `async fn`, awaiting something real.
    struct OnlyLoudRooms;

    impl chat::ChatStreamsHooks for OnlyLoudRooms {
        async fn authorize_messages(&self, _ctx: &RequestContext, request: &chat::RoomFilter) -> Result<(), Status> {
            tokio::task::yield_now().await;
            if request.room.ends_with('!') { Ok(()) } else { Err(Status::permission_denied("quiet room")) }
        }

        async fn prepare_post(
            &self,
            _ctx: &RequestContext,
            mut request: chat::ChatMessage,
        ) -> Result<chat::ChatMessage, Status> {
            tokio::task::yield_now().await;
            request.text = request.text.to_uppercase();
            Ok(request)
        }
    }

    #[test]
    fn the_generated_gateway_registers_every_method() {
        let streams = chat::ChatStreamsGateway::new(chat::ChatStreamsDefaultHooks).streams();
        assert_eq!(streams.len(), 8);
        // A topic of several record types, each in its member of ChatEvent's oneof.
        let types = kafkasocks::RecordTypes::new()
            .member("chat.v1.ChatMessage", 1)
            .member("chat.v1.Joined", 2)
            .others(kafkasocks::OtherTypes::Skip);
        assert_eq!(streams.record_types("chat.v1.ChatStreams/Events"), Some(&types));
        assert_eq!(streams.record_types("chat.v1.ChatStreams/Messages"), None);
        // The subject name strategies of the stream options.
        let subject = |m: &str| streams.schema_subject(&format!("chat.v1.ChatStreams/{m}"));
        assert_eq!(subject("Post"), None);
        assert_eq!(subject("PostByRecordName").as_deref(), Some("chat.v1.ChatMessage"));
        assert_eq!(subject("PostByTopicRecordName").as_deref(), Some("chat.registered-chat.v1.ChatMessage"));
        assert_eq!(subject("PostToSubject").as_deref(), Some("chat-registered"));
        assert_eq!(chat::ChatStreamsGateway::<chat::ChatStreamsDefaultHooks>::SERVICE, "chat.v1.ChatStreams");
        let custom = chat::ChatStreamsGateway::new(OnlyLoudRooms).streams();
        assert_eq!(format!("{custom:?}"), format!("{streams:?}"));
        let m = chat::ChatMessage { room: "a".into(), user: "b".into(), text: "c".into() };
        assert_eq!(chat::ChatMessage::decode(&m.encode_to_vec()[..]).ok(), Some(m));
    }

    #[test]
    fn the_prost_config_of_the_build_script_took_effect() {
        // `ChatMessage: PartialOrd` only through build.rs's type_attribute.
        let a = chat::ChatMessage { room: "a".into(), user: "x".into(), text: "x".into() };
        let b = chat::ChatMessage { room: "b".into(), ..a.clone() };
        assert!(a < b);
    }
}
