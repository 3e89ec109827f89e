// Compile-time checks of the generated types (tsc --strict): a typed client from a
// service descriptor, oneofs as discriminated unions, open enums, bigint fields.
import { connect, createClient, type Codec, type MessageCodec, type Receipt, type Subscription } from "@kafkasocks/runtime";
import { createJsonSerializer, toJsonString, type JsonCodec, type JsonValue } from "@kafkasocks/runtime/json";
import {
  ChatStreams,
  ChatStreamsJson,
  Color,
  Everything,
  EverythingJson,
  Sensors,
  type ChatMessage,
  type ChatStreamsClient,
  type Reading,
} from "../gen/every/v1/every_kafkasocks.js";

export function usage(url: string): Promise<Receipt> {
  const connection = connect({ url });
  const chat: ChatStreamsClient = createClient(ChatStreams, connection);
  const messages: Subscription<ChatMessage> = chat.messages({ room: "general" }, { start: "earliest" });
  messages.on("record", (r) => r.value.text.toUpperCase());
  const sensors = createClient(Sensors, connection);
  const readings: Subscription<Reading> = sensors.watch({ sensorId: 42n });
  readings.unsubscribe();
  const e = Everything.create();
  e.payload = { case: "text", value: "hi" };
  void payloadText(Everything.decode(Everything.encode(e)));
  const c: Color = Color.COLOR_RED;
  const unknown: Color = 42; // open enum: numbers from newer writers are kept
  void [c, unknown];
  return chat.post({ room: "general", user: "ada", text: "hi" });
}

export function payloadText(e: Everything): string {
  switch (e.payload?.case) {
    case "text":
      return e.payload.value;
    case "bigChoice":
      return e.payload.value.toString(); // a bigint
    case "innerChoice":
      return e.payload.value.label;
    default:
      return "";
  }
}

/** The proto3 JSON mapping: plain JSON values out, typed messages back, a JSON client. */
export function json(url: string): string {
  const e = Everything.create();
  const value: JsonValue = EverythingJson.toJson(e);
  const back: Everything = EverythingJson.fromJson(value, { ignoreUnknownFields: true });
  const codec: JsonCodec<Everything> = EverythingJson; // every message has a JSON codec beside its binary one
  const binary: MessageCodec<Everything> = codec.binary;
  const plain: Codec<Everything> = Everything;
  const serializer = createJsonSerializer(ChatStreamsJson, { ignoreUnknownFields: true });
  const chat: ChatStreamsClient = createClient(ChatStreams, connect({ url }), { serializer });
  void [binary, plain, chat];
  return toJsonString(EverythingJson, back, 2);
}
