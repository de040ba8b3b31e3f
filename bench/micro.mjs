// A micro-benchmark of the page's own work, in Node (no browser, no network): Pyodide from
// web/node_modules, our wheel from dist/, the real loader (dist/pysmtp-wasm.mjs), and
// bench/pages/instant-server.js in place of PySmtpSocket (an SMTP server that answers at once).
// It times what the page spends per 64 KiB send() and per small message, so a change to the
// engine or the FFI crossing can be measured in seconds:
//
//   node bench/micro.mjs [--profile] [--split] [--only=send|small] [--rounds=N] [--dist=DIR]
//   (after ./build.sh; --profile: cProfile inside Pyodide, sorted by own time; --split: the µs a
//   small message spends inside each call into Python, the page's callbacks excluded; --rounds: how
//   many rounds (default 6), the last line gives the medians of all but the first two, and the best;
//   --dist: another build's dist/, e.g. a copy of the one before a change, for A/B runs)
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { loadPyodide } = await import(path.join(root, "web/node_modules/pyodide/pyodide.mjs"));
const profile = process.argv.includes("--profile");
const split = process.argv.includes("--split");
const only = (process.argv.find((a) => a.startsWith("--only=")) || "").slice(7); // "send" or "small"
const rounds = Number((process.argv.find((a) => a.startsWith("--rounds=")) || "--rounds=6").slice(9));
const dist = path.resolve(root, (process.argv.find((a) => a.startsWith("--dist=")) || "--dist=dist").slice(7));

const t0 = performance.now();
const pyodide = await loadPyodide({ indexURL: path.join(root, "web/node_modules/pyodide/") });
const tBoot = performance.now();
const wheel = new Uint8Array(readFileSync(path.join(dist, "pysmtp_wasm-0.1.0-py3-none-any.whl")));
pyodide.unpackArchive(wheel, "wheel");
const tWheel = performance.now();
pyodide.runPython("import pysmtp_wasm._jsapi");
const tImport = performance.now();
console.log(
  `boot ${(tBoot - t0).toFixed(0)} ms, wheel ${(tWheel - tBoot).toFixed(0)} ms, import ${(tImport - tWheel).toFixed(0)} ms`,
);

const PySmtp = (await import(path.join(dist, "pysmtp-wasm.mjs"))).default;

// An instant SMTP server in place of the page's socket class (bench/pages/instant-server.js).
await import(path.join(root, "bench/pages/instant-server.js"));

const api = await PySmtp.load({ pyodide });
// --split: the time inside each call into Python (ms by name), the page's callbacks' time excluded.
const inside = {};
let callbackMs = 0;
function timed(name, call) {
  return function (...args) {
    const before = callbackMs;
    const t = performance.now();
    try {
      return call.apply(this, args);
    } finally {
      inside[name] = (inside[name] || 0) + performance.now() - t - (callbackMs - before);
    }
  };
}
/** The instant server, its socket's onreceive (the call into Python per reply) timed with --split. */
class Server extends globalThis.InstantServer {
  get onreceive() {
    return this._onreceive;
  }
  set onreceive(call) {
    this._onreceive = call && split ? timed("onreceive", call) : call;
  }
}
globalThis.PySmtpSocket = Server;

function client() {
  const c = new api.SmtpClient("localhost", 25, {});
  const waiters = {};
  const next = (name) => new Promise((resolve) => (waiters[name] = resolve));
  for (const name of ["onidle", "onready", "ondone", "ondrain", "onclose"]) {
    c[name] = (v) => {
      const t = performance.now();
      const w = waiters[name];
      delete waiters[name];
      if (w) w(v);
      callbackMs += performance.now() - t;
    };
  }
  if (split) for (const name of ["useEnvelope", "send", "end"]) c[name] = timed(name, c[name]);
  c.onerror = (e) => {
    throw e;
  };
  return { c, next };
}

