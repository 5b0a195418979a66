// Build the console into an output directory (default dist/):
//   node build.mjs [OUT]
// esbuild bundles src/main.ts and its CSS (xterm.js's included) into
// assets/ with content hashes in their names (the daemon serves those
// as immutable), and index.html is written naming them; each text file
// gets a gzip copy beside it ("x.js.gz"). Nothing is
// fetched at run time: the output is a handful of static files.
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "dist"));

rmSync(join(out, "assets"), { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });

const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => resolve(p));
const js = outputs.find((p) => p.endsWith(".js"));
const css = outputs.find((p) => p.endsWith(".css"));
if (!js || !css) {
  console.error("build.mjs: esbuild made no .js or no .css");
  process.exit(1);
}
const html = readFileSync(join(here, "src", "index.html"), "utf8")
  .replace("%CSS%", "assets/" + basename(css))
  .replace("%JS%", "assets/" + basename(js));
writeFileSync(join(out, "index.html"), html);
copyFileSync(join(here, "src", "favicon.svg"), join(out, "favicon.svg"));

// Precompressed copies beside the text files: the daemon sends "x.gz" as
// x with Content-Encoding: gzip to the browsers that take it.
let raw = 0, gz = 0;
for (const p of [...outputs, join(out, "index.html"), join(out, "favicon.svg")]) {
  const b = readFileSync(p);
  const z = gzipSync(b, { level: 9 });
  raw += b.length;
  gz += z.length;
  if (/\.(js|css|html|svg|txt)$/.test(p) && z.length < b.length * 0.9) writeFileSync(p + ".gz", z);
}
console.log(`console built in ${out}: ${(raw / 1024).toFixed(1)} KiB, ` +
  `${(gz / 1024).toFixed(1)} KiB gzipped`);
