// pysmtp-wasm socket: a TCP-like byte stream for the browser (emailjs-tcp-socket's shape),
// tunnelled through a websockify WebSocket-to-TCP proxy, with optional TLS done in JavaScript
// by one of the engines of tls/ (implicit TLS from the first byte, or STARTTLS via
// upgradeToSecure()).
//
// One engine per connection, never a second one by itself: tlsEngine "auto" (the default) and
// "openssl" are TLS 1.2/1.3 (OpenSSL), "forge" is TLS 1.0/1.1 (node-forge), for a legacy server
// the page names. (A refusal of TLS 1.2/1.3 is not authenticated: anyone on the path can forge
// one, so it is never a reason to try an older version.) The TLS layer is socket-tls.js.
//
// Failures say what happened as far as the browser lets us see (proxy-diagnosis.js): a proxy
// that opened then closed before any byte is told apart from a server that hung up.

import { claim, isParked, nothingParked, park } from "./park.js";
import { HIGH_WATER, LOW_WATER } from "./protocol.js";
import { closedBeforeData, diagnoseProxy, lostConnection, proxyRefusal, serverUnreachable } from "./proxy-diagnosis.js";
import { asBytes, socketProblem, targetKey } from "./socket-options.js";
import { SocketTls } from "./socket-tls.js";
import { engines as ENGINES, makeError } from "./tls/index.js";
import { WS_CONNECTING, WS_OPEN, wsSend } from "./websocket.js";

/** WebSocket has no drain event: poll bufferedAmount this often while someone waits. */
const DRAIN_POLL_MS = 4;
/** After close(), wait at most this long for the WebSocket's close event. */
const CLOSE_GRACE_MS = 2000;
/**
 * Writes up to this size are gathered until the current task's microtasks have run, then go
 * out together: a message's text and its end-of-data (two send() calls of the client, one
 * turn of the page) as one WebSocket message and one TLS record, not two. Larger ones go at
 * once, after what was gathered.
 */
const GATHER_MAX = 16 * 1024;
/**
 * onreceive and its answer carry segments up to this size as binary strings (a char a byte):
 * a string crosses the FFI with the call itself, where a buffer needs one more call to be
 * read on the other side (to_bytes() in, assign() out). Larger ones cross as buffers.
 * (pysmtp_wasm/_browser.py TEXT_MAX is the same.)
 */
const TEXT_MAX = 256;
const noop = () => {};

/** The bytes as a binary string, a char a byte. @param {ArrayBuffer | Uint8Array} data */
function binaryString(data) {
  return String.fromCharCode.apply(null, /** @type {any} */ (data instanceof Uint8Array ? data : new Uint8Array(data)));
}

// -- the socket ------------------------------------------------------------------------------

/**
 * A TCP-like socket over a websockify WebSocket, with TLS in JavaScript.
 * Events are plain assignable properties called with one event object.
 */
export class PySmtpSocket {
  /**
   * A socket to host:port. When PySmtpSocket.preconnect opened one to the same target with
   * the same options, that socket is handed over instead: what it received while it waited
   * (the greeting, the TLS handshake's outcome, or its failure) comes to the handlers set
   * right after this call, in order, before anything newer.
   * @param {string} host
   * @param {number} port
   * @param {import("./socket-options.js").PySmtpSocketOptions} options
   * @returns {PySmtpSocket}
   */
  static open(host, port, options) {
    const waiting = nothingParked() ? null : claim(targetKey(host, port, options, PySmtpSocket.defaults || {}));
    return /** @type {PySmtpSocket | null} */ (waiting) ?? new PySmtpSocket(host, port, options);
  }

  /**
   * Open a socket now, for a client that will come later (while Python boots): the WebSocket,
   * the TCP connection, the server's greeting and, with useSecureTransport, the TLS handshake
   * happen meanwhile. The first PySmtpSocket.open to the same target with the same options
   * gets it; unclaimed, it is closed after PARK_MS. A second preconnect to a target that
   * already has a socket waiting does nothing.
   * @param {string} host
   * @param {number} port
   * @param {import("./socket-options.js").PySmtpSocketOptions} options
   */
  static preconnect(host, port, options) {
    const key = targetKey(host, port, options, PySmtpSocket.defaults || {});
    if (!isParked(key)) park(key, /** @type {any} */ (new PySmtpSocket(host, port, options)), PySmtpSocket.PARK_MS);
  }

