// emailjs-tcp-socket, replaced (esbuild alias) by pysmtp-wasm's own socket adapter, so that
// emailjs-smtp-client takes exactly the path pysmtp-wasm takes: the same WebSocket to the same
// websockify, the same node-forge TLS, the same backpressure (send() false above 256 KiB
// buffered, ondrain below 64 KiB). socket.js is bundled in (it sets globalThis.PySmtpSocket);
// the class is captured here, before any other script replaces that global.
import "../web/src/socket.js";

const Socket = globalThis.PySmtpSocket;

const TCPSocket = {
  /** The WebSocket URL of the proxy; the page sets it (TCPSocket.proxy = "ws://...") */
  proxy: null,
  open(host, port, options = {}) {
    return Socket.open(host, port, {
      proxy: TCPSocket.proxy,
      useSecureTransport: !!options.useSecureTransport,
      ca: options.ca,
    });
  },
};

export default TCPSocket;
