// Where a small message's time goes in each thread of the page's process, in Chromium: V8's
// sampling profiler on the page's main thread and on every Worker (Chrome DevTools Protocol,
// through the browser tests' puppeteer-core in tests/bidi), by kind of work. Run by
// bench/profile_page.py --only worker_cpu, which starts the path (websockify, bench/sink.py)
// and the page's server, and prints what this writes (one JSON object on stdout).
//
//   node bench/profile_worker.mjs BASE_URL '{"proxy": ..., "port": ..., "count": 1000}'
//
// The modes: pysmtp-wasm in-page and in worker mode, emailjs, and the JS floor
// (bench/pages/work.js jsFloorSmall: no protocol engine at all) in the page and in a Worker.
// A sample is the thread's stack when the profiler looked, running or not: a thread that the
// OS has set aside (2 cores, with the network's threads, websockify and the sink on them) is
// counted where it stopped, most often in a WebSocket send or a postMessage, which wake
// another thread. So these are a thread's busy times, not CPU times (profile_page.py
// small_threads has those).

import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/bidi/package.json", import.meta.url));
const puppeteer = require("puppeteer-core");

const [base, specText] = process.argv.slice(2);
const spec = JSON.parse(specText);

const MODES = {
  "pysmtp-wasm in-page": ["smallMessages", { client: "pysmtp" }],
  "pysmtp-wasm worker mode": ["smallMessages", { client: "worker" }],
  emailjs: ["smallMessages", { client: "emailjs" }],
  "JS floor in-page": ["jsFloorSmall", { where: "page" }],
  "JS floor in a Worker": ["jsFloorSmall", { where: "worker", keepWorker: true }],
};

/** A profile node's kind of work. @param {{functionName: string, url: string}} frame */
function kind({ functionName, url }) {
  if (functionName === "(idle)") return null;
  if (functionName.startsWith("(")) return functionName; // (program), (garbage collector)
  if (!url) {
    if (functionName === "send") return "WebSocket send (native)";
    if (functionName === "postMessage") return "postMessage (native)";
    if (functionName === "wasm-to-js" || functionName === "js-to-wasm") return "Python (WebAssembly)";
    return "other native calls";
  }
  if (url.endsWith(".wasm") || functionName.startsWith("wasm-function") || functionName.startsWith("js-to-wasm")) {
    return "Python (WebAssembly)";
  }
  // (In the JS floor's Worker, a blob: script, V8 counts the native WebSocket send inside the
  // floor's write(), which does nothing else but encode a command of some 30 bytes.)
  if (url.startsWith("blob:") && functionName === "write") return "WebSocket send (native)";
  if (url.includes("pyodide")) return "Pyodide's JavaScript";
  if (url.includes("pysmtp-wasm")) return "pysmtp-wasm's JavaScript";
  if (url.includes("emailjs-smtp-client")) return "emailjs (and the socket, bundled)";
  return "the bench page's JavaScript";
}

/** µs a message by kind of work, from a CPU profile. */
function byKind(profile, count) {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  /** @type {Record<string, number>} */
  const out = {};
  profile.samples.forEach((id, i) => {
    const what = kind(nodes.get(id).callFrame);
    if (what) out[what] = (out[what] ?? 0) + (profile.timeDeltas[i] ?? 0) / count;
  });
  return out;
}

async function profiled(session) {
  await session.send("Profiler.enable");
  await session.send("Profiler.setSamplingInterval", { interval: 50 });
  await session.send("Profiler.start");
  return session;
}

const browser = await puppeteer.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
/** @type {Record<string, Record<string, Record<string, number>>>} mode -> thread -> kind -> µs a message */
const result = {};
try {
  const page = await browser.newPage();
  await page.goto(`${base}/bench/pages/work.html`);
  await page.waitForFunction(() => window.bench);
  const pageSession = await page.createCDPSession();
  /** @type {[string, any][]} sessions of Workers made while a mode is profiled */
  let late = [];
  let profiling = false;
  page.on("workercreated", (worker) => {
    if (profiling) late.push(["a Worker", profiled(worker.client)]);
  });
  for (const [mode, [call, extra]] of Object.entries(MODES)) {
    const run = (count) => page.evaluate((call, args) => window.bench[call](args), call, { ...spec, ...extra, count });
    await run(Math.min(300, spec.count)); // warm
    const sessions = [["the page's main thread", profiled(pageSession)]];
    for (const worker of page.workers()) sessions.push(["a Worker", profiled(worker.client)]);
    late = [];
    profiling = true;
    await Promise.all(sessions.map(([, session]) => session));
    const sample = await run(spec.count);
    profiling = false;
    result[mode] = { "the page's clock, µs a message": { all: (sample.ms * 1000) / sample.count } };
    for (const [thread, pending] of [...sessions, ...late]) {
      const session = await pending;
      const { profile } = await session.send("Profiler.stop");
      const kinds = byKind(profile, sample.count);
      const busy = Object.values(kinds).reduce((a, b) => a + b, 0);
      if (busy < 1) continue; // (the bench's idle Worker of worker mode, say)
      const name = result[mode][thread] ? `${thread} (2)` : thread;
      result[mode][name] = { busy, ...kinds };
    }
    await page.evaluate(() => window.bench.dropKeptWorkers());
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
