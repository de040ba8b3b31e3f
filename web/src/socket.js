// pysmtp-wasm socket: a TCP-like byte stream for the browser (emailjs-tcp-socket's shape),
// tunnelled through a websockify WebSocket-to-TCP proxy, with optional TLS done in JavaScript
// by one of the engines of tls.js (implicit TLS from the first byte, or STARTTLS via
// upgradeToSecure()).
//
// A plain script: the build concatenates it (after tls.js, before loader.js) into one
// classic-script IIFE, so only `PySmtpSocket` is declared at the top.
//
// tlsEngine "auto" (the default) tries TLS 1.2/1.3 (OpenSSL) first. Only when the server says
// that the version is the problem — a protocol_version alert, or a ServerHello choosing TLS
// 1.0/1.1 — is node-forge (TLS 1.0/1.1, announcing TLS_FALLBACK_SCSV) tried, on a new connection. Never
// after a certificate, pinning or host-name failure, a timeout or a silent close. For implicit
// TLS the socket retries by itself. For STARTTLS it cannot: the new connection needs a new SMTP
// session up to STARTTLS, and SMTP is the Python engine's business, not this socket's. So the
// error it reports carries `retryWith` (the next engine); the client opens a new socket with
// `tlsEngine: retryWith` and `fallback: <the reason>`, and says its EHLO and STARTTLS again.
// Until the handshake and the verification succeeded, nothing the application sends goes out:
// it is queued, and dropped if TLS fails.

