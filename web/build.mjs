// web/build.mjs: the JavaScript half of dist/ (build.sh copies the rest and calls this).
//
//   node web/build.mjs [--dist DIR] [--snapshot PATH]
//
// Bundles web/src (ES modules) with esbuild (pinned in web/package-lock.json) into the three
// builds of the loader: dist/pysmtp-wasm.js (a classic script: globalThis.PySmtp),
// dist/pysmtp-wasm.mjs (an ES module) and dist/pysmtp-wasm-worker.js (the script of the
// module Worker of worker mode); makes the ES-module twins of node-forge and OpenSSL's glue for
// that Worker; writes dist/package.json, the npm manifest (`npm pack dist`).
//
// What the bundle is told (PYSMTP_BUILD, web/src/build-info.d.ts): the version (pyproject.toml),
// the wheel's name (the one in DIR), and --snapshot: the path in DIR of a Pyodide memory
// snapshot (web/make_snapshot.py makes one, then builds again with it). Without it the loader
// never asks for one.

import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");

const { values: args } = parseArgs({
  options: { dist: { type: "string", default: join(root, "dist") }, snapshot: { type: "string" } },
});
const dist = resolve(args.dist);

/** pyproject.toml's [project] version. */
function projectVersion() {
  const toml = readFileSync(join(root, "pyproject.toml"), "utf8");
  const project = toml.split(/^\[project\]$/m)[1] ?? "";
  const match = /^version\s*=\s*"([^"]+)"/m.exec(project.split(/^\[/m)[0]);
  if (!match) throw new Error("pyproject.toml has no [project] version");
  return match[1];
}

/** The wheel in dist/ (build.sh builds it first). */
function wheelName() {
  const wheels = readdirSync(dist).filter((name) => /^pysmtp_wasm-.*\.whl$/.test(name)).sort();
  if (!wheels.length) throw new Error(`no pysmtp_wasm wheel in ${dist}: build it first (./build.sh)`);
  return wheels[wheels.length - 1];
}

const version = projectVersion();
const wheel = wheelName();
/** What an image of the snapshot cache (web/src/snapshot-cache.js) depends on: Pyodide's version,
 * the wheel's and the loader's (web/src, this file) hashes; the page adds its user agent. */
const sha = (/** @type {Buffer[]} */ ...parts) => {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex").slice(0, 16);
};
const sources = (/** @type {string} */ dir) =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name))
    .sort();
const cache = {
  pyodide: JSON.parse(readFileSync(join(root, "web", "node_modules", "pyodide", "package.json"), "utf8")).version,
  wheel: sha(readFileSync(join(dist, wheel))),
  loader: sha(...[...sources(join(here, "src")), fileURLToPath(import.meta.url)].map((file) => readFileSync(file))),
};
const build = { version, wheel, snapshot: args.snapshot ?? null, cache };

/** The three builds: [entry, output, format, what it is]. */
const BUNDLES = [
  ["script.js", "pysmtp-wasm.js", "iife", "classic script: defines globalThis.PySmtp"],
  ["module.js", "pysmtp-wasm.mjs", "esm", "ES module"],
  ["worker.js", "pysmtp-wasm-worker.js", "iife", "the Worker of PySmtp.load({worker: true})"],
  ["snapshot-worker.js", "pysmtp-wasm-snapshot-worker.js", "esm", "the Worker that makes the snapshot cache's image"],
];

await Promise.all(
  BUNDLES.map(([entry, output, format, what]) =>
    esbuild.build({
      entryPoints: [join(here, "src", "entries", entry)],
      outfile: join(dist, output),
      bundle: true,
      format: /** @type {"iife" | "esm"} */ (format),
      target: "es2022",
      charset: "utf8",
      legalComments: "inline",
      define: { PYSMTP_BUILD: JSON.stringify(build) },
      banner: { js: `/*! pysmtp-wasm ${version} (MIT) - ${what} */` },
      logLevel: "warning",
    }),
  ),
);

// ES-module twins of two classic scripts, for the module Worker of worker mode (it has no
// document for a <script>): the same code, setting the same global. (node-forge's wrapper
// names `window`, which a Worker does not have.)
const forge = readFileSync(join(dist, "forge.min.js"), "utf8");
writeFileSync(join(dist, "forge.min.mjs"), `const window = globalThis;\n${forge}\nexport default globalThis.forge;\n`);
const openssl = readFileSync(join(dist, "openssl", "openssl-tls.js"), "utf8");
writeFileSync(
  join(dist, "openssl", "openssl-tls.mjs"),
  `${openssl}\nglobalThis.PySmtpOpenSSL = PySmtpOpenSSL;\nexport default PySmtpOpenSSL;\n`,
);

// The licences of what dist/ ships: ours (LICENSE), and in licenses/ Pyodide's (MPL-2.0, with
// CPython's note) and node-forge's (from the pinned package). (OpenSSL's is openssl/'s own.)
copyFileSync(join(root, "LICENSE"), join(dist, "LICENSE"));
rmSync(join(dist, "licenses"), { recursive: true, force: true });
mkdirSync(join(dist, "licenses"));
copyFileSync(join(here, "licenses", "pyodide-MPL-2.0.txt"), join(dist, "licenses", "pyodide-MPL-2.0.txt"));
copyFileSync(join(here, "node_modules", "node-forge", "LICENSE"), join(dist, "licenses", "node-forge-LICENSE.txt"));

// dist/package.json: dist/ as an npm package (`npm pack dist`): the ES module entry, the classic
// script, the types, and every asset the loader fetches at run time (served from node_modules/
// pysmtp-wasm/ or a copy of it: docs/browser.md, "From npm"), the snapshot when `./build.sh snapshot` made one
// (the loaders then ask for it); not the demo.
const manifest = {
  name: "pysmtp-wasm",
  version,
  description: "SMTP/LMTP client with emailjs-smtp-client's API, its engine in Python (Pyodide), for the browser",
  license: "MIT",
  module: "./pysmtp-wasm.mjs",
  types: "./pysmtp-wasm.d.ts",
  exports: {
    ".": { types: "./pysmtp-wasm.d.ts", default: "./pysmtp-wasm.mjs" },
    "./pysmtp-wasm.js": "./pysmtp-wasm.js",
    "./package.json": "./package.json",
  },
  sideEffects: true,
  files: [
    "pysmtp-wasm.mjs", "pysmtp-wasm.js", "pysmtp-wasm.d.ts", "pysmtp-wasm-worker.js",
    "pysmtp-wasm-snapshot-worker.js", "pysmtp_wasm-*.whl", "roots.pem", "forge.min.js",
    "forge.min.mjs", "openssl/",
    "pyodide/pyodide.js", "pyodide/pyodide.mjs", "pyodide/pyodide.asm.mjs",
    "pyodide/pyodide.asm.wasm", "pyodide/python_stdlib.zip", "pyodide/pyodide-lock.json",
    "pyodide/pysmtp-snapshot.bin", "minimal.html", "LICENSE", "licenses/",
  ],
};
writeFileSync(join(dist, "package.json"), JSON.stringify(manifest, null, 2) + "\n");
console.error(`web/build.mjs: ${BUNDLES.map((b) => b[1]).join(", ")} (pysmtp-wasm ${version}${build.snapshot ? `, snapshot ${build.snapshot}` : ""})`);
