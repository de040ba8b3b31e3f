// pysmtp-wasm socket: a TCP-like byte stream for the browser (emailjs-tcp-socket's shape),
// tunnelled through a websockify WebSocket-to-TCP proxy, with optional TLS done in JavaScript
// by one of the engines of tls/ (implicit TLS from the first byte, or STARTTLS via
// upgradeToSecure()).
//
// One engine per connection, never a second one by itself: tlsEngine "auto" (the default) and
// "openssl" are TLS 1.2/1.3 (OpenSSL), "forge" is TLS 1.0/1.1 (node-forge), for a legacy server
// the page names. (A refusal of TLS 1.2/1.3 is not authenticated: anyone on the path can forge
// one, so it is never a reason to try an older version.) Until the handshake and the
// verification succeeded, nothing the application sends goes out: it is queued, and dropped if
// TLS fails.
//
// Failures say what happened as far as the browser lets us see (proxy-diagnosis.js): a proxy
// that opened then closed before any byte is told apart from a server that hung up.

import { claim, isParked, nothingParked, park } from "./park.js";
import { HIGH_WATER, LOW_WATER } from "./protocol.js";
import { diagnoseProxy, lostConnection, proxyProblem, proxyRefusal } from "./proxy-diagnosis.js";
import { ENGINE_FOR, engines as ENGINES, caProblem, makeError, nameProblem } from "./tls/index.js";

/** WebSocket has no drain event: poll bufferedAmount this often while someone waits. */
const DRAIN_POLL_MS = 4;
/** After close(), wait at most this long for the WebSocket's close event. */
const CLOSE_GRACE_MS = 2000;
const WS_CONNECTING = 0;
const WS_OPEN = 1;

/**
 * Ciphertext kept while the TLS engine loads (nothing legitimate comes before our
 * ClientHello, which waits for the engine): past this the server is not speaking TLS, or
 * something on the path is injecting, and the connection fails (TLSError) instead of the
 * page's memory growing without bound.
 */
const CIPHER_IN_LIMIT = 64 * 1024;
/**
 * The most handed to WebSocket.send at once. Firefox and WebKit send each send() as one
 * frame, and a proxy bounds its frames (pysmtp-wasm-proxy's --max-frame: 1 MiB by default;
 * websockify's buffers): a larger send() is split into messages of this size (the proxy
 * relays bytes, not messages). Chromium splits large messages into frames by itself.
 */
const WS_PIECE = 64 * 1024;

/**
 * Hand bytes to an open WebSocket in pieces of at most WS_PIECE (each piece is copied by
 * send(); its bufferedAmount counts them all).
 * @param {WebSocket} ws @param {Uint8Array} u8
 */
function wsSend(ws, u8) {
  if (u8.length <= WS_PIECE) {
    ws.send(u8);
    return;
  }
  for (let at = 0; at < u8.length; at += WS_PIECE) ws.send(u8.subarray(at, at + WS_PIECE));
}

const noop = () => {};

/**
 * @param {unknown} data
 * @returns {Uint8Array | null} a view on the same memory, or null when not binary data
 */
function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const tag = Object.prototype.toString.call(data);
  if (tag === "[object ArrayBuffer]" || tag === "[object SharedArrayBuffer]") {
    return new Uint8Array(/** @type {ArrayBuffer} */ (data));
  }
  return null;
}

// -- preconnected sockets ----------------------------------------------------------------------

/**
 * What makes two opens the same connection: the target, and every option that changes what
 * is on the wire or what is trusted (after PySmtpSocket.defaults fill in what is missing).
 * @param {string} host @param {number} port @param {PySmtpSocketOptions} options
 */
function targetKey(host, port, options) {
  /** @type {any} */
  const opts = options || {};
  const defaults = PySmtpSocket.defaults || {};
  let proxy = opts.proxy ?? defaults.proxy;
  if (typeof proxy === "function") proxy = proxy(host, Number(port));
  return JSON.stringify([
    host,
    Number(port),
    !!opts.useSecureTransport,
    opts.ca == null ? null : [].concat(opts.ca),
    proxy == null ? null : String(proxy),
    opts.tlsEngine ?? defaults.tlsEngine ?? "auto",
    opts.servername ?? null,
    opts.rootsUrl ?? defaults.rootsUrl ?? null,
  ]);
}

// -- the socket ------------------------------------------------------------------------------

