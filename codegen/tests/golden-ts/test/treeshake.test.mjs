// A page that never uses JSON bundles none of it: esbuild (what the example page uses) drops
// the <Message>Json codecs and all of @kafkasocks/runtime/json when only the binary client is
// used; a page that uses the JSON serializer gets them. Run: npm test (after the tsc build).
import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = fileURLToPath(new URL("..", import.meta.url));

async function bundle(contents) {
  const result = await build({
    stdin: { contents, resolveDir: here, loader: "js", sourcefile: "page.js" },
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  // Modules that contribute bytes to the output (metafile.inputs also lists dropped ones).
  const [output] = Object.values(result.metafile.outputs);
  const inputs = Object.entries(output.inputs).filter(([, i]) => i.bytesInOutput > 0).map(([name]) => name);
  return { code: result.outputFiles[0].text, inputs };
}

const binaryPage = `
  import { connect, createClient } from "@kafkasocks/runtime";
  import { ChatStreams, ChatMessage } from "./dist/gen/every/v1/every_kafkasocks.js";
  const chat = createClient(ChatStreams, connect({ url: "ws://127.0.0.1:1/streams" }));
  for await (const { value } of chat.messages({ room: "general" })) console.log(value.text);
  await chat.post({ ...ChatMessage.create(), room: "general", text: "hi" });
`;

test("a page without JSON bundles no JSON code", async () => {
  const { code, inputs } = await bundle(binaryPage);
  assert.ok(code.includes("every.v1.ChatStreams/Messages"), "the client is there");
  const json = inputs.filter((i) => /(^|\/)json\.(js|ts)$/.test(i));
  assert.deepEqual(json, [], `no JSON module in the bundle: ${inputs.join(", ")}`);
  for (const word of ["toJson", "fromJson", "JsonError", "RFC 3339", "ignoreUnknownFields"]) {
    assert.ok(!code.includes(word), `"${word}" is not in the bundle`);
  }
});

test("a page with the JSON serializer bundles the JSON mapping", async () => {
  const { code, inputs } = await bundle(`
    import { connect, createClient } from "@kafkasocks/runtime";
    import { createJsonSerializer } from "@kafkasocks/runtime/json";
    import { ChatStreams, ChatStreamsJson } from "./dist/gen/every/v1/every_kafkasocks.js";
    const chat = createClient(ChatStreams, connect({ url: "ws://127.0.0.1:1/streams" }), { serializer: createJsonSerializer(ChatStreamsJson) });
    for await (const { value } of chat.messages({ room: "general" })) console.log(value.text);
  `);
  assert.ok(inputs.some((i) => /(^|\/)json\.js$/.test(i)), inputs.join(", "));
  assert.ok(code.includes("toJson") && code.includes("fromJson"));
});
