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

/** JS clients whose Python side holds them now: a connection is live (for leak checks). */
let liveClients = 0;

/** @returns {number} JS clients with a live connection now */
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

const PLAIN_FIELDS = new Set(["from", "to", "size"]);
/** At most this many recipients cross as a call's arguments (they are bounded: 65,536 in WebKit). */
const PLAIN_MAX = 1000;

/**
 * The recipients of an envelope that can cross as plain values (a plain object with only
 * `from` (a string), `to` (a string or an array of strings) and `size` (an integer), each
 * optional, and at most PLAIN_MAX recipients), else null.
 * @param {any} envelope
 * @returns {string[] | null}
 */
function plainEnvelope(envelope) {
  if (envelope === null || typeof envelope !== "object" || Object.getPrototypeOf(envelope) !== Object.prototype) return null;
  for (const key of Object.keys(envelope)) if (!PLAIN_FIELDS.has(key)) return null;
  const { from, to, size } = envelope;
  if (from !== undefined && typeof from !== "string") return null;
  if (size !== undefined && !Number.isSafeInteger(size)) return null;
  if (to === undefined) return [];
  if (typeof to === "string") return [to];
  if (!Array.isArray(to) || to.length > PLAIN_MAX) return null;
  for (let i = 0; i < to.length; i++) if (typeof to[i] !== "string") return null;
  return to;
}

/**
 * The results of a message (ondone's, lastResults) from five plain values per recipient
 * (pysmtp_wasm/_jsapi.py: _flat_results).
 * @param {any[]} flat
 * @returns {{recipient: string, accepted: boolean, code: number, message: string, enhanced: string | null}[]}
 */
export function resultsOf(flat) {
  const results = [];
  for (let i = 0; i < flat.length; i += 5) {
    results.push({ recipient: flat[i], accepted: flat[i + 1], code: flat[i + 2], message: flat[i + 3], enhanced: flat[i + 4] ?? null });
  }
  return results;
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
      let created;
      try {
        created = api.create_client(host, port ?? null, options, this);
      } catch (error) {
        throw fromPython(error);
      }
      if (created instanceof Error) throw created;
      /**
       * The Python side (_jsapi.py JsClient), for this object's whole life: it decides what a
       * call on a closed connection does (sendMail connects again; the rest are refused).
       * @type {any}
       */
      this._py = created;
      /** @type {Record<string, Function>} the Python object's methods, by name, as _call used them */
      this._methods = Object.create(null);
    }

    /** Open the connection; onidle follows when the session is ready. */
    connect() {
      this._call("connect");
    }

    /** @param {{from?: string, to: string | string[], size?: number}} envelope */
    useEnvelope(envelope) {
      // The usual envelope (from, to, size as strings and a number) crosses as plain values:
      // converting the object with to_py costs more than the rest of the call. Anything else
      // goes as it is, and Python says what is wrong with it.
      const to = plainEnvelope(envelope);
      if (to) this._call("use_envelope_plain", envelope.from, envelope.size, ...to); // (undefined: None)
      else this._call("useEnvelope", envelope);
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
     * connection is closed (or closing), the next call opens a new one by itself (the Python side
     * decides: _jsapi.py).
     * @param {{from: string, to?: string|string[], cc?: string|string[], bcc?: string|string[],
     *          subject?: string, text?: string, html?: string, replyTo?: string,
     *          headers?: Record<string, string>,
     *          attachments?: {filename: string, content: Uint8Array|ArrayBuffer|string, contentType?: string}[]}} mail
     * @param {{onprogress?: (sent: number, total: number) => void}} [options]
     * @returns {Promise<{accepted: string[], rejected: string[], results: object[], messageId: string, size: number}>}
     */
    sendMail(mail, options = {}) {
      return new Promise((resolve, reject) => this._call("send_mail", mail, options, resolve, reject, this));
    }

    quit() {
      this._call("quit");
    }

    close() {
      this._call("close");
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
      this._py?.set_logging(this._onlog !== noop);
    }

    /** The session's state: "new", "connecting", "idle", "data", "closed", ... */
    get state() {
      return this._py.state;
    }

    /**
     * The last message's results, one per recipient (ondone's second argument; also set by
     * sendMail). Kept after the connection closed; a new connection starts empty.
     * @returns {{recipient: string, accepted: boolean, code: number, message: string, enhanced: string | null}[]}
     */
    get lastResults() {
      return resultsOf(this._py.lastResults);
    }

    /** @param {string} name @param {...any} args */
    _call(name, ...args) {
      // Each lookup of a method on the Python object makes a new proxy of the bound method
      // (freed later by the garbage collector): the ones used are looked up once per client.
      const methods = this._methods;
      let result;
      try {
        result = (methods[name] ??= this._py[name])(...args);
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
      this._notice(name);
      return this[name](...args);
    }

    /**
     * onready from Python: the refused recipients as arguments (plain strings cross the FFI
     * without a conversion; a list would need to_js and a proxy).
     * @param {...string} failed
     */
    _ready(...failed) {
      this._notice("onready");
      return this.onready(failed);
    }
    // (More than _jsapi.py's PLAIN_MAX values come as one array, through _fire.)

    /**
     * ondone from Python: the results as flat plain values, five per recipient (recipient,
     * accepted, code, message, enhanced), made into objects here: cheaper than to_js with
     * Object.fromEntries per message.
     * @param {boolean} success @param {...any} flat
     */
    _done(success, ...flat) {
      this._notice("ondone");
      return this.ondone(success, resultsOf(flat));
    }

    /**
     * Told of each callback before it runs (the loader's snapshot cache watches for the first
     * onidle here, leaving the page's own callbacks as they are).
     * @param {string} _name
     */
    _notice(_name) {}

    /** Python holds this object again (a connection is live): counted for leak checks. */
    _attached() {
      liveClients += 1;
    }

    /** Python let go of this object (after onclose): it holds nothing of the page now. */
    _released() {
      liveClients -= 1;
    }
  }
  return SmtpClient;
}