/**
 * @typedef {object} PySmtpSocketOptions
 * @property {string | ((host: string, port: number) => string)} proxy WebSocket URL of a
 *   websockify proxy for this target (required)
 * @property {boolean} [useSecureTransport] implicit TLS from the first byte
 * @property {string | string[]} [ca] PEM certificate(s): trust exactly these
 * @property {string} [servername] the name to verify and send as SNI (default: host)
 * @property {string} [rootsUrl] URL of a PEM bundle used only when no `ca` is given
 * @property {"auto" | "openssl" | "forge"} [tlsEngine] the TLS engine: "auto" (the default) and
 *   "openssl" are OpenSSL (TLS 1.2/1.3), "forge" is node-forge (TLS 1.0/1.1); never both
 * @property {any} [forge] the node-forge namespace, or a function returning (a promise of) it
 *   (default globalThis.forge)
 * @property {any} [openssl] the OpenSSL module (web/openssl/), or a function returning (a
 *   promise of) it (default: made once from globalThis.PySmtpOpenSSL, which openssl-tls.js defines)
 */

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
   * @param {PySmtpSocketOptions} options
   * @returns {PySmtpSocket}
   */
  static open(host, port, options) {
    const waiting = nothingParked() ? null : claim(targetKey(host, port, options));
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
   * @param {PySmtpSocketOptions} options
   */
  static preconnect(host, port, options) {
    const key = targetKey(host, port, options);
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
    const defaults = PySmtpSocket.defaults || {};
    const opts = options || {};
    const hostProblem = nameProblem(host);
    if (hostProblem) return `host ${JSON.stringify(host)} ${hostProblem}`;
    const portNumber = Number(port);
    if (port == null || port === "" || !Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) {
      return `port must be a whole number from 1 to 65535, not ${JSON.stringify(port) ?? String(port)}`;
    }
    if (opts.servername != null) {
      const problem = nameProblem(opts.servername);
      if (problem) return `option servername ${JSON.stringify(opts.servername)} ${problem}`;
    }
    const proxy = proxyProblem(opts.proxy ?? defaults.proxy);
    if (proxy) return proxy;
    const engine = opts.tlsEngine ?? defaults.tlsEngine ?? "auto";
    if (typeof engine !== "string" || !Object.prototype.hasOwnProperty.call(ENGINE_FOR, engine)) {
      const names = Object.keys(ENGINE_FOR).map((k) => JSON.stringify(k)).join(", ");
      return `option tlsEngine must be one of ${names}, not ${JSON.stringify(engine) ?? String(engine)}`;
    }
    if (opts.ca != null) {
      const problem = caProblem(opts.ca);
      if (problem) return `option ca ${problem}`;
    }
    return null;
  }

  /**
   * @param {string} host
   * @param {number} port
   * @param {PySmtpSocketOptions} options
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

    /** The proxy's WebSocket URL. */
    this.proxyUrl = /** @type {string} */ (opts.proxy);
    /** The TLS engine of this connection (one: never another by itself). */
    this._engineName = ENGINE_FOR[opts.tlsEngine == null ? "auto" : opts.tlsEngine];

    // Trust options (checked now; parsed when TLS starts, since the engines load lazily)
    /** @type {string[] | null} */
    this._ca = opts.ca == null ? null : [].concat(opts.ca);
    this._servername = opts.servername ? String(opts.servername) : host;
    this._rootsUrl = opts.rootsUrl ? String(opts.rootsUrl) : null;
    this._forgeOption = opts.forge;
    this._opensslOption = opts.openssl;

    // State
    this._done = false; // onclose has fired (or is firing)
    this._closing = false; // close() was called
    this._wsOpened = false;
    this._gotData = false;
    /** @type {"none" | "preparing" | "handshaking" | "active"} */
    this._tlsState = "none";
    this._implicit = !!opts.useSecureTransport;
    /** @type {any} the engine's prepared state (library, trust) for the current attempt */
    this._prepared = null;
    /** @type {any} the engine's session */
    this._session = null;
    /** @type {Uint8Array[]} plaintext queued before the WebSocket opened (sent in clear) */
    this._queuePlain = [];
    /** @type {Uint8Array[]} application data waiting for TLS */
    this._queueSecure = [];
    this._queuedBytes = 0;
    /** @type {Uint8Array[]} ciphertext received before the TLS session exists */
    this._cipherIn = [];
    this._cipherInBytes = 0;
    this._needDrain = false;
    this._handshakeStart = 0;
    this._drainTimer = null;
    this._closeTimer = null;
    this._drainTick = this._drainTick.bind(this);

    this._ws = this._connectWs();
    if (this._implicit) this._startTls();
  }

  /** Bytes not yet handed to the network: the WebSocket's buffer plus what waits for TLS. */
  get bufferedAmount() {
    const session = this._session;
    return (this._ws ? this._ws.bufferedAmount : 0) + this._queuedBytes + (session ? session.pending : 0);
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
      if (this._tlsState === "active") {
        this._session.send(u8);
      } else if (this._tlsState !== "none") {
        this._queueSecure.push(u8.slice()); // the caller may reuse its buffer
        this._queuedBytes += u8.length;
      } else {
        if (this._ws.readyState === WS_OPEN) {
          wsSend(this._ws, u8);
        } else {
          this._queuePlain.push(u8.slice());
          this._queuedBytes += u8.length;
        }
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
    if (this._done || this._closing || this._tlsState !== "none") return;
    this._startTls();
  }

  /** Close (with a TLS close_notify when the engine sends one); onclose follows, exactly once. */
  close() {
    if (this._done || this._closing) return;
    this._closing = true;
    this.readyState = "closing";
    this._needDrain = false;
    this._dropQueues();
    if (this._session && this._session.busy) {
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
    if (this._session) this._session.close(); // close_notify (forge), written before the WebSocket close
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
    const handler = this["on" + type];
    if (typeof handler !== "function") return;
    try {
      Reflect.apply(handler, this, [event]);
    } catch (error) {
      console.error(`PySmtpSocket ${this._hostPort}: the on${type} handler threw:`, error);
    }
  }

  _dropQueues() {
    this._queuePlain = [];
    this._queueSecure = [];
    this._queuedBytes = 0;
    this._cipherIn = [];
    this._cipherInBytes = 0;
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
    if (this._session) this._session.close();
    this._prepared?.release?.(); // prepared, never connected
    this._prepared = null;
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
    if (!this._implicit && this._tlsState === "none") {
      this.readyState = "open";
      const queued = this._queuePlain;
      this._queuePlain = [];
      for (const u8 of queued) {
        this._queuedBytes -= u8.length;
        wsSend(this._ws, u8);
      }
      this._emit("open", { type: "open" });
    }
    this._maybeHandshake();
  }

  /** @param {MessageEvent} event */
  _onWsMessage(event) {
    if (this._done || this._closing) return;
    let data = event.data;
    if (typeof data === "string") data = new TextEncoder().encode(data).buffer; // not from websockify
    this._gotData = true;
    if (this._tlsState === "none") {
      this._emit("data", { type: "data", data });
      return;
    }
    const u8 = new Uint8Array(data);
    if (this._session) {
      this._session.receive(u8);
      return;
    }
    // The engine is still loading: keep for the handshake, within a bound.
    this._cipherInBytes += u8.length;
    if (this._cipherInBytes > CIPHER_IN_LIMIT) {
      this._finish(
        this._error(
          "TLSError",
          `TLS with ${this._hostPort} failed: the server sent more than ${CIPHER_IN_LIMIT / 1024} KiB before the TLS ` +
            "handshake began (a TLS server sends nothing before the client's hello): it does not speak TLS here, or " +
            "something on the path is injecting data",
        ),
      );
      return;
    }
    this._cipherIn.push(u8);
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
    const proxy = `the proxy at ${this.proxyUrl}`;
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
      // websockify: "Failed to connect to downstream server". It chooses the server (a fixed
      // target, or the one its token names), not the page's host and port: do not name those.
      error = this._error(
        "ConnectionError",
        /Failed to connect/i.test(reason) || !this._gotData
          ? `${proxy} could not connect to its SMTP server (${closeInfo}): check that the server the proxy ` +
              "reaches for this URL is up; the proxy's log names the address it tried"
          : `${proxy} reported an error on the connection to its SMTP server (${closeInfo}); see the proxy's log`,
        extra,
      );
    } else if (this._tlsState === "handshaking" && this._session) {
      const ended = this._session.end();
      if (ended) {
        ended.message += ` (${closeInfo})`;
        this._tlsFailed(ended);
        return;
      }
    } else if (this._tlsState === "preparing") {
      error = this._error(
        "ConnectionError",
        `the connection to ${this._hostPort} closed before TLS could start (${closeInfo})`,
        extra,
      );
    } else if (!this._gotData) {
      error = this._error(
        "ConnectionError",
        `${proxy} accepted the WebSocket, then closed it before the SMTP server sent a byte (${closeInfo}): the server ` +
          "it reached closed the connection at once, or the proxy dropped it; the proxy's log says which",
        extra,
      );
    } else if (code !== 1000 && code !== 1005) {
      if (this._session) this._session.end();
      error = this._error("ConnectionError", lostConnection(this.proxyUrl, code, closeInfo), extra);
    } else if (this._session) {
      this._session.end();
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

  // -- TLS -----------------------------------------------------------------------------------

  get _engine() {
    return ENGINES[this._engineName];
  }

  _startTls() {
    this._tlsState = "preparing";
    this._prepare();
  }

  /** Load the current engine and its trust anchors; then handshake when the network is ready. */
  _prepare() {
    const engine = this._engine;
    this._prepared = null;
    engine.prepare(this._context()).then(
      (/** @type {any} */ prepared) => {
        if (this._done || this._closing) {
          prepared?.release?.(); // never connected: let go of its trust context
          return;
        }
        this._prepared = prepared;
        this._maybeHandshake();
      },
      (/** @type {any} */ error) => {
        if (this._done || this._closing) return;
        this._finish(
          error && error.name === "TLSError"
            ? error
            : this._error("TLSError", `cannot start TLS with ${this._hostPort} (${engine.name}): ${error && error.message}`),
        );
      },
    );
  }

  /** What an engine needs to know about this connection. */
  _context() {
    return {
      hostPort: this._hostPort,
      servername: this._servername,
      ca: this._ca,
      rootsUrl: this._rootsUrl,
      forge: this._forgeOption,
      openssl: this._opensslOption,
      error: (/** @type {any} */ name, /** @type {string} */ message, /** @type {object} */ extra) =>
        this._error(name, message, extra),
    };
  }

  _maybeHandshake() {
    if (this._done || this._closing || this._tlsState !== "preparing" || !this._prepared) return;
    if (this._ws.readyState !== WS_OPEN) return;
    const ws = this._ws;
    this._tlsState = "handshaking";
    this._handshakeStart = performance.now();
    const current = () => !this._done && this._ws === ws;
    const prepared = this._prepared;
    this._prepared = null; // the session's now (it lets go of its trust context when it ends)
    this._session = this._engine.connect(prepared, this._context(), {
      write: (/** @type {Uint8Array} */ u8) => {
        if (current() && ws.readyState === WS_OPEN) wsSend(ws, u8);
      },
      data: (/** @type {Uint8Array} */ u8) => {
        if (current() && !this._closing) this._emit("data", { type: "data", data: u8.buffer });
      },
      secure: (/** @type {{engine: string, protocol: string, cipher?: string}} */ info) => {
        if (current() && !this._closing) this._onSecure(info);
      },
      fail: (/** @type {Error} */ error) => {
        if (current() && !this._closing) this._tlsFailed(error);
      },
      closed: () => {
        // The peer's close_notify.
        if (current() && !this._closing) this._finish(null);
      },
    });
    const pending = this._cipherIn;
    this._cipherIn = [];
    this._cipherInBytes = 0;
    for (const u8 of pending) {
      if (this._done || !this._session) break;
      this._session.receive(u8);
    }
  }

  /** @param {{engine: string, protocol: string, cipher?: string}} info */
  _onSecure(info) {
    this._tlsState = "active";
    this.ssl = true;
    this.tls = {
      engine: info.engine,
      protocol: info.protocol,
      cipher: info.cipher ?? null,
      handshakeMs: performance.now() - this._handshakeStart, // ClientHello to verified
    };
    const queued = this._queueSecure;
    this._queueSecure = [];
    for (const u8 of queued) {
      this._queuedBytes -= u8.length;
      if (!this._done) this._session.send(u8);
    }
    if (this._done) return;
    if (this.readyState === "connecting") {
      this.readyState = "open";
      this._emit("open", { type: "open", tls: this.tls });
    } else {
      this._emit("secure", { type: "secure", tls: this.tls });
    }
  }

  /** The handshake (or the connection) failed: the end (never another engine). @param {any} error */
  _tlsFailed(error) {
    this._finish(error);
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
