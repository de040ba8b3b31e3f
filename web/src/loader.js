// pysmtp-wasm loader: boots Pyodide from files served beside this script, loads our wheel,
// and returns a JS SmtpClient class with emailjs-smtp-client's API whose work is done by the
// Python engine. Concatenated by build.sh after socket.js; SCRIPT_URL, WHEEL and SNAPSHOT
// come from the wrapper (classic script: document.currentScript; ES module: import.meta.url).

/** Callbacks the page may set; each defaults to a no-op. */
const CALLBACKS = ["onidle", "onready", "ondone", "onerror", "onclose", "ondrain"];
const noop = () => {};
const UTF8 = new TextEncoder();

/** Strings up to this length are encoded into one reused buffer (longer ones get their own). */
const REUSE_LIMIT = 1024 * 1024;
let utf8Buffer = new Uint8Array(0);

/**
 * A string's UTF-8 bytes. For the usual chunk sizes they are written into one reused buffer:
 * Python copies them out at once, so a chunk leaves no garbage behind in the JS heap.
 * @param {string} text
 */
function utf8(text) {
  if (text.length > REUSE_LIMIT) return UTF8.encode(text);
  if (utf8Buffer.length < text.length * 3) utf8Buffer = new Uint8Array(Math.max(text.length * 3, 3 * 65536));
  return utf8Buffer.subarray(0, UTF8.encodeInto(text, utf8Buffer).written);
}

/** @type {Promise<any> | null} */
let booting = null;
let liveClients = 0;

/**
 * Run one of dist/'s scripts: a <script> element in a page. In the Worker of worker mode
 * (web/src/worker.js) there is no document, and it is a module Worker (Pyodide refuses classic
 * ones), so the script's ES-module twin is imported instead: pyodide/pyodide.mjs (whose
 * loadPyodide is made global, as pyodide.js does), and the ones the build makes of node-forge
 * and OpenSSL's glue (forge.min.mjs, openssl/openssl-tls.mjs), which set the same globals.
 * @param {string} url
 */
function loadScript(url) {
  if (typeof document === "undefined") {
    return import(url.replace(/\.js$/, ".mjs")).then(
      (module) => {
        if (typeof module.loadPyodide === "function") globalThis.loadPyodide ??= module.loadPyodide;
      },
      (error) => {
        throw new Error(`pysmtp-wasm: could not load ${url}: ${error && error.message}`);
      },
    );
  }
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(undefined);
    script.onerror = () => reject(new Error(`pysmtp-wasm: could not load ${url}`));
    document.head.appendChild(script);
  });
}

/**
 * An Error for an exception that escaped from Python (SMTP errors come back as Error values,
 * not exceptions): the last line of Python's traceback as the message, not the whole of it.
 * @param {any} error
 */
function fromPython(error) {
  if (error && error.type && typeof error.message === "string") {
    const lines = error.message.trim().split("\n");
    const last = lines[lines.length - 1] || error.type;
    const converted = new Error(last.replace(/^[\w.]*?(\w+): /, ""));
    converted.name = error.type;
    return converted;
  }
  return error;
}

