// pysmtp-wasm socket, its arguments: the options, their checks (in a user's words, with the
// names an SmtpClient takes), what makes two connections the same (park.js), and the bytes
// send() takes.

import { proxyProblem } from "./proxy-diagnosis.js";
import { ENGINE_FOR, caProblem, nameProblem } from "./tls/index.js";

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
 *   promise of) it (default: made once from globalThis.PySmtpOpenSSL, which openssl-tls.js
 *   defines, and made again after a call into it trapped; a module given here is refused then)
 */

/**
 * What makes two opens the same connection: the target, and every option that changes what
 * is on the wire or what is trusted (after PySmtpSocket.defaults fill in what is missing).
 * @param {string} host @param {number} port @param {PySmtpSocketOptions} options @param {any} defaults
 */
export function targetKey(host, port, options, defaults) {
  /** @type {any} */
  const opts = options || {};
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

/**
 * What is wrong with these arguments, in a user's words (null: nothing): PySmtpSocket.check.
 * `options.proxy` must be the URL (call a proxy function first); the missing proxy and
 * tlsEngine come from `defaults` (PySmtpSocket.defaults).
 * @param {unknown} host @param {unknown} port @param {any} options @param {any} defaults
 * @returns {string | null}
 */
export function socketProblem(host, port, options, defaults) {
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
 * @param {unknown} data
 * @returns {Uint8Array | null} a view on the same memory, or null when not binary data
 */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const tag = Object.prototype.toString.call(data);
  if (tag === "[object ArrayBuffer]" || tag === "[object SharedArrayBuffer]") {
    return new Uint8Array(/** @type {ArrayBuffer} */ (data));
  }
  return null;
}
