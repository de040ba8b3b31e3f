// pysmtp-wasm protocol: what the page (remote.js) and the Worker (worker.js) of
// PySmtp.load({ worker: true }) say to each other, and the constants both sides share.
// Both import this module, so neither can drift from the other.
//
// Messages from the page: {type: LOAD, options} once; then per client `id`:
//   {type: NEW, id, args}; {type: CALL, id, name, args} for connect, useEnvelope, send
//   (args[0] a transferred Uint8Array), end, quit, close, onlog (args[0]: whether to log),
//   sendMail (args: the mail, a ticket, whether to report progress); {type: FORGET, id}; and
//   {type: STATS, ticket}.
// Messages to the page: {type: LOADED, bootKind, rules, options} (how Python booted: loader.js;
//   the tables of _usage.py: which call
//   each state allows, the options' grammar) or {type: FAILED, error};
//   {type: EVENT, id, name, args, state, seen} for onidle, onready, ondone, onerror, ondrain,
//   onlog, onclose; {type: SENT, id, bytes, full} for the send() calls taken (ACK_BYTES);
//   {type: REFUSED, id, name, error} when a call threw in the Worker all the same (the page let
//   it through on an older state: the connection ended meanwhile);
//   {type: SETTLED, id, ticket, ok, value, state, seen, lastResults};
//   {type: PROGRESS, id, ticket, sent, total}; {type: RELEASED, id, seen} when a connection has
//   ended (the client stays: a sendMail connects again, as Python decides); {type: STATS, ticket, stats}.
// An id is one page client for its whole life; {type: FORGET, id} when the page's client is
// gone (garbage-collected after its connection ended): the Worker drops its side.
// Either way, what one task posts goes as one {type: BATCH, messages} (outbox()), but a megabyte
// of chunks (BATCH_BYTES) goes at once.
// Values cross by structured cloning; an Error crosses as data (wire(), revive()), bytes are
// transferred (transferable()).

import BOUNDARY from "../../pysmtp_wasm/boundary.json";

/** The message kinds. */
export const MSG = Object.freeze({
  LOAD: "load",
  NEW: "new",
  CALL: "call",
  STATS: "stats",
  BATCH: "batch",
  LOADED: "loaded",
  FAILED: "failed",
  EVENT: "event",
  SENT: "sent",
  REFUSED: "refused",
  SETTLED: "settled",
  PROGRESS: "progress",
  RELEASED: "released",
  FORGET: "forget",
});

/** The seed's callbacks a page may set on an SmtpClient (pysmtp_wasm/boundary.json). */
export const CALLBACKS = Object.freeze([...BOUNDARY.callbacks]);

/** The evidence an SmtpError carries, by its JavaScript name (pysmtp_wasm/boundary.json). */
export const ERROR_FIELDS = Object.freeze(Object.keys(BOUNDARY.errorFields));

/** @param {boolean} secure useSecureTransport @returns {number} the port when none is given */
export function defaultPort(secure) {
  return secure ? BOUNDARY.defaultPorts.implicitTls : BOUNDARY.defaultPorts.plain;
}

/** send() returns false once this many bytes wait (in the socket, or for the Worker). */
export const HIGH_WATER = 4 * 1024 * 1024;
/** ondrain fires when the bytes waiting fall below this. */
export const LOW_WATER = 2 * 1024 * 1024;
/**
 * The Worker reports the bytes of send() calls it took with its next message about that client,
 * at once when the socket is full, and at least every ACK_BYTES: less than LOW_WATER, so the
 * page's count of bytes not taken falls to its ondrain mark once the Worker has taken them all.
 */
export const ACK_BYTES = 1024 * 1024;
/** A batch of messages goes at once when the bytes it transfers reach this (outbox()). */
export const BATCH_BYTES = 1024 * 1024;

/**
 * An SmtpUsageError (a call the state does not allow, or bad arguments): never fatal.
 * @param {string} message @param {string | null} [stage]
 */