/** @param {any} api the pysmtp_wasm._jsapi module */
function makeSmtpClient(api) {
  /** emailjs-smtp-client's SmtpClient, run by the Python engine. */
  class SmtpClient {
    /**
     * @param {string} [host] default "localhost"
     * @param {number} [port] default 465 with useSecureTransport, else 25
     * @param {object} [options] the seed's options, plus `proxy`
     */
    constructor(host = "localhost", port = undefined, options = {}) {
      for (const name of CALLBACKS) this[name] = noop;
      /** @type {(direction: string, text: string) => void} */
      this._onlog = noop;
      /** @type {any} */
      this._py = null;
      /** @type {object[]} lastResults once the Python side is gone */
      this._lastResults = [];
      /** What sendMail needs to connect again after the connection closed. */
      this._args = [host, port ?? null, options];
      /** @type {(() => void)[]} sendMail calls waiting for the current connection to close */
      this._afterRelease = [];
      this._open();
    }

    /** A Python side for this object: a new connection's worth of state. */
    _open() {
      let created;
      try {
        created = api.create_client(...this._args, this);
      } catch (error) {
        throw fromPython(error);
      }
      if (created instanceof Error) throw created;
      this._py = created;
      liveClients += 1;
      if (this._onlog !== noop) created.set_logging(true);
    }

    /** Open the connection; onidle follows when the session is ready. */
    connect() {
      this._call("connect");
    }

    /** @param {{from?: string, to: string | string[], size?: number}} envelope */
    useEnvelope(envelope) {
      this._call("useEnvelope", envelope);
    }

    /**
     * @param {string | Uint8Array | ArrayBuffer} chunk
     * @returns {boolean} false when the buffer is full: wait for ondrain
     */
    send(chunk) {
      // A string crosses into Python as bytes: TextEncoder is several times faster than
      // Pyodide's conversion of a JS string to a Python str and its encoding there.
      return this._call("send", typeof chunk === "string" ? utf8(chunk) : chunk);
    }

    end() {
      this._call("end");
    }

    /**
     * The high-level API: build a MIME message (Python's email package, in Pyodide) and send
     * it, connecting first if needed. The connection stays idle afterwards: send more, or quit().
     * While it runs, onidle/onready/ondone/ondrain are not called; onerror/onclose/onlog are.
     * An error that ended the connection rejects the promise after onclose(true); when the
     * connection is closed (or closing), the next call opens a new one by itself.
     * @param {{from: string, to?: string|string[], cc?: string|string[], bcc?: string|string[],
     *          subject?: string, text?: string, html?: string, replyTo?: string,
     *          headers?: Record<string, string>,
     *          attachments?: {filename: string, content: Uint8Array|ArrayBuffer|string, contentType?: string}[]}} mail
     * @param {{onprogress?: (sent: number, total: number) => void}} [options]
     * @returns {Promise<{accepted: string[], rejected: string[], results: object[], messageId: string, size: number}>}
     */
    sendMail(mail, options = {}) {
      const start = () =>
        new Promise((resolve, reject) => {
          if (!this._py) this._open();
          this._call("send_mail", mail, options, resolve, reject);
        });
      const state = this._py ? this._py.state : "closed";
      if (this._py && (state === "quit" || state === "closed")) {
        // The connection is ending (an error, quit() or close()): start once it has closed.
        return new Promise((resolve) => this._afterRelease.push(resolve)).then(start);
      }
      return start();
    }

    quit() {
      this._call("quit");
    }

    close() {
      if (this._py) this._call("close");
    }

    /**
     * The transcript callback. Python calls it across the FFI only while one is set: a page
     * that does not log pays nothing per line.
     */
    get onlog() {
      return this._onlog;
    }

    set onlog(callback) {
      this._onlog = typeof callback === "function" ? callback : noop;
      if (this._py) this._py.set_logging(this._onlog !== noop);
    }

    /** The session's state: "new", "connecting", "idle", "data", "closed", ... */
    get state() {
      return this._py ? this._py.state : "closed";
    }

    /**
     * The last message's results, one per recipient (ondone's second argument; also set by
     * sendMail). Kept after the connection closed; a new connection starts empty.
     * @returns {{recipient: string, accepted: boolean, code: number, message: string, enhanced: string | null}[]}
     */
    get lastResults() {
      return this._py ? this._py.lastResults : this._lastResults;
    }

    /** @param {string} name @param {...any} args */
    _call(name, ...args) {
      const py = this._py;
      if (!py) {
        const error = /** @type {any} */ (new Error(`${name}() is not possible: the connection is closed`));
        Object.assign(error, { name: "SmtpUsageError", fatal: false, code: null, enhanced: null, stage: null });
        throw error;
      }
      let result;
      try {
        result = py[name](...args);
      } catch (error) {
        throw fromPython(error); // a bug, not an SMTP error: those come back as values
      }
      if (result instanceof Error) throw result;
      return result;
    }

    /**
     * Python calls the page's callbacks through this (it looks it up once per client).
     * @param {string} name @param {...any} args
     */
    _fire(name, ...args) {
      return this[name](...args);
    }

    /** Called by Python after onclose: drop our proxy of the Python side. */
    _release() {
      const py = this._py;
      this._py = null;
      if (py) {
        this._lastResults = py.lastResults;
        liveClients -= 1;
        // Not while Python may still be on the stack of a call through this proxy.
        queueMicrotask(() => py.destroy());
      }
      for (const resume of this._afterRelease.splice(0)) resume();
    }
  }
  return SmtpClient;
}

// SNAPSHOT (from the wrapper): the Pyodide memory snapshot with pysmtp_wasm imported, when
// `./build.sh snapshot` made one ("pyodide/pysmtp-snapshot.bin"), else null: a page never asks
// for a file that is not there.

/** @param {string} href @returns {Promise<ArrayBuffer | null>} null when there is none */
function fetchSnapshot(href) {
  return fetch(href)
    .then((response) => (response.ok ? response.arrayBuffer() : null))
    .catch(() => null);
}

/**
 * @param {string} base
 * @param {any} options
 */