// ~1 MiB of 76-column text, every third line starting with ".", in 64 KiB chunks (as bench/pages/work.js)
let text = "";
for (let i = 0; i < 13443; i++) {
  const head = (i % 3 === 0 ? "." : "") + "line " + i + " ";
  text += head + "x".repeat(76 - head.length) + "\r\n";
}
const pool = [];
for (let at = 0; at < text.length; at += 65536) pool.push(text.slice(at, at + 65536));
const poolU8 = pool.map((s) => new TextEncoder().encode(s));

async function throughput(source, passes) {
  const { c, next } = client();
  let idle = next("onidle");
  c.connect();
  await idle;
  const ready = next("onready");
  c.useEnvelope({ from: "a@example.com", to: ["b@example.com"] });
  await ready;
  const t = performance.now();
  let n = 0;
  for (let p = 0; p < passes; p++) for (const chunk of source) (c.send(chunk), n++);
  const spent = performance.now() - t;
  const done = next("ondone");
  c.end();
  await done;
  const closed = next("onclose");
  c.quit();
  await closed;
  return (spent / n) * 1000;
}

async function small(count) {
  const { c, next } = client();
  const message = "From: a@example.com\r\nSubject: x\r\n\r\n" + text.slice(0, 25 * 78);
  let idle = next("onidle");
  c.connect();
  await idle;
  for (const name of Object.keys(inside)) delete inside[name];
  const t = performance.now();
  const cpu = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const ready = next("onready");
    c.useEnvelope({ from: "a@example.com", to: ["b@example.com"] });
    await ready;
    c.send(message);
    const done = next("ondone");
    idle = next("onidle");
    c.end();
    await done;
    await idle;
  }
  const spent = performance.now() - t;
  const used = process.cpuUsage(cpu);
  smallCpu.push((used.user + used.system) / count);
  if (split) {
    const parts = Object.entries(inside).map(([name, ms]) => `${name} ${((ms * 1000) / count).toFixed(0)}`);
    const sum = Object.values(inside).reduce((a, b) => a + b, 0);
    console.log(`  inside Python, µs a message: ${parts.join(", ")} (together ${((sum * 1000) / count).toFixed(0)})`);
  }
  const closed = next("onclose");
  c.quit();
  await closed;
  return (spent / count) * 1000;
}
// Per round, the process's CPU time per small message (µs): less moved than the wall time by
// other work on a shared machine (it counts Node's helper threads too: GC, the compiler).
const smallCpu = [];

// An empty round of the server's hops, to subtract what its scheduling costs.
async function hops(count) {
  const t = performance.now();
  for (let i = 0; i < count; i++) await globalThis.InstantServer.hop();
  return ((performance.now() - t) / count) * 1000;
}

if (profile) pyodide.runPython("import cProfile; _prof = cProfile.Profile(); _prof.enable()");
const seen = { s: [], u: [], m: [] };
for (let round = 0; round < rounds; round++) {
  const s = only === "small" ? NaN : await throughput(pool, 8);
  const u = only === "small" ? NaN : await throughput(poolU8, 8);
  const m = only === "send" ? NaN : await small(300);
  const h = await hops(2000);
  if (round >= 2) (seen.s.push(s), seen.u.push(u), seen.m.push(m));
  console.log(
    `send(64 KiB string) ${s.toFixed(0)} µs, send(64 KiB Uint8Array) ${u.toFixed(0)} µs, ` +
      `small message ${m.toFixed(0)} µs (8 of the server's hops: ${(8 * h).toFixed(0)} µs)`,
  );
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
if (seen.m.length)
  console.log(
    `median of rounds 3-${rounds}: send(64 KiB string) ${median(seen.s).toFixed(0)} µs, ` +
      `send(64 KiB Uint8Array) ${median(seen.u).toFixed(0)} µs, small message ${median(seen.m).toFixed(0)} µs` +
      (smallCpu.length > 2 ? ` (CPU ${median(smallCpu.slice(2)).toFixed(0)} µs)` : "") +
      `; best round: small message ${Math.min(...seen.m).toFixed(0)} µs`,
  );
if (profile) {
  pyodide.runPython(`
_prof.disable()
import pstats
pstats.Stats(_prof).sort_stats("tottime").print_stats(25)
`);
}
// (A timer the fake sessions left behind would keep Node up for many seconds more.)
process.exit(0);
