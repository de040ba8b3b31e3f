// pysmtp-wasm TLS, the shared part: bytes, alerts, errors, the checks of `ca` and of host names
// made before any engine loads, and the root-store cache (tls/index.js has the interface).

/** String.fromCharCode.apply() argument count (larger blows the stack around 2 MiB). */
const BIN_CHUNK = 8192;
const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
// Alert descriptions (RFC 8446 6, RFC 5246 7.2)
export const ALERT_HANDSHAKE_FAILURE = 40;
export const ALERT_BAD_CERTIFICATE = 42;
export const ALERT_CERTIFICATE_EXPIRED = 45;
export const ALERT_UNKNOWN_CA = 48;
export const ALERT_PROTOCOL_VERSION = 70;
export const ALERT_INSUFFICIENT_SECURITY = 71;
export const ALERT_UNSUPPORTED_CERTIFICATE = 43;
export const ALERT_INTERNAL_ERROR = 80;
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
export const FORGE_HINT = "node-forge speaks only TLS 1.0/1.1";
/** What the OpenSSL engine's errors say when a server seems to speak only TLS 1.0/1.1. */
export const LEGACY_HINT =
  'pysmtp-wasm never falls back to an older TLS version by itself (anyone on the path can forge that ' +
  'refusal); if this server really speaks only TLS 1.0/1.1, choose tlsEngine: "forge" for it ' +
  "(node-forge: TLS 1.0/1.1, RSA key exchange, no forward secrecy; deprecated by RFC 8996)";
/** Characters no host name has: C0 and C1 controls, DEL, space. */
const BAD_NAME_CHAR = /[\x00-\x20\x7f-\x9f]/;

/**
 * What an engine knows of the connection it secures (the socket makes it: socket.js).
 * @typedef {object} TlsConnection
 * @property {string} hostPort "host:port", for messages
 * @property {string} servername the name to verify and send as SNI
 * @property {string[] | null} ca the pinned PEM certificates, or null
 * @property {string | null} rootsUrl the root bundle's URL when there is no `ca`
 * @property {any} [forge] the forge option (socket.js)
 * @property {any} [openssl] the openssl option (socket.js)
 * @property {(name: "ConnectionError" | "TLSError", message: string, extra?: object) => Error} error
 *   an Error with the connection's host and port
 */

// -- bytes -----------------------------------------------------------------------------------

/** @param {Uint8Array} u8 @returns {string} one char (0..255) per byte */
export function u8ToBin(u8) {
  if (u8.length <= BIN_CHUNK) return String.fromCharCode.apply(null, /** @type {any} */ (u8));
  const parts = [];
  for (let i = 0; i < u8.length; i += BIN_CHUNK) {
    parts.push(String.fromCharCode.apply(null, /** @type {any} */ (u8.subarray(i, i + BIN_CHUNK))));
  }
  return parts.join("");
}

/** @param {string} s a binary string @returns {Uint8Array} */
export function binToU8(s) {
  const n = s.length;
  const u8 = new Uint8Array(n);
  for (let i = 0; i < n; i++) u8[i] = s.charCodeAt(i);
  return u8;
}

/** @param {Uint8Array} u8 printable preview of received bytes */
export function preview(u8) {
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
export function makeError(name, message, extra) {
  const error = new Error(message);
  error.name = name;
  if (extra) Object.assign(error, extra);
  return error;
}

/** @param {number} description */
export function alertName(description) {
  return ALERT_NAMES[description] || `alert ${description}`;
}

/** @param {unknown} text @returns {string[]} the PEM CERTIFICATE blocks in it */
export function pemBlocks(text) {
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
export function caProblem(ca) {
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
export function nameProblem(name) {
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
export function cachedRoots(cache, url, parse) {
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
 * @param {TlsConnection} conn
 * @param {string} engineName
 * @param {(url: string) => Promise<any>} load
 */
export async function loadRootsFor(conn, engineName, load) {
  try {
    return await load(conn.rootsUrl);
  } catch (error) {
    throw conn.error(
      "TLSError",
      `cannot verify the certificate of ${conn.hostPort}: loading the root certificates from ${conn.rootsUrl} ` +
        `failed${engineName ? ` (${engineName})` : ""}: ${error && error.message}`,
    );
  }
}

/** @param {TlsConnection} conn */
export function noAnchors(conn) {
  return conn.error(
    "TLSError",
    `cannot verify the certificate of ${conn.hostPort}: no trust anchors. Pass \`ca\` (the PEM certificate(s) to trust) ` +
      "or `rootsUrl` (the URL of a PEM bundle such as Mozilla's roots or certifi's cacert.pem); " +
      "JavaScript TLS cannot use the browser's certificate store",
  );
}

/** @param {string} name lower case, no trailing dot, A-labels */
export function normalizeName(name) {
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
