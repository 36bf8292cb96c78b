// Builds dist/herald.js (ESM, minified) and its type declarations, and
// copies the bundle to the example page (examples/webapp/static). With
// --size it prints the bundle's minified and gzipped sizes and fails past
// the 10 KB budget.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET = 10 * 1024;

await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  outfile: "dist/herald.js",
});
execFileSync("npx", ["tsc"], { stdio: "inherit" });
copyFileSync("dist/herald.js", "../../examples/webapp/static/herald.js");

if (process.argv.includes("--size")) {
  const js = readFileSync("dist/herald.js");
  const gz = gzipSync(js, { level: 9 }).length;
  console.log(`dist/herald.js: ${js.length} B minified, ${gz} B minified+gzip (budget ${BUDGET} B)`);
  if (gz > BUDGET) {
    console.error("over the size budget");
    process.exit(1);
  }
}
