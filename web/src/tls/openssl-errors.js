// pysmtp-wasm TLS: OpenSSL's codes for a failed call, in OpenSSL's words and ours. A pure
// function: openssl.js reads the codes out of WebAssembly (tls.c's pt_error_*), this says what
// they mean to the page.

import { ALERT_HANDSHAKE_FAILURE, ALERT_PROTOCOL_VERSION, LEGACY_HINT, alertName } from "./common.js";

// OpenSSL's codes that the messages below tell apart (include/openssl/sslerr.h, x509_vfy.h).
export const ERR_LIB_SSL = 20;
export const SSL_R_CERTIFICATE_VERIFY_FAILED = 134;
export const SSL_R_UNSUPPORTED_PROTOCOL = 258;
export const SSL_R_WRONG_VERSION_NUMBER = 267;
export const SSL_R_PACKET_LENGTH_TOO_LONG = 198;
/** An alert the peer sent is reported as reason SSL_AD_REASON_OFFSET + its description. */
export const SSL_AD_REASON_OFFSET = 1000;
export const X509_V_ERR = Object.freeze({
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
});
/** @type {Set<number>} */
const UNTRUSTED = new Set([
  X509_V_ERR.UNABLE_TO_GET_ISSUER_CERT,
  X509_V_ERR.DEPTH_ZERO_SELF_SIGNED_CERT,
  X509_V_ERR.SELF_SIGNED_CERT_IN_CHAIN,
  X509_V_ERR.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
  X509_V_ERR.UNABLE_TO_VERIFY_LEAF_SIGNATURE,
]);

/**
 * What OpenSSL said about the call that failed.
 * @typedef {object} OpenSSLFailure
 * @property {number} lib ERR_GET_LIB of the first queued error
 * @property {number} reason ERR_GET_REASON of it
 * @property {string} text its ERR_error_string
 * @property {number | null} verifyCode SSL_get_verify_result, for a failed verification
 * @property {string} verifyText X509_verify_cert_error_string of verifyCode
 * @property {string} peerNames the names in the server's certificate
 */

/**
 * What the connection was when it failed.
 * @typedef {object} OpenSSLSituation
 * @property {string} hostPort "host:port", for messages
 * @property {string} host the name verified
 * @property {string} anchors what the certificate had to chain to, in words
 * @property {boolean} active the handshake had succeeded
 * @property {Error | null} notTls the error when the server's first bytes were not TLS
 * @property {(name: "TLSError", message: string, extra?: object) => Error} error makes the Error
 */

/**
 * The TLSError for a failed OpenSSL call.
 * @param {OpenSSLFailure} failure
 * @param {OpenSSLSituation} at
 * @returns {Error}
 */
export function opensslError(failure, at) {
  const { lib, reason, text } = failure;
  const hp = at.hostPort;
  const what = at.active ? "TLS connection to" : "TLS handshake with";
  const ssl = lib === ERR_LIB_SSL;
  if (ssl && reason === SSL_R_CERTIFICATE_VERIFY_FAILED && failure.verifyCode !== null) {
    return verifyError(failure.verifyCode, failure.verifyText, failure.peerNames, at);
  }
  if (ssl && reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
    const description = reason - SSL_AD_REASON_OFFSET;
    const alertText = `server alert: ${alertName(description)}`;
    const extra = { engine: "openssl", alert: description, alertOrigin: "server" };
    if (!at.active && description === ALERT_PROTOCOL_VERSION) {
      return at.error("TLSError", `${what} ${hp} failed: the server refused TLS 1.2 and 1.3 (${alertText}). ${LEGACY_HINT}`, extra);
    }
    if (!at.active && description === ALERT_HANDSHAKE_FAILURE) {
      return at.error(
        "TLSError",
        `${what} ${hp} failed: the server refused the handshake (${alertText}): most likely it has no cipher ` +
          "suite in common with this client, which offers TLS 1.3, and TLS 1.2 with ECDHE or DHE key exchange and " +
          "AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), as browsers do: a server that offers only RSA key " +
          "exchange or CBC ciphers is refused (ask its operator to enable ECDHE with AES-GCM)",
        extra,
      );
    }
    return at.error("TLSError", `${what} ${hp} failed (${alertText})`, extra);
  }
  if (!at.active && ssl && reason === SSL_R_UNSUPPORTED_PROTOCOL) {
    return at.error(
      "TLSError",
      `${what} ${hp} failed: the server chose a TLS version older than 1.2 (OpenSSL: ${text}). ${LEGACY_HINT}`,
      { engine: "openssl" },
    );
  }
  if (!at.active && ssl && (reason === SSL_R_WRONG_VERSION_NUMBER || reason === SSL_R_PACKET_LENGTH_TOO_LONG) && at.notTls) {
    return at.notTls;
  }
  return at.error("TLSError", `${what} ${hp} failed (OpenSSL: ${text || "unknown error"})`, { engine: "openssl" });
}

/**
 * The TLSError for a certificate OpenSSL did not accept.
 * @param {number} code @param {string} words @param {string} names @param {OpenSSLSituation} at
 */
function verifyError(code, words, names, at) {
  const hp = at.hostPort;
  const extra = { engine: "openssl", certificate: true, verifyCode: code };
  if (code === X509_V_ERR.HOSTNAME_MISMATCH || code === X509_V_ERR.IP_ADDRESS_MISMATCH) {
    return at.error(
      "TLSError",
      `the certificate of ${hp} is not valid for ${at.host} (OpenSSL: ${words}): it is for ${names || "no name"}`,
      extra,
    );
  }
  if (code === X509_V_ERR.INVALID_PURPOSE) {
    return at.error(
      "TLSError",
      `the certificate of ${hp} is not for a TLS server (OpenSSL: ${words}): its extended key usage lacks serverAuth, ` +
        "or its key usage does not allow a TLS server's use",
      extra,
    );
  }
  if (code === X509_V_ERR.CERT_HAS_EXPIRED || code === X509_V_ERR.CERT_NOT_YET_VALID) {
    return at.error("TLSError", `the certificate of ${hp} is not valid now (OpenSSL: ${words})`, extra);
  }
  if (UNTRUSTED.has(code)) {
    return at.error(
      "TLSError",
      `the certificate of ${hp} is not trusted: it does not chain to ${at.anchors} (OpenSSL: ${words})`,
      extra,
    );
  }
  return at.error("TLSError", `the certificate of ${hp} is not trusted (OpenSSL: ${words})`, extra);
}
