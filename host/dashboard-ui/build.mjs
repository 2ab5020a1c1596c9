// Builds the dashboard into dist/ (committed; embedded in the berth
// binary, so `cargo build` needs no node). Reproducible: the same
// package-lock.json gives the same bytes, which CI checks.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "none",
  outfile: "dist/app.js",
});
const css = [
  readFileSync("node_modules/uplot/dist/uPlot.min.css", "utf8"),
  readFileSync("src/style.css", "utf8"),
].join("\n");
writeFileSync("dist/app.css", css);
copyFileSync("src/index.html", "dist/index.html");
