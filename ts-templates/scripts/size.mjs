// Bundles the runtime (minified ESM, esbuild) and prints minified and gzipped sizes of
//   core: everything src/index.ts exports (what a page using all of the client pays at most)
//   json: everything src/json.ts exports on top (pages that use the proto3 JSON mapping)
// With `--check`, exits 1 when a gzipped figure is over its budget below. The budgets are the
// measured figures plus a small margin: raise them only with a reason in the commit message.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const BUDGETS = { core: 10_645, "core+json": 15_900 };

const src = fileURLToPath(new URL("../src/", import.meta.url));
async function measure(contents) {
  const result = await build({
    stdin: { contents, resolveDir: src, loader: "ts" },
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    legalComments: "none",
  });
  const code = result.outputFiles[0].contents;
  return { minified: code.length, gzipped: gzipSync(code, { level: 9 }).length };
}

const figures = {
  core: await measure(`export * from "./index.ts";`),
  "core+json": await measure(`export * from "./index.ts"; export * from "./json.ts";`),
};
let over = false;
for (const [name, { minified, gzipped }] of Object.entries(figures)) {
  const budget = BUDGETS[name];
  const verdict = gzipped > budget ? "OVER" : "within";
  if (gzipped > budget) over = true;
  console.log(`${name.padEnd(10)} minified ${String(minified).padStart(6)} B, gzipped ${String(gzipped).padStart(6)} B (budget ${budget} B: ${verdict})`);
}
if (process.argv.includes("--check") && over) {
  console.error("size: over budget (scripts/size.mjs). Make it smaller, or raise the budget with a reason.");
  process.exitCode = 1;
}
