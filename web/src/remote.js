// pysmtp-wasm remote: the page's side of PySmtp.load({ worker: true }).
//
// One dedicated Worker (dist/pysmtp-wasm-worker.js, web/src/worker.js) runs Pyodide, the
// engine, the sockets and TLS for every client of the page. Here is the SmtpClient the page
// gets in that mode: the same constructor, options, methods, callbacks and errors as in-page,
// forwarded by messages named after the seed's methods and callbacks. Chunks given to send()
// are transferred, not copied. The page cannot wait for the Worker, so it keeps what it needs
// to answer at once: the session's state (from the Worker's events, and from its own calls
// meanwhile), which calls each state allows and which options the constructor takes (tables
// the Python engine made: _usage.py), and the bytes it has posted that the Worker has not yet
// taken (backpressure). The socket's own checks (the proxy URL, `ca`, the host) run here too.
// What crosses, and how, is protocol.js's.

import { optionProblem } from "./remote-options.js";
import {
  CALLBACKS,
  HIGH_WATER,
  LOW_WATER,
  MSG,
  defaultPort,
  outbox,
  revive,
  transferable,
  unbatch,
  usageError,
} from "./protocol.js";
import { PySmtpSocket } from "./socket.js";

const noop = () => {};

/**
 * A proxy option as the Worker can take it: functions do not cross postMessage, so a
 * function is called here, for this client's target.
 * @param {any} proxy @param {string} host @param {number} port
 */
function proxyFor(proxy, host, port) {
  return typeof proxy === "function" ? proxy(host, port) : proxy;
}

/**
 * Boot the Worker; resolves like PySmtp.load() (pyodide is null: it is in the Worker).
 * @param {string} base where dist/ is
 * @param {any} options PySmtp.load's options
 * @param {() => void} [onterminate] called by terminate(): PySmtp.load may boot again
 */
