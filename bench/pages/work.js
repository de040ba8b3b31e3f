// The benchmark's workloads, run in one page for pysmtp-wasm and emailjs-smtp-client alike.
// The orchestrator (bench/run.py) calls window.bench.* through WebDriver.
"use strict";

(() => {
  const enc = new TextEncoder();

  // ~1 MiB of realistic text: 76 columns + CRLF, every third line starting with "."; cut into
  // 64 KiB chunks (lines fall across chunk boundaries). A message is this text `passes` times,
  // so even 100 MB is never held whole: only these 16 chunks exist.
  const LINES = 13443; // 13443 * 78 = 1048554 bytes
  let text = "";
  for (let i = 0; i < LINES; i++) {
    const head = (i % 3 === 0 ? "." : "") + "line " + i + " ";
    text += head + "x".repeat(76 - head.length) + "\r\n";
  }
  const CHUNK = 64 * 1024;
  const pool = [];
  for (let at = 0; at < text.length; at += CHUNK) pool.push(text.slice(at, at + CHUNK));
  const poolU8 = pool.map((s) => enc.encode(s));
  const PASS_BYTES = text.length;
  const HEADER = "From: bench@example.com\r\nTo: sink@example.com\r\nSubject: benchmark\r\n\r\n";

  // a small message (~2 KB): headers + 25 lines
  const small = HEADER + text.slice(0, 25 * 78);

  // The client's reaction time: from a WebSocket message arriving to the client's next
  // WebSocket send (parse the reply, decide, write the next command). Taken at the WebSocket
  // itself, so it is the same measurement for both clients; performance.now() has 100 us
  // steps in a page that is not cross-origin isolated, so only the mean over many is kept.
  const reaction = { armed: 0, total: 0, count: 0 };
  const wsSend = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (reaction.armed) {
      reaction.total += performance.now() - reaction.armed;
      reaction.count += 1;
      reaction.armed = 0;
    }
    return wsSend.call(this, data);
  };
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    configurable: true,
    get() {
      return onmessage.get.call(this);
    },
    set(handler) {
      onmessage.set.call(this, (event) => {
        reaction.armed = performance.now();
        return handler.call(this, event);
      });
    },
  });

  let api = null;
  // (snapshotCache: false: no image is made in a Worker while the workloads run)
  const ready = PySmtp.load({ proxy: "ws://invalid/", snapshotCache: false }).then((a) => (api = a));
  // Worker mode in the same page: the ES module has a PySmtp of its own, booted (once, when
  // first asked for) with worker: true, beside the in-page one.
  let workerApi = null;
  const workerReady = () =>
    (workerApi ??= import("/dist/pysmtp-wasm.mjs").then((m) => m.load({ proxy: "ws://invalid/", worker: true, snapshotCache: false })));

  function memory() {
    const m = performance.memory;
    const wasm = api ? api.pyodide._module.HEAP8.length : 0;
    return { js: m ? m.usedJSHeapSize : 0, wasm };
  }

  // The least Python an SMTP client in this page could run per message (pageCost's "floor"):
  // the same crossings as pysmtp-wasm's (the reply's bytes into Python, the next command back
  // through one reused buffer's view, the page's calls in and its callbacks out), and nothing
  // else: no parsing beyond the reply's first digit, no checks, no timers, no transcript, no
  // dot-stuffing. What a message costs the page with it is what any client whose protocol
  // engine is Python would pay here before doing its work.
  const FLOOR_PY = `
import js

class _BenchFloor:
    def __init__(self, sock, fire):
        self.sock, self.fire, self.step, self.rcpt = sock, fire, "greeting", b""
        self.buffer, self.views = js.Uint8Array.new(8192), {}

    def view(self, data):
        if len(data) > self.buffer.length:  # (a streamed chunk: a buffer that holds it)
            self.buffer, self.views = js.Uint8Array.new(2 * len(data)), {}
        view = self.views.get(len(data))
        if view is None:
            view = self.views[len(data)] = self.buffer.subarray(0, len(data))
        view.assign(data)
        return view

    def receive(self, data):
        # (as pysmtp_wasm/_browser.py: a binary string up to 256 bytes, else a buffer; answers as
        # binary strings)
        reply, step = data.encode("latin-1") if type(data) is str else data.to_bytes(), self.step
        if reply[:1] not in (b"2", b"3"):
            self.fire("onerror", reply.decode())
        elif step == "greeting":
            self.step = "ehlo"
            return "EHLO floor.example\\r\\n"
        elif step == "mail":
            self.step = "rcpt"
            return self.rcpt
        elif step == "rcpt":
            self.step = "data"
            return "DATA\\r\\n"
        elif step == "data":
            self.step = "message"
            self.fire("onready")
        elif step in ("ehlo", "end"):
            self.step = "idle"
            if step == "end":
                self.fire("ondone", True)
            self.fire("onidle")
        return None

    def envelope(self, sender, recipient):
        self.step = "mail"
        self.rcpt = f"RCPT TO:<{recipient}>\\r\\n"
        self.sock.sendText(f"MAIL FROM:<{sender}>\\r\\n")

    def send(self, chunk):
        return self.write(chunk.to_bytes())

    def write(self, data):
        return self.sock.send(self.view(data)) if len(data) > 256 else self.sock.sendText(data.decode("latin-1"))

    def end(self):
        self.step = "end"
        self.sock.sendText(".\\r\\n")

    def quit(self):
        self.step = "quit"
        self.sock.sendText("QUIT\\r\\n")


# The checked floor (profile_page.py's "floor_checked"): the floor with the checks a client owes
# its user, written flat around the floor's own steps: each reply parsed whole (code, enhanced
# code, text) by the engine's one-line pattern, the state checked on each call, both addresses
# checked for control characters (once each, as the engine caches them), the recipient's result
# kept and flattened for ondone, the text's line endings checked and dot-stuffed by the engine's
# own DotStuffer, and the time of each step noted for a timeout. Not an SMTP client (no
# multi-line reply past EHLO's, no PIPELINING, no recovery, no LMTP, BDAT or DSN): a measure of
# what those checks cost in Python, beside what pysmtp-wasm's layers cost for them.
import re as _re
from time import monotonic as _monotonic
from pysmtp_wasm._dotstuff import DotStuffer as _DotStuffer

_ONE = _re.compile(rb"([2-5][0-9][0-9])(?: ([^\\n]*?))?\\r?\\n")
_ENHANCED = _re.compile(r"[245]\\.[0-9]{1,3}\\.[0-9]{1,3}(?= |$)")
_CONTROLS = dict.fromkeys([*range(32), 127])
_CHECKED = set()


def _address(address):
    if address not in _CHECKED:
        if len(address.translate(_CONTROLS)) != len(address) or "@" not in address or len(address.encode()) > 254:
            raise ValueError(f"bad address {address!r}")
        _CHECKED.add(address)
    return address


class _BenchCheckedFloor(_BenchFloor):
    def __init__(self, sock, fire):
        super().__init__(sock, fire)
        self.progress, self.results, self.recipient, self.stuffer = 0.0, [], "", None

    def receive(self, data):
        reply, step = data.encode("latin-1") if type(data) is str else data.to_bytes(), self.step
        self.progress = _monotonic()
        one = _ONE.fullmatch(reply)
        if one is None:
            if step != "ehlo" or reply[:4] != b"250-":  # (EHLO's reply, once a connection)
                self.fire("onerror", "a malformed reply")
                return None
        else:
            code, raw = one.groups()
            text = raw.decode("utf-8", "replace") if raw else ""
            match = _ENHANCED.match(text)
            enhanced = match.group(0) if match is not None and ord(text[0]) == reply[0] else None
            code = int(code)
            if step == "rcpt":
                self.results.append((self.recipient, 200 <= code < 300, code, text, enhanced))
            elif step == "data":
                if code != 354:
                    self.fire("onerror", text)
                    return None
                self.stuffer = _DotStuffer()
            elif step == "end":
                flat = []  # (the results flattened for ondone, as _jsapi.py does; the floor's ondone takes none)
                for result in self.results:
                    flat += result
        return _BenchFloor.receive(self, data)

    def envelope(self, sender, recipient):
        if self.step != "idle":
            raise ValueError("useEnvelope() is not possible now")
        self.results, self.recipient = [], _address(recipient)
        _BenchFloor.envelope(self, _address(sender), recipient)
        self.progress = _monotonic()

    def send(self, chunk):
        if self.step != "message":
            raise ValueError("send() is not possible now")
        self.progress = _monotonic()
        return self.write(self.stuffer.encode(chunk.to_bytes()))

    def end(self):
        if self.step != "message":
            raise ValueError("end() is not possible now")
        self.step = "end"
        self.sock.sendText(self.stuffer.finish().decode("latin-1"))
        self.progress = _monotonic()
`;
  let floorClass = null;
  let checkedFloorClass = null;
  let floorText = new Uint8Array(8192);

  /** The page's side of the floor clients: the seed's calls and callbacks that sendSmall and throughput use. */
  class FloorClient {
    /** @param {{port: number, proxy: string, checked?: boolean}} spec where to (InstantServer takes anything); checked: the checked floor (_BenchCheckedFloor) */
    constructor(spec) {
      this._spec = spec;
      for (const name of ["onidle", "onready", "ondone", "ondrain", "onerror", "onclose"]) this[name] = () => {};
    }
    connect() {
      if (!floorClass) {
        api.pyodide.runPython(FLOOR_PY);
        floorClass = api.pyodide.globals.get("_BenchFloor");
        checkedFloorClass = api.pyodide.globals.get("_BenchCheckedFloor");
      }
      const sock = globalThis.PySmtpSocket.open("localhost", this._spec.port, { proxy: this._spec.proxy });
      const py = (this._spec.checked ? checkedFloorClass : floorClass)(sock, (name, value) => this[name](value));
      const methods = ["receive", "envelope", "send", "end", "quit"].map((name) => py[name]);
      [this._receive, this._envelope, this._send, this._end, this._quit] = methods;
      sock.onreceive = this._receive;
      sock.ondrain = () => this.ondrain();
      sock.onclose = () => {
        for (const proxy of [...methods, py]) proxy.destroy();
        this.onclose();
      };
    }
    useEnvelope(envelope) {
      this._envelope(envelope.from, envelope.to[0]);
    }
    send(chunk) {
      if (3 * chunk.length > floorText.length) floorText = new Uint8Array(6 * chunk.length);
      return this._send(floorText.subarray(0, enc.encodeInto(chunk, floorText).written));
    }
    end() {
      this._end();
    }
    quit() {
      this._quit();
    }
  }

  /** A client of either kind, with its callbacks promisified. */
  function makeClient(kind, spec) {
    let client;
    if (kind === "floor" || kind === "floor_checked") {
      client = new FloorClient({ ...spec, checked: kind === "floor_checked" });
    } else if (kind === "emailjs") {
      EmailjsTCPSocket.proxy = spec.proxy;
      client = new EmailjsSmtpClient("localhost", spec.port, { useSecureTransport: !!spec.tls, ca: spec.ca });
      client.logLevel = client.LOG_LEVEL_NONE;
    } else {
      const options = { proxy: spec.proxy };
      // spec.engine: "openssl" against the sink's TLS 1.2/1.3 port, "forge" (as emailjs) against
      // its TLS 1.0/1.1 port.
      if (spec.tls) Object.assign(options, { useSecureTransport: true, ca: spec.ca, tlsEngine: spec.engine || "forge" });
      if (spec.options) Object.assign(options, spec.options);
      client = new (kind === "worker" ? spec.workerApi : api).SmtpClient("localhost", spec.port, options);
    }
    const waiters = { idle: [], ready: [], done: [], drain: [], close: [] };
    const fire = (name, value) => {
      const list = waiters[name];
      waiters[name] = [];
      for (const w of list) w(value);
    };
    let failure = null;
    client.onidle = () => fire("idle");
    client.onready = () => fire("ready");
    client.ondone = (ok) => fire("done", ok);
    client.ondrain = () => fire("drain");
    client.onerror = (e) => {
      failure = failure || new Error(`${kind}: ${e && e.name}: ${e && e.message}`);
      for (const name of Object.keys(waiters)) fire(name, undefined);
    };
    client.onclose = () => fire("close");
    const next = (name) =>
      new Promise((resolve, reject) =>
        waiters[name].push((v) => (failure ? reject(failure) : resolve(v))),
      );
    return { client, next };
  }

  /** Stream `passes` times the text in 64 KiB send() calls, waiting for ondrain after false. */
  /** Returns the time spent inside send() (the page's own work), in ms. */
  async function stream(c, passes, bytes, onChunk) {
    c.client.send(HEADER);
    const source = bytes ? poolU8 : pool;
    let inside = 0;
    for (let p = 0; p < passes; p++) {
      for (const chunk of source) {
        const t = performance.now();
        const more = c.client.send(chunk);
        inside += performance.now() - t;
        if (!more) await c.next("drain");
        if (onChunk) onChunk();
      }
    }
    return inside;
  }

  /** A client of either kind, connected and idle. */
  async function connected(spec) {
    await ready;
    if (spec.client === "worker") spec = { ...spec, workerApi: await workerReady() };
    const c = makeClient(spec.client, spec);
    const idle = c.next("idle");
    c.client.connect();
    await idle;
    return c;
  }

  /** QUIT, and wait for the close. */
  async function quit(c) {
    const closed = c.next("close");
    c.client.quit();
    await closed;
  }

  async function throughput(spec) {
    const c = await connected(spec);
    if (typeof gc === "function") gc();
    const base = memory();
    const peak = { ...base };
    const sample = () => {
      const m = memory();
      if (m.js > peak.js) peak.js = m.js;
      if (m.wasm > peak.wasm) peak.wasm = m.wasm;
    };
    const timer = spec.memory ? setInterval(sample, 20) : null;
    const readyP = c.next("ready");
    c.client.useEnvelope({ from: "bench@example.com", to: ["sink@example.com"] });
    await readyP;
    const t0 = performance.now();
    const sendMs = await stream(c, spec.passes, spec.bytes, spec.memory ? sample : null);
    const done = c.next("done");
    c.client.end();
    const ok = await done;
    const t1 = performance.now();
    if (timer) clearInterval(timer);
    await quit(c);
    return {
      ok, ms: t1 - t0, bytes: spec.passes * PASS_BYTES + HEADER.length,
      base, peak, sendMs, chunks: spec.passes * pool.length,
    };
  }

  /** spec.count small messages, each after the last one's onidle, without PIPELINING. */
  async function sendSmall(c, count) {
    for (let i = 0; i < count; i++) {
      const readyP = c.next("ready");
      c.client.useEnvelope({ from: "bench@example.com", to: ["sink@example.com"] });
      await readyP;
      c.client.send(small);
      const done = c.next("done");
      const idle = c.next("idle");
      c.client.end();
      if (!(await done)) throw new Error("message refused");
      await idle;
    }
  }

  async function smallMessages(spec) {
    const c = await connected(spec);
    Object.assign(reaction, { armed: 0, total: 0, count: 0 });
    const t0 = performance.now();
    await sendSmall(c, spec.count);
    const t1 = performance.now();
    // (null in worker mode: the WebSocket is in the Worker, not in this page)
    const reactionUs = reaction.count ? (reaction.total / reaction.count) * 1000 : null;
    await quit(c);
    return { ms: t1 - t0, count: spec.count, size: small.length, reactionUs };
  }

  /**
   * What a small message costs the page itself, with no network: spec.count small messages of
   * spec.client ("pysmtp" in-page, "emailjs", "floor" or "floor_checked": FloorClient) to InstantServer (instant-server.js), which
   * stands in for the page's socket class meanwhile. Returns the µs a message, the server's
   * replies a message, and the µs of one empty hop of the server's (its share of each reply).
   */
  async function pageCost(spec) {
    await ready;
    const socketClass = globalThis.PySmtpSocket;
    globalThis.PySmtpSocket = InstantServer;
    let us, replies;
    /** @type {Record<string, number> | null} with spec.phases: ms inside each call and handler */
    let phases = null;
    try {
      const c = makeClient(spec.client, { proxy: "ws://instant.invalid/", port: 25 });
      const idle = c.next("idle");
      c.client.connect();
      await idle;
      if (spec.phases) {
        phases = InstantServer.timing = {};
        for (const name of ["useEnvelope", "send", "end"]) {
          const call = c.client[name].bind(c.client);
          c.client[name] = (...args) => {
            const t = performance.now();
            try {
              return call(...args);
            } finally {
              phases[name + "()"] = (phases[name + "()"] || 0) + performance.now() - t;
            }
          };
        }
      }
      const before = InstantServer.replies;
      const t0 = performance.now();
      await sendSmall(c, spec.count);
      us = ((performance.now() - t0) * 1000) / spec.count;
      replies = (InstantServer.replies - before) / spec.count;
      InstantServer.timing = null;
      await quit(c);
    } finally {
      InstantServer.timing = null;
      globalThis.PySmtpSocket = socketClass;
    }
    const hops = 2000;
    const t0 = performance.now();
    for (let i = 0; i < hops; i++) await InstantServer.hop();
    const result = { us, replies, hopUs: ((performance.now() - t0) * 1000) / hops };
    if (phases) {
      // µs a message: each of the page's calls, and the client's handling of each reply (keyed
      // "reply to MAIL" and so on; with the write of its answer)
      const perMessage = (/** @type {number} */ ms) => (ms * 1000) / spec.count;
      result.phases = Object.fromEntries(
        Object.entries(phases).map(([k, ms]) => [k.endsWith("()") ? k : "reply to " + k, perMessage(ms)]),
      );
    }
    return result;
  }

  // Python's opcode events counted by code object while a workload runs (instructionProfile).
  const COUNT_ON = `
import sys as _sys, collections as _collections
_bench_counts = _collections.Counter()
def _bench_trace(frame, event, arg):
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    if event == "opcode":
        _bench_counts[frame.f_code] += 1
    return _bench_trace
_sys.settrace(_bench_trace)
`;
  const COUNT_OFF = `
_sys.settrace(None)
def _bench_where(code):
    name = code.co_filename
    where = "pysmtp_wasm/" + name.split("/pysmtp_wasm/")[-1] if "/pysmtp_wasm/" in name else ("floor" if name == "<exec>" else name.rsplit("/", 1)[-1])
    return f"{where}:{code.co_name}"
_bench_rows = sorted(((n, _bench_where(c)) for c, n in _bench_counts.items() if c is not _bench_trace.__code__), reverse=True)
del _bench_counts, _bench_trace, _bench_where
[[n, w] for n, w in _bench_rows]
`;

  /**
   * Where a small message's Python goes: the bytecode instructions it runs in this page, by
   * function (sys.settrace's opcode events, counted while pageCost runs spec.count messages of
   * spec.client, "pysmtp", "floor" or "floor_checked", after spec.warm). A count, not a time: the same in every
   * engine and on every machine, and what a change to the reply path saves shows in it at once
   * (in this page each instruction costs 0.04-0.07 µs: bench/README.md).
   */
  async function instructionProfile(spec) {
    await ready;
    await pageCost({ client: spec.client, count: spec.warm });
    api.pyodide.runPython(COUNT_ON);
    let rows;
    try {
      await pageCost({ client: spec.client, count: spec.count });
    } finally {
      rows = api.pyodide.runPython(COUNT_OFF).toJs();
    }
    return rows.map(([n, where]) => [n / spec.count, where]);
  }

  /**
   * What the byte scans of a message's 64 KiB chunk cost in this page's Pyodide, [what, µs]
   * pairs (the best of 5 rounds of spec.count): the dot-stuffer's encode (the bench's text, a third of its
   * lines starting with "."; and the same without a dot), the operations it is made of, and
   * the copies across the boundary beside them.
   */
  async function chunkProfile(spec) {
    await ready;
    const py = api.pyodide;
    py.globals.set("_bench_chunk", poolU8[0]);
    try {
      return py.runPython(`
import time as _time
from pysmtp_wasm._dotstuff import DotStuffer as _DotStuffer, _CRS, _LFS
import js as _js
def _bench_chunk_costs(view, count):
    chunk = view.to_bytes()
    plain = chunk.replace(b"\\r\\n.", b"\\r\\nx")
    out = _js.Uint8Array.new(len(chunk))
    stuffer = _DotStuffer()
    def best(op):
        fastest = 1e9
        for _ in range(5):
            start = _time.perf_counter()
            for _ in range(count):
                op()
            fastest = min(fastest, (_time.perf_counter() - start) / count * 1e6)
        return fastest
    return {
        "encode (a third of the lines dot-stuffed)": best(lambda: stuffer.encode(chunk)),
        "encode (no line starts with a dot)": best(lambda: stuffer.encode(plain)),
        "translate (one of the two of the CRLF check)": best(lambda: chunk.translate(_CRS)),
        "split on CRLF '.' and join (the stuffing)": best(lambda: b"\\r\\n..".join(chunk.split(b"\\r\\n."))),
        "search for CRLF '.' that is not there": best(lambda: plain.find(b"\\r\\n.")),
        "search for one byte that is not there": best(lambda: b"\\x00" in chunk),
        "count one byte": best(lambda: chunk.count(b"\\n")),
        "copy in (to_bytes)": best(lambda: view.to_bytes()),
        "copy out (assign)": best(lambda: out.assign(chunk)),
    }
_bench_result = [[what, us] for what, us in _bench_chunk_costs(_bench_chunk, ${spec.count}).items()]
del _bench_chunk_costs
_bench_result
`).toJs();
    } finally {
      py.runPython("del _bench_chunk, _bench_result");
    }
  }

  /**
   * What one crossing of the JS/Python boundary costs in this page's Pyodide, in the shapes a
   * small message takes, µs each (the mean of spec.count): a JS call into Python with received
   * bytes that Python reads (the socket's `onreceive`), a JS call into Python with no argument
   * (the page's `end()`), and a Python call of a JS function (a callback, or the socket's send).
   */
  async function crossingCost(spec) {
    await ready;
    const py = api.pyodide;
    const n = spec.count;
    // (a reply crosses as a binary string: web/src/socket.js TEXT_MAX)
    py.runPython('def _bench_received(text):\n    text.encode("latin-1")\n\ndef _bench_call():\n    pass\n');
    const received = py.globals.get("_bench_received");
    const call = py.globals.get("_bench_call");
    const reply = "250 2.1.5 Ok\r\n";
    let t = performance.now();
    for (let i = 0; i < n; i++) received(reply);
    const receivedUs = ((performance.now() - t) * 1000) / n;
    t = performance.now();
    for (let i = 0; i < n; i++) call();
    const callUs = ((performance.now() - t) * 1000) / n;
    received.destroy();
    call.destroy();
    py.globals.set("_bench_noop", () => {});
    const callbackUs = py.runPython(`
import time
_f = _bench_noop
_t = time.perf_counter()
for _ in range(${n}):
    _f()
(time.perf_counter() - _t) * 1e6 / ${n}
`);
    py.runPython("del _f, _bench_noop, _bench_received, _bench_call");
    return { receivedUs, callUs, callbackUs };
  }

  // The JS floor (jsFloorSmall): an SMTP client with no protocol engine at all, in JavaScript,
  // over a bare WebSocket: the least any client could do for a small message (its replies read
  // only as far as their last line's code, no checks). Run in the page and in a Worker, with the
  // page deciding at onready and at onidle as the seed's API has it, the difference between the
  // two is what worker mode's hops cost by themselves in the flow, whatever the client: the two
  // round trips a message, each hop's wake-up while the other threads share the cores and, in
  // WebKit, the Worker's WebSocket writes made on the page's main thread.
  const JS_FLOOR = `
class JsFloor {
  constructor(url, fire) {
    this.fire = fire;
    this.step = "greeting";
    this.text = "";
    this.enc = new TextEncoder();
    this.dec = new TextDecoder();
    const ws = (this.ws = new WebSocket(url, ["binary"]));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = () => fire("close");
  }
  write(text) {
    this.ws.send(this.enc.encode(text));
  }
  receive(data) {
    this.text += this.dec.decode(data);
    const text = this.text;
    if (!text.endsWith("\\r\\n")) return;
    const last = text.lastIndexOf("\\n", text.length - 3) + 1;
    if (text[last + 3] === "-") return; // a multi-line reply goes on
    this.text = "";
    const code = text[last];
    const step = this.step;
    if (code !== "2" && code !== "3") return this.fire("error", text);
    if (step === "greeting") (this.step = "ehlo"), this.write("EHLO floor.example\\r\\n");
    else if (step === "mail") (this.step = "rcpt"), this.write(this.rcpt);
    else if (step === "rcpt") (this.step = "data"), this.write("DATA\\r\\n");
    else if (step === "data") (this.step = "message"), this.fire("ready");
    else if (step === "ehlo" || step === "end") {
      this.step = "idle";
      if (step === "end") this.fire("done", true);
      this.fire("idle");
    }
  }
  useEnvelope(from, to) {
    this.step = "mail";
    this.rcpt = "RCPT TO:<" + to + ">\\r\\n";
    this.write("MAIL FROM:<" + from + ">\\r\\n");
  }
  send(text) {
    this.write(text);
  }
  end() {
    this.step = "end";
    this.write(".\\r\\n");
  }
  quit() {
    this.step = "quit";
    this.write("QUIT\\r\\n");
  }
}`;
  // The Worker's side: the page's calls in, the callbacks of one task out in one message (as
  // worker mode's outbox does).
  const JS_FLOOR_WORKER = `${JS_FLOOR}
let client = null;
let out = [];
const fire = (name, value) => {
  if (!out.length) queueMicrotask(() => { postMessage(out); out = []; });
  out.push([name, value]);
};
onmessage = (e) => {
  const [op, ...args] = e.data;
  if (op === "open") client = new JsFloor(args[0], fire);
  else client[op](...args);
};`;
  const JsFloorClass = new Function(`${JS_FLOOR}; return JsFloor;`)();

  /** Workers of jsFloorSmall kept after their run (spec.keepWorker: profile_worker.mjs reads their profile). */
  const keptWorkers = [];
  function dropKeptWorkers() {
    for (const worker of keptWorkers.splice(0)) worker.terminate();
  }

  /**
   * spec.count small messages (as smallMessages) from the JS floor, in the page (spec.where
   * "page") or in a Worker ("worker"), straight to websockify (spec.proxy). Returns the ms.
   */
  async function jsFloorSmall(spec) {
    const waiters = { idle: [], ready: [], done: [], close: [] };
    let failure = null;
    const fire = (name, value) => {
      if (name === "error") failure = new Error("JS floor: a refusing reply: " + value);
      for (const [key, list] of Object.entries(waiters)) {
        if (key !== name && !failure) continue;
        waiters[key] = [];
        for (const [resolve, reject] of list) (failure ? reject(failure) : resolve(value));
      }
    };
    const next = (name) =>
      new Promise((resolve, reject) => (failure ? reject(failure) : waiters[name].push([resolve, reject])));
    let call;
    let worker = null;
    const url = URL.createObjectURL(new Blob([JS_FLOOR_WORKER], { type: "text/javascript" }));
    const idle = next("idle");
    if (spec.where === "worker") {
      worker = new Worker(url);
      worker.onmessage = (e) => {
        for (const [name, value] of e.data) fire(name, value);
      };
      call = (op, ...args) => worker.postMessage([op, ...args]);
      call("open", spec.proxy);
    } else {
      const client = new JsFloorClass(spec.proxy, fire);
      call = (op, ...args) => client[op](...args);
    }
    try {
      await idle;
      const t0 = performance.now();
      for (let i = 0; i < spec.count; i++) {
        const readyP = next("ready");
        call("useEnvelope", "bench@example.com", "sink@example.com");
        await readyP;
        call("send", small);
        const done = next("done");
        const idled = next("idle");
        call("end");
        await done;
        await idled;
      }
      const ms = performance.now() - t0;
      const closed = next("close");
      call("quit");
      await closed;
      return { ms, count: spec.count };
    } finally {
      if (worker && spec.keepWorker) keptWorkers.push(worker);
      else if (worker) worker.terminate();
      URL.revokeObjectURL(url);
    }
  }

  /**
   * One round trip between this page and a Worker that answers at once (a small message there,
   * its answer back), µs, the mean of spec.count one after the other. In worker mode a small
   * message takes two, whatever the Worker does: the page's useEnvelope there and onready back,
   * then its send and end there and ondone and onidle back (the seed's API has the page decide
   * at onready and at onidle).
   */
  async function workerRoundTrip(spec) {
    const url = URL.createObjectURL(new Blob(["onmessage = (e) => postMessage(e.data);"], { type: "text/javascript" }));
    const worker = new Worker(url);
    try {
      /** @type {() => void} */
      let answered = () => {};
      worker.onmessage = () => answered();
      const message = { type: "call", id: 1, name: "end", args: [] };
      const trip = () =>
        new Promise((resolve) => {
          answered = resolve;
          worker.postMessage(message);
        });
      for (let i = 0; i < 100; i++) await trip(); // (the Worker started and warm)
      const t0 = performance.now();
      for (let i = 0; i < spec.count; i++) await trip();
      return ((performance.now() - t0) * 1000) / spec.count;
    } finally {
      worker.terminate();
      URL.revokeObjectURL(url);
    }
  }

  /**
   * The sans-IO engine alone in this page's Pyodide: bench/profile_engine.py's small messages
   * (no client facade, no FFI, no socket), µs a message, after spec.warm of them.
   */
  async function engineAlone(spec) {
    await ready;
    const source = await (await fetch("/bench/profile_engine.py")).text();
    api.pyodide.FS.writeFile("/tmp/profile_engine.py", source);
    return api.pyodide.runPython(`
import sys, time
if "/tmp" not in sys.path:
    sys.path.insert(0, "/tmp")
import profile_engine
_engine = profile_engine.session()
profile_engine.small_messages(_engine, ${spec.warm})
_t = time.perf_counter()
profile_engine.small_messages(_engine, ${spec.count})
(time.perf_counter() - _t) * 1e6 / ${spec.count}
`);
  }

  /** The path's limit: bytes through a bare WebSocket (plain) or PySmtpSocket (TLS or plain)
   * into the raw sink, which answers "OK" once it has them all. */
  async function raw(spec) {
    await ready;
    const total = spec.passes * PASS_BYTES;
    const header = enc.encode(total + "\r\n");
    if (spec.via === "websocket") {
      const ws = new WebSocket(spec.proxy, ["binary"]);
      ws.binaryType = "arraybuffer";
      await new Promise((resolve, reject) => ((ws.onopen = resolve), (ws.onerror = reject)));
      const answered = new Promise((resolve) => (ws.onmessage = resolve));
      const t0 = performance.now();
      ws.send(header);
      for (let p = 0; p < spec.passes; p++) {
        for (const chunk of poolU8) {
          ws.send(chunk);
          if (ws.bufferedAmount >= PySmtpSocket.HIGH_WATER) {
            while (ws.bufferedAmount >= PySmtpSocket.LOW_WATER) await new Promise((r) => setTimeout(r, 4));
          }
        }
      }
      await answered;
      const t1 = performance.now();
      ws.close();
      return { ms: t1 - t0, bytes: total };
    }
    const sock = PySmtpSocket.open("localhost", spec.port, {
      proxy: spec.proxy, useSecureTransport: !!spec.tls, ca: spec.ca, tlsEngine: spec.engine || "forge",
    });
    await new Promise((resolve, reject) => ((sock.onopen = resolve), (sock.onerror = (e) => reject(e.data))));
    let drain = null;
    sock.ondrain = () => drain && drain();
    const answered = new Promise((resolve) => (sock.ondata = resolve));
    const t0 = performance.now();
    sock.send(header);
    for (let p = 0; p < spec.passes; p++) {
      for (const chunk of poolU8) {
        if (!sock.send(chunk)) await new Promise((r) => (drain = r));
      }
    }
    await answered;
    const t1 = performance.now();
    sock.close();
    return { ms: t1 - t0, bytes: total };
  }

  /** TLS set-up, `count` times: the socket's handshake (ClientHello to verified certificate,
   * measured by PySmtpSocket) and, for whole clients, connect() to the first onidle. */
  async function tlsSetup(spec) {
    await ready;
    const handshakeMs = [];
    const idleMs = [];
    for (let i = 0; i < spec.count; i++) {
      if (spec.client === "pysmtp") {
        const sock = PySmtpSocket.open("localhost", spec.port, {
          proxy: spec.proxy, useSecureTransport: true, ca: spec.ca, tlsEngine: spec.engine,
        });
        await new Promise((resolve, reject) => ((sock.onopen = resolve), (sock.onerror = (e) => reject(e.data))));
        handshakeMs.push(sock.tls.handshakeMs);
        await new Promise((resolve) => ((sock.onclose = resolve), sock.close()));
      }
      const t0 = performance.now();
      const c = await connected(spec);
      idleMs.push(performance.now() - t0);
      await quit(c);
    }
    return { handshakeMs, idleMs };
  }

  window.bench = {
    ready, throughput, smallMessages, pageCost, crossingCost, workerRoundTrip, jsFloorSmall, dropKeptWorkers, engineAlone, raw, tlsSetup,
    instructionProfile, chunkProfile, PASS_BYTES,
  };
})();