  /**
   * What is wrong with these arguments, in a user's words, with the option names an SmtpClient
   * takes (null: nothing). The constructor throws it as a TypeError; an SmtpClient asks when it
   * is made, so that a configuration error is an SmtpUsageError there, not a failure at
   * connect(). `options.proxy` must be the URL (call a proxy function first); the missing
   * proxy and tlsEngine come from PySmtpSocket.defaults.
   * @param {unknown} host @param {unknown} port @param {any} options
   * @returns {string | null}
   */
  static check(host, port, options) {
    return socketProblem(host, port, options, PySmtpSocket.defaults || {});
  }

  /**
   * @param {string} host
   * @param {number} port
   * @param {import("./socket-options.js").PySmtpSocketOptions} options
   */
  constructor(host, port, options) {
    const defaults = PySmtpSocket.defaults || {};
    /** @type {any} */
    const opts = Object.assign({}, options || {});
    for (const key of ["proxy", "rootsUrl", "forge", "openssl", "tlsEngine"]) {
      if (opts[key] == null && defaults[key] != null) opts[key] = defaults[key];
    }
    if (typeof opts.proxy === "function") opts.proxy = opts.proxy(host, Number(port));
    const problem = PySmtpSocket.check(host, port, opts);
    if (problem) throw new TypeError(problem);
    const portNumber = Number(port);
    /** @type {string} */
    this.host = host;
    /** @type {number} */
    this.port = portNumber;
    /** true once TLS is active (handshake done, certificate verified) */
    this.ssl = false;
    /**
     * Once TLS is active: the engine, "TLS 1.3", the cipher suite (OpenSSL), and the handshake's
     * time from the ClientHello to the verified certificate.
     * @type {{engine: string, protocol: string, cipher: string | null, handshakeMs: number} | null}
     */
    this.tls = null;
    /** @type {"connecting" | "open" | "closing" | "closed"} */
    this.readyState = "connecting";

    /** @type {(event: {type: "open"}) => void} */
    this.onopen = noop;
    /** @type {(event: {type: "data", data: ArrayBuffer}) => void} */
    this.ondata = noop;
    /** @type {(event: {type: "secure"}) => void} */
    this.onsecure = noop;
    /** @type {(event: {type: "drain"}) => void} */
    this.ondrain = noop;
    /** @type {(event: {type: "error", data: Error}) => void} */
    this.onerror = noop;
    /** @type {(event: {type: "close"}) => void} */
    this.onclose = noop;
    /**
     * Instead of ondata, for the Python client (pysmtp_wasm/_browser.py): called with the bytes
     * alone, it returns what to write in answer (sent at once) or nothing. One call across the
     * FFI per received segment, where ondata + send are an event object, its lookup and a
     * call for each write.
     * Segments of up to TEXT_MAX bytes come as a binary string (a char a byte), larger ones as
     * the buffer; the answer may be either too.
     * @type {((data: string | ArrayBuffer | Uint8Array) => string | Uint8Array | null | undefined) | null}
     */
    this.onreceive = null;

    /** The proxy's WebSocket URL. */
    this.proxyUrl = /** @type {string} */ (opts.proxy);
    /** TLS: the engine, the trust options, the session (none until TLS starts) */
    this._tls = new SocketTls(this, opts, host);

    // State
    this._done = false; // onclose has fired (or is firing)
    this._closing = false; // close() was called
    this._wsOpened = false;
    this._gotData = false;
    this._implicit = !!opts.useSecureTransport;
    /** @type {Uint8Array[]} plaintext queued before the WebSocket opened (sent in clear) */
    this._queuePlain = [];
    this._queuedBytes = 0;
    /** bytes written this turn, sent when its microtasks have run (_gather) */
    this._gathered = new Uint8Array(0);
    this._gatheredBytes = 0;
    /** a binary string's bytes, to send (sendText) */
    this._text = new Uint8Array(0);
    this._sendGathered = this._sendGathered.bind(this);
    this._needDrain = false;
    this._drainTimer = null;
    this._closeTimer = null;
    this._drainTick = this._drainTick.bind(this);

    this._ws = this._connectWs();
    if (this._implicit) this._tls.start();
  }

