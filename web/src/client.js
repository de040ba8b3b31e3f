// pysmtp-wasm client: the in-page SmtpClient class, emailjs-smtp-client's API, whose work is
// done by the Python engine (pysmtp_wasm/_jsapi.py JsClient, one per client). loader.js makes
// it once Pyodide is up; worker.js uses it inside the Worker.

import { CALLBACKS } from "./protocol.js";

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

/** JS clients holding a Python side (for leak checks). */
let liveClients = 0;

/** @returns {number} JS clients holding a Python side now */
export function liveClientCount() {
  return liveClients;
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
export function makeSmtpClient(api) {
  /** emailjs-smtp-client's SmtpClient, run by the Python engine. */
  class SmtpClient {
    /**
     * @param {string} [host] default "localhost"
     * @param {number} [port] default 465 with useSecureTransport, else 25
     * @param {object} [options] the seed's options, plus `proxy`
     */
    constructor(host = "localhost", port = undefined, options = {}) {
      /** @type {(...args: any[]) => void} */ this.onidle = noop;
      /** @type {(...args: any[]) => void} */ this.onready = noop;
      /** @type {(...args: any[]) => void} */ this.ondone = noop;
      /** @type {(...args: any[]) => void} */ this.onerror = noop;
      /** @type {(...args: any[]) => void} */ this.onclose = noop;
      /** @type {(...args: any[]) => void} */ this.ondrain = noop;
      for (const name of CALLBACKS) this[name] = noop; // (the callbacks of pysmtp_wasm/boundary.json)
      /** @type {(direction: string, text: string) => void} */
      this._onlog = noop;
      /** @type {any} */
      this._py = null;
      /** @type {object[]} lastResults once the Python side is gone */
      this._lastResults = [];
      /** What sendMail needs to connect again after the connection closed. */
      this._args = [host, port ?? null, options];
      /** @type {((value?: any) => void)[]} sendMail calls waiting for the current connection to close */
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