async function boot(base, options) {
  const url = (/** @type {string} */ path) => new URL(path, base).href;
  /** @type {Promise<any> | null} */
  let forge = null;
  // node-forge is fetched only when a connection first needs TLS.
  const loadForge = () =>
    (forge ??= globalThis.forge
      ? Promise.resolve(globalThis.forge)
      : loadScript(url("forge.min.js")).then(() => globalThis.forge));
  /** @type {Promise<any> | null} */
  let openssl = null;
  // OpenSSL (openssl/openssl-tls.js and its .wasm) likewise: one instance per page, shared by
  // every connection. A failed load may be retried by a later connection.
  const loadOpenSSL = () => {
    openssl ??= (globalThis.PySmtpOpenSSL ? Promise.resolve() : loadScript(url("openssl/openssl-tls.js")))
      .then(() => globalThis.PySmtpOpenSSL({ locateFile: (/** @type {string} */ file) => url(`openssl/${file}`) }));
    openssl.catch(() => (openssl = null));
    return openssl;
  };
  globalThis.PySmtpSocket.defaults = {
    proxy: options.proxy,
    rootsUrl: url("roots.pem"),
    tlsEngine: options.tlsEngine,
    forge: loadForge,
    openssl: loadOpenSSL,
  };
  // Connections the page will want: opened now, so that they are ready when Python is.
  for (const target of [].concat(options.preconnect ?? [])) {
    const { host = "localhost", port, ...socketOptions } = target;
    const secure = !!socketOptions.useSecureTransport;
    globalThis.PySmtpSocket.preconnect(host, port ?? (secure ? 465 : 25), { ...socketOptions, useSecureTransport: secure });
  }

  let pyodide = options.pyodide;
  // The wheel is fetched while Python boots (it is not needed when the snapshot has it).
  /** @type {Promise<ArrayBuffer> | null} */
  let wheel = null;
  const fetchWheel = () =>
    (wheel ??= fetch(url(WHEEL)).then((response) => {
      if (!response.ok) throw new Error(`pysmtp-wasm: could not load ${WHEEL}: HTTP ${response.status}`);
      return response.arrayBuffer();
    }));
  if (!pyodide) {
    // A memory snapshot (`./build.sh snapshot`) boots Python with pysmtp_wasm already imported;
    // without one, or if it fails, the ordinary boot.
    const snapshot = options.snapshot === false || !SNAPSHOT ? null : fetchSnapshot(url(SNAPSHOT));
    if (!snapshot) fetchWheel().catch(noop); // awaited below; a failure is reported there
    if (typeof globalThis.loadPyodide !== "function") await loadScript(url("pyodide/pyodide.js"));
    const config = { indexURL: url("pyodide/"), ...(options.pyodideOptions || {}) };
    const image = snapshot && (await snapshot);
    if (image) pyodide = await globalThis.loadPyodide({ ...config, _loadSnapshot: image }).catch(() => null);
    pyodide ??= await globalThis.loadPyodide(config);
    // User Timing marks: how long Pyodide took, and how long our part after it (bench/).
    performance.mark("pysmtp-wasm:pyodide-booted");
  }
  if (!pyodide.runPython("'pysmtp_wasm._jsapi' in __import__('sys').modules")) {
    // Our wheel is pure Python: unpacking it into site-packages is all it takes to install.
    // (pyodide.loadPackage(url) does the same, but its first use imports Pyodide's package
    // machinery: 150 ms of a cold start, where this takes under 20; bench/README.md.)
    const sitePackages = pyodide.runPython("__import__('site').getsitepackages()[0]");
    pyodide.unpackArchive(await fetchWheel(), "wheel", { extractDir: sitePackages });
  }
  const api = pyodide.pyimport("pysmtp_wasm._jsapi");
  performance.mark("pysmtp-wasm:loaded");
  return {
    SmtpClient: makeSmtpClient(api),
    pyodide,
    /** Objects alive at the JS/Python boundary (for leak checks). */
    stats: () => ({ ...api.counters(), jsClients: liveClients }),
  };
}

const PySmtp = {
  version: VERSION,
  /**
   * Boot Pyodide and pysmtp-wasm (once per page; later calls return the same promise).
   * @param {{proxy?: string | ((host: string, port: number) => string), baseURL?: string,
   *          tlsEngine?: "auto" | "openssl" | "forge", pyodide?: any, pyodideOptions?: object,
   *          snapshot?: boolean, preconnect?: object | object[], worker?: boolean}} [options]
   *   snapshot: false never uses dist/pyodide/pysmtp-snapshot.bin (default: use it when
   *   `./build.sh snapshot` made one)
   *   preconnect: {host, port, useSecureTransport, ca, proxy, tlsEngine} (or a list of them): open
   *   these connections while Python boots; the first SmtpClient to the same target with the
   *   same options takes its connection over (the greeting, and the TLS handshake, already done)
   *   worker: true runs Pyodide, the engine, the sockets and TLS in one dedicated Worker
   *   (pysmtp-wasm-worker.js) shared by every client of the page; the SmtpClient is the same,
   *   its calls and callbacks forwarded by messages (web/src/remote.js)
   */
  load(options = {}) {
    if (!booting) {
      const base = new URL(options.baseURL ?? ".", SCRIPT_URL).href;
      booting = options.worker ? PySmtpRemote.boot(base, options, () => (booting = null)) : boot(base, options);
      booting.catch(() => {
        booting = null; // a failed boot may be retried
      });
    }
    return booting;
  },
  Socket: globalThis.PySmtpSocket,
};
