// pysmtp-wasm TLS with OpenSSL 3 compiled to WebAssembly (web/openssl/): TLS 1.2 and 1.3, the
// chain, the purpose and the host name verified by OpenSSL itself. The default engine.

import { cachedRoots, LEGACY_HINT, loadRootsFor, nameProblem, noAnchors, normalizeName, pemBlocks } from "./common.js";
import { OPENSSL_SCRATCH, resolveOpenSSL } from "./openssl-lib.js";
import { ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED, opensslError } from "./openssl-errors.js";
import { TlsSession } from "./session.js";

/** @typedef {import("./common.js").TlsConnection} TlsConnection */
/** @typedef {import("./session.js").TlsIo} TlsIo */
/** @typedef {import("./openssl-lib.js").OpenSSL} OpenSSL */
/** @typedef {import("./openssl-lib.js").Trust} Trust */

/**
 * What prepare() makes ready for one connection: the library, the trust context, and (for a
 * pinned `ca`) the release of this connection's hold on it, which the session takes over.
 * @typedef {object} OpenSSLPrepared
 * @property {OpenSSL} lib
 * @property {Trust} trust
 * @property {string} anchors what a chain must end in, in words
 * @property {() => void} release let go of `trust` (nothing for the shared root stores)
 */

export const opensslEngine = {
  name: "openssl",
  protocols: "TLS 1.2/1.3",

  /** @param {TlsConnection} conn @returns {Promise<OpenSSLPrepared>} */
  async prepare(conn) {
    let lib;
    try {
      lib = await resolveOpenSSL(conn.openssl);
    } catch (error) {
      const message = `cannot start TLS with ${conn.hostPort}: ${/** @type {any} */ (error)?.message}`;
      throw conn.error("TLSError", message, { engine: "openssl" });
    }
    if (conn.ca) {
      const { trust, release } = lib.acquirePinned(conn.ca.flatMap(pemBlocks).join("\n"));
      if (!trust.count) {
        release();
        throw conn.error(
          "TLSError",
          `cannot verify the certificate of ${conn.hostPort}: OpenSSL cannot read the \`ca\` certificate` +
            `${trust.skipped > 1 ? "s" : ""}`,
          { engine: "openssl" },
        );
      }
      const anchors =
        `the pinned \`ca\` certificate${trust.count > 1 ? "s" : ""}` +
        (trust.skipped ? ` (${trust.skipped} more that OpenSSL cannot read were ignored)` : "");
      return { lib, trust, anchors, release };
    }
    if (conn.rootsUrl) {
      const roots = await loadRootsFor(conn, "OpenSSL", (url) =>
        // lib's own: an SSL_CTX* means nothing in another module's memory
        cachedRoots(lib.rootStores, url, async (blocks) => {
          const trust = lib.context(blocks.join("\n"), false);
          if (!trust.count) {
            lib.freeContext(trust);
            throw new Error("it contains no certificate OpenSSL can read");
          }
          return trust;
        }),
      );
      const anchors =
        `any of the ${roots.count} root certificates from ${conn.rootsUrl}` +
        (roots.skipped ? ` (${roots.skipped} that OpenSSL cannot read were skipped)` : "");
      return { lib, trust: roots, anchors, release: () => {} };
    }
    throw noAnchors(conn);
  },

  /** @param {OpenSSLPrepared} prepared @param {TlsConnection} conn @param {TlsIo} io */
  connect(prepared, conn, io) {
    return new OpenSSLSession(prepared, conn, io);
  },

  /**
   * How many `ca` contexts (SSL_CTX) are alive in the OpenSSL of this option: each is freed
   * when the last connection pinning those certificates ends.
   * @param {any} option the openssl option (PySmtp.Socket.defaults.openssl: the page's module)
   */
  async pinnedContexts(option) {
    return (await resolveOpenSSL(option)).pinnedContexts;
  },
};

