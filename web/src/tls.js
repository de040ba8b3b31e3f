// pysmtp-wasm TLS engines: the client side of one TLS connection over a raw byte stream (our
// WebSocket to websockify), behind one small interface, so the socket (socket.js) does not care
// which library does the cryptography.
//
//   engine.prepare(ctx)                  -> Promise<prepared>  load the library, parse the trust
//                                          anchors (`ca` for pinning, else the root bundle)
//   engine.connect(prepared, ctx, io)    -> session            start the client handshake
//   session.receive(u8)   ciphertext from the network
//   session.send(u8)      plaintext to encrypt (only after io.secure)
//   session.end()         the network closed: -> the error to report (or null)
//   session.close()       stop; no callback after this
//   session.busy          true while the engine is inside a synchronous call (close must wait)
//   session.pending       plaintext bytes accepted by send() and not yet handed to io.write
//
//   io.write(u8)          ciphertext to the network          io.data(u8)     plaintext arrived
//   io.secure(info)       handshake done and the certificate verified: {engine, protocol}
//   io.fail(error)        a TLSError; error.versionRefused is true only when the server said,
//                         in an alert or in its ServerHello, that the protocol version is the problem
//   io.closed()           the peer closed the TLS connection (close_notify)
//
// Engines: "forge" (node-forge 1.4.3: TLS 1.0/1.1, RSA key exchange, RSA certificates) and
// "subtls" (subtls 0.5.0 over WebCrypto: TLS 1.3, P-256, TLS_AES_128_GCM_SHA256). Both verify
// the chain and the host name before io.secure, so nothing of the application goes out before.
//
// A plain script: the build concatenates it before socket.js, inside one IIFE.

