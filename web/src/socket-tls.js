// pysmtp-wasm socket, its TLS layer: one engine of tls/ over the socket's WebSocket (implicit TLS
// from the first byte, or STARTTLS). Until the handshake and the verification succeeded,
// nothing the application sends goes out: it is queued here, and dropped if TLS fails.

import { ENGINE_FOR, engines as ENGINES } from "./tls/index.js";
import { WS_OPEN, wsSend } from "./websocket.js";

/**
 * Ciphertext kept while the TLS engine loads (nothing legitimate comes before our
 * ClientHello, which waits for the engine): past this the server is not speaking TLS, or
 * something on the path is injecting, and the connection fails (TLSError) instead of the
 * page's memory growing without bound.
 */
const CIPHER_IN_LIMIT = 64 * 1024;

/**
 * What the layer needs of its socket (socket.js PySmtpSocket).
 * @typedef {object} TlsOwner
 * @property {boolean} _done onclose has fired (or is firing)
 * @property {boolean} _closing close() was called
 * @property {WebSocket} _ws
 * @property {string} _hostPort
 * @property {(name: any, message: string, extra?: object) => Error} _error
 * @property {(error: Error | null) => void} _finish the end: onerror (if any), then onclose
 * @property {(type: string, event: object) => void} _emit
 * @property {(tls: {engine: string, protocol: string, cipher: string | null, handshakeMs: number}) => void} _secured
 */

export class SocketTls {
  /**
   * @param {TlsOwner} socket
   * @param {any} opts the socket's options (defaults filled in)
   * @param {string} host
   */
  constructor(socket, opts, host) {
    this._socket = socket;
    /** The TLS engine of this connection (one: never another by itself). */
    this.engineName = ENGINE_FOR[opts.tlsEngine == null ? "auto" : opts.tlsEngine];
    // Trust options (checked by the socket; parsed when TLS starts, since the engines load lazily)
    /** @type {string[] | null} */
    this._ca = opts.ca == null ? null : [].concat(opts.ca);
    this._servername = opts.servername ? String(opts.servername) : host;
    this._rootsUrl = opts.rootsUrl ? String(opts.rootsUrl) : null;
    this._forgeOption = opts.forge;
    this._opensslOption = opts.openssl;
    /** @type {"none" | "preparing" | "handshaking" | "active"} */
    this.state = "none";
    /** @type {any} the engine's prepared state (library, trust) until its session takes it */
    this._prepared = null;
    /** @type {any} the engine's session */
    this.session = null;
    /** @type {Uint8Array[]} application data waiting for TLS */
    this._queue = [];
    /** bytes in _queue */
    this.queued = 0;
    /** @type {Uint8Array[]} ciphertext received before the TLS session exists */
    this._cipherIn = [];
    this._cipherInBytes = 0;
    this._handshakeStart = 0;
  }

  get _engine() {
    return ENGINES[this.engineName];
  }

  /** Bytes accepted and not yet handed to the WebSocket. */
  get pending() {
    return this.queued + (this.session ? this.session.pending : 0);
  }

  /** true while the engine is inside a synchronous call (close must wait) */
  get busy() {
    return !!this.session && this.session.busy;
  }

  /** Start: load the engine and its trust anchors; then handshake when the network is ready. */
  start() {
    this.state = "preparing";
    const socket = this._socket;
    const engine = this._engine;
    this._prepared = null;
    engine.prepare(this._conn()).then(
      (/** @type {any} */ prepared) => {
        if (socket._done || socket._closing) {
          prepared?.release?.(); // never connected: let go of its trust context
          return;
        }
        this._prepared = prepared;
        this.maybeHandshake();
      },
      (/** @type {any} */ error) => {
        if (socket._done || socket._closing) return;
        socket._finish(
          error && error.name === "TLSError"
            ? error
            : socket._error("TLSError", `cannot start TLS with ${socket._hostPort} (${engine.name}): ${error && error.message}`),
        );
      },
    );
  }