  /** Bytes not yet handed to the network: the WebSocket's buffer plus what waits for TLS. */
  get bufferedAmount() {
    return (this._ws ? this._ws.bufferedAmount : 0) + this._queuedBytes + this._gatheredBytes + this._tls.pending;
  }

  /**
   * Send bytes (plaintext; encrypted when TLS is active). Until TLS is up they are queued.
   * They are copied (or handed to the WebSocket, which copies them) before this returns, so
   * the caller may reuse its buffer at once.
   * @param {ArrayBuffer | ArrayBufferView} data
   * @returns {boolean} false when the buffer is full (wait for ondrain), or after close
   */
  send(data) {
    const u8 = asBytes(data);
    if (!u8) throw new TypeError("PySmtpSocket.send: data must be an ArrayBuffer or a Uint8Array");
    if (this._done || this._closing) return false;
    if (u8.length) {
      if (this._tls.state === "none" && this._ws.readyState !== WS_OPEN) {
        this._queuePlain.push(u8.slice());
        this._queuedBytes += u8.length;
      } else if (this._gatheredBytes + u8.length <= GATHER_MAX) {
        this._gather(u8);
      } else {
        this._sendGathered();
        this._transmit(u8);
      }
    }
    if (this._done) return false; // a TLS failure inside send
    if (this.bufferedAmount >= HIGH_WATER) {
      this._needDrain = true;
      this._armDrain();
      return false;
    }
    return true;
  }

  /**
   * STARTTLS: start a TLS client handshake over this connection. onsecure follows once the
   * handshake and the certificate verification succeeded; onerror and onclose otherwise.
   * From now on nothing is sent in plaintext, and everything received goes to TLS.
   */
  upgradeToSecure() {
    if (this._done || this._closing || this._tls.state !== "none") return;
    this._sendGathered(); // (in SMTP there is none: STARTTLS's reply was the last word)
    this._tls.start();
  }

  /** Close (with a TLS close_notify when the engine sends one); onclose follows, exactly once. */
  close() {
    if (this._done || this._closing) return;
    this._sendGathered(); // what was written before close() goes out before it
    this._closing = true;
    this.readyState = "closing";
    this._needDrain = false;
    this._dropQueues();
    if (this._tls.busy) {
      // Called from one of our events while the engine processes input: finish outside it.
      queueMicrotask(() => this._closeNow());
    } else {
      this._closeNow();
    }
  }

  // -- internals ---------------------------------------------------------------------------

  get _hostPort() {
    return this.host.includes(":") ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  _connectWs() {
    let ws;
    try {
      ws = new WebSocket(this.proxyUrl, ["binary"]);
    } catch (error) {
      const name = error && error.name;
      const hint =
        name === "SecurityError"
          ? " (a page served over https:// may use only wss://, except to this machine; or the port is one browsers never connect to)"
          : "";
      throw new TypeError(`the browser refused to open a WebSocket to the proxy ${this.proxyUrl}: ${name}: ${error && error.message}${hint}`);
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._onWsOpen();
    ws.onmessage = (event) => this._onWsMessage(event);
    ws.onerror = () => {}; // always followed by close; the details are in the close event
    ws.onclose = (event) => this._onWsClose(event);
    return ws;
  }

  _closeNow() {
    if (this._done) return;
    this._tls.close(); // close_notify (forge), written before the WebSocket close
    const ws = this._ws;
    if (ws.readyState === WS_CONNECTING || ws.readyState === WS_OPEN) {
      try {
        ws.close(1000);
      } catch (_) {
        /* already closing */
      }
      this._closeTimer = setTimeout(() => this._finish(null), CLOSE_GRACE_MS);
    } else {
      this._finish(null);
    }
  }

  /** @param {string} type @param {object} event */
  _emit(type, event) {
    if (type === "data" && this.onreceive) {
      this._receive(/** @type {{data: ArrayBuffer}} */ (event).data);
      return;
    }
    const handler = this["on" + type];
    if (typeof handler !== "function") return;
    try {
      Reflect.apply(handler, this, [event]);
    } catch (error) {
      console.error(`PySmtpSocket ${this._hostPort}: the on${type} handler threw:`, error);
    }
  }

  /** Received bytes to onreceive, and what it returns to the network. @param {ArrayBuffer | Uint8Array} data */
  _receive(data) {
    let answer;
    try {
      answer = /** @type {Function} */ (this.onreceive)(data.byteLength <= TEXT_MAX ? binaryString(data) : data);
    } catch (error) {
      console.error(`PySmtpSocket ${this._hostPort}: the onreceive handler threw:`, error);
      return;
    }
    if (!answer) return;
    if (typeof answer === "string") this.sendText(answer);
    else this.send(answer);
  }

  /**
   * send() of a binary string's bytes (a char a byte; chars above 255 are refused).
   * @param {string} text
   * @returns {boolean} as send()
   */
  sendText(text) {
    const n = text.length;
    if (n > this._text.length) this._text = new Uint8Array(Math.max(n, TEXT_MAX));
    const u8 = this._text.subarray(0, n);
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c > 255) throw new TypeError("PySmtpSocket.sendText: not a binary string (a char above 255)");
      u8[i] = c;
    }
    return this.send(u8);
  }