class OpenSSLSession extends TlsSession {
  /** @param {OpenSSLPrepared} prepared @param {TlsConnection} conn @param {TlsIo} io */
  constructor(prepared, conn, io) {
    super("openssl", conn, io); // (pending stays 0: OpenSSL encrypts at once)
    this._lib = prepared.lib;
    this._anchors = prepared.anchors;
    /** this connection's hold on its trust context, let go when it ends */
    this._release = prepared.release;
    this._host = normalizeName(conn.servername);
    // The last line before C: the socket refuses such names already (a NUL would cut the name
    // OpenSSL checks the certificate against).
    const problem = nameProblem(this._host);
    let why = problem ? `: it ${problem}` : "";
    this._ssl = 0;
    if (this._lib.trapped) {
      why = `: this OpenSSL trapped on another connection (${this._lib.trapped.message})`;
    } else if (!problem) {
      try {
        this._ssl = this._lib.withString(this._host, (ptr) => this._lib.m._pt_new(prepared.trust.sslCtx, ptr), true);
      } catch (error) {
        why = `: ${error && error.message}`;
      }
    }
    if (!this._ssl) {
      this._stop();
      queueMicrotask(() =>
        io.fail(conn.error("TLSError", `cannot start TLS with ${conn.hostPort}: OpenSSL refused the name ${JSON.stringify(this._host)}${why}`, { engine: "openssl" })),
      );
      return;
    }
    this._call(() => this._pump()); // the ClientHello
  }

  /** @param {Uint8Array} u8 ciphertext from the network */
  receive(u8) {
    if (this._closed) return;
    this._noteReceived(u8);
    this._call(() => {
      const { m, scratch } = this._lib;
      for (let i = 0; i < u8.length && !this._closed; i += OPENSSL_SCRATCH) {
        const part = u8.subarray(i, i + OPENSSL_SCRATCH);
        m.HEAPU8.set(part, scratch);
        m._pt_feed(this._ssl, scratch, part.length);
        this._pump();
      }
    });
  }

  /** @param {Uint8Array} u8 plaintext to encrypt and send (only after io.secure) */
  send(u8) {
    if (this._closed || !this._active) return;
    this._call(() => {
      const { m, scratch } = this._lib;
      for (let i = 0; i < u8.length && !this._closed; i += OPENSSL_SCRATCH) {
        const part = u8.subarray(i, i + OPENSSL_SCRATCH);
        m.HEAPU8.set(part, scratch);
        if (m._pt_write(this._ssl, scratch, part.length) < 0) {
          this._fail(this._errorFrom());
          return;
        }
      }
      this._flush();
    });
  }

  /** The network closed. @returns {Error | null} */
  end() {
    if (this._closed) return null;
    if (this._active) {
      this._stop();
      return null;
    }
    const error = this._notTls() || this._conn.error(
      "TLSError",
      `TLS handshake with ${this._conn.hostPort} failed: the server closed the connection during the TLS handshake without ` +
        `saying why (no alert); OpenSSL speaks TLS 1.2 and 1.3. ${LEGACY_HINT}`,
      { engine: "openssl" },
    );
    this._stop();
    return error;
  }

  close() {
    if (this._closed) return;
    if (this._active && !this._lib.trapped) {
      // close_notify, written before the WebSocket closes
      this._call(() => {
        this._lib.m._pt_shutdown(this._ssl);
        this._flush();
      });
    }
    this._stop();
  }

  /** Stop, and free the SSL and this connection's hold on its context (not in a module that trapped). */
  _stop() {
    this._closed = true;
    if (this._ssl && !this._lib.trapped) this._lib.m._pt_free(this._ssl);
    this._ssl = 0;
    this._release();
  }

