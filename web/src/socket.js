// pysmtp-wasm socket: a TCP-like byte stream for the browser (emailjs-tcp-socket's shape),
// tunnelled through a websockify WebSocket-to-TCP proxy, with optional TLS done in JavaScript
// by node-forge (implicit TLS from the first byte, or STARTTLS via upgradeToSecure()).
//
// A plain script: the build concatenates it (before loader.js) into one classic-script IIFE,
// so everything here lives inside one function and only `PySmtpSocket` is declared at the top.
//
// node-forge speaks TLS 1.0/1.1 only; we offer TLS_RSA_WITH_AES_{128,256}_CBC_SHA. It does not
// check host names: we do (subjectAltName DNS with a single left-most wildcard label, IP SANs,
// the CN only when there is no DNS SAN). Trust is either exactly the `ca` certificates
// (pinning; a leaf byte-identical to a `ca` certificate is accepted as well) or the PEM bundle
// at `rootsUrl` (fetched once per page). Until the handshake and the verification succeeded,
// nothing the application sends goes out: it is queued, and dropped if TLS fails.

const PySmtpSocket = (() => {
  /** send() returns false once this many bytes are buffered. */
  const HIGH_WATER = 1024 * 1024;
  /** ondrain fires when the buffered bytes fall below this. */
  const LOW_WATER = 256 * 1024;
  /** WebSocket has no drain event: poll bufferedAmount this often while someone waits. */
  const DRAIN_POLL_MS = 4;
  /** Plaintext bytes per tls.prepare() (one TLS record). */
  const TLS_CHUNK = 16 * 1024;
  /** String.fromCharCode.apply() argument count (larger blows the stack around 2 MiB). */
  const BIN_CHUNK = 8192;
  /** After close(), wait at most this long for the WebSocket's close event. */
  const CLOSE_GRACE_MS = 2000;
  const WS_CONNECTING = 0;
  const WS_OPEN = 1;

  const noop = () => {};
  const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
  // Alert descriptions (RFC 5246 7.2)
  const ALERT_HANDSHAKE_FAILURE = 40;
  const ALERT_BAD_CERTIFICATE = 42;
  const ALERT_CERTIFICATE_EXPIRED = 45;
  const ALERT_UNKNOWN_CA = 48;
  const ALERT_PROTOCOL_VERSION = 70;
  const ALERT_INSUFFICIENT_SECURITY = 71;
  const ALERT_INTERNAL_ERROR = 80;
  const VERSION_HINT = "node-forge speaks only TLS 1.0/1.1";

  // -- bytes <-> forge's binary strings --------------------------------------------------------

  /** @param {Uint8Array} u8 @returns {string} one char (0..255) per byte */
  function u8ToBin(u8) {
    if (u8.length <= BIN_CHUNK) return String.fromCharCode.apply(null, /** @type {any} */ (u8));
    const parts = [];
    for (let i = 0; i < u8.length; i += BIN_CHUNK) {
      parts.push(String.fromCharCode.apply(null, /** @type {any} */ (u8.subarray(i, i + BIN_CHUNK))));
    }
    return parts.join("");
  }

  /** @param {string} s a binary string @returns {Uint8Array} */
  function binToU8(s) {
    const n = s.length;
    const u8 = new Uint8Array(n);
    for (let i = 0; i < n; i++) u8[i] = s.charCodeAt(i);
    return u8;
  }

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

  // -- errors ----------------------------------------------------------------------------------

  /**
   * @param {"ConnectionError" | "TLSError"} name
   * @param {string} message
   * @param {object} [extra] extra properties (host, port, closeCode, alert, ...)
   */
  function makeError(name, message, extra) {
    const error = new Error(message);
    error.name = name;
    if (extra) Object.assign(error, extra);
    return error;
  }

  /** @param {any} forge @param {number} description */
  function alertName(forge, description) {
    const table = (forge && forge.tls && forge.tls.Alert && forge.tls.Alert.Description) || {};
    for (const key of Object.keys(table)) if (table[key] === description) return key;
    return `alert ${description}`;
  }

  /** @param {Uint8Array} u8 printable preview of received bytes */
  function preview(u8) {
    let s = "";
    for (const b of u8.subarray(0, 40)) {
      s += b === 13 || b === 10 || (b >= 32 && b < 127) ? String.fromCharCode(b) : ".";
    }
    return JSON.stringify(s);
  }

  // -- node-forge and trust anchors --------------------------------------------------------------

  /**
   * @param {any} option the forge option: the namespace, a function returning it (or a promise
   *   of it), or undefined for globalThis.forge
   */
  async function resolveForge(option) {
    let forge = option == null ? globalThis.forge : option;
    if (typeof forge === "function" && !(forge.tls && forge.pki)) forge = await forge();
    if (!forge || !forge.tls || typeof forge.tls.createConnection !== "function" || !forge.pki) {
      throw new Error("node-forge is not available (load forge.min.js, or pass options.forge)");
    }
    return forge;
  }

  /** @param {unknown} text @returns {string[]} the PEM CERTIFICATE blocks in it */
  function pemBlocks(text) {
    return String(text).match(PEM_CERT_RE) || [];
  }

  /** @param {any} forge @param {any} cert @returns {string} DER as a binary string */
  function derOf(forge, cert) {
    return forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes();
  }

  /** Parsed root bundles by absolute URL: fetched and parsed once per page. */
  /** @type {Map<string, Promise<{store: any, count: number, skipped: number}>>} */
  const rootsCache = new Map();

  /** @param {any} forge @param {string} url */
  function loadRoots(forge, url) {
    let key = url;
    try {
      key = new URL(url, globalThis.location && globalThis.location.href).href;
    } catch (_) {
      /* keep the URL as given */
    }
    let promise = rootsCache.get(key);
    if (!promise) {
      promise = (async () => {
        const response = await fetch(key);
        if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
        const blocks = pemBlocks(await response.text());
        const certs = [];
        let skipped = 0;
        for (const block of blocks) {
          try {
            certs.push(forge.pki.certificateFromPem(block));
          } catch (_) {
            skipped += 1; // ECDSA and other non-RSA keys: node-forge cannot read them
          }
        }
        if (!certs.length) {
          throw new Error(
            blocks.length
              ? `node-forge can read none of its ${blocks.length} certificates (it reads only RSA keys)`
              : "it contains no PEM certificate",
          );
        }
        return { store: forge.pki.createCaStore(certs), count: certs.length, skipped };
      })();
      rootsCache.set(key, promise);
      // A failed load may be retried by a later connection.
      promise.catch(() => {
        if (rootsCache.get(key) === promise) rootsCache.delete(key);
      });
    }
    return promise;
  }

  // -- host names and IP addresses -------------------------------------------------------------

  /** @param {string} s @returns {number[] | null} */
  function parseIPv4(s) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
    if (!m) return null;
    const bytes = m.slice(1).map(Number);
    return bytes.every((b) => b <= 255) ? bytes : null;
  }

  /** @param {string} s @returns {number[] | null} 16 bytes */
  function parseIPv6(s) {
    s = s.replace(/%.*$/, ""); // zone id
    if (!/^[0-9a-f:.]+$/i.test(s) || s.split("::").length > 2) return null;
    const [head, tail = null] = s.split("::");
    /** @param {string} part */
    const groups = (part) => {
      if (!part) return [];
      /** @type {number[]} */
      const out = [];
      const pieces = part.split(":");
      for (let i = 0; i < pieces.length; i++) {
        const piece = pieces[i];
        if (i === pieces.length - 1 && piece.includes(".")) {
          const v4 = parseIPv4(piece);
          if (!v4) return null;
          out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
        } else if (/^[0-9a-f]{1,4}$/i.test(piece)) {
          out.push(parseInt(piece, 16));
        } else {
          return null;
        }
      }
      return out;
    };
    const a = groups(head);
    const b = tail === null ? [] : groups(tail);
    if (!a || !b) return null;
    let all;
    if (tail === null) {
      if (a.length !== 8) return null;
      all = a;
    } else {
      if (a.length + b.length > 7) return null;
      all = [...a, ...new Array(8 - a.length - b.length).fill(0), ...b];
    }
    return all.flatMap((g) => [g >> 8, g & 255]);
  }

  /** @param {string} host @returns {number[] | null} the address bytes when host is an IP literal */
  function ipBytes(host) {
    const h = host.replace(/^\[(.*)\]$/, "$1");
    return h.includes(":") ? parseIPv6(h) : parseIPv4(h);
  }

  /** @param {string} name lower case, no trailing dot, A-labels */
  function normalizeName(name) {
    let n = String(name).trim().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "").toLowerCase();
    if (/[^\x00-\x7f]/.test(n)) {
      try {
        n = new URL(`http://${n}/`).hostname; // IDNA to punycode
      } catch (_) {
        /* keep it: it will simply not match */
      }
    }
    return n;
  }

  /** @param {string} pattern a dNSName or CN @param {string} host normalized */
  function dnsMatches(pattern, host) {
    const p = normalizeName(pattern);
    if (!p || !host) return false;
    if (!p.includes("*")) return p === host;
    // Only a whole left-most "*" label, over at least two more labels; it matches one label.
    if (!p.startsWith("*.")) return false;
    const rest = p.slice(2);
    if (rest.includes("*") || rest.split(".").length < 2) return false;
    const dot = host.indexOf(".");
    return dot > 0 && host.slice(dot + 1) === rest;
  }

  /**
   * @param {any} cert a forge certificate
   * @param {string} servername
   * @returns {{ok: boolean, names: string[]}}
   */
  function checkHostName(cert, servername) {
    const host = normalizeName(servername);
    const ip = ipBytes(host);
    const san = cert.getExtension("subjectAltName");
    const altNames = (san && san.altNames) || [];
    const dnsNames = altNames.filter((n) => n.type === 2).map((n) => String(n.value));
    const ipNames = altNames.filter((n) => n.type === 7);
    const cns = dnsNames.length
      ? []
      : cert.subject.attributes.filter((a) => a.shortName === "CN" || a.type === "2.5.4.3").map((a) => String(a.value));
    const names = [...dnsNames, ...ipNames.map((n) => n.ip || "(an IP address)"), ...cns];
    let ok;
    if (ip) {
      ok = ipNames.some((n) => {
        const v = String(n.value);
        return v.length === ip.length && ip.every((b, i) => v.charCodeAt(i) === b);
      });
    } else {
      ok = [...dnsNames, ...cns].some((pattern) => dnsMatches(pattern, host));
    }
    return { ok, names };
  }

  /** @param {any} cert a forge certificate: "CN=..., O=..." */
  function dn(cert, which = "subject") {
    const attrs = cert[which].attributes.map((a) => `${a.shortName || a.name || a.type}=${a.value}`);
    return attrs.join(", ") || "(empty name)";
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
   * @property {any} [forge] the node-forge namespace, or a function returning (a promise of) it
   *   (default globalThis.forge)
   */

  /**
   * A TCP-like socket over a websockify WebSocket, with node-forge TLS.
   * Events are plain assignable properties called with one event object.
   */
  class PySmtpSocket {
    /**
     * @param {string} host
     * @param {number} port
     * @param {PySmtpSocketOptions} options
     * @returns {PySmtpSocket}
     */
    static open(host, port, options) {
      return new PySmtpSocket(host, port, options);
    }

    /**
     * @param {string} host
     * @param {number} port
     * @param {PySmtpSocketOptions} options
     */
    constructor(host, port, options) {
      const defaults = PySmtpSocket.defaults || {};
      const opts = Object.assign({}, options || {});
      for (const key of ["proxy", "rootsUrl", "forge"]) {
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
      this._url = url;

      // Trust options (checked now; parsed when TLS starts, since forge may load lazily)
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

      // State
      this._done = false; // onclose has fired (or is firing)
      this._closing = false; // close() was called
      this._wsOpened = false;
      this._gotData = false;
      /** @type {"none" | "preparing" | "handshaking" | "active"} */
      this._tlsState = "none";
      this._implicit = !!opts.useSecureTransport;
      this._forge = null;
      this._trust = null;
      this._tls = null;
      this._inForge = 0; // depth of calls into forge (close() must not reset it mid-process)
      /** @type {{error: Error, alert: number} | null} */
      this._verifyFailure = null;
      this._verified = false;
      /** @type {Uint8Array | null} first bytes received during the handshake (diagnostics) */
      this._tlsFirstBytes = null;
      /** @type {Uint8Array[]} plaintext queued before the WebSocket opened (sent in clear) */
      this._queuePlain = [];
      /** @type {Uint8Array[]} application data waiting for TLS */
      this._queueSecure = [];
      this._queuedBytes = 0;
      /** @type {string[]} ciphertext received before the TLS connection object exists */
      this._cipherIn = [];
      this._needDrain = false;
      this._drainTimer = null;
      this._closeTimer = null;
      this._drainTick = this._drainTick.bind(this);

      let ws;
      try {
        ws = new WebSocket(url, ["binary"]);
      } catch (error) {
        throw new TypeError(`PySmtpSocket: invalid proxy URL ${JSON.stringify(url)}: ${error && error.message}`);
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      ws.onopen = () => this._onWsOpen();
      ws.onmessage = (event) => this._onWsMessage(event);
      ws.onerror = () => {}; // always followed by close; the details are in the close event
      ws.onclose = (event) => this._onWsClose(event);

      if (this._implicit) this._startTls();
    }

    /** Bytes not yet handed to the network: the WebSocket's buffer plus what waits for TLS. */
    get bufferedAmount() {
      return (this._ws ? this._ws.bufferedAmount : 0) + this._queuedBytes;
    }

    /**
     * Send bytes (plaintext; encrypted when TLS is active). Until TLS is up they are queued.
     * @param {ArrayBuffer | ArrayBufferView} data
     * @returns {boolean} false when the buffer is full (wait for ondrain), or after close
     */
    send(data) {
      const u8 = asBytes(data);
      if (!u8) throw new TypeError("PySmtpSocket.send: data must be an ArrayBuffer or a Uint8Array");
      if (this._done || this._closing) return false;
      if (u8.length) {
        if (this._tlsState === "active") {
          this._tlsWrite(u8);
        } else if (this._tlsState !== "none") {
          this._queueSecure.push(u8.slice()); // the caller may reuse its buffer
          this._queuedBytes += u8.length;
        } else if (this._ws.readyState === WS_OPEN) {
          this._ws.send(u8);
        } else {
          this._queuePlain.push(u8.slice());
          this._queuedBytes += u8.length;
        }
      }
      if (this._done) return false; // a TLS failure inside _tlsWrite
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

    /** Close (with a TLS close_notify when TLS is up); onclose follows, exactly once. */
    close() {
      if (this._done || this._closing) return;
      this._closing = true;
      this.readyState = "closing";
      this._needDrain = false;
      this._dropQueues();
      if (this._inForge > 0) {
        // Called from one of our events while forge processes input: finish outside forge.
        queueMicrotask(() => this._closeNow());
      } else {
        this._closeNow();
      }
    }

    // -- internals ---------------------------------------------------------------------------

    get _hostPort() {
      return this.host.includes(":") ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
    }

    _closeNow() {
      if (this._done) return;
      if (this._tls && this._tlsState === "active") {
        this._forgeCall(() => this._tls.close()); // close_notify, sent before the WebSocket close
      }
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

    /** @param {() => void} fn run a call into forge, turning a throw into a TLSError */
    _forgeCall(fn) {
      this._inForge += 1;
      try {
        fn();
      } catch (error) {
        if (!this._done && !this._closing) {
          this._finish(
            this._error("TLSError", `TLS failure on the connection to ${this._hostPort}: ${error && error.message}`),
          );
        }
      } finally {
        this._inForge -= 1;
      }
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
      if (!this._implicit) {
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
      if (this._tlsState !== "active" && !this._tlsFirstBytes) this._tlsFirstBytes = u8.slice(0, 64);
      const bin = u8ToBin(u8);
      if (this._tls) {
        this._forgeCall(() => this._tls.process(bin));
      } else {
        this._cipherIn.push(bin); // TLS still loading: keep for the handshake
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
          `cannot reach the WebSocket proxy at ${this._url} (for ${this._hostPort}; ${closeInfo})`,
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
      } else if (this._tlsState === "handshaking") {
        error = this._error(
          "TLSError",
          `TLS handshake with ${this._hostPort} failed: the server closed the connection during the TLS handshake ` +
            `(it most likely requires TLS 1.2 or newer; ${VERSION_HINT}; ${closeInfo})`,
          extra,
        );
      } else if (this._tlsState === "preparing") {
        error = this._error(
          "ConnectionError",
          `the connection to ${this._hostPort} closed before TLS could start (${closeInfo})`,
          extra,
        );
      }
      this._finish(error);
    }

    // -- TLS -----------------------------------------------------------------------------------

    _startTls() {
      this._tlsState = "preparing";
      this._prepareTls().then(
        ({ forge, trust }) => {
          if (this._done || this._closing) return;
          this._forge = forge;
          this._trust = trust;
          this._maybeHandshake();
        },
        (error) => {
          if (this._done || this._closing) return;
          this._finish(
            error && error.name === "TLSError"
              ? error
              : this._error("TLSError", `cannot start TLS with ${this._hostPort}: ${error && error.message}`),
          );
        },
      );
    }

    async _prepareTls() {
      const forge = await resolveForge(this._forgeOption);
      const hp = this._hostPort;
      if (this._ca) {
        const blocks = this._ca.flatMap(pemBlocks);
        const certs = [];
        const failures = [];
        for (const block of blocks) {
          try {
            certs.push(forge.pki.certificateFromPem(block));
          } catch (error) {
            failures.push(String((error && error.message) || error));
          }
        }
        if (!certs.length) {
          throw this._error(
            "TLSError",
            `cannot verify the certificate of ${hp}: node-forge cannot read the \`ca\` certificate` +
              `${blocks.length > 1 ? "s" : ""} (${failures[0]}; it reads only RSA certificates)`,
          );
        }
        const anchors =
          `the pinned \`ca\` certificate${certs.length > 1 ? "s" : ""}` +
          (failures.length ? ` (${failures.length} more that node-forge cannot read were ignored)` : "");
        return {
          forge,
          trust: { store: forge.pki.createCaStore(certs), pinned: new Set(certs.map((c) => derOf(forge, c))), anchors },
        };
      }
      if (this._rootsUrl) {
        let roots;
        try {
          roots = await loadRoots(forge, this._rootsUrl);
        } catch (error) {
          throw this._error(
            "TLSError",
            `cannot verify the certificate of ${hp}: loading the root certificates from ${this._rootsUrl} failed: ` +
              `${error && error.message}`,
          );
        }
        const anchors =
          `any of the ${roots.count} root certificates from ${this._rootsUrl}` +
          (roots.skipped ? ` (${roots.skipped} non-RSA roots in it were skipped: node-forge cannot read them)` : "");
        return { forge, trust: { store: roots.store, pinned: null, anchors } };
      }
      throw this._error(
        "TLSError",
        `cannot verify the certificate of ${hp}: no trust anchors. Pass \`ca\` (the PEM certificate(s) to trust) ` +
          "or `rootsUrl` (the URL of a PEM bundle such as Mozilla's roots or certifi's cacert.pem); " +
          "node-forge cannot use the browser's certificate store",
      );
    }

    _maybeHandshake() {
      if (this._done || this._closing || this._tlsState !== "preparing" || !this._trust) return;
      if (this._ws.readyState !== WS_OPEN) return;
      const forge = this._forge;
      const trust = this._trust;
      const servername = this._servername;
      const suites = forge.tls.CipherSuites;
      this._tlsState = "handshaking";
      this._tls = forge.tls.createConnection({
        server: false,
        caStore: trust.store,
        // SNI: a host name only (RFC 6066: never an IP literal)
        virtualHost: ipBytes(normalizeName(servername)) ? null : servername,
        cipherSuites: [suites.TLS_RSA_WITH_AES_128_CBC_SHA, suites.TLS_RSA_WITH_AES_256_CBC_SHA],
        verify: (/** @type {any} */ c, /** @type {any} */ verified, /** @type {number} */ depth, /** @type {any[]} */ certs) => {
          if (depth === 0) {
            this._verifyFailure = this._verifyPeer(certs);
            this._verified = !this._verifyFailure;
          }
          if (!this._verified) {
            const failure = this._verifyFailure || {
              error: this._error("TLSError", `the certificate of ${this._hostPort} could not be verified`),
              alert: ALERT_BAD_CERTIFICATE,
            };
            this._verifyFailure = failure;
            return { alert: failure.alert, message: failure.error.message };
          }
          return true; // our own full check (above, at depth 0) passed
        },
        connected: () => this._onTlsConnected(),
        tlsDataReady: (/** @type {any} */ c) => {
          const bytes = c.tlsData.getBytes();
          if (bytes.length && this._ws.readyState === WS_OPEN) this._ws.send(binToU8(bytes));
        },
        dataReady: (/** @type {any} */ c) => {
          const bytes = c.data.getBytes();
          if (bytes.length && !this._done && !this._closing) {
            this._emit("data", { type: "data", data: binToU8(bytes).buffer });
          }
        },
        closed: () => {
          // The peer's close_notify (forge answered it), or the end after an error.
          if (this._done || this._closing) return;
          this._finish(null);
        },
        error: (/** @type {any} */ c, /** @type {any} */ err) => {
          if (this._done || this._closing) return;
          this._finish(this._tlsErrorFrom(err));
        },
      });
      this._forgeCall(() => this._tls.handshake());
      const pending = this._cipherIn;
      this._cipherIn = [];
      for (const bin of pending) {
        if (this._done) break;
        this._forgeCall(() => this._tls.process(bin));
      }
    }

    /**
     * Our verification of the server's chain: trust, then the host name.
     * @param {any[]} certs forge certificates, leaf first
     * @returns {{error: Error, alert: number} | null}
     */
    _verifyPeer(certs) {
      const forge = this._forge;
      const trust = this._trust;
      const hp = this._hostPort;
      try {
        if (!certs || !certs.length) throw { message: "the server sent no certificate" };
        const leaf = certs[0];
        const pinnedLeaf = !!trust.pinned && trust.pinned.has(derOf(forge, leaf));
        const expired = forge.pki.certificateError.certificate_expired;
        let lastDepth = 0;
        try {
          forge.pki.verifyCertificateChain(trust.store, certs, {
            verify: (/** @type {any} */ vfd, /** @type {number} */ depth) => {
              lastDepth = depth;
              // A leaf byte-identical to a `ca` certificate is trusted as is (within its dates).
              if (pinnedLeaf && !(depth === 0 && vfd === expired)) return true;
              return vfd;
            },
          });
        } catch (ex) {
          const cert = certs[Math.min(lastDepth, certs.length - 1)];
          const who = `'${dn(cert)}'` + (cert.isIssuer(cert) ? " (self-signed)" : ` (issued by '${dn(cert, "issuer")}')`);
          const code = ex && ex.error;
          const errs = forge.pki.certificateError;
          let reason;
          let alert = ALERT_BAD_CERTIFICATE;
          if (code === errs.unknown_ca) {
            reason = `${who} does not chain to ${trust.anchors}`;
            alert = ALERT_UNKNOWN_CA;
          } else if (code === errs.certificate_expired) {
            const iso = (/** @type {Date} */ d) => (d && d.toISOString ? d.toISOString() : String(d));
            reason = `${who} is not valid now (valid from ${iso(cert.validity.notBefore)} to ${iso(cert.validity.notAfter)})`;
            alert = ALERT_CERTIFICATE_EXPIRED;
          } else if (/signature is invalid/i.test(String(ex && ex.message)) && lastDepth === certs.length - 1) {
            // The store has a certificate with the issuer's name, but not the issuer's key.
            reason = `${who} does not chain to ${trust.anchors} (a certificate there has the issuer's name but not its key)`;
            alert = ALERT_UNKNOWN_CA;
          } else {
            reason = `${who}: ${(ex && ex.message) || ex}`;
          }
          return {
            error: this._error("TLSError", `the certificate of ${hp} is not trusted: ${reason}`, { forgeError: code }),
            alert,
          };
        }
        const { ok, names } = checkHostName(leaf, this._servername);
        if (!ok) {
          const shown = names.length ? names.slice(0, 10).join(", ") + (names.length > 10 ? ", …" : "") : "no name";
          const target = normalizeName(this._servername);
          return {
            error: this._error("TLSError", `the certificate of ${hp} is for ${shown}, not ${target}`),
            alert: ALERT_BAD_CERTIFICATE,
          };
        }
        return null;
      } catch (ex) {
        return {
          error: this._error("TLSError", `the certificate of ${hp} could not be verified: ${(ex && ex.message) || ex}`),
          alert: ALERT_BAD_CERTIFICATE,
        };
      }
    }

    _onTlsConnected() {
      if (this._done || this._closing) return;
      if (!this._verified) {
        // forge always verifies a server certificate; never go on without our check.
        this._finish(this._error("TLSError", `the certificate of ${this._hostPort} was not verified`));
        return;
      }
      this._tlsState = "active";
      this.ssl = true;
      const queued = this._queueSecure;
      this._queueSecure = [];
      for (const u8 of queued) {
        this._queuedBytes -= u8.length;
        this._tlsWrite(u8);
      }
      if (this._done) return;
      if (this.readyState === "connecting") {
        this.readyState = "open";
        this._emit("open", { type: "open" });
      } else {
        this._emit("secure", { type: "secure" });
      }
    }

    /** @param {Uint8Array} u8 plaintext: one TLS record per 16 KiB */
    _tlsWrite(u8) {
      for (let i = 0; i < u8.length && !this._done; i += TLS_CHUNK) {
        const bin = u8ToBin(u8.subarray(i, i + TLS_CHUNK));
        this._forgeCall(() => this._tls.prepare(bin));
      }
    }

    /** @param {any} err forge's error: {message, origin, alert: {level, description}} */
    _tlsErrorFrom(err) {
      if (this._verifyFailure) return this._verifyFailure.error;
      const forge = this._forge;
      const hp = this._hostPort;
      const description = err && err.alert ? err.alert.description : undefined;
      const from = err && err.origin === "server" ? "server" : "client";
      const alertText = description === undefined ? "" : `${from} alert: ${alertName(forge, description)}`;
      const extra = { alert: description, alertOrigin: from };
      if (this._tlsState === "handshaking") {
        const first = this._tlsFirstBytes;
        if (first && first.length && (first[0] < 20 || first[0] > 24)) {
          return this._error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server did not answer in TLS (it sent ${preview(first)}); ` +
              "is this a plaintext port? (for STARTTLS, connect without useSecureTransport)",
            extra,
          );
        }
        if (description === ALERT_PROTOCOL_VERSION) {
          return this._error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server requires TLS 1.2 or newer, and ${VERSION_HINT} (${alertText})`,
            extra,
          );
        }
        if (
          from === "server" &&
          [ALERT_HANDSHAKE_FAILURE, ALERT_INSUFFICIENT_SECURITY, ALERT_INTERNAL_ERROR].includes(description)
        ) {
          return this._error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server refused the handshake (${alertText}); it most likely ` +
              `requires TLS 1.2 or newer, and ${VERSION_HINT} (RSA key exchange, AES-CBC ciphers)`,
            extra,
          );
        }
      }
      const what = this._tlsState === "handshaking" ? "TLS handshake with" : "TLS connection to";
      const message = String((err && err.message) || "unknown error").replace(/\.$/, "");
      return this._error("TLSError", `${what} ${hp} failed: ${message}${alertText ? ` (${alertText})` : ""}`, extra);
    }
  }

  /** Fallbacks for options.proxy, rootsUrl and forge (set by the loader). */
  PySmtpSocket.defaults = {};
  PySmtpSocket.HIGH_WATER = HIGH_WATER;
  PySmtpSocket.LOW_WATER = LOW_WATER;
  return PySmtpSocket;
})();

globalThis.PySmtpSocket = PySmtpSocket;
