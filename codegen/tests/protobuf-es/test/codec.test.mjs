// The protobuf-es message model on the wire (run by ../run, after tsc has compiled build/node
// to build/out): the generated client's codecs are protobuf-es's, and the bytes are those of
// the default message model (kafkasocks-gen's own codecs, which match prost).
import assert from "node:assert/strict";
import { test } from "node:test";

import { create, fromBinary, isMessage, toBinary } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@kafkasocks/runtime";

import { ChatStreams } from "../build/out/es/chat/v1/chat_kafkasocks.js";
import { ChatMessageSchema, RoomFilterSchema } from "../build/out/es/chat/v1/chat_pb.js";
import { ChatMessage as DefaultChatMessage } from "../build/out/default/chat/v1/chat_kafkasocks.js";
import { Sensors } from "../build/out/es/every/v1/every_kafkasocks.js";
import { ReadingSchema, SensorFilterSchema } from "../build/out/es/every/v1/every_pb.js";

const fields = { room: "général", user: "ada", text: "hi ✓ \u{1F600}", sentAtMs: 1714557600123n };

test("a request encoded by the generated codec is what protobuf-es and the default model encode", () => {
  const ours = ChatStreams.methods.post.input.encode(fields);
  const es = toBinary(ChatMessageSchema, create(ChatMessageSchema, fields));
  const byDefaultModel = DefaultChatMessage.encode(fields);
  assert.ok(ours.length > 20);
  assert.deepEqual(ours, es);
  assert.deepEqual(ours, byDefaultModel);
  // A message (not an init object) is taken as it is.
  assert.deepEqual(ChatStreams.methods.post.input.encode(create(ChatMessageSchema, fields)), ours);
  // Defaults are left out, as prost and the default model do.
  assert.equal(ChatStreams.methods.messages.input.encode({}).length, 0);
  assert.deepEqual(ChatStreams.methods.messages.input.encode({ room: "r" }), toBinary(RoomFilterSchema, create(RoomFilterSchema, { room: "r" })));
});

test("records decode to protobuf-es messages, both ways with the default model", () => {
  const byDefaultModel = DefaultChatMessage.encode(fields);
  const record = ChatStreams.methods.messages.output.decode(byDefaultModel);
  assert.ok(isMessage(record, ChatMessageSchema));
  assert.equal(record.$typeName, "chat.v1.ChatMessage");
  assert.deepEqual({ room: record.room, user: record.user, text: record.text, sentAtMs: record.sentAtMs }, fields);
  // protobuf-es bytes -> the default model, and the generated record codec -> protobuf-es.
  const es = toBinary(ChatMessageSchema, create(ChatMessageSchema, fields));
  const back = DefaultChatMessage.decode(es);
  assert.deepEqual({ room: back.room, user: back.user, text: back.text, sentAtMs: back.sentAtMs }, fields);
  const again = fromBinary(ChatMessageSchema, ChatStreams.methods.messages.output.encode(record));
  assert.deepEqual(again, record);
});

test("createClient sends protobuf-es encodings and decodes records with protobuf-es", async () => {
  const calls = [];
  const connection = {
    subscribe(method, request, options) {
      calls.push({ method, request });
      return { decode: options.decode };
    },
    publish(method, payload) {
      calls.push({ method, payload });
      return Promise.resolve({ topic: "chat.messages", partition: 0, offset: 7n, timestampMs: 0, duplicate: false });
    },
  };
  const chat = createClient(ChatStreams, connection);
  const receipt = await chat.post(fields);
  assert.equal(receipt.offset, 7n);
  assert.deepEqual(calls[0], { method: "chat.v1.ChatStreams/Post", payload: DefaultChatMessage.encode(fields) });
  const subscription = chat.messages({ room: "général" });
  assert.equal(calls[1].method, "chat.v1.ChatStreams/Messages");
  assert.deepEqual(fromBinary(RoomFilterSchema, calls[1].request).room, "général");
  const decoded = subscription.decode(DefaultChatMessage.encode(fields));
  assert.ok(isMessage(decoded, ChatMessageSchema));
  assert.equal(decoded.text, fields.text);
});

test("every.proto: integer keys, well-known types and nested types through the same codecs", () => {
  const filter = Sensors.methods.watch.input.encode({ sensorId: -5n });
  assert.deepEqual(fromBinary(SensorFilterSchema, filter).sensorId, -5n);
  assert.equal(Sensors.methods.firehose.input.encode({}).length, 0);
  assert.ok(isMessage(Sensors.methods.firehose.input.decode(new Uint8Array()), EmptySchema));
  const reading = create(ReadingSchema, {});
  assert.ok(isMessage(Sensors.methods.watch.output.decode(toBinary(ReadingSchema, reading)), ReadingSchema));
});
