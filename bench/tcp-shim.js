// emailjs-tcp-socket, replaced (esbuild alias) by pysmtp-wasm's own socket adapter, so that
// emailjs-smtp-client takes exactly the path pysmtp-wasm takes: the same WebSocket to the same
// websockify, the same TLS engines, the same backpressure (PySmtpSocket.HIGH_WATER and
// LOW_WATER). web/src/socket.js (with the TLS engines it imports) is bundled in; it sets
// globalThis.PySmtpSocket unless a class is there already (one per page), and this takes that
// one: in the benchmark page both clients use the very same socket class.
import "../web/src/socket.js";

// (Looked up at each open: bench/pages/work.js's pageCost puts InstantServer there for a while.)
const Socket = () => globalThis.PySmtpSocket;

const TCPSocket = {
  /** The WebSocket URL of the proxy; the page sets it (TCPSocket.proxy = "ws://...") */
  proxy: null,
  open(host, port, options = {}) {
    return Socket().open(host, port, {
      proxy: TCPSocket.proxy,
      useSecureTransport: !!options.useSecureTransport,
      tlsEngine: "forge", // the sink speaks TLS 1.0/1.1, as emailjs's own socket would (forge)
      ca: options.ca,
    });
  },
};

export default TCPSocket;