const PySmtpSocket = (() => {
  /** send() returns false once this many bytes are buffered. */
  const HIGH_WATER = 4 * 1024 * 1024;
  /** ondrain fires when the buffered bytes fall below this. */
  const LOW_WATER = 2 * 1024 * 1024;
  /** WebSocket has no drain event: poll bufferedAmount this often while someone waits. */
  const DRAIN_POLL_MS = 4;
  /** After close(), wait at most this long for the WebSocket's close event. */
  const CLOSE_GRACE_MS = 2000;
  const WS_CONNECTING = 0;
  const WS_OPEN = 1;

  const noop = () => {};
  const { engines: ENGINES, PLANS, makeError, pemBlocks } = PySmtpTls;

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

  const EVENTS = ["open", "data", "secure", "drain", "error", "close"];

  /** Sockets opened by PySmtpSocket.preconnect, not yet claimed, by target. */
  const parked = new Map();

  /**
   * What makes two opens the same connection: the target, and every option that changes what
   * is on the wire or what is trusted (after PySmtpSocket.defaults fill in what is missing).
   * @param {string} host @param {number} port @param {PySmtpSocketOptions} options
   */
  function targetKey(host, port, options) {
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
      opts.fallback ?? null,
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
   * @property {"auto" | "openssl" | "forge"} [tlsEngine] the TLS engine(s) (default "auto")
   * @property {any} [forge] the node-forge namespace, or a function returning (a promise of) it
   *   (default globalThis.forge)
   * @property {any} [openssl] the OpenSSL module (web/openssl/), or a function returning (a
   *   promise of) it (default: made once from globalThis.PySmtpOpenSSL, which openssl-tls.js defines)
   * @property {string} [fallback] this connection retries one whose server refused the TLS
   *   version (the reason): the legacy engine announces TLS_FALLBACK_SCSV (RFC 7507)
   */

  /**
   * A TCP-like socket over a websockify WebSocket, with TLS in JavaScript.
   * Events are plain assignable properties called with one event object.
   */
  class PySmtpSocket {
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
      if (parked.size === 0) return new PySmtpSocket(host, port, options);
      const key = targetKey(host, port, options);
      const waiting = parked.get(key);
      if (!waiting) return new PySmtpSocket(host, port, options);
      parked.delete(key);
      clearTimeout(waiting.timer);
      const { socket, events } = waiting;
      for (const type of EVENTS) socket["on" + type] = noop;
      // The caller sets its handlers when this returns; a microtask runs before any new
      // WebSocket event (those are tasks), so the order of events is kept.
      queueMicrotask(() => {
        for (const [type, event] of events) socket._emit(type, event);
      });
      return socket;
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
      if (parked.has(key)) return;
      const socket = new PySmtpSocket(host, port, options);
      /** @type {{socket: PySmtpSocket, events: [string, object][], timer: any}} */
      const waiting = { socket, events: [], timer: null };
      for (const type of EVENTS) {
        socket["on" + type] = (/** @type {object} */ event) => {
          waiting.events.push([type, event]);
          // A socket that ended while it waited is no use to anyone: the client opens its own.
          if (type === "close" && parked.get(key) === waiting) {
            parked.delete(key);
            clearTimeout(waiting.timer);
          }
        };
      }
      waiting.timer = setTimeout(() => {
        if (parked.get(key) !== waiting) return;
        parked.delete(key);
        socket.close();
      }, PySmtpSocket.PARK_MS);
      parked.set(key, waiting);
    }

    /**
     * @param {string} host
     * @param {number} port
     * @param {PySmtpSocketOptions} options
     */
    constructor(host, port, options) {
      const defaults = PySmtpSocket.defaults || {};
      const opts = Object.assign({}, options || {});
      for (const key of ["proxy", "rootsUrl", "forge", "openssl", "tlsEngine"]) {
        if (opts[key] == null && defaults[key] != null) opts[key] = defaults[key];
      }
      if (typeof host !== "string" || !host) throw new TypeError("PySmtpSocket: host must be a non-empty string");
      const portNumber = Number(port);
      if (!Number.isInteger(portNumber) || portNumber < 0 || portNumber > 65535) {
        throw new TypeError(`PySmtpSocket: invalid port ${String(port)}`);
      }
      /** @type {string} */
      this.host = host;
      /** @type {number} */
      this.port = portNumber;
      /** true once TLS is active (handshake done, certificate verified) */
      this.ssl = false;
      /**
       * Once TLS is active: the engine, "TLS 1.3", the cipher suite (OpenSSL), why the engine was
       * a fallback, and the handshake's time from the ClientHello to the verified certificate.
       * @type {{engine: string, protocol: string, cipher: string | null, fallback: string | null, handshakeMs: number} | null}
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

      // Proxy URL
      let url = opts.proxy;
      if (typeof url === "function") url = url(host, portNumber);
      if (url == null || url === "") {
        throw new TypeError(
          `PySmtpSocket: options.proxy is required: the WebSocket URL of a websockify proxy to ${host}:${portNumber} ` +
            "(a string, or a function (host, port) => string)",
        );
      }
      if (typeof url !== "string") throw new TypeError("PySmtpSocket: options.proxy must give a string URL");
      /** The proxy's WebSocket URL (the client asks whether the page-to-proxy leg is private). */
      this.proxyUrl = url;

      // The TLS engines to try, in order
      const plan = opts.tlsEngine == null ? "auto" : opts.tlsEngine;
      if (typeof plan !== "string" || !Object.prototype.hasOwnProperty.call(PLANS, plan)) {
        throw new TypeError(
          `PySmtpSocket: options.tlsEngine must be one of ${Object.keys(PLANS).map((k) => JSON.stringify(k)).join(", ")}, ` +
            `not ${JSON.stringify(plan)}`,
        );
      }
      /** @type {string[]} */
      this._plan = PLANS[plan];
      this._attempt = 0;
      /** @type {string | null} why the previous engine was given up (set on a version retry) */
      this._fallback = opts.fallback ? String(opts.fallback) : null;

      // Trust options (checked now; parsed when TLS starts, since the engines load lazily)
      /** @type {string[] | null} */
      this._ca = null;
      if (opts.ca != null) {
        const list = Array.isArray(opts.ca) ? opts.ca : [opts.ca];
        if (!list.length || list.some((c) => typeof c !== "string")) {
          throw new TypeError("PySmtpSocket: options.ca must be a PEM string or a non-empty array of PEM strings");
        }
        if (!list.some((c) => pemBlocks(c).length)) {
          throw new TypeError("PySmtpSocket: options.ca contains no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        this._ca = list.slice();
      }
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
            this._ws.send(u8);
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
        throw new TypeError(`PySmtpSocket: invalid proxy URL ${JSON.stringify(this.proxyUrl)}: ${error && error.message}`);
      }
      ws.binaryType = "arraybuffer";
      // Events of a WebSocket we left (a retry opened another) are ignored.
      ws.onopen = () => ws === this._ws && this._onWsOpen();
      ws.onmessage = (event) => ws === this._ws && this._onWsMessage(event);
      ws.onerror = () => {}; // always followed by close; the details are in the close event
      ws.onclose = (event) => ws === this._ws && this._onWsClose(event);
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
          this._ws.send(u8);
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
      } else {
        this._cipherIn.push(u8); // the engine is still loading: keep for the handshake
      }
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
      if (!this._wsOpened) {
        error = this._error(
          "ConnectionError",
          `cannot reach the WebSocket proxy at ${this.proxyUrl} (for ${this._hostPort}; ${closeInfo})`,
          extra,
        );
      } else if (code === 1011) {
        error = this._error(
          "ConnectionError",
          /Failed to connect/i.test(reason) || !this._gotData
            ? `the proxy could not connect to ${this._hostPort} (${closeInfo})`
            : `the proxy reported an error on the connection to ${this._hostPort} (${closeInfo})`,
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
      } else if (this._session) {
        this._session.end();
      }
      this._finish(error);
    }

    // -- TLS -----------------------------------------------------------------------------------

    get _engine() {
      return ENGINES[this._plan[this._attempt]];
    }

    _startTls() {
      this._tlsState = "preparing";
      this._prepare();
    }

    /** Load the current engine and its trust anchors; then handshake when the network is ready. */
    _prepare() {
      const attempt = this._attempt;
      const engine = this._engine;
      this._prepared = null;
      engine.prepare(this._context()).then(
        (/** @type {any} */ prepared) => {
          if (this._done || this._closing || attempt !== this._attempt) return;
          this._prepared = prepared;
          this._maybeHandshake();
        },
        (/** @type {any} */ error) => {
          if (this._done || this._closing || attempt !== this._attempt) return;
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
        fallback: this._fallback,
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
      this._session = this._engine.connect(this._prepared, this._context(), {
        write: (/** @type {Uint8Array} */ u8) => {
          if (current() && ws.readyState === WS_OPEN) ws.send(u8);
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
        fallback: this._fallback,
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

    /** The handshake (or the connection) failed: retry with the next engine only on a version refusal. */
    /** @param {any} error */
    _tlsFailed(error) {
      if (this._done) return;
      const next = this._plan[this._attempt + 1];
      if (this._tlsState === "handshaking" && error && error.versionRefused === true && next) {
        if (this._implicit) {
          this._retry(error);
          return;
        }
        error.retryWith = next; // STARTTLS: the SMTP client retries on a new connection
      }
      this._finish(error);
    }

    /**
     * Implicit TLS: give up this connection and try the next engine on a new one.
     * @param {Error} reason
     */
    _retry(reason) {
      const old = this._ws;
      if (this._session) this._session.close();
      this._session = null;
      this._prepared = null;
      this._attempt += 1;
      this._fallback = reason.message.replace(/^TLS handshake with \S+ failed: /, "");
      this._cipherIn = [];
      this._wsOpened = false;
      this._gotData = false;
      this._ws = this._connectWs();
      try {
        old.close(1000);
      } catch (_) {
        /* already closing */
      }
      this._tlsState = "preparing";
      this._prepare(); // loads the next engine meanwhile; the handshake waits for the WebSocket
    }
  }

  /** Fallbacks for options.proxy, rootsUrl, tlsEngine, forge and openssl (set by the loader). */
  PySmtpSocket.defaults = {};
  /** How long a preconnected socket waits for its client before it is closed (ms). */
  PySmtpSocket.PARK_MS = 30000;
  PySmtpSocket.HIGH_WATER = HIGH_WATER;
  PySmtpSocket.LOW_WATER = LOW_WATER;
  PySmtpSocket.engines = ENGINES;
  return PySmtpSocket;
})();

// One socket class per page, like PySmtp: when both builds are loaded (the classic script and
// the ES module), the first one's class serves both, so preconnected sockets and the defaults
// are the ones every client sees.
globalThis.PySmtpSocket ??= PySmtpSocket;