  /**
   * Keep bytes to send with the others of this turn (a copy: the caller may reuse its buffer).
   * @param {Uint8Array} u8
   */
  _gather(u8) {
    if (this._gathered.length === 0) this._gathered = new Uint8Array(GATHER_MAX); // (never more: see send)
    this._gathered.set(u8, this._gatheredBytes);
    if (this._gatheredBytes === 0) queueMicrotask(this._sendGathered);
    this._gatheredBytes += u8.length;
  }

  /** Send what this turn gathered (at the end of its microtasks, or before anything it must precede). */
  _sendGathered() {
    const n = this._gatheredBytes;
    if (n === 0) return;
    this._gatheredBytes = 0;
    if (this._done || this._closing) return;
    this._transmit(this._gathered.subarray(0, n));
  }

  /** Bytes to the network now: through TLS when it is on, else to the open WebSocket. @param {Uint8Array} u8 */
  _transmit(u8) {
    if (this._tls.state !== "none") this._tls.send(u8);
    else wsSend(this._ws, u8);
  }

  _dropQueues() {
    this._queuePlain = [];
    this._queuedBytes = 0;
    this._gatheredBytes = 0;
    this._tls.dropQueues();
  }

  /** The end: onerror (if any) then onclose, exactly once. @param {Error | null} error */
  _finish(error) {
    if (this._done) return;
    this._done = true;
    this._needDrain = false;
    if (this._drainTimer !== null) clearTimeout(this._drainTimer);
    if (this._closeTimer !== null) clearTimeout(this._closeTimer);
    this._drainTimer = this._closeTimer = null;
    this._dropQueues();
    this._tls.close();
    const ws = this._ws;
    if (ws && (ws.readyState === WS_CONNECTING || ws.readyState === WS_OPEN)) {
      try {
        ws.close(1000);
      } catch (_) {
        /* ignore */
      }
    }
    this.readyState = "closed";
    if (error) this._emit("error", { type: "error", data: error });
    this._emit("close", { type: "close" });
  }

  /** @param {"ConnectionError" | "TLSError"} name @param {string} message @param {object} [extra] */
  _error(name, message, extra) {
    return makeError(name, message, Object.assign({ host: this.host, port: this.port }, extra || {}));
  }

  // -- drain -------------------------------------------------------------------------------

  _armDrain() {
    if (this._drainTimer === null && !this._done) this._drainTimer = setTimeout(this._drainTick, DRAIN_POLL_MS);
  }

  _drainTick() {
    this._drainTimer = null;
    if (this._done || this._closing || !this._needDrain) return;
    if (this.bufferedAmount < LOW_WATER) {
      this._needDrain = false;
      this._emit("drain", { type: "drain" });
    } else {
      this._armDrain();
    }
  }

  // -- WebSocket events --------------------------------------------------------------------

  _onWsOpen() {
    this._wsOpened = true;
    if (this._done) return;
    if (this._closing) return; // close() already asked the WebSocket to close
    if (!this._implicit && this._tls.state === "none") {
      this.readyState = "open";
      const queued = this._queuePlain;
      this._queuePlain = [];
      for (const u8 of queued) {
        this._queuedBytes -= u8.length;
        wsSend(this._ws, u8);
      }
      this._emit("open", { type: "open" });
    }
    this._tls.maybeHandshake();
  }

