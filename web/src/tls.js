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
//   io.secure(info)       handshake done and the certificate verified: {engine, protocol, cipher}
//   io.fail(error)        a TLSError
//   io.closed()           the peer closed the TLS connection (close_notify)
//
// Engines: "openssl" (OpenSSL 3 compiled to WebAssembly, web/openssl/: TLS 1.2 and 1.3, verified
// by OpenSSL itself; the default) and "forge" (node-forge 1.4.3: TLS 1.0/1.1, RSA key exchange,
// RSA certificates, for legacy servers, only when the page chooses it: nothing falls back to it
// by itself, since a refusal of TLS 1.2/1.3 can be forged by anyone on the path). Both verify
// the chain, the certificate's purpose and the host name before io.secure, so nothing of the
// application goes out before.
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
  const ALERT_UNSUPPORTED_CERTIFICATE = 43;
  const ALERT_INTERNAL_ERROR = 80;
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
  /** What the OpenSSL engine's errors say when a server seems to speak only TLS 1.0/1.1. */
  const LEGACY_HINT =
    'pysmtp-wasm never falls back to an older TLS version by itself (anyone on the path can forge that ' +
    'refusal); if this server really speaks only TLS 1.0/1.1, choose tlsEngine: "forge" for it ' +
    "(node-forge: TLS 1.0/1.1, RSA key exchange, no forward secrecy; deprecated by RFC 8996)";
  /** Characters no host name has: C0 and C1 controls, DEL, space. */
  const BAD_NAME_CHAR = /[\x00-\x20\x7f-\x9f]/;

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
   * @param {object} [extra] extra properties (host, port, alert, ...)
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

  /**
   * What is wrong with a `ca` option, in a user's words (null: nothing). Checked when the client
   * is made, before any engine is loaded: every item holds PEM certificate blocks, and each
   * block is base64 of one DER SEQUENCE (what a certificate is). Whether the engine can use the
   * certificate (its key type, say) is known only when TLS starts.
   * @param {unknown} ca
   * @returns {string | null}
   */
  function caProblem(ca) {
    const list = Array.isArray(ca) ? ca : [ca];
    if (!list.length || list.some((c) => typeof c !== "string")) {
      return "must be a PEM string or a non-empty list of PEM strings";
    }
    let count = 0;
    for (let i = 0; i < list.length; i++) {
      const which = list.length > 1 ? `item ${i + 1}` : "";
      const blocks = pemBlocks(list[i]);
      if (!blocks.length) {
        const found = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(list[i]);
        return (
          `holds no PEM certificate${which ? ` in ${which}` : ""} (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)` +
          (found ? `; it holds a ${found[1]}` : "")
        );
      }
      for (const block of blocks) {
        count += 1;
        const body = block.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
        let der;
        try {
          der = atob(body);
        } catch (_) {
          return `holds a PEM block that is not valid base64 (certificate ${count})`;
        }
        if (!isDerSequence(der)) return `holds a PEM block that is not a certificate (certificate ${count}: not one DER SEQUENCE)`;
      }
    }
    return null;
  }

  /** @param {string} der a binary string @returns {boolean} one DER SEQUENCE, its length right */
  function isDerSequence(der) {
    if (der.length < 2 || der.charCodeAt(0) !== 0x30) return false;
    const first = der.charCodeAt(1);
    if (first < 0x80) return 2 + first === der.length;
    const n = first & 0x7f;
    if (n < 1 || n > 4 || der.length < 2 + n) return false;
    let length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + der.charCodeAt(2 + i);
    return 2 + n + length === der.length;
  }

  /**
   * Why `name` cannot be a host name to connect to and verify (null: it can). A NUL would end
   * the C string OpenSSL checks the certificate against ("localhost\0.evil.example" would be
   * checked as "localhost"); no control character or space belongs in a host name.
   * @param {unknown} name
   * @returns {string | null}
   */
  function nameProblem(name) {
    if (typeof name !== "string" || !name) return "must be a non-empty string";
    const bad = BAD_NAME_CHAR.exec(name);
    if (!bad) return null;
    const code = bad[0].charCodeAt(0);
    const what = code === 0x20 ? "a space" : `a control character (U+${code.toString(16).toUpperCase().padStart(4, "0")})`;
    return `contains ${what}: a host name has none`;
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

  /** Fields of forge's parsed extKeyUsage extension that are not usages. */
  const EKU_FIELDS = new Set(["id", "critical", "value", "name"]);

  /**
   * The check OpenSSL makes for the purpose "TLS server" (X509_PURPOSE_SSL_SERVER), which forge
   * does not: a certificate of the chain the server sent with an extendedKeyUsage extension must
   * list serverAuth (a leaf for clientAuth alone, say, is refused), and a leaf with a keyUsage
   * extension must allow digitalSignature, keyEncipherment or keyAgreement.
   * @param {any[]} certs forge certificates, leaf first
   * @returns {string | null} why the chain is not for a TLS server
   */
  function forgePurposeProblem(certs) {
    for (let i = 0; i < certs.length; i++) {
      const cert = certs[i];
      const eku = cert.getExtension("extKeyUsage");
      if (eku && eku.serverAuth !== true) {
        const usages = Object.keys(eku).filter((k) => !EKU_FIELDS.has(k) && eku[k] === true);
        const whose = i === 0 ? "its extended key usage" : `the extended key usage of '${forgeDn(cert)}' (in its chain)`;
        return `${whose} is ${usages.join(", ") || "empty"}, without serverAuth (OpenSSL says "unsuitable certificate purpose")`;
      }
      if (i === 0) {
        const ku = cert.getExtension("keyUsage");
        if (ku && !(ku.digitalSignature || ku.keyEncipherment || ku.keyAgreement)) {
          return 'its key usage allows neither digitalSignature, keyEncipherment nor keyAgreement (OpenSSL says "unsuitable certificate purpose")';
        }
      }
    }
    return null;
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
      return `it most likely requires TLS 1.2 or newer; ${FORGE_HINT}: choose tlsEngine "auto" or "openssl"`;
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
        if (description === ALERT_PROTOCOL_VERSION) {
          return ctx.error(
            "TLSError",
            `TLS handshake with ${hp} failed: the server requires TLS 1.2 or newer, and ${FORGE_HINT} ` +
              `(${alertText}): choose tlsEngine "auto" or "openssl"`,
            extra,
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
        const purpose = forgePurposeProblem(certs);
        if (purpose) {
          return {
            error: ctx.error("TLSError", `the certificate of ${hp} is not for a TLS server: ${purpose}`, extra),
            alert: ALERT_UNSUPPORTED_CERTIFICATE,
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

  // == OpenSSL ====================================================================================

  // OpenSSL's codes that the messages below tell apart (include/openssl/sslerr.h, x509_vfy.h).
  const ERR_LIB_SSL = 20;
  const SSL_R_CERTIFICATE_VERIFY_FAILED = 134;
  const SSL_R_UNSUPPORTED_PROTOCOL = 258;
  const SSL_R_WRONG_VERSION_NUMBER = 267;
  const SSL_R_PACKET_LENGTH_TOO_LONG = 198;
  /** An alert the peer sent is reported as reason SSL_AD_REASON_OFFSET + its description. */
  const SSL_AD_REASON_OFFSET = 1000;
  const X509_V_ERR = {
    UNABLE_TO_GET_ISSUER_CERT: 2,
    CERT_NOT_YET_VALID: 9,
    CERT_HAS_EXPIRED: 10,
    DEPTH_ZERO_SELF_SIGNED_CERT: 18,
    SELF_SIGNED_CERT_IN_CHAIN: 19,
    INVALID_PURPOSE: 26,
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 20,
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 21,
    HOSTNAME_MISMATCH: 62,
    IP_ADDRESS_MISMATCH: 64,
  };
  const UNTRUSTED = new Set([
    X509_V_ERR.UNABLE_TO_GET_ISSUER_CERT,
    X509_V_ERR.DEPTH_ZERO_SELF_SIGNED_CERT,
    X509_V_ERR.SELF_SIGNED_CERT_IN_CHAIN,
    X509_V_ERR.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
    X509_V_ERR.UNABLE_TO_VERIFY_LEAF_SIGNATURE,
  ]);
  /** Bytes moved in and out of WebAssembly memory per call (4 TLS records). */
  const OPENSSL_SCRATCH = 64 * 1024;

  /**
   * The OpenSSL module (web/openssl/tls.c, built by web/openssl/build.sh) with what the engine
   * needs around its exports: one scratch buffer, strings, trust contexts. One per module, and
   * one module per page: every connection shares it (it is single-threaded; calls never nest).
   */
  class OpenSSL {
    /** @param {any} module the Emscripten module (PySmtpOpenSSL() resolved) */
    constructor(module) {
      this.m = module;
      if (!module._pt_init()) {
        throw new Error("OpenSSL could not start (no entropy: crypto.getRandomValues is missing?)");
      }
      this.scratch = module._malloc(OPENSSL_SCRATCH);
      this.intPtr = module._malloc(4);
      this._decoder = new TextDecoder();
      /** @type {Map<string, {ctx: number, count: number, skipped: number}>} pinned contexts by `ca` */
      this.pinned = new Map();
    }

    /** @param {number} ptr a NUL-terminated string in WebAssembly memory */
    str(ptr) {
      const heap = this.m.HEAPU8;
      let end = ptr;
      while (heap[end]) end++;
      return this._decoder.decode(heap.subarray(ptr, end));
    }

    /**
     * @template T
     * @param {string} s @param {(ptr: number, length: number) => T} fn
     * @param {boolean} [cString] fn reads s as a C string (up to its first NUL): s must have none
     * @returns {T} fn called with s as a NUL-terminated UTF-8 string in WebAssembly memory
     */
    withString(s, fn, cString = false) {
      const bytes = new TextEncoder().encode(s);
      if (cString && bytes.includes(0)) throw new Error("a C string for OpenSSL holds a NUL, which would cut it short");
      const ptr = this.m._malloc(bytes.length + 1);
      try {
        this.m.HEAPU8.set(bytes, ptr);
        this.m.HEAPU8[ptr + bytes.length] = 0;
        return fn(ptr, bytes.length);
      } finally {
        this.m._free(ptr);
      }
    }

    /**
     * A client context trusting the PEM certificates in `pem`.
     * @param {string} pem @param {boolean} pinned any of them may end a chain, a leaf included
     */
    context(pem, pinned) {
      const ctx = this.m._pt_ctx_new(pinned ? 1 : 0);
      if (!ctx) throw new Error("OpenSSL could not make a TLS context");
      const count = this.withString(pem, (ptr, length) => this.m._pt_ctx_add_pem(ctx, ptr, length, this.intPtr));
      const skipped = this.m.HEAPU32[this.intPtr >> 2];
      return { ctx, count, skipped };
    }
  }

  /** @type {WeakMap<object, OpenSSL>} */
  const openSSLs = new WeakMap();
  /** @type {Promise<any> | null} the module made from globalThis.PySmtpOpenSSL */
  let defaultOpenSSL = null;

  /**
   * @param {any} option the Emscripten module, a function returning (a promise of) it, or
   *   undefined for globalThis.PySmtpOpenSSL (the factory openssl-tls.js defines)
   * @returns {Promise<OpenSSL>}
   */
  async function resolveOpenSSL(option) {
    let module = option;
    if (module == null && typeof globalThis.PySmtpOpenSSL === "function") {
      module = defaultOpenSSL ??= globalThis.PySmtpOpenSSL(); // one instance per page
    }
    if (typeof module === "function" && typeof module._pt_new !== "function") module = module();
    module = await module;
    if (!module || typeof module._pt_new !== "function") {
      throw new Error("OpenSSL is not available (serve dist/openssl/ beside pysmtp-wasm.js, or pass options.openssl)");
    }
    let lib = openSSLs.get(module);
    if (!lib) {
      lib = new OpenSSL(module);
      openSSLs.set(module, lib);
    }
    return lib;
  }

  /** @type {Map<string, Promise<{ctx: number, count: number, skipped: number}>>} */
  const opensslRootsCache = new Map();

  const opensslEngine = {
    name: "openssl",
    protocols: "TLS 1.2/1.3",

    /** @param {any} ctx */
    async prepare(ctx) {
      let lib;
      try {
        lib = await resolveOpenSSL(ctx.openssl);
      } catch (error) {
        throw ctx.error("TLSError", `cannot start TLS with ${ctx.hostPort}: ${error && error.message}`, { engine: "openssl" });
      }
      if (ctx.ca) {
        const pem = ctx.ca.flatMap(pemBlocks).join("\n");
        let trust = lib.pinned.get(pem);
        if (!trust) {
          trust = lib.context(pem, true);
          lib.pinned.set(pem, trust);
        }
        if (!trust.count) {
          throw ctx.error(
            "TLSError",
            `cannot verify the certificate of ${ctx.hostPort}: OpenSSL cannot read the \`ca\` certificate` +
              `${trust.skipped > 1 ? "s" : ""}`,
            { engine: "openssl" },
          );
        }
        const anchors =
          `the pinned \`ca\` certificate${trust.count > 1 ? "s" : ""}` +
          (trust.skipped ? ` (${trust.skipped} more that OpenSSL cannot read were ignored)` : "");
        return { lib, ctx: trust.ctx, anchors };
      }
      if (ctx.rootsUrl) {
        const roots = await loadRootsFor(ctx, "OpenSSL", (url) =>
          cachedRoots(opensslRootsCache, url, async (blocks) => {
            const trust = lib.context(blocks.join("\n"), false);
            if (!trust.count) throw new Error("it contains no certificate OpenSSL can read");
            return trust;
          }),
        );
        const anchors =
          `any of the ${roots.count} root certificates from ${ctx.rootsUrl}` +
          (roots.skipped ? ` (${roots.skipped} that OpenSSL cannot read were skipped)` : "");
        return { lib, ctx: roots.ctx, anchors };
      }
      throw noAnchors(ctx);
    },

    /** @param {any} prepared @param {any} ctx @param {any} io */
    connect(prepared, ctx, io) {
      return new OpenSSLSession(prepared, ctx, io);
    },
  };

  class OpenSSLSession {
    /** @param {any} prepared @param {any} ctx @param {any} io */
    constructor(prepared, ctx, io) {
      /** @type {OpenSSL} */
      this._lib = prepared.lib;
      this._anchors = prepared.anchors;
      this._ctx = ctx;
      this._io = io;
      this._closed = false;
      this._active = false;
      this._depth = 0;
      /** @type {Uint8Array | null} the server's first bytes, to name what a non-TLS server said */
      this._firstBytes = null;
      this.pending = 0; // OpenSSL encrypts at once: nothing waits in here
      this._host = normalizeName(ctx.servername);
      // The last line before C: the socket refuses such names already (a NUL would cut the name
      // OpenSSL checks the certificate against).
      const problem = nameProblem(this._host);
      let why = problem ? `: it ${problem}` : "";
      this._ssl = 0;
      if (!problem) {
        try {
          this._ssl = this._lib.withString(this._host, (ptr) => this._lib.m._pt_new(prepared.ctx, ptr), true);
        } catch (error) {
          why = `: ${error && error.message}`;
        }
      }
      if (!this._ssl) {
        this._closed = true;
        queueMicrotask(() =>
          io.fail(ctx.error("TLSError", `cannot start TLS with ${ctx.hostPort}: OpenSSL refused the name ${JSON.stringify(this._host)}${why}`, { engine: "openssl" })),
        );
        return;
      }
      this._call(() => this._pump()); // the ClientHello
    }

    get busy() {
      return this._depth > 0;
    }

    /** @param {Uint8Array} u8 ciphertext from the network */
    receive(u8) {
      if (this._closed) return;
      if (!this._active && !this._firstBytes) this._firstBytes = u8.slice(0, 64);
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
        this._free();
        return null;
      }
      const error = this._notTls() || this._ctx.error(
        "TLSError",
        `TLS handshake with ${this._ctx.hostPort} failed: the server closed the connection during the TLS handshake without ` +
          `saying why (no alert); OpenSSL speaks TLS 1.2 and 1.3. ${LEGACY_HINT}`,
        { engine: "openssl" },
      );
      this._free();
      return error;
    }

    close() {
      if (this._closed) return;
      if (this._active) {
        // close_notify, written before the WebSocket closes
        this._call(() => {
          this._lib.m._pt_shutdown(this._ssl);
          this._flush();
        });
      }
      this._free();
    }

    _free() {
      this._closed = true;
      if (this._ssl) this._lib.m._pt_free(this._ssl);
      this._ssl = 0;
    }

    /** @param {() => void} fn a call into OpenSSL; io callbacks may run inside it */
    _call(fn) {
      this._depth += 1;
      try {
        fn();
      } catch (error) {
        this._fail(this._ctx.error("TLSError", `TLS failure on the connection to ${this._ctx.hostPort}: ${error && error.message}`, { engine: "openssl" }));
      } finally {
        this._depth -= 1;
      }
    }

    /** Move the handshake on, then read what plaintext there is. */
    _pump() {
      const m = this._lib.m;
      if (!this._active) {
        const r = m._pt_handshake(this._ssl);
        this._flush();
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
        this._free();
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

    /** @param {Error} error */
    _fail(error) {
      if (this._closed) return;
      this._free();
      this._io.fail(error);
    }

    /** @returns {Error | null} when the server's first bytes are not TLS at all */
    _notTls() {
      const first = this._firstBytes;
      if (!first || !first.length || (first[0] >= 20 && first[0] <= 24)) return null;
      return this._ctx.error(
        "TLSError",
        `TLS handshake with ${this._ctx.hostPort} failed: the server did not answer in TLS (it sent ${preview(first)}); ` +
          "is this a plaintext port? (for STARTTLS, connect without useSecureTransport)",
        { engine: "openssl" },
      );
    }

    /** The error of the call that just failed, in OpenSSL's words and ours. */
    _errorFrom() {
      const { m } = this._lib;
      const ctx = this._ctx;
      const hp = ctx.hostPort;
      const str = (/** @type {number} */ p) => this._lib.str(p);
      m._pt_error_take();
      const lib = m._pt_error_lib();
      const reason = m._pt_error_reason();
      const text = str(m._pt_error_string());
      const what = this._active ? "TLS connection to" : "TLS handshake with";
      if (lib === ERR_LIB_SSL && reason === SSL_R_CERTIFICATE_VERIFY_FAILED && this._ssl) {
        const code = m._pt_verify_result(this._ssl);
        const words = str(m._pt_verify_string(code));
        const names = str(m._pt_peer_names(this._ssl));
        const extra = { engine: "openssl", certificate: true, verifyCode: code };
        if (code === X509_V_ERR.HOSTNAME_MISMATCH || code === X509_V_ERR.IP_ADDRESS_MISMATCH) {
          return ctx.error(
            "TLSError",
            `the certificate of ${hp} is not valid for ${this._host} (OpenSSL: ${words}): it is for ${names || "no name"}`,
            extra,
          );
        }
        if (code === X509_V_ERR.INVALID_PURPOSE) {
          return ctx.error(
            "TLSError",
            `the certificate of ${hp} is not for a TLS server (OpenSSL: ${words}): its extended key usage lacks serverAuth, ` +
              "or its key usage does not allow a TLS server's use",
            extra,
          );
        }
        if (code === X509_V_ERR.CERT_HAS_EXPIRED || code === X509_V_ERR.CERT_NOT_YET_VALID) {
          return ctx.error("TLSError", `the certificate of ${hp} is not valid now (OpenSSL: ${words})`, extra);
        }
        if (UNTRUSTED.has(code)) {
          return ctx.error(
            "TLSError",
            `the certificate of ${hp} is not trusted: it does not chain to ${this._anchors} (OpenSSL: ${words})`,
            extra,
          );
        }
        return ctx.error("TLSError", `the certificate of ${hp} is not trusted (OpenSSL: ${words})`, extra);
      }
      if (lib === ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        const description = reason - SSL_AD_REASON_OFFSET;
        const alertText = `server alert: ${alertName(description)}`;
        const extra = { engine: "openssl", alert: description, alertOrigin: "server" };
        if (!this._active && description === ALERT_PROTOCOL_VERSION) {
          return ctx.error("TLSError", `${what} ${hp} failed: the server refused TLS 1.2 and 1.3 (${alertText}). ${LEGACY_HINT}`, extra);
        }
        if (!this._active && description === ALERT_HANDSHAKE_FAILURE) {
          return ctx.error(
            "TLSError",
            `${what} ${hp} failed: the server refused the handshake (${alertText}): most likely it has no cipher ` +
              "suite in common with this client, which offers TLS 1.3, and TLS 1.2 with ECDHE or DHE key exchange and " +
              "AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), as browsers do: a server that offers only RSA key " +
              "exchange or CBC ciphers is refused (ask its operator to enable ECDHE with AES-GCM)",
            extra,
          );
        }
        return ctx.error("TLSError", `${what} ${hp} failed (${alertText})`, extra);
      }
      if (!this._active && lib === ERR_LIB_SSL && reason === SSL_R_UNSUPPORTED_PROTOCOL) {
        return ctx.error(
          "TLSError",
          `${what} ${hp} failed: the server chose a TLS version older than 1.2 (OpenSSL: ${text}). ${LEGACY_HINT}`,
          { engine: "openssl" },
        );
      }
      if (!this._active && lib === ERR_LIB_SSL && (reason === SSL_R_WRONG_VERSION_NUMBER || reason === SSL_R_PACKET_LENGTH_TOO_LONG)) {
        const notTls = this._notTls();
        if (notTls) return notTls;
      }
      return ctx.error("TLSError", `${what} ${hp} failed (OpenSSL: ${text || "unknown error"})`, { engine: "openssl" });
    }
  }

  /** @type {Record<string, any>} */
  const engines = { openssl: opensslEngine, forge: forgeEngine };

  /**
   * The engine each tlsEngine option value chooses. "auto" is OpenSSL alone: no value ever tries
   * a second engine by itself (the fallback to node-forge after a refusal of TLS 1.2/1.3 is gone,
   * since anyone on the path can forge that refusal).
   */
  const ENGINE_FOR = { auto: "openssl", openssl: "openssl", forge: "forge" };

  return { engines, ENGINE_FOR, makeError, pemBlocks, caProblem, nameProblem };
})();
