// A protobuf conformance testee for the TypeScript codecs kafkasocks-gen generates: the binary
// format and the proto3 JSON mapping (toJson / fromJson / parseJson). The runner
// (conformance_test_runner) starts it and talks over stdin/stdout: each request and response
// is a 4-byte little-endian length and a ConformanceRequest / ConformanceResponse. JSPB and
// text format are answered "skipped"; so are the editions test messages (the generator
// refuses editions files).
//
//   node testee.mjs GEN_DIST_DIR     (run.sh compiles the generated code into GEN_DIST_DIR)
import { readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dist = process.argv[2];
const load = (p) => import(pathToFileURL(join(dist, p)).href);
const conformance = await load("conformance/conformance_kafkasocks.js");
const proto3 = await load("google/protobuf/test_messages_proto3_kafkasocks.js");
const proto2 = await load("google/protobuf/test_messages_proto2_kafkasocks.js");
const json = await load("kafkasocks-runtime/json.js");

const codecs = {
  "protobuf_test_messages.proto3.TestAllTypesProto3": proto3.TestAllTypesProto3,
  "protobuf_test_messages.proto2.TestAllTypesProto2": proto2.TestAllTypesProto2,
  "protobuf_test_messages.proto2.TestAllRequiredTypesProto2": proto2.TestAllRequiredTypesProto2,
};
const { ConformanceRequest, ConformanceResponse, FailureSet, TestCategory, WireFormat } = conformance;

function readExactly(n) {
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = readSync(0, buf, got, n - got, null);
    if (r === 0) return got === 0 ? null : undefined;
    got += r;
  }
  return buf;
}

function serve(request) {
  if (request.messageType === "conformance.FailureSet") {
    return { result: { case: "protobufPayload", value: FailureSet.encode(FailureSet.create()) } };
  }
  const codec = codecs[request.messageType];
  if (!codec) return { result: { case: "skipped", value: `message type ${request.messageType} not generated` } };
  const output = request.requestedOutputFormat;
  if (output !== WireFormat.PROTOBUF && output !== WireFormat.JSON) {
    return { result: { case: "skipped", value: "only binary and JSON output" } };
  }
  let message;
  try {
    switch (request.payload?.case) {
      case "protobufPayload":
        message = codec.decode(request.payload.value);
        break;
      case "jsonPayload": {
        const ignoreUnknownFields = request.testCategory === TestCategory.JSON_IGNORE_UNKNOWN_PARSING_TEST;
        message = json.fromJsonString(codec, request.payload.value, { ignoreUnknownFields });
        break;
      }
      default:
        return { result: { case: "skipped", value: "only binary and JSON input" } };
    }
  } catch (e) {
    return { result: { case: "parseError", value: String(e) } };
  }
  try {
    return output === WireFormat.PROTOBUF
      ? { result: { case: "protobufPayload", value: codec.encode(message) } }
      : { result: { case: "jsonPayload", value: json.toJsonString(codec, message) } };
  } catch (e) {
    return { result: { case: "serializeError", value: String(e) } };
  }
}

for (;;) {
  const len = readExactly(4);
  if (len === null) break;
  if (len === undefined) throw new Error("truncated length");
  const body = readExactly(len.readUInt32LE(0));
  if (!body) throw new Error("truncated request");
  let response;
  try {
    response = serve(ConformanceRequest.decode(body));
  } catch (e) {
    response = { result: { case: "runtimeError", value: String(e) } };
  }
  const out = ConformanceResponse.encode({ ...ConformanceResponse.create(), ...response });
  const head = Buffer.alloc(4);
  head.writeUInt32LE(out.length, 0);
  writeSync(1, head);
  writeSync(1, out);
}
