// pysmtp-wasm socket: what the socket and its TLS layer need of a browser WebSocket.

export const WS_CONNECTING = 0;
export const WS_OPEN = 1;

/**
 * A send() larger than this goes to the WebSocket in pieces of WS_PIECE. Firefox and WebKit
 * send each send() as one frame, and a proxy bounds its frames (pysmtp-wasm-proxy's
 * --max-frame: 1 MiB by default; websockify's buffers); Chromium splits large messages into
 * frames by itself. Up to this size a send() stays one message: the usual chunk (64 KiB of
 * the page's text, a little more once dot-stuffed) would otherwise become two, and every
 * message costs the proxy a turn (bench/: a third of the plain throughput).
 */
export const WS_ONE_MESSAGE = 256 * 1024;
/** The pieces of a larger send(): far below any proxy's frame limit. */
export const WS_PIECE = 64 * 1024;

/**
 * Hand bytes to an open WebSocket, a large send() in pieces of WS_PIECE (each piece is copied
 * by send(); its bufferedAmount counts them all: the backpressure is unchanged).
 * @param {WebSocket} ws @param {Uint8Array} u8
 */
export function wsSend(ws, u8) {
  if (u8.length <= WS_ONE_MESSAGE) {
    ws.send(u8);
    return;
  }
  for (let at = 0; at < u8.length; at += WS_PIECE) ws.send(u8.subarray(at, at + WS_PIECE));
}
