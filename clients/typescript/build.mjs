// Builds the package: `tsc` writes dist/*.js and the type declarations,
// esbuild bundles and minifies dist/pulse.min.js (one ESM file, what a page
// loads), and the build measures that file gzipped, prints it, and writes
// it to dist/size.json, which scripts/test-sdk.sh checks against the budget.
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const BUDGET = 8 * 1024;

rmSync("dist", { recursive: true, force: true });
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "."], { stdio: "inherit" });
await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/pulse.min.js",
  logLevel: "warning",
});
const minified = readFileSync("dist/pulse.min.js");
const gzipped = gzipSync(minified, { level: 9 }).length;
writeFileSync("dist/size.json", JSON.stringify({ minified: minified.length, gzipped, budget: BUDGET }) + "\n");
console.log(`dist/pulse.min.js: ${minified.length} bytes minified, ${gzipped} bytes gzipped (budget ${BUDGET})`);