export function bootRemote(base, options, onterminate = noop) {
  if (options.pyodide) return Promise.reject(new Error("pysmtp-wasm: the pyodide option cannot be used with worker: true"));
  const worker = new Worker(new URL("pysmtp-wasm-worker.js", base).href, { type: "module", name: "pysmtp-wasm" });
  const { worker: _, proxy, preconnect, ...rest } = options;
  const tlsEngine = options.tlsEngine;
  const targets = [].concat(preconnect ?? []).map((/** @type {any} */ target) => {
    const host = target.host ?? "localhost";
    const port = target.port ?? defaultPort(!!target.useSecureTransport);
    return { ...target, host, port, proxy: proxyFor(target.proxy ?? proxy, host, port) };
  });
  // (The page makes the snapshot cache's image, not the Worker: loader.js.)
  const loadOptions = { ...rest, snapshotCacheImage: false, baseURL: base, preconnect: targets, proxy: typeof proxy === "function" ? undefined : proxy };
  // The calls of one task go to the Worker in one message (send() and end(), say), with
  // every chunk among them transferred: each message costs a wake-up of the Worker.
  const queue = outbox((message, transfer) => worker.postMessage(message, transfer));
  const post = queue.post;
  /**
   * Post what the caller gave (options, a mail) at once, after what is queued: a value that
   * cannot be cloned (a function, say) throws here, to the caller, not later in a microtask.
   * @param {any} message @param {string} what the call, for the error
   */
  const postNow = (message, what) => {
    if (queue.pending) queue.flush();
    try {
      worker.postMessage(message);
    } catch (error) {
      throw usageError(`${what}: ${/** @type {any} */ (error).message}`);
    }
  };
  /** @type {Map<number, RemoteClient>} clients with a live connection (held: their callbacks must run) */
  const live = new Map();
  /** @type {Map<number, WeakRef<RemoteClient>>} clients whose connection ended (a sendMail connects again) */
  const dormant = new Map();
  // A client the page let go of after its connection ended: the Worker drops its side too.
  const forget = new FinalizationRegistry((/** @type {number} */ id) => {
    if (dormant.get(id)?.deref() !== undefined) return;
    dormant.delete(id);
    if (!terminated) post({ type: MSG.FORGET, id });
  });
  /** @param {number} id @returns {RemoteClient | undefined} */
  const clientOf = (id) => live.get(id) ?? dormant.get(id)?.deref();
  /** @type {Map<number, (value: any) => void>} */
  const statsWaiting = new Map();
  let nextId = 1;
  let terminated = false;
  /** @type {any} */
  let rules = null;
  /** @type {any} the options' grammar (_usage.py), from the Worker's "loaded" message */
  let grammar = null;

  /** The page's SmtpClient in worker mode. */
  class RemoteClient {
    /**
     * @param {string} [host] default "localhost"
     * @param {number} [port] default 465 with useSecureTransport, else 25
     * @param {any} [options] as in-page; a `proxy` function is called here, once
     */
    constructor(host = "localhost", port = undefined, options = {}) {
      /** @type {(...args: any[]) => void} */ this.onidle = noop;
      /** @type {(...args: any[]) => void} */ this.onready = noop;
      /** @type {(...args: any[]) => void} */ this.ondone = noop;
      /** @type {(...args: any[]) => void} */ this.onerror = noop;
      /** @type {(...args: any[]) => void} */ this.onclose = noop;
      /** @type {(...args: any[]) => void} */ this.ondrain = noop;
      for (const name of CALLBACKS) this[name] = noop; // (the callbacks of pysmtp_wasm/boundary.json)
      /** @type {(direction: string, text: string) => void} */
      this._onlog = noop;
      const opts = { ...(options || {}) };
      // What the engine would refuse, thrown now as in-page (the Worker still has the last word).
      const refused = optionProblem(grammar, opts);
      if (refused) throw usageError(refused);
      const target = port || defaultPort(!!opts.useSecureTransport);
      let resolved;
      try {
        resolved = proxyFor(opts.proxy ?? proxy, host || "localhost", target);
      } catch (error) {
        throw usageError(`option proxy: the function threw: ${/** @type {any} */ (error)?.message ?? error}`);
      }
      if (resolved !== undefined) opts.proxy = resolved;
      const socketProblem = PySmtpSocket.check(String(host || "localhost"), target, {
        proxy: resolved,
        tlsEngine: opts.tlsEngine ?? tlsEngine,
        ca: opts.ca,
      });
      if (socketProblem) throw usageError(socketProblem);
      /** what the Worker needs to make this client again (sendMail after a close) */
      this._args = [host, port ?? null, opts];
      /** "new", "connecting", ..., "closed": the Worker's state, or what our calls since made of it */
      this._state = "new";
      /** calls posted; the Worker's events say how many it had taken, so a stale state is not applied */
      this._calls = 0;
      /** bytes posted by send() that the Worker has not taken yet */
      this._unacked = 0;
      this._workerFull = false;
      this._waitingDrain = false;
      /** @type {Map<number, {resolve: any, reject: any, onprogress: any}>} */
      this._mails = new Map();
      /** @type {object[]} the last message's results (from ondone, or a sendMail's outcome) */
      this.lastResults = [];
      /** @type {any} an error the Worker gave for the constructor's arguments: thrown by the next call */
      if (terminated) throw usageError("the pysmtp-wasm Worker was terminated");
      /** this client's id, for its whole life (one client in the Worker, one Python side) */
      this._id = nextId++;
      postNow({ type: MSG.NEW, id: this._id, args: this._args }, "new SmtpClient(host, port, options)");
      live.set(this._id, this);
      forget.register(this, this._id);
    }

    /** A connection is live again (sendMail after the close): hold this client while it is. */
    _hold() {
      dormant.delete(this._id);
      live.set(this._id, this);
    }

    /** The connection ended: let go, so that the page may drop this client. */
    _letGo() {
      if (live.get(this._id) !== this) return;
      live.delete(this._id);
      dormant.set(this._id, new WeakRef(this));
    }

    connect() {
      this._call("connect", []);
    }

    /** @param {any} envelope */
    useEnvelope(envelope) {
      this._call("useEnvelope", [envelope]);
    }

    /** @param {string | Uint8Array | ArrayBuffer} chunk @returns {boolean} false: wait for ondrain */
    send(chunk) {
      if (typeof chunk !== "string" && !ArrayBuffer.isView(chunk) && !(chunk instanceof ArrayBuffer)) {
        throw usageError("send() takes a string, a Uint8Array or an ArrayBuffer");
      }
      this._check("send"); // before the chunk is taken: a refused call changes nothing
      const bytes = transferable(chunk);
      const length = bytes.byteLength;
      this._call("send", [bytes], [bytes.buffer]);
      this._unacked += length;
      const full = this._workerFull || this._unacked >= HIGH_WATER;
      if (full) this._waitingDrain = true;
      return !full;
    }

    end() {
      this._call("end", []);
    }

    quit() {
      this._call("quit", []);
    }

    close() {
      if (this._state === "closed") return;
      this._post("close", []);
      this._state = "closed";
    }

    /**
     * As in-page (loader.js): build and send a message, connecting first if needed.
     * @param {any} mail @param {{onprogress?: (sent: number, total: number) => void}} [options]
     */
    sendMail(mail, options = {}) {
      return new Promise((resolve, reject) => {
        if (this._refused) throw this._refused;
        if (terminated) throw usageError("the pysmtp-wasm Worker was terminated");
        // Closed (or closing): the Worker's client connects again once it has closed (Python
        // decides); until it says more, this page sees a new connection.
        if (this._state === "closed") this._state = "new";
        this._hold();
        const ticket = nextId++;
        const onprogress = options && options.onprogress;
        this._mails.set(ticket, { resolve, reject, onprogress });
        this._calls += 1;
        try {
          const args = [mail, ticket, typeof onprogress === "function"];
          postNow({ type: MSG.CALL, id: this._id, name: "sendMail", args }, "sendMail()");
        } catch (error) {
          this._calls -= 1;
          this._mails.delete(ticket);
          throw error;
        }
      });
    }

    get onlog() {
      return this._onlog;
    }

    set onlog(callback) {
      this._onlog = typeof callback === "function" ? callback : noop;
      if (!this._refused && !terminated) this._post("onlog", [this._onlog !== noop]);
    }

    /** The session's state, as far as the page knows. */
    get state() {
      return this._state;
    }

    /** @param {string} name @param {any[]} args @param {Transferable[]} [transfer] */
    _call(name, args, transfer) {
      const next = this._check(name);
      this._post(name, args, transfer);
      if (next) this._state = next;
    }

    /**
     * Throw now if the call is not possible in the state the page knows; else the state it
     * leads to (null: unchanged).
     * @param {string} name
     */
    _check(name) {
      if (this._refused) throw this._refused;
      if (this._state === "closed") throw usageError(`${name}() is not possible: the connection is closed`);
      const [message, stage, next] = rules[this._state]?.[name] ?? [null, null, null];
      if (message) throw usageError(message, stage);
      return next;
    }

    /** @param {string} name @param {any[]} args @param {Transferable[]} [transfer] */
    _post(name, args, transfer) {
      this._calls += 1;
      post({ type: MSG.CALL, id: this._id, name, args }, transfer);
    }

    /** A message from the Worker about this client. @param {any} data */
    _receive(data) {
      switch (data.type) {
        case MSG.EVENT:
          return this._event(data);
        case MSG.SENT:
          this._unacked -= data.bytes;
          if (data.full) this._workerFull = true;
          return this._maybeDrain();
        case MSG.REFUSED:
          if (data.name === "new") {
            // The Worker could not make the client (what the page's checks could not tell): the
            // next call throws why, sendMail calls already posted (the Worker drops them) reject
            // with it, and a connect() already posted ends in onerror, then onclose(true).
            this._refused = revive(data.error);
            live.delete(data.id);
            dormant.delete(data.id);
            for (const mail of this._mails.values()) mail.reject(this._refused);
            this._mails.clear();
            if (this._state !== "new" && this._state !== "closed") {
              this._state = "closed";
              const error = revive({ ...data.error, fatal: true });
              this.onerror(error);
              this.onclose(true);
            }
          }
          return undefined; // a call the Worker refused after the page allowed it: the connection ended meanwhile
        case MSG.PROGRESS:
          return this._mails.get(data.ticket)?.onprogress?.(data.sent, data.total);
        case MSG.SETTLED: {
          const mail = this._mails.get(data.ticket);
          this._mails.delete(data.ticket);
          if (data.seen === this._calls && this._state !== "closed") this._state = data.state;
          if (data.lastResults) this.lastResults = data.lastResults;
          if (data.ok) mail?.resolve(data.value);
          else mail?.reject(revive(data.value));
          return undefined;
        }
        case MSG.RELEASED:
          if (this._mails.size === 0) this._letGo();
          if (data.seen === this._calls) this._state = "closed";
          return undefined;
      }
      return undefined;
    }

    /** @param {any} data */
    _event(data) {
      const { name, args } = data;
      if (name === "onlog") return this._onlog(args[0], args[1]);
      if (name === "onclose") {
        this._state = "closed";
        this._unacked = 0;
        this._workerFull = false;
        this._waitingDrain = false;
      } else if (data.seen === this._calls) {
        this._state = data.state;
      }
      if (name === "ondrain") {
        this._workerFull = false;
        return this._maybeDrain();
      }
      this._notice(name);
      if (name === "onerror") return this.onerror(revive(args[0]));
      if (name === "ondone") this.lastResults = args[1];
      return this[name](...args);
    }

    /**
     * Told of each callback before it runs (the loader's snapshot cache watches for the first
     * onidle here, leaving the page's own callbacks as they are).
     * @param {string} _name
     */
    _notice(_name) {}

    _maybeDrain() {
      if (this._waitingDrain && !this._workerFull && this._unacked <= LOW_WATER) {
        this._waitingDrain = false;
        this.ondrain();
      }
    }
  }

  return new Promise((resolve, reject) => {
    worker.onerror = (event) => {
      event.preventDefault();
      if (!rules) reject(new Error(`pysmtp-wasm: the Worker failed: ${event.message}`));
    };
    /** @param {any} data */
    const receive = (data) => {
      if (data.type === MSG.LOADED) {
        rules = data.rules;
        grammar = data.options;
        resolve({
          SmtpClient: RemoteClient,
          bootKind: data.bootKind ?? null,
          pyodide: null,
          worker,
          stats: () =>
            new Promise((done) => {
              if (terminated) throw usageError("the pysmtp-wasm Worker was terminated");
              const ticket = nextId++;
              statsWaiting.set(ticket, done);
              post({ type: MSG.STATS, ticket });
            }).then((stats) => ({ ...stats, pageClients: live.size })),
          terminate: () => {
            terminated = true;
            worker.terminate();
            // No callbacks, but no promise left waiting either.
            for (const client of new Set(live.values())) {
              for (const mail of client._mails.values()) mail.reject(usageError("the pysmtp-wasm Worker was terminated"));
              client._mails.clear();
            }
            live.clear();
            dormant.clear();
            onterminate();
          },
        });
      } else if (data.type === MSG.FAILED) {
        worker.terminate();
        reject(revive(data.error));
      } else if (data.type === MSG.STATS) {
        statsWaiting.get(data.ticket)?.(data.stats);
        statsWaiting.delete(data.ticket);
      } else {
        clientOf(data.id)?._receive(data);
      }
    };
    worker.onmessage = ({ data }) => unbatch(data, receive);
    worker.postMessage({ type: MSG.LOAD, options: loadOptions });
  });
}