const PySmtpTls = (() => {
  /** Plaintext bytes per forge tls.prepare() (one TLS record). */
  const TLS_CHUNK = 16 * 1024;
  /** String.fromCharCode.apply() argument count (larger blows the stack around 2 MiB). */
  const BIN_CHUNK = 8192;
  const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
  // Alert descriptions (RFC 8446 6, RFC 5246 7.2)
  const ALERT_HANDSHAKE_FAILURE = 40;
  const ALERT_BAD_CERTIFICATE = 42;
  const ALERT_CERTIFICATE_EXPIRED = 45;
  const ALERT_UNKNOWN_CA = 48;
  const ALERT_PROTOCOL_VERSION = 70;
  const ALERT_INSUFFICIENT_SECURITY = 71;
  const ALERT_INTERNAL_ERROR = 80;
  const ALERT_INAPPROPRIATE_FALLBACK = 86;
  const ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name", 116: "certificate_required",
    120: "no_application_protocol",
  };
  const FORGE_HINT = "node-forge speaks only TLS 1.0/1.1";
  const SUBTLS_HINT = "subtls speaks only TLS 1.3";
  /** TLS_FALLBACK_SCSV (RFC 7507): sent by forge when it runs as the fallback of a TLS 1.3 try. */
  const FALLBACK_SCSV = { id: [0x56, 0x00], name: "TLS_FALLBACK_SCSV" };

  // -- bytes -----------------------------------------------------------------------------------

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

  /** @param {Uint8Array} u8 printable preview of received bytes */
  function preview(u8) {
    let s = "";
    for (const b of u8.subarray(0, 40)) {
      s += b === 13 || b === 10 || (b >= 32 && b < 127) ? String.fromCharCode(b) : ".";
    }
    return JSON.stringify(s);
  }

  /**
   * @param {"ConnectionError" | "TLSError"} name
   * @param {string} message
   * @param {object} [extra] extra properties (host, port, alert, versionRefused, ...)
   */
  function makeError(name, message, extra) {
    const error = new Error(message);
    error.name = name;
    if (extra) Object.assign(error, extra);
    return error;
  }

  /** @param {number} description */
  function alertName(description) {
    return ALERT_NAMES[description] || `alert ${description}`;
  }

  /** @param {unknown} text @returns {string[]} the PEM CERTIFICATE blocks in it */
  function pemBlocks(text) {
    return String(text).match(PEM_CERT_RE) || [];
  }

  /** @param {string} block one PEM block @returns {Uint8Array} its DER */
  function pemToDer(block) {
    const b64 = block.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
    return binToU8(atob(b64));
  }

  /** @param {string} url */
  function absoluteUrl(url) {
    try {
      return new URL(url, globalThis.location && globalThis.location.href).href;
    } catch (_) {
      return url;
    }
  }

  /**
   * Fetch and parse a root bundle once per page and engine.
   * @template T
   * @param {Map<string, Promise<T>>} cache
   * @param {string} url
   * @param {(blocks: string[]) => Promise<T>} parse
   * @returns {Promise<T>}
   */
  function cachedRoots(cache, url, parse) {
    const key = absoluteUrl(url);
    let promise = cache.get(key);
    if (!promise) {
      promise = (async () => {
        const response = await fetch(key);
        if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
        return parse(pemBlocks(await response.text()));
      })();
      cache.set(key, promise);
      // A failed load may be retried by a later connection.
      promise.catch(() => {
        if (cache.get(key) === promise) cache.delete(key);
      });
    }
    return promise;
  }

  /**
   * @param {any} ctx the connection context
   * @param {string} engineName
   * @param {(url: string) => Promise<any>} load
   */
  async function loadRootsFor(ctx, engineName, load) {
    try {
      return await load(ctx.rootsUrl);
    } catch (error) {
      throw ctx.error(
        "TLSError",
        `cannot verify the certificate of ${ctx.hostPort}: loading the root certificates from ${ctx.rootsUrl} ` +
          `failed${engineName ? ` (${engineName})` : ""}: ${error && error.message}`,
      );
    }
  }

  /** @param {any} ctx */
  function noAnchors(ctx) {
    return ctx.error(
      "TLSError",
      `cannot verify the certificate of ${ctx.hostPort}: no trust anchors. Pass \`ca\` (the PEM certificate(s) to trust) ` +
        "or `rootsUrl` (the URL of a PEM bundle such as Mozilla's roots or certifi's cacert.pem); " +
        "JavaScript TLS cannot use the browser's certificate store",
    );
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

  // == node-forge ================================================================================

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

  /** @param {any} forge @param {any} cert @returns {string} DER as a binary string */
  function forgeDer(forge, cert) {
    return forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes();
  }

  /** @type {Map<string, Promise<{store: any, count: number, skipped: number}>>} */
  const forgeRootsCache = new Map();

  /** @param {any} forge @param {string} url */
  function loadForgeRoots(forge, url) {
    return cachedRoots(forgeRootsCache, url, async (blocks) => {
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
    });
  }

  /**
   * @param {any} cert a forge certificate
   * @param {string} servername
   * @returns {{ok: boolean, names: string[]}}
   */
  function forgeCheckHostName(cert, servername) {
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
  function forgeDn(cert, which = "subject") {
    const attrs = cert[which].attributes.map((a) => `${a.shortName || a.name || a.type}=${a.value}`);
    return attrs.join(", ") || "(empty name)";
  }

  const forgeEngine = {
    name: "forge",
    protocols: "TLS 1.0/1.1",

    /** @param {any} ctx */
    async prepare(ctx) {
      const forge = await resolveForge(ctx.forge);
      const hp = ctx.hostPort;
      if (ctx.ca) {
        const blocks = ctx.ca.flatMap(pemBlocks);
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
          throw ctx.error(
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
          trust: { store: forge.pki.createCaStore(certs), pinned: new Set(certs.map((c) => forgeDer(forge, c))), anchors },
        };
      }
      if (ctx.rootsUrl) {
        const roots = await loadRootsFor(ctx, "node-forge", (url) => loadForgeRoots(forge, url));
        const anchors =
          `any of the ${roots.count} root certificates from ${ctx.rootsUrl}` +
          (roots.skipped ? ` (${roots.skipped} non-RSA roots in it were skipped: node-forge cannot read them)` : "");
        return { forge, trust: { store: roots.store, pinned: null, anchors } };
      }
      throw noAnchors(ctx);
    },

    /** @param {any} prepared @param {any} ctx @param {any} io */
    connect(prepared, ctx, io) {
      return new ForgeSession(prepared, ctx, io);
    },
  };

  class ForgeSession {
    /** @param {any} prepared @param {any} ctx @param {any} io */
    constructor(prepared, ctx, io) {
      this._forge = prepared.forge;
      this._trust = prepared.trust;
      this._ctx = ctx;
      this._io = io;
      this._closed = false;
      this._depth = 0;
      this._active = false;
      this._verified = false;
      /** @type {{error: Error, alert: number} | null} */
      this._verifyFailure = null;
      /** @type {Uint8Array | null} */
      this._firstBytes = null;
      this.pending = 0;
      const forge = this._forge;
      const suites = forge.tls.CipherSuites;
      const cipherSuites = [suites.TLS_RSA_WITH_AES_128_CBC_SHA, suites.TLS_RSA_WITH_AES_256_CBC_SHA];
      // As the fallback of a TLS 1.3 try: tell the server (RFC 7507), so that a server that does
      // speak a newer version refuses (inappropriate_fallback) instead of being downgraded.
      if (ctx.fallback) cipherSuites.push(FALLBACK_SCSV);
      this._tls = forge.tls.createConnection({
        server: false,
        caStore: this._trust.store,
        // SNI: a host name only (RFC 6066: never an IP literal)
        virtualHost: ipBytes(normalizeName(ctx.servername)) ? null : ctx.servername,
        cipherSuites,
        verify: (/** @type {any} */ c, /** @type {any} */ verified, /** @type {number} */ depth, /** @type {any[]} */ certs) => {
          if (depth === 0) {
            this._verifyFailure = this._verifyPeer(certs);
            this._verified = !this._verifyFailure;
          }
          if (!this._verified) {
            const failure = this._verifyFailure || {
              error: ctx.error("TLSError", `the certificate of ${ctx.hostPort} could not be verified`),
              alert: ALERT_BAD_CERTIFICATE,
            };
            this._verifyFailure = failure;
            return { alert: failure.alert, message: failure.error.message };
          }
          return true; // our own full check (above, at depth 0) passed
        },
        connected: (/** @type {any} */ c) => {
          if (this._closed) return;
          if (!this._verified) {
            // forge always verifies a server certificate; never go on without our check.
            this._fail(ctx.error("TLSError", `the certificate of ${ctx.hostPort} was not verified`));
            return;
          }
          this._active = true;
          const v = c.version || {};
          this._io.secure({ engine: "forge", protocol: v.minor === 2 ? "TLS 1.1" : v.minor === 1 ? "TLS 1.0" : "TLS" });
        },
        tlsDataReady: (/** @type {any} */ c) => {
          const bytes = c.tlsData.getBytes();
          if (bytes.length && !this._closed) this._io.write(binToU8(bytes));
        },
        dataReady: (/** @type {any} */ c) => {
          const bytes = c.data.getBytes();
          if (bytes.length && !this._closed) this._io.data(binToU8(bytes));
        },
        closed: () => {
          // The peer's close_notify (forge answered it), or the end after an error.
          if (this._closed) return;
          this._closed = true;
          this._io.closed();
        },
        error: (/** @type {any} */ c, /** @type {any} */ err) => {
          if (this._closed) return;
          this._fail(this._errorFrom(err));
        },
      });
      this._call(() => this._tls.handshake());
    }

    get busy() {
      return this._depth > 0;
    }

    /** @param {Uint8Array} u8 */
    receive(u8) {
      if (this._closed) return;
      if (!this._active && !this._firstBytes) this._firstBytes = u8.slice(0, 64);
      const bin = u8ToBin(u8);
      this._call(() => this._tls.process(bin));
    }

    /** @param {Uint8Array} u8 plaintext: one TLS record per 16 KiB */
    send(u8) {
      for (let i = 0; i < u8.length && !this._closed; i += TLS_CHUNK) {
        const bin = u8ToBin(u8.subarray(i, i + TLS_CHUNK));
        this._call(() => this._tls.prepare(bin));
      }
    }

    /** The network closed. @returns {Error | null} */
    end() {
      if (this._closed || this._active) return null;
      return this._ctx.error(
        "TLSError",
        `TLS handshake with ${this._ctx.hostPort} failed: the server closed the connection during the TLS handshake ` +
          `(${this._versionHint()})`,
      );
    }

    close() {
      if (this._closed) return;
      this._closed = true;
      if (this._active) {
        try {
          this._tls.close(); // close_notify, written before the WebSocket closes
        } catch (_) {
          /* closing anyway */
        }
      }
    }

    _versionHint() {
      return this._ctx.fallback
        ? `before that, on another connection: ${this._ctx.fallback}; ${FORGE_HINT}: it most likely ` +
            "speaks only TLS 1.2, which neither engine speaks"
        : `it most likely requires TLS 1.2 or newer; ${FORGE_HINT}`;
    }

    /** @param {Error} error */
    _fail(error) {
      if (this._closed) return;
      this._closed = true;
      this._io.fail(error);
    }

    /** @param {() => void} fn run a call into forge, turning a throw into a TLSError */
    _call(fn) {
      this._depth += 1;
      try {
        fn();
      } catch (error) {
        this._fail(this._ctx.error("TLSError", `TLS failure on the connection to ${this._ctx.hostPort}: ${error && error.message}`));
      } finally {
        this._depth -= 1;
      }
    }

    /** @param {any} err forge's error: {message, origin, alert: {level, description}} */
    _errorFrom(err) {
      if (this._verifyFailure) return this._verifyFailure.error;
      const ctx = this._ctx;
      const hp = ctx.hostPort;
      const description = err && err.alert ? err.alert.description : undefined;
      const from = err && err.origin === "server" ? "server" : "client";
      const alertText = description === undefined ? "" : `${from} alert: ${alertName(description)}`;
      const extra = { alert: description, alertOrigin: from, engine: "forge" };
      if (!this._active) {
        const first = this._firstBytes;
        if (first && first.length && (first[0] < 20 || first[0] > 24)) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server did not answer in TLS (it sent ${preview(first)}); ` +
              "is this a plaintext port? (for STARTTLS, connect without useSecureTransport)",
            extra,
          );
        }
        if (from === "server" && description === ALERT_INAPPROPRIATE_FALLBACK) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: ${ctx.fallback}; on a new connection it refused the fallback ` +
              `to TLS 1.0/1.1 because it speaks a newer version (${alertText}): it most likely speaks only TLS 1.2, ` +
              "which neither engine speaks (or someone on the path forged the TLS 1.3 refusal)",
            extra,
          );
        }
        if (description === ALERT_PROTOCOL_VERSION) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: ` +
              (ctx.fallback
                ? `${ctx.fallback}; on a new connection it refused TLS 1.0/1.1 (node-forge) too (${alertText}): it most ` +
                  "likely speaks only TLS 1.2, which neither engine speaks"
                : `the server requires TLS 1.2 or newer, and ${FORGE_HINT} (${alertText})`),
            Object.assign(extra, { versionRefused: true }),
          );
        }
        if (
          from === "server" &&
          [ALERT_HANDSHAKE_FAILURE, ALERT_INSUFFICIENT_SECURITY, ALERT_INTERNAL_ERROR].includes(description)
        ) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server refused the handshake (${alertText}); ${this._versionHint()} ` +
              "(RSA key exchange, AES-CBC ciphers)",
            extra,
          );
        }
      }
      const what = this._active ? "TLS connection to" : "TLS handshake with";
      const message = String((err && err.message) || "unknown error").replace(/\.$/, "");
      return ctx.error("TLSError", `${what} ${hp} failed: ${message}${alertText ? ` (${alertText})` : ""}`, extra);
    }

    /**
     * Our verification of the server's chain: trust, then the host name.
     * @param {any[]} certs forge certificates, leaf first
     * @returns {{error: Error, alert: number} | null}
     */
    _verifyPeer(certs) {
      const forge = this._forge;
      const trust = this._trust;
      const ctx = this._ctx;
      const hp = ctx.hostPort;
      const extra = { engine: "forge", certificate: true };
      try {
        if (!certs || !certs.length) throw { message: "the server sent no certificate" };
        const leaf = certs[0];
        const pinnedLeaf = !!trust.pinned && trust.pinned.has(forgeDer(forge, leaf));
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
          const who = `'${forgeDn(cert)}'` + (cert.isIssuer(cert) ? " (self-signed)" : ` (issued by '${forgeDn(cert, "issuer")}')`);
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
            error: ctx.error("TLSError", `the certificate of ${hp} is not trusted: ${reason}`, Object.assign({ forgeError: code }, extra)),
            alert,
          };
        }
        const { ok, names } = forgeCheckHostName(leaf, ctx.servername);
        if (!ok) {
          const shown = names.length ? names.slice(0, 10).join(", ") + (names.length > 10 ? ", …" : "") : "no name";
          const target = normalizeName(ctx.servername);
          return {
            error: ctx.error("TLSError", `the certificate of ${hp} is for ${shown}, not ${target}`, extra),
            alert: ALERT_BAD_CERTIFICATE,
          };
        }
        return null;
      } catch (ex) {
        return {
          error: ctx.error("TLSError", `the certificate of ${hp} could not be verified: ${(ex && ex.message) || ex}`, extra),
          alert: ALERT_BAD_CERTIFICATE,
        };
      }
    }
  }

  // == subtls =====================================================================================

  /**
   * @param {any} option the subtls module, a function returning (a promise of) it, or undefined
   *   for globalThis.subtls
   */
  async function resolveSubtls(option) {
    let lib = option == null ? globalThis.subtls : option;
    if (typeof lib === "function" && typeof lib.startTls !== "function") lib = await lib();
    if (!lib || typeof lib.startTls !== "function" || typeof lib.ReadQueue !== "function" || !lib.TrustedCert) {
      throw new Error("subtls is not available (serve dist/subtls.mjs beside pysmtp-wasm.js, or pass options.subtls)");
    }
    return lib;
  }

  /** WebCrypto (crypto.subtle) exists only in secure contexts: https pages and localhost. */
  function webCryptoProblem() {
    const subtle = globalThis.crypto && globalThis.crypto.subtle;
    if (subtle && globalThis.isSecureContext !== false) return null;
    const where = (globalThis.location && globalThis.location.origin) || "this page";
    return (
      `TLS 1.3 (subtls) needs WebCrypto (crypto.subtle), which browsers give only to secure contexts: ` +
      `pages served over https:// or from localhost; ${where} is not one. Serve the page over https ` +
      `(or from localhost), or choose tlsEngine: "forge" explicitly (TLS 1.0/1.1 only, deprecated)`
    );
  }

  /**
   * subtls's root database ({index: {offsets, subjects}, data}) built like its databaseFromPEM(),
   * but one certificate at a time, skipping those subtls cannot parse instead of failing them all.
   * @param {any} lib @param {string[]} blocks
   */
  async function subtlsDatabase(lib, blocks) {
    const ders = [];
    const subjects = /** @type {Record<string, number>} */ ({});
    let skipped = 0;
    for (const block of blocks) {
      let der;
      let cert;
      try {
        der = pemToDer(block);
        cert = await lib.TrustedCert.create(der);
      } catch (_) {
        skipped += 1;
        continue;
      }
      const index = ders.length;
      if (cert.subjectKeyIdentifier) subjects[lib.hexFromU8(cert.subjectKeyIdentifier)] = index;
      subjects[lib.Cert.stringFromDistinguishedName(cert.subject)] = index;
      ders.push(der);
    }
    const offsets = [0];
    for (const der of ders) offsets.push(offsets[offsets.length - 1] + der.length);
    const data = new Uint8Array(offsets[offsets.length - 1]);
    ders.forEach((der, i) => data.set(der, offsets[i]));
    return { db: { index: { offsets, subjects }, data }, count: ders.length, skipped };
  }

  /** @type {Map<string, Promise<{db: any, count: number, skipped: number}>>} */
  const subtlsRootsCache = new Map();

  /** @type {WeakMap<any, any>} a ReadQueue subclass per subtls module */
  const feedQueues = new WeakMap();

  /** @param {any} lib a ReadQueue we feed from the WebSocket (subtls pulls from it) */
  function feedQueue(lib) {
    let FeedQueue = feedQueues.get(lib);
    if (!FeedQueue) {
      FeedQueue = class extends lib.ReadQueue {
        constructor() {
          super();
          this.ended = false;
        }
        moreDataMayFollow() {
          return !this.ended;
        }
      };
      feedQueues.set(lib, FeedQueue);
    }
    return new FeedQueue();
  }

  const subtlsEngine = {
    name: "subtls",
    protocols: "TLS 1.3",

    /** @param {any} ctx */
    async prepare(ctx) {
      const problem = webCryptoProblem();
      if (problem) throw ctx.error("TLSError", `cannot start TLS with ${ctx.hostPort}: ${problem}`, { engine: "subtls" });
      const lib = await resolveSubtls(ctx.subtls);
      if (ctx.ca) {
        const blocks = ctx.ca.flatMap(pemBlocks);
        const { db, count, skipped } = await subtlsDatabase(lib, blocks);
        if (!count) {
          throw ctx.error(
            "TLSError",
            `cannot verify the certificate of ${ctx.hostPort}: subtls cannot read the \`ca\` certificate` +
              `${blocks.length > 1 ? "s" : ""} (it reads X.509 v3 certificates with RSA or ECDSA P-256/P-384 keys)`,
          );
        }
        const anchors =
          `the pinned \`ca\` certificate${count > 1 ? "s" : ""}` +
          (skipped ? ` (${skipped} more that subtls cannot read were ignored)` : "");
        return { lib, db, anchors, pinned: true };
      }
      if (ctx.rootsUrl) {
        const roots = await loadRootsFor(ctx, "subtls", (url) =>
          cachedRoots(subtlsRootsCache, url, async (blocks) => {
            const parsed = await subtlsDatabase(lib, blocks);
            if (!parsed.count) throw new Error("it contains no certificate subtls can read");
            return parsed;
          }),
        );
        const anchors =
          `any of the ${roots.count} root certificates from ${ctx.rootsUrl}` +
          (roots.skipped ? ` (${roots.skipped} that subtls cannot read were skipped)` : "");
        return { lib, db: roots.db, anchors, pinned: false };
      }
      throw noAnchors(ctx);
    },

    /** @param {any} prepared @param {any} ctx @param {any} io */
    connect(prepared, ctx, io) {
      return new SubtlsSession(prepared, ctx, io);
    },
  };

  class SubtlsSession {
    /** @param {any} prepared @param {any} ctx @param {any} io */
    constructor(prepared, ctx, io) {
      this._prepared = prepared;
      this._ctx = ctx;
      this._io = io;
      this._closed = false;
      this._active = false;
      this._queue = feedQueue(prepared.lib);
      /** The server's first bytes, until its first record is complete (for the alert/version). */
      /** @type {Uint8Array | null} */
      this._head = new Uint8Array(0);
      /** @type {{kind: "alert", level: number, description: number} | {kind: "hello", version: number} | {kind: "other", type: number} | null} */
      this._first = null;
      this._writes = Promise.resolve();
      this.pending = 0;
      this.busy = false;
      /** @type {(() => Promise<Uint8Array | undefined>) | null} */
      this._read = null;
      /** @type {((u8: Uint8Array) => Promise<void>) | null} */
      this._write = null;
      const host = normalizeName(ctx.servername);
      const isIp = !!ipBytes(host);
      prepared.lib
        .startTls(host, prepared.db, this._queue.read.bind(this._queue), (/** @type {Uint8Array} */ u8) => {
          if (!this._closed) this._io.write(u8);
        }, {
          useSNI: !isIp, // RFC 6066: never an IP literal
          // subtls wants digitalSignature in a CA's keyUsage (CAs have keyCertSign, often alone),
          // and a serverAuth extKeyUsage in every leaf: we check the leaf's EKU below instead,
          // as OpenSSL does (when it is present, it must allow serverAuth).
          requireServerTlsExtKeyUsage: false,
          requireDigitalSigKeyUsage: false,
        })
        .then(
          (/** @type {any} */ result) => {
            if (this._closed) return;
            const leaf = result.userCert;
            if (leaf && leaf.extKeyUsage && !leaf.extKeyUsage.serverTls) {
              this._fail(
                ctx.error("TLSError", `the certificate of ${ctx.hostPort} is not for TLS servers (its extKeyUsage lacks serverAuth)`, {
                  engine: "subtls",
                  certificate: true,
                }),
              );
              return;
            }
            this._read = result.read;
            this._write = result.write;
            this._active = true;
            this._io.secure({ engine: "subtls", protocol: "TLS 1.3" });
            this._readLoop();
          },
          (/** @type {any} */ error) => this._fail(this._errorFrom(error)),
        );
    }

    /** @param {Uint8Array} u8 */
    receive(u8) {
      if (this._closed) return;
      if (this._head) this._sniff(u8);
      this._queue.enqueue(u8.slice());
    }

    /** @param {Uint8Array} u8 */
    send(u8) {
      if (this._closed || !this._write) return;
      const copy = u8.slice(); // encrypted later: the caller may reuse its buffer
      const write = this._write;
      this.pending += copy.length;
      // One write at a time: concurrent writes would interleave record sequence numbers.
      this._writes = this._writes.then(async () => {
        if (this._closed) return;
        try {
          await write(copy);
        } catch (error) {
          this._fail(this._ctx.error("TLSError", `TLS connection to ${this._ctx.hostPort} failed: ${error && error.message}`));
        } finally {
          this.pending -= copy.length;
        }
      });
    }

    /** The network closed. @returns {Error | null} */
    end() {
      if (this._closed) return null;
      this._queue.ended = true;
      this._queue.dequeue(); // a pending read gets "no more data"
      if (this._active) return null;
      this._closed = true;
      return this._handshakeError(null);
    }

    close() {
      if (this._closed) return;
      this._closed = true;
      this._queue.ended = true;
      try {
        this._queue.dequeue();
      } catch (_) {
        /* nothing was waiting */
      }
    }

    async _readLoop() {
      const read = /** @type {() => Promise<Uint8Array | undefined>} */ (this._read);
      while (!this._closed) {
        let record;
        try {
          record = await read();
        } catch (error) {
          if (!this._closed) {
            this._fail(this._ctx.error("TLSError", `TLS connection to ${this._ctx.hostPort} failed: ${error && error.message}`));
          }
          return;
        }
        if (this._closed) return;
        if (record === undefined) {
          // close_notify, or the network closed (the socket reports that itself)
          if (!this._queue.ended) {
            this._closed = true;
            this._io.closed();
          }
          return;
        }
        if (record.length) this._io.data(record.slice());
      }
    }

    /** @param {Error} error */
    _fail(error) {
      if (this._closed) return;
      this._closed = true;
      this._io.fail(error);
    }

    /**
     * Look at the server's first record: a plaintext alert, or the version in its ServerHello.
     * @param {Uint8Array} u8
     */
    _sniff(u8) {
      const head = /** @type {Uint8Array} */ (this._head);
      const joined = new Uint8Array(head.length + u8.length);
      joined.set(head);
      joined.set(u8, head.length);
      if (joined.length < (joined[0] === 21 ? 7 : 11)) {
        this._head = joined;
        return;
      }
      this._head = null;
      const type = joined[0];
      if (type === 21) {
        this._first = { kind: "alert", level: joined[5], description: joined[6] };
      } else if (type === 22 && joined[5] === 2) {
        this._first = { kind: "hello", version: (joined[9] << 8) | joined[10] };
      } else {
        this._first = { kind: "other", type, bytes: joined.slice(0, 64) };
      }
    }

    /** @param {any} error subtls's Error, or null when the network closed */
    _errorFrom(error) {
      const message = String((error && error.message) || error || "unknown error").split("\n")[0].trim();
      const ctx = this._ctx;
      const hp = ctx.hostPort;
      const extra = { engine: "subtls", certificate: true };
      const anchors = this._prepared.anchors;
      if (/No matching subjectAltName/.test(message)) {
        return ctx.error(
          "TLSError",
          `the certificate of ${hp} is not valid for ${normalizeName(ctx.servername)}: none of its DNS names matches ` +
            `(subtls: ${message}${ipBytes(normalizeName(ctx.servername)) ? "; subtls checks DNS names only, not IP addresses" : ""})`,
          extra,
        );
      }
      if (/End-user certificate is not valid now/.test(message)) {
        return ctx.error("TLSError", `the certificate of ${hp} is not valid now: it has expired or is not yet valid (subtls: ${message})`, extra);
      }
      if (/Signing certificate is not valid now/.test(message)) {
        return ctx.error("TLSError", `the certificate of ${hp} is not trusted: a CA certificate of its chain has expired or is not yet valid (subtls: ${message})`, extra);
      }
      if (/Ran out of certificates|did not end in a trusted root/.test(message)) {
        return ctx.error(
          "TLSError",
          `the certificate of ${hp} is not trusted: it does not chain to ${anchors} (subtls: ${message}` +
            (this._prepared.pinned ? "; with subtls, `ca` must hold a CA certificate of the chain (its root or an intermediate), not the leaf alone" : "") +
            ")",
          extra,
        );
      }
      if (/certificate verify failed|Unsupported signing|basicConstraints|pathLength|keyUsage|extKeyUsage/.test(message)) {
        return ctx.error("TLSError", `the certificate of ${hp} is not trusted: ${message}`, extra);
      }
      if (/Invalid server verify hash|certificate verify signature type/.test(message)) {
        return ctx.error("TLSError", `TLS handshake with ${hp} failed: the server's handshake signature could not be verified (subtls: ${message}; it verifies ECDSA P-256/SHA-256 and RSA-PSS/SHA-256 only)`, { engine: "subtls" });
      }
      if (/HelloRetryRequest/.test(message)) {
        return ctx.error("TLSError", `TLS handshake with ${hp} failed: the server wants a key exchange group other than P-256, the only one subtls offers (subtls: ${message})`, { engine: "subtls" });
      }
      return this._handshakeError(message);
    }

    /** @param {string | null} message subtls's, or null when the network closed */
    _handshakeError(message) {
      const ctx = this._ctx;
      const hp = ctx.hostPort;
      const first = this._first || (this._head && this._head.length ? { kind: "partial" } : null);
      const detail = message ? ` (subtls: ${message})` : "";
      if (!this._active && first && first.kind === "alert") {
        const alertText = `server alert: ${alertName(first.description)}`;
        const extra = { engine: "subtls", alert: first.description, alertOrigin: "server" };
        if (first.description === ALERT_PROTOCOL_VERSION) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server refused TLS 1.3 (${alertText}); ${SUBTLS_HINT}`,
            Object.assign(extra, { versionRefused: true }),
          );
        }
        return ctx.error(
          "TLSError",
          `TLS handshake with ${hp} failed: the server refused the TLS 1.3 handshake (${alertText}); subtls offers ` +
            "only TLS_AES_128_GCM_SHA256 with P-256 key exchange",
          extra,
        );
      }
      if (!this._active && first && first.kind === "hello" && first.version < 0x0303) {
        const name = first.version === 0x0302 ? "TLS 1.1" : first.version === 0x0301 ? "TLS 1.0" : `version 0x${first.version.toString(16)}`;
        return ctx.error(
          "TLSError",
          `TLS handshake with ${hp} failed: the server chose ${name} in its ServerHello; ${SUBTLS_HINT}`,
          { engine: "subtls", versionRefused: true, serverVersion: first.version },
        );
      }
      if (!this._active && first && first.kind === "other") {
        if (first.type < 20 || first.type > 24) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server did not answer in TLS (it sent ${preview(first.bytes)}); ` +
              "is this a plaintext port? (for STARTTLS, connect without useSecureTransport)",
            { engine: "subtls" },
          );
        }
      }
      if (message === null) {
        return ctx.error(
          "TLSError",
          `TLS handshake with ${hp} failed: the server closed the connection during the TLS 1.3 handshake without ` +
            `saying why (no alert); ${SUBTLS_HINT}: for a server that speaks only TLS 1.0/1.1, choose tlsEngine: "forge"`,
          { engine: "subtls" },
        );
      }
      return ctx.error("TLSError", `TLS handshake with ${hp} failed${detail}`, { engine: "subtls" });
    }
  }

  /** @type {Record<string, any>} */
  const engines = { subtls: subtlsEngine, forge: forgeEngine };

  /** What each tlsEngine option value tries, in order. */
  const PLANS = { auto: ["subtls", "forge"], subtls: ["subtls"], forge: ["forge"] };

  return { engines, PLANS, makeError, pemBlocks, webCryptoProblem };
})();
