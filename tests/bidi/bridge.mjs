// Debian's firefox-esr driven over WebDriver BiDi by puppeteer-core, for the Python tests
// (tests/browsers.py). No geckodriver: Firefox speaks BiDi itself.
//
// One JSON request a line on stdin, one JSON answer a line on stdout, in order:
//   {"id": 1, "op": "launch", "executablePath": "/usr/bin/firefox-esr", "prefs": {...}}
//   {"id": 2, "op": "asyncScript", "script": "...", "args": [...]}    (Selenium's execute_async_script)
//   -> {"id": 2, "ok": true, "value": ...} or {"id": 2, "ok": false, "error": "..."}
// Scripts have Selenium's shape (a function body reading `arguments`; an async one calls the
// last argument when done), so tests/conftest.py's Page runs unchanged in every engine.
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

let browser = null;
let page = null;

// Values cross as JSON text, as Selenium's wire does (undefined becomes null).
const wrap = (call, script, args) => `
  new Promise((resolve, reject) => {
    const args = ${JSON.stringify(args)};
    ${call === "async" ? "args.push((value) => resolve(value));" : ""}
    try {
      const value = (function () { ${script}\n }).apply(null, args);
      ${call === "async" ? "" : "Promise.resolve(value).then(resolve, reject);"}
    } catch (e) { reject(e); }
  }).then((value) => JSON.stringify(value === undefined ? null : value))`;

const ops = {
  async launch({ executablePath, prefs, width, height }) {
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath,
      protocol: "webDriverBiDi",
      headless: true,
      extraPrefsFirefox: prefs,
      protocolTimeout: 420_000, // a script may take 300 s (Page), a hung Firefox fails the test
      defaultViewport: { width: width || 1280, height: height || 900 },
    });
    [page] = await browser.pages();
    page ??= await browser.newPage();
    page.setDefaultTimeout(420_000);
    return { version: await browser.version() };
  },
  async get({ url }) {
    await page.goto(url, { waitUntil: "load" });
  },
  async asyncScript({ script, args }) {
    return JSON.parse(await page.evaluate(wrap("async", script, args)));
  },
  async script({ script, args }) {
    return JSON.parse(await page.evaluate(wrap("sync", script, args)));
  },
  async setViewport({ width, height }) {
    await page.setViewport({ width, height });
  },
  async type({ selector, text }) {
    await page.type(selector, text);
  },
  async click({ selector }) {
    await page.click(selector);
  },
  async upload({ selector, paths }) {
    const input = await page.$(selector);
    await input.uploadFile(...paths);
  },
  async screenshot({ path }) {
    await page.screenshot({ path });
  },
  async quit() {
    if (browser) await browser.close();
    browser = null;
  },
};

const reply = (answer) => process.stdout.write(JSON.stringify(answer) + "\n");
const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  const request = JSON.parse(line);
  queue = queue.then(async () => {
    try {
      const value = await ops[request.op](request);
      reply({ id: request.id, ok: true, value: value === undefined ? null : value });
    } catch (e) {
      reply({ id: request.id, ok: false, error: String((e && e.stack) || e) });
    }
  });
});
lines.on("close", () => queue.then(() => ops.quit()).then(() => process.exit(0)));