  /** What an engine knows of this connection (tls/common.js TlsConnection). */
  _conn() {
    const socket = this._socket;
    return {
      hostPort: socket._hostPort,
      servername: this._servername,
      ca: this._ca,
      rootsUrl: this._rootsUrl,
      forge: this._forgeOption,
      openssl: this._opensslOption,
      error: (/** @type {any} */ name, /** @type {string} */ message, /** @type {object} */ extra) =>
        socket._error(name, message, extra),
    };
  }

  /** Plaintext from the application: encrypted once TLS is up, queued (a copy) until then. @param {Uint8Array} u8 */
  send(u8) {
    if (this.state === "active") {
      this.session.send(u8);
    } else {
      this._queue.push(u8.slice()); // the caller may reuse its buffer
      this.queued += u8.length;
    }
  }

  /** Ciphertext from the network. @param {Uint8Array} u8 */
  receive(u8) {
    if (this.session) {
      this.session.receive(u8);
      return;
    }
    // The engine is still loading: keep for the handshake, within a bound.
    const socket = this._socket;
    this._cipherInBytes += u8.length;
    if (this._cipherInBytes > CIPHER_IN_LIMIT) {
      socket._finish(
        socket._error(
          "TLSError",
          `TLS with ${socket._hostPort} failed: the server sent more than ${CIPHER_IN_LIMIT / 1024} KiB before the TLS ` +
            "handshake began (a TLS server sends nothing before the client's hello): it does not speak TLS here, or " +
            "something on the path is injecting data",
        ),
      );
      return;
    }
    this._cipherIn.push(u8);
  }

  /** Begin the handshake once the engine is ready and the WebSocket open. */
  maybeHandshake() {
    const socket = this._socket;
    if (socket._done || socket._closing || this.state !== "preparing" || !this._prepared) return;
    if (socket._ws.readyState !== WS_OPEN) return;
    const ws = socket._ws;
    this.state = "handshaking";
    this._handshakeStart = performance.now();
    const current = () => !socket._done && socket._ws === ws;
    const prepared = this._prepared;
    this._prepared = null; // the session's now (it lets go of its trust context when it ends)
    this.session = this._engine.connect(prepared, this._conn(), {
      write: (/** @type {Uint8Array} */ u8) => {
        if (current() && ws.readyState === WS_OPEN) wsSend(ws, u8);
      },
      data: (/** @type {Uint8Array} */ u8) => {
        if (current() && !socket._closing) socket._emit("data", { type: "data", data: u8.buffer });
      },
      secure: (/** @type {{engine: string, protocol: string, cipher?: string}} */ info) => {
        if (current() && !socket._closing) this._onSecure(info);
      },
      fail: (/** @type {Error} */ error) => {
        // The handshake (or the connection) failed: the end (never another engine).
        if (current() && !socket._closing) socket._finish(error);
      },
      closed: () => {
        // The peer's close_notify.
        if (current() && !socket._closing) socket._finish(null);
      },
    });
    const pending = this._cipherIn;
    this._cipherIn = [];
    this._cipherInBytes = 0;
    for (const u8 of pending) {
      if (socket._done || !this.session) break;
      this.session.receive(u8);
    }
  }

  /** @param {{engine: string, protocol: string, cipher?: string}} info */
  _onSecure(info) {
    const socket = this._socket;
    this.state = "active";
    const handshakeMs = performance.now() - this._handshakeStart; // ClientHello to verified
    const queued = this._queue;
    this._queue = [];
    for (const u8 of queued) {
      this.queued -= u8.length;
      if (!socket._done) this.session.send(u8);
    }
    if (socket._done) return;
    socket._secured({ engine: info.engine, protocol: info.protocol, cipher: info.cipher ?? null, handshakeMs });
  }

  /** The network closed: the error the engine reports (a handshake cut short), or null. */
  end() {
    return this.session ? this.session.end() : null;
  }

  /** Drop what waits (close, or the end). */
  dropQueues() {
    this._queue = [];
    this.queued = 0;
    this._cipherIn = [];
    this._cipherInBytes = 0;
  }

  /** Stop: a close_notify when the engine sends one; let go of a context never connected. */
  close() {
    if (this.session) this.session.close();
    this._prepared?.release?.();
    this._prepared = null;
  }
}