  /**
   * A call into OpenSSL, a throw turned into a TLSError (TlsSession). A trap in it (a
   * WebAssembly.RuntimeError) marks the module as not to be trusted: this connection ends with
   * a TLSError, and so does every other one on it at its next call, nothing calls into it
   * again, and the page's loader makes a new module for the next connection.
   * @param {() => void} fn
   */
  _call(fn) {
    super._call(() => {
      const trapped = this._lib.trapped;
      if (trapped) throw new Error(`OpenSSL trapped on another connection (${trapped.message}); this one cannot go on`);
      try {
        fn();
      } catch (error) {
        if (!(error instanceof WebAssembly.RuntimeError)) throw error;
        this._lib.trap(error);
        throw new Error(`OpenSSL trapped (${error.message}); this OpenSSL module is not used again`);
      }
    });
  }

  /** Move the handshake on, then read what plaintext there is. */
  _pump() {
    const m = this._lib.m;
    if (!this._active) {
      const r = m._pt_handshake(this._ssl);
      this._flush();
      // io.write may have ended the session (its SSL freed, this._ssl 0): nothing more to do
      if (this._closed) return;
      if (r === -2 || r === -1) {
        this._fail(this._errorFrom());
        return;
      }
      if (r === 0) return;
      this._active = true;
      this._io.secure({
        engine: "openssl",
        protocol: this._lib.str(m._pt_version(this._ssl)).replace(/^TLSv/, "TLS "),
        cipher: this._lib.str(m._pt_cipher(this._ssl)),
      });
      if (this._closed) return;
    }
    this._readPlaintext();
  }

  _readPlaintext() {
    const { m, scratch } = this._lib;
    /** @type {Uint8Array[]} */
    const parts = [];
    let filled = 0;
    let r = 0;
    for (;;) {
      r = m._pt_read(this._ssl, scratch + filled, OPENSSL_SCRATCH - filled);
      if (r > 0) {
        filled += r;
        if (filled === OPENSSL_SCRATCH) {
          parts.push(m.HEAPU8.slice(scratch, scratch + filled));
          filled = 0;
        }
        continue;
      }
      break;
    }
    if (filled) parts.push(m.HEAPU8.slice(scratch, scratch + filled));
    this._flush(); // a read may answer something (a KeyUpdate, a close_notify)
    for (const part of parts) {
      if (this._closed) return;
      this._io.data(part);
    }
    if (this._closed) return;
    if (r === -1) {
      this._stop();
      this._io.closed(); // the peer's close_notify
    } else if (r === -2) {
      this._fail(this._errorFrom());
    }
  }

  /** Hand the ciphertext OpenSSL wrote to the network, in one piece. */
  _flush() {
    const { m, scratch } = this._lib;
    const total = m._pt_pending(this._ssl);
    if (!total) return;
    const out = new Uint8Array(total);
    let got = 0;
    while (got < total) {
      const n = m._pt_take(this._ssl, scratch, Math.min(OPENSSL_SCRATCH, total - got));
      if (n <= 0) break;
      out.set(m.HEAPU8.subarray(scratch, scratch + n), got);
      got += n;
    }
    if (!this._closed) this._io.write(got === total ? out : out.subarray(0, got));
  }

  /** The error of the call that just failed: OpenSSL's codes (openssl-errors.js). */
  _errorFrom() {
    const { m } = this._lib;
    const str = (/** @type {number} */ p) => this._lib.str(p);
    m._pt_error_take();
    const lib = m._pt_error_lib();
    const reason = m._pt_error_reason();
    const verifying = lib === ERR_LIB_SSL && reason === SSL_R_CERTIFICATE_VERIFY_FAILED && this._ssl;
    const verifyCode = verifying ? m._pt_verify_result(this._ssl) : null;
    const failure = {
      lib,
      reason,
      text: str(m._pt_error_string()),
      verifyCode,
      verifyText: verifyCode === null ? "" : str(m._pt_verify_string(verifyCode)),
      peerNames: verifying ? str(m._pt_peer_names(this._ssl)) : "",
    };
    const conn = this._conn;
    return opensslError(failure, {
      hostPort: conn.hostPort,
      host: this._host,
      anchors: this._anchors,
      active: this._active,
      notTls: this._notTls(),
      error: conn.error,
    });
  }
}