export function usageError(message, stage) {
  const error = /** @type {any} */ (new Error(message));
  error.name = "SmtpUsageError";
  error.fatal = false;
  error.code = null;
  error.enhanced = null;
  error.stage = stage ?? null;
  return error;
}

/**
 * An Error as data (structured cloning keeps only name and message of an Error).
 * @param {any} error
 * @returns {{name: string, message: string, [field: string]: any}}
 */
export function wire(error) {
  /** @type {{name: string, message: string, [field: string]: any}} */
  const out = { name: error?.name ?? "Error", message: String(error?.message ?? error) };
  for (const field of ERROR_FIELDS) {
    if (error && error[field] !== undefined) out[field] = error[field];
  }
  return out;
}

/** An Error from its data (wire()'s inverse). @param {any} data @returns {any} */
export function revive(data) {
  const error = /** @type {any} */ (new Error(data.message));
  error.name = data.name;
  for (const field of ERROR_FIELDS) {
    if (data[field] !== undefined) error[field] = data[field];
  }
  return error;
}

/**
 * Batching: the messages of one task go in one postMessage (each costs a wake-up of the
 * other thread, and small messages are bound by those), with every transfer among them;
 * but once the transfers queued reach BATCH_BYTES they go at once, so that the other thread
 * works on the first megabyte of a long loop of send() calls while this one makes the rest
 * (streaming in worker mode: bench/README.md).
 * @param {(message: any, transfer: Transferable[]) => void} postMessage
 */
export function outbox(postMessage) {
  /** @type {any[]} */
  let messages = [];
  /** @type {Transferable[]} */
  let transfers = [];
  let bytes = 0;
  const flush = () => {
    const batch = messages;
    const transfer = transfers;
    messages = [];
    transfers = [];
    bytes = 0;
    if (batch.length) postMessage(batch.length === 1 ? batch[0] : { type: MSG.BATCH, messages: batch }, transfer);
  };
  return {
    /** Queue a message, posted with the others of this task. @param {any} message @param {Transferable[]} [transfer] */
    post(message, transfer) {
      if (messages.push(message) === 1) queueMicrotask(flush);
      if (!transfer) return;
      for (const item of transfer) {
        transfers.push(item);
        if (item instanceof ArrayBuffer) bytes += item.byteLength;
      }
      if (bytes >= BATCH_BYTES) flush();
    },
    /** Post what is queued now. */
    flush,
    get pending() {
      return messages.length;
    },
  };
}

/**
 * Each message of a batch, or the message itself.
 * @param {any} data @param {(message: any) => void} handle
 */
export function unbatch(data, handle) {
  if (data.type === MSG.BATCH) {
    for (const message of data.messages) unbatch(message, handle);
  } else {
    handle(data);
  }
}

const encoder = new TextEncoder();

/**
 * A chunk as a Uint8Array the page can give away: a string's UTF-8 bytes, or the caller's
 * bytes (transferred: detached afterwards) when they fill their buffer; a view on part of
 * a buffer, or on a SharedArrayBuffer, is copied.
 * @param {unknown} chunk
 * @returns {Uint8Array}
 */
export function transferable(chunk) {
  if (typeof chunk === "string") return encoder.encode(chunk);
  let bytes = null;
  if (chunk instanceof Uint8Array) bytes = chunk;
  else if (ArrayBuffer.isView(chunk)) bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  else if (chunk instanceof ArrayBuffer) bytes = new Uint8Array(chunk);
  if (!bytes) throw usageError("send() takes a string, a Uint8Array or an ArrayBuffer");
  const whole = bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  if (!whole) return bytes.slice();
  // Detached now, not when the batch is posted: the caller may fill the buffer again at once.
  // (ArrayBuffer.prototype.transfer moves the memory, without copying it.)
  const buffer = /** @type {any} */ (bytes.buffer);
  return new Uint8Array(typeof buffer.transfer === "function" ? buffer.transfer() : structuredClone(buffer, { transfer: [buffer] }));
}
