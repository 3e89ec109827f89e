// Bundles src/index.ts (minified ESM, everything reachable from the entry point) and prints
// its minified and gzipped sizes. Target: 8 KiB gzipped; `--check` exits 1 above it.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
const result = await build({
  entryPoints: [entry],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  write: false,
  legalComments: "none",
});
const code = result.outputFiles[0].contents;
const gzipped = gzipSync(code, { level: 9 }).length;
const BUDGET = 8 * 1024;
console.log(`minified: ${code.length} bytes`);
console.log(`gzipped:  ${gzipped} bytes (target ${BUDGET}${gzipped > BUDGET ? ": over" : ": within"})`);
if (process.argv.includes("--check") && gzipped > BUDGET) process.exitCode = 1;
