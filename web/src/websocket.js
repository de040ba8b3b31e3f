// pysmtp-wasm socket: what the socket and its TLS layer need of a browser WebSocket.

export const WS_CONNECTING = 0;
export const WS_OPEN = 1;

/**
 * The most handed to WebSocket.send at once. Firefox and WebKit send each send() as one
 * frame, and a proxy bounds its frames (pysmtp-wasm-proxy's --max-frame: 1 MiB by default;
 * websockify's buffers): a larger send() is split into messages of this size (the proxy
 * relays bytes, not messages). Chromium splits large messages into frames by itself.
 */
export const WS_PIECE = 64 * 1024;

/**
 * Hand bytes to an open WebSocket in pieces of at most WS_PIECE (each piece is copied by
 * send(); its bufferedAmount counts them all).
 * @param {WebSocket} ws @param {Uint8Array} u8
 */
export function wsSend(ws, u8) {
  if (u8.length <= WS_PIECE) {
    ws.send(u8);
    return;
  }
  for (let at = 0; at < u8.length; at += WS_PIECE) ws.send(u8.subarray(at, at + WS_PIECE));
}
