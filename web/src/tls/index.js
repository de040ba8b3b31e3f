// pysmtp-wasm TLS engines: the client side of one TLS connection over a raw byte stream (our
// WebSocket to the proxy), behind one small interface, so the socket (socket.js) does not care
// which library does the cryptography.
//
//   engine.prepare(conn)                 -> Promise<prepared>  load the library, parse the trust
//                                          anchors (`ca` for pinning, else the root bundle)
//   engine.connect(prepared, conn, io)   -> session            start the client handshake (the
//                                          session takes `prepared` over; prepared.release?.()
//                                          lets go of one that is never connected)
//   session.receive(u8)   ciphertext from the network
//   session.send(u8)      plaintext to encrypt (only after io.secure)
//   session.end()         the network closed: -> the error to report (or null)
//   session.close()       stop; no callback after this
//   session.busy          true while the engine is inside a synchronous call (close must wait)
//   session.pending       plaintext bytes accepted by send() and not yet handed to io.write
//
//   conn: what the engine knows of the connection (common.js TlsConnection)
//   io:   what it tells the socket (session.js TlsIo): write, data, secure, fail, closed
//
// Engines: "openssl" (openssl.js: OpenSSL 3 compiled to WebAssembly, TLS 1.2 and 1.3; the
// default) and "forge" (forge.js: node-forge, TLS 1.0/1.1, for legacy servers, only when the
// page chooses it: nothing falls back to it by itself, since a refusal of TLS 1.2/1.3 can be
// forged by anyone on the path). Both verify the chain, the certificate's purpose and the host
// name before io.secure, so nothing of the application goes out before.

import { forgeEngine } from "./forge.js";
import { opensslEngine } from "./openssl.js";

export { caProblem, makeError, nameProblem, pemBlocks } from "./common.js";

/** @type {Record<string, any>} the engines by name */
export const engines = { openssl: opensslEngine, forge: forgeEngine };

/**
 * The engine each tlsEngine option value chooses. "auto" is OpenSSL alone: no value ever tries
 * a second engine by itself (the fallback to node-forge after a refusal of TLS 1.2/1.3 is gone,
 * since anyone on the path can forge that refusal).
 * @type {Record<string, string>}
 */
export const ENGINE_FOR = { auto: "openssl", openssl: "openssl", forge: "forge" };