  /** @param {MessageEvent} event */
  _onWsMessage(event) {
    if (this._done || this._closing) return;
    let data = event.data;
    if (typeof data === "string") data = new TextEncoder().encode(data).buffer; // not from websockify
    this._gotData = true;
    if (this._tls.state === "none") {
      this._emit("data", { type: "data", data });
      return;
    }
    this._tls.receive(new Uint8Array(data));
  }

  /** @param {CloseEvent} event */
  _onWsClose(event) {
    if (this._done) return;
    if (this._closing) {
      this._finish(null);
      return;
    }
    const code = event.code;
    const reason = event.reason || "";
    const closeInfo = `WebSocket close ${code}${reason ? `: ${reason}` : ""}`;
    const extra = { closeCode: code, closeReason: reason };
    let error = null;
    // A close code other than 1006 came in a close frame: the WebSocket was accepted, even when
    // the browser fires no open before (Firefox, when the close frame follows the 101 at once).
    const accepted = this._wsOpened || code !== 1006;
    if (code >= 4000 && code <= 4999) {
      const refusal = proxyRefusal(this.proxyUrl, code, reason); // our proxy's own words
      error = this._error("ConnectionError", refusal.message, { proxyReason: refusal.proxyReason, ...extra });
    } else if (!accepted) {
      this._diagnose(closeInfo, extra); // onerror and onclose once we know more
      return;
    } else if (code === 1011) {
      error = this._error("ConnectionError", serverUnreachable(this.proxyUrl, reason, this._gotData, closeInfo), extra);
    } else if (this._tls.state === "handshaking" && this._tls.session) {
      const ended = this._tls.end();
      if (ended) {
        ended.message += ` (${closeInfo})`;
        this._finish(ended);
        return;
      }
    } else if (this._tls.state === "preparing") {
      error = this._error(
        "ConnectionError",
        `the connection to ${this._hostPort} closed before TLS could start (${closeInfo})`,
        extra,
      );
    } else if (!this._gotData) {
      error = this._error("ConnectionError", closedBeforeData(this.proxyUrl, closeInfo), extra);
    } else if (code !== 1000 && code !== 1005) {
      this._tls.end();
      error = this._error("ConnectionError", lostConnection(this.proxyUrl, code, closeInfo), extra);
    } else {
      this._tls.end();
    }
    this._finish(error);
  }

  /**
   * The WebSocket closed before it opened: the browser says only "1006". A diagnostic request
   * to the proxy's address tells "nothing answers there" from "an HTTP server answered but
   * refused the WebSocket" (and, for wss://, from "a plain ws:// server is there"); then
   * onerror and onclose.
   * @param {string} closeInfo @param {object} extra
   */
  _diagnose(closeInfo, extra) {
    const url = this.proxyUrl;
    const head = `cannot open a WebSocket to the proxy at ${url} (${closeInfo})`;
    diagnoseProxy(url).then(
      (finding) => {
        if (!this._done) this._finish(this._error("ConnectionError", `${head}: ${finding}`, extra));
      },
      () => {
        if (!this._done) this._finish(this._error("ConnectionError", `${head}; check its address, its token and its log`, extra));
      },
    );
  }

  /**
   * TLS is up (socket-tls.js): open (implicit TLS) or secure (STARTTLS).
   * @param {{engine: string, protocol: string, cipher: string | null, handshakeMs: number}} tls
   */
  _secured(tls) {
    this.ssl = true;
    this.tls = tls;
    if (this.readyState === "connecting") {
      this.readyState = "open";
      this._emit("open", { type: "open", tls });
    } else {
      this._emit("secure", { type: "secure", tls });
    }
  }
}

/** Fallbacks for options.proxy, rootsUrl, tlsEngine, forge and openssl (set by the loader). */
/** @type {any} */
PySmtpSocket.defaults = {};
/** How long a preconnected socket waits for its client before it is closed (ms). */
PySmtpSocket.PARK_MS = 30000;
PySmtpSocket.HIGH_WATER = HIGH_WATER;
PySmtpSocket.LOW_WATER = LOW_WATER;
PySmtpSocket.engines = ENGINES;

// One socket class per page, like PySmtp: when both builds are loaded (the classic script and
// the ES module), the first one's class serves both, so preconnected sockets and the defaults
// are the ones every client sees.
globalThis.PySmtpSocket ??= PySmtpSocket;
