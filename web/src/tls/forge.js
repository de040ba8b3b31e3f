// pysmtp-wasm TLS with node-forge 1.4.3: TLS 1.0/1.1, RSA key exchange, RSA certificates, for
// legacy servers, only when the page chooses it (tlsEngine: "forge"). forge verifies the chain;
// the purpose and the host name are checked here, before io.secure.

import {
  ALERT_BAD_CERTIFICATE,
  ALERT_CERTIFICATE_EXPIRED,
  ALERT_HANDSHAKE_FAILURE,
  ALERT_INSUFFICIENT_SECURITY,
  ALERT_INTERNAL_ERROR,
  ALERT_PROTOCOL_VERSION,
  ALERT_UNKNOWN_CA,
  ALERT_UNSUPPORTED_CERTIFICATE,
  FORGE_HINT,
  alertName,
  binToU8,
  cachedRoots,
  loadRootsFor,
  noAnchors,
  normalizeName,
  pemBlocks,
  u8ToBin,
} from "./common.js";
import { forgeCheckHostName, ipBytes } from "./forge-names.js";
import { TlsSession } from "./session.js";

/** @typedef {import("./common.js").TlsConnection} TlsConnection */
/** @typedef {import("./session.js").TlsIo} TlsIo */

/** Plaintext bytes per forge tls.prepare() (one TLS record). */
const TLS_CHUNK = 16 * 1024;

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

export const forgeEngine = {
  name: "forge",
  protocols: "TLS 1.0/1.1",

  /** @param {TlsConnection} conn */
  async prepare(conn) {
    const forge = await resolveForge(conn.forge);
    const hp = conn.hostPort;
    if (conn.ca) {
      const blocks = conn.ca.flatMap(pemBlocks);
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
        throw conn.error(
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
    if (conn.rootsUrl) {
      const roots = await loadRootsFor(conn, "node-forge", (url) => loadForgeRoots(forge, url));
      const anchors =
        `any of the ${roots.count} root certificates from ${conn.rootsUrl}` +
        (roots.skipped ? ` (${roots.skipped} non-RSA roots in it were skipped: node-forge cannot read them)` : "");
      return { forge, trust: { store: roots.store, pinned: null, anchors } };
    }
    throw noAnchors(conn);
  },

  /** @param {any} prepared @param {TlsConnection} conn @param {TlsIo} io */
  connect(prepared, conn, io) {
    return new ForgeSession(prepared, conn, io);
  },
};

class ForgeSession extends TlsSession {
  /** @param {any} prepared @param {TlsConnection} conn @param {TlsIo} io */
  constructor(prepared, conn, io) {
    super("forge", conn, io);
    this._forge = prepared.forge;
    this._trust = prepared.trust;
    this._verified = false;
    /** @type {{error: Error, alert: number} | null} */
    this._verifyFailure = null;
    const forge = this._forge;
    const suites = forge.tls.CipherSuites;
    const cipherSuites = [suites.TLS_RSA_WITH_AES_128_CBC_SHA, suites.TLS_RSA_WITH_AES_256_CBC_SHA];
    this._tls = forge.tls.createConnection({
      server: false,
      caStore: this._trust.store,
      // SNI: a host name only (RFC 6066: never an IP literal)
      virtualHost: ipBytes(normalizeName(conn.servername)) ? null : conn.servername,
      cipherSuites,
      verify: (/** @type {any} */ c, /** @type {any} */ verified, /** @type {number} */ depth, /** @type {any[]} */ certs) => {
        if (depth === 0) {
          this._verifyFailure = this._verifyPeer(certs);
          this._verified = !this._verifyFailure;
        }
        if (!this._verified) {
          const failure = this._verifyFailure || {
            error: conn.error("TLSError", `the certificate of ${conn.hostPort} could not be verified`),
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
          this._fail(conn.error("TLSError", `the certificate of ${conn.hostPort} was not verified`));
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

  /** @param {Uint8Array} u8 */
  receive(u8) {
    if (this._closed) return;
    this._noteReceived(u8);
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
    return this._conn.error(
      "TLSError",
      `TLS handshake with ${this._conn.hostPort} failed: the server closed the connection during the TLS handshake ` +
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

  /** @param {any} err forge's error: {message, origin, alert: {level, description}} */
  _errorFrom(err) {
    if (this._verifyFailure) return this._verifyFailure.error;
    const conn = this._conn;
    const hp = conn.hostPort;
    const description = err && err.alert ? err.alert.description : undefined;
    const from = err && err.origin === "server" ? "server" : "client";
    const alertText = description === undefined ? "" : `${from} alert: ${alertName(description)}`;
    const extra = { alert: description, alertOrigin: from, engine: "forge" };
    if (!this._active) {
      const notTls = this._notTls(extra);
      if (notTls) return notTls;
      if (description === ALERT_PROTOCOL_VERSION) {
        return conn.error(
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
        return conn.error(
          "TLSError",
          `TLS handshake with ${hp} failed: the server refused the handshake (${alertText}); ${this._versionHint()} ` +
            "(RSA key exchange, AES-CBC ciphers)",
          extra,
        );
      }
    }
    const what = this._what;
    const message = String((err && err.message) || "unknown error").replace(/\.$/, "");
    return conn.error("TLSError", `${what} ${hp} failed: ${message}${alertText ? ` (${alertText})` : ""}`, extra);
  }

  /**
   * Our verification of the server's chain: trust, then the host name.
   * @param {any[]} certs forge certificates, leaf first
   * @returns {{error: Error, alert: number} | null}
   */
  _verifyPeer(certs) {
    const forge = this._forge;
    const trust = this._trust;
    const conn = this._conn;
    const hp = conn.hostPort;
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
          error: conn.error("TLSError", `the certificate of ${hp} is not trusted: ${reason}`, Object.assign({ forgeError: code }, extra)),
          alert,
        };
      }
      const purpose = forgePurposeProblem(certs);
      if (purpose) {
        return {
          error: conn.error("TLSError", `the certificate of ${hp} is not for a TLS server: ${purpose}`, extra),
          alert: ALERT_UNSUPPORTED_CERTIFICATE,
        };
      }
      const { ok, names } = forgeCheckHostName(leaf, conn.servername);
      if (!ok) {
        const shown = names.length ? names.slice(0, 10).join(", ") + (names.length > 10 ? ", …" : "") : "no name";
        const target = normalizeName(conn.servername);
        return {
          error: conn.error("TLSError", `the certificate of ${hp} is for ${shown}, not ${target}`, extra),
          alert: ALERT_BAD_CERTIFICATE,
        };
      }
      return null;
    } catch (ex) {
      return {
        error: conn.error("TLSError", `the certificate of ${hp} could not be verified: ${(ex && ex.message) || ex}`, extra),
        alert: ALERT_BAD_CERTIFICATE,
      };
    }
  }
}