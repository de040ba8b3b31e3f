// pysmtp-wasm TLS: the skeleton every engine's session shares (tls/index.js has the interface).
// An engine's session (forge.js, openssl.js) adds the library's calls.

import { preview } from "./common.js";

/** @typedef {import("./common.js").TlsConnection} TlsConnection */

/**
 * What a session tells the socket.
 * @typedef {object} TlsIo
 * @property {(u8: Uint8Array) => void} write ciphertext to the network
 * @property {(u8: Uint8Array) => void} data plaintext arrived
 * @property {(info: {engine: string, protocol: string, cipher?: string}) => void} secure handshake
 *   done and the certificate verified
 * @property {(error: Error) => void} fail a TLSError: the end
 * @property {() => void} closed the peer closed the TLS connection (close_notify)
 */

export class TlsSession {
  /**
   * @param {string} engine the engine's name ("openssl", "forge")
   * @param {TlsConnection} conn
   * @param {TlsIo} io
   */
  constructor(engine, conn, io) {
    this.engine = engine;
    this._conn = conn;
    this._io = io;
    /** no callback after this (closed, failed, or the peer's close_notify) */
    this._closed = false;
    /** the handshake is done and the certificate verified */
    this._active = false;
    /** how deep we are in calls into the library (io callbacks may run inside them) */
    this._depth = 0;
    /** @type {Uint8Array | null} the server's first bytes, to name what a non-TLS server said */
    this._firstBytes = null;
    /** plaintext bytes accepted by send() and not yet handed to io.write */
    this.pending = 0;
  }

  /** true while the engine is inside a synchronous call (close must wait) */
  get busy() {
    return this._depth > 0;
  }

  /** @param {Uint8Array} u8 ciphertext received: keep its start while the handshake runs */
  _noteReceived(u8) {
    if (!this._active && !this._firstBytes) this._firstBytes = u8.slice(0, 64);
  }

  /** @param {() => void} fn a call into the library, a throw turned into a TLSError */
  _call(fn) {
    this._depth += 1;
    try {
      fn();
    } catch (error) {
      const message = `TLS failure on the connection to ${this._conn.hostPort}: ${/** @type {any} */ (error)?.message}`;
      this._fail(this._conn.error("TLSError", message, { engine: this.engine }));
    } finally {
      this._depth -= 1;
    }
  }

  /** The end after a failure: stop, then io.fail. @param {Error} error */
  _fail(error) {
    if (this._closed) return;
    this._stop();
    this._io.fail(error);
  }

  /** Stop: no callback after this (an engine frees what it holds here too). */
  _stop() {
    this._closed = true;
  }

  /** "TLS handshake with" (or, once active, "TLS connection to"): how failures start. */
  get _what() {
    return this._active ? "TLS connection to" : "TLS handshake with";
  }

  /**
   * The error when the server's first bytes are not TLS at all (a TLS record starts with a
   * content type of 20 to 24), else null.
   * @param {object} [extra]
   * @returns {Error | null}
   */
  _notTls(extra) {
    const first = this._firstBytes;
    if (!first || !first.length || (first[0] >= 20 && first[0] <= 24)) return null;
    return this._conn.error(
      "TLSError",
      `TLS handshake with ${this._conn.hostPort} failed: the server did not answer in TLS (it sent ${preview(first)}); ` +
        "is this a plaintext port? (for STARTTLS, connect without useSecureTransport)",
      { engine: this.engine, ...extra },
    );
  }
}
