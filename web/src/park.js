// pysmtp-wasm socket: preconnected sockets waiting for their client. PySmtp.load({preconnect})
// opens connections while Python boots; the first client to the same target with the same
// options takes one over, with what it received meanwhile (socket.js makes the key).

const EVENTS = ["open", "data", "secure", "drain", "error", "close"];
const noop = () => {};

/**
 * What a parked socket must be: its handlers are plain properties (onopen, ...).
 * @typedef {{[handler: string]: any, _emit: (type: string, event: object) => void, close: () => void}} Parkable
 */

/** @type {Map<string, {socket: Parkable, events: [string, object][], timer: any}>} sockets not yet claimed, by target */
const parked = new Map();

/** @param {string} key @returns {boolean} a socket waits for this target */
export function isParked(key) {
  return parked.has(key);
}

/** @returns {boolean} no socket waits at all (the common case: no key needs computing) */
export function nothingParked() {
  return parked.size === 0;
}

/**
 * Keep `socket` for the first claim of `key`, recording its events; unclaimed, it is closed
 * after `ms`. One that ends while it waits is dropped (the client opens its own).
 * @param {string} key @param {Parkable} socket @param {number} ms
 */
export function park(key, socket, ms) {
  /** @type {{socket: Parkable, events: [string, object][], timer: any}} */
  const waiting = { socket, events: [], timer: null };
  for (const type of EVENTS) {
    socket["on" + type] = (/** @type {object} */ event) => {
      waiting.events.push([type, event]);
      if (type === "close" && parked.get(key) === waiting) {
        parked.delete(key);
        clearTimeout(waiting.timer);
      }
    };
  }
  waiting.timer = setTimeout(() => {
    if (parked.get(key) !== waiting) return;
    parked.delete(key);
    socket.close();
  }, ms);
  parked.set(key, waiting);
}

/**
 * The socket waiting for `key`, if any: what it received while it waited comes to the handlers
 * the caller sets right after this call, in order, before anything newer.
 * @param {string} key @returns {Parkable | null}
 */
export function claim(key) {
  const waiting = parked.get(key);
  if (!waiting) return null;
  parked.delete(key);
  clearTimeout(waiting.timer);
  const { socket, events } = waiting;
  for (const type of EVENTS) socket["on" + type] = noop;
  // The caller sets its handlers when this returns; a microtask runs before any new
  // WebSocket event (those are tasks), so the order of events is kept.
  queueMicrotask(() => {
    for (const [type, event] of events) socket._emit(type, event);
  });
  return socket;
}
