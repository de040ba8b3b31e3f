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
// taken (backpressure). The socket's own checks (the proxy URL, `ca`, the host) run here too:
// PySmtpSocket is in this script. Concatenated by build.sh before loader.js.

const PySmtpRemote = (() => {
  /** send() returns false once this many bytes wait for the Worker, or the Worker's socket is full. */
  const HIGH_WATER = 4 * 1024 * 1024;
  /** ondrain fires when the Worker has taken all but this many bytes and its socket has room. */
  const LOW_WATER = 2 * 1024 * 1024;
  const CALLBACKS = ["onidle", "onready", "ondone", "onerror", "onclose", "ondrain"];
  const noop = () => {};
  const encoder = new TextEncoder();

  /** @param {string} message @param {string | null} [stage] */
  function usageError(message, stage) {
    const error = /** @type {any} */ (new Error(message));
    error.name = "SmtpUsageError";
    error.fatal = false;
    error.code = null;
    error.enhanced = null;
    error.stage = stage ?? null;
    return error;
  }

  /** An Error from its data (web/src/worker.js wire()). @param {any} data */
  function revive(data) {
    const error = /** @type {any} */ (new Error(data.message));
    error.name = data.name;
    for (const field of ["code", "enhanced", "stage", "fatal", "proxyReason"]) {
      if (data[field] !== undefined) error[field] = data[field];
    }
    return error;
  }

  // -- the options' grammar (from _usage.py option_grammar), checked as Python would ------------

  /** Python's isprintable() is false for these (and a space is printable). */
  const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
  /** The same for the EHLO name's check, but for unassigned code points: the browser's Unicode may
   * be older than Python's, and this check must never refuse what the engine accepts. */
  const NAME_UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Zs}]/u;
  // A UTF-16 surrogate without its other half (Python cannot encode it: _options refuses it).
  const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

  /** A value as Python's repr() shows it once Pyodide has converted it. @param {any} value @returns {string} */
  function pyRepr(value) {
    if (value == null) return "None";
    if (typeof value === "boolean") return value ? "True" : "False";
    if (typeof value === "number") {
      if (Number.isNaN(value)) return "nan";
      if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
      return String(value);
    }
    if (typeof value === "bigint") return String(value);
    if (typeof value === "string") {
      const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
      let out = quote;
      for (const ch of value) {
        const cp = /** @type {number} */ (ch.codePointAt(0));
        if (ch === quote || ch === "\\") out += "\\" + ch;
        else if (ch === "\t") out += "\\t";
        else if (ch === "\n") out += "\\n";
        else if (ch === "\r") out += "\\r";
        else if (ch !== " " && UNPRINTABLE.test(ch)) {
          const hex = cp.toString(16);
          out += cp < 0x100 ? `\\x${hex.padStart(2, "0")}` : cp < 0x10000 ? `\\u${hex.padStart(4, "0")}` : `\\U${hex.padStart(8, "0")}`;
        } else out += ch;
      }
      return out + quote;
    }
    if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
    if (typeof value === "object") {
      return `{${Object.entries(value).map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`).join(", ")}}`;
    }
    return String(value);
  }

  /**
   * What the engine would refuse in these options, in its words (null: nothing this grammar can
   * tell; the Worker has the last word). Mirrors _options.py parse_options, never stricter.
   * @param {any} grammar @param {any} options
   * @returns {string | null}
   */
  function optionProblem(grammar, options) {
    const { kinds, choices, upper, messages, contradictions, credentialForbidden } = grammar;
    const fill = (/** @type {string} */ text, /** @type {Record<string, string>} */ values) =>
      text.replace(/\{(key|value|fields|field|what)\}/g, (whole, name) => values[name] ?? whole);
    for (const [key, value] of Object.entries(options)) {
      if (value == null) continue;
      const kind = Object.prototype.hasOwnProperty.call(kinds, key) ? kinds[key] : null;
      if (kind === null) return fill(messages.unknown, { key: pyRepr(key) });
      if (kind === "milliseconds") {
        const number = typeof value === "number" || typeof value === "bigint";
        if (!number || value < 0) return messages[key];
      } else if (kind === "choice") {
        const wanted = upper.includes(key) && typeof value === "string" ? value.toUpperCase() : value;
        if ((upper.includes(key) && typeof value !== "string") || !choices[key].includes(wanted)) {
          return fill(messages[key], { value: pyRepr(value) });
        }
      } else if (kind === "name") {
        if (typeof value !== "string" || !value || /[\r\n\0 <>]/.test(value) || NAME_UNPRINTABLE.test(value)) {
          return fill(messages.name, { value: pyRepr(value) });
        }
      } else if (kind === "ca") {
        const ok = typeof value === "string" || (Array.isArray(value) && value.every((v) => typeof v === "string"));
        if (!ok) return messages.ca;
      } else if (kind === "auth") {
        const auth = value instanceof Map ? Object.fromEntries(value) : value;
        if (typeof auth !== "object" || Array.isArray(auth) || ArrayBuffer.isView(auth)) return messages.auth;
        const unknown = Object.keys(auth).filter((f) => !["user", "pass", "xoauth2"].includes(f));
        if (unknown.length) return fill(messages["auth.fields"], { fields: unknown.sort().join(", ") });
        if (typeof auth.user !== "string") return messages["auth.user"];
        for (const field of ["pass", "xoauth2"]) {
          if (auth[field] != null && typeof auth[field] !== "string") return messages[`auth.${field}`];
        }
        if (auth.pass == null && !auth.xoauth2) return messages["auth.secret"];
        for (const field of ["user", "pass", "xoauth2"]) {
          const text = auth[field];
          if (typeof text !== "string") continue;
          for (const [char, what] of Object.entries(credentialForbidden)) {
            if (text.includes(char)) return fill(messages["auth.forbidden"], { field, what });
          }
          if (LONE_SURROGATE.test(text)) return fill(messages["auth.surrogate"], { field });
        }
      }
    }
    for (const [a, b, message] of contradictions) {
      if (options[a] && options[b]) return message;
    }
    return null;
  }

  /**
   * A chunk as a Uint8Array the page can give away: a string's UTF-8 bytes, or the caller's
   * bytes (transferred: detached afterwards) when they fill their buffer; a view on part of
   * a buffer, or on a SharedArrayBuffer, is copied.
   * @param {unknown} chunk
   */
  function transferable(chunk) {
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
    const buffer = bytes.buffer;
    return new Uint8Array(typeof buffer.transfer === "function" ? buffer.transfer() : structuredClone(buffer, { transfer: [buffer] }));
  }

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
  function boot(base, options, onterminate = noop) {
    if (options.pyodide) return Promise.reject(new Error("pysmtp-wasm: the pyodide option cannot be used with worker: true"));
    const worker = new Worker(new URL("pysmtp-wasm-worker.js", base).href, { type: "module", name: "pysmtp-wasm" });
    const { worker: _, proxy, preconnect, ...rest } = options;
    const tlsEngine = options.tlsEngine;
    const targets = [].concat(preconnect ?? []).map((/** @type {any} */ target) => {
      const host = target.host ?? "localhost";
      const port = target.port ?? (target.useSecureTransport ? 465 : 25);
      return { ...target, host, port, proxy: proxyFor(target.proxy ?? proxy, host, port) };
    });
    const loadOptions = { ...rest, baseURL: base, preconnect: targets, proxy: typeof proxy === "function" ? undefined : proxy };
    // The calls of one task go to the Worker in one message (send() and end(), say), with
    // every chunk among them transferred: each message costs a wake-up of the Worker.
    /** @type {any[]} */
    let outbox = [];
    /** @type {Transferable[]} */
    let transfers = [];
    const flush = () => {
      const messages = outbox;
      const transfer = transfers;
      outbox = [];
      transfers = [];
      worker.postMessage(messages.length === 1 ? messages[0] : { type: "batch", messages }, transfer);
    };
    /** @param {any} message @param {Transferable[]} [transfer] */
    const post = (message, transfer) => {
      if (transfer) transfers.push(...transfer);
      if (outbox.push(message) === 1) queueMicrotask(flush);
    };
    /**
     * Post what the caller gave (options, a mail) at once, after what is queued: a value that
     * cannot be cloned (a function, say) throws here, to the caller, not later in a microtask.
     * @param {any} message @param {string} what the call, for the error
     */
    const postNow = (message, what) => {
      if (outbox.length) flush();
      try {
        worker.postMessage(message);
      } catch (error) {
        throw usageError(`${what}: ${/** @type {any} */ (error).message}`);
      }
    };
    /** @type {Map<number, RemoteClient>} */
    const live = new Map();
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
        for (const name of CALLBACKS) this[name] = noop;
        this._onlog = noop;
        const opts = { ...(options || {}) };
        // What the engine would refuse, thrown now as in-page (the Worker still has the last word).
        const refused = optionProblem(grammar, opts);
        if (refused) throw usageError(refused);
        const target = port || (opts.useSecureTransport ? 465 : 25);
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
        this._refused = null;
        this._id = 0;
        this._open();
      }

      _open() {
        if (terminated) throw usageError("the pysmtp-wasm Worker was terminated");
        this._id = nextId++;
        this._state = "new";
        this._calls = 0;
        this._refused = null;
        postNow({ type: "new", id: this._id, args: this._args }, "new SmtpClient(host, port, options)");
        live.set(this._id, this);
        if (this._onlog !== noop) this._post("onlog", [true]);
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
          // Closed (or closing after our close()): a new connection, under a new id. (Closing
          // otherwise, after quit() or an error, the Worker's client waits and connects again.)
          if (this._state === "closed") this._open();
          const ticket = nextId++;
          const onprogress = options && options.onprogress;
          this._mails.set(ticket, { resolve, reject, onprogress });
          this._calls += 1;
          try {
            const args = [mail, ticket, typeof onprogress === "function"];
            postNow({ type: "call", id: this._id, name: "sendMail", args }, "sendMail()");
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
        if (live.has(this._id)) this._post("onlog", [this._onlog !== noop]);
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
        post({ type: "call", id: this._id, name, args }, transfer);
      }

      /** A message from the Worker about this client. @param {any} data */
      _receive(data) {
        if (data.id !== this._id) return this._receiveOld(data);
        switch (data.type) {
          case "event":
            return this._event(data);
          case "sent":
            this._unacked -= data.bytes;
            if (data.full) this._workerFull = true;
            return this._maybeDrain();
          case "refused":
            if (data.name === "new") {
              // The Worker could not make the client (what the page's checks could not tell): the
              // next call throws why, sendMail calls already posted (the Worker drops them) reject
              // with it, and a connect() already posted ends in onerror, then onclose(true).
              this._refused = revive(data.error);
              live.delete(data.id);
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
          case "progress":
            return this._mails.get(data.ticket)?.onprogress?.(data.sent, data.total);
          case "settled": {
            const mail = this._mails.get(data.ticket);
            this._mails.delete(data.ticket);
            if (data.seen === this._calls && this._state !== "closed") this._state = data.state;
            if (data.lastResults) this.lastResults = data.lastResults;
            if (data.ok) mail?.resolve(data.value);
            else mail?.reject(revive(data.value));
            return undefined;
          }
          case "released":
            live.delete(data.id);
            this._state = "closed";
            return undefined;
        }
        return undefined;
      }

      /**
       * A message about a connection this client had before its current one (closed, then
       * sendMail connected again): its last callbacks and its sendMail outcome still count.
       * @param {any} data
       */
      _receiveOld(data) {
        if (data.type === "released") live.delete(data.id);
        else if (data.type === "progress" || data.type === "settled") {
          this._receive({ ...data, id: this._id, seen: -1 });
        } else if (data.type === "event" && ["onerror", "onclose", "onlog"].includes(data.name)) {
          if (data.name === "onlog") this._onlog(data.args[0], data.args[1]);
          else if (data.name === "onerror") this.onerror(revive(data.args[0]));
          else this.onclose(data.args[0]);
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
        if (name === "onerror") return this.onerror(revive(args[0]));
        if (name === "ondone") this.lastResults = args[1];
        return this[name](...args);
      }

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
        if (data.type === "batch") {
          for (const message of data.messages) receive(message);
        } else if (data.type === "loaded") {
          rules = data.rules;
          grammar = data.options;
          resolve({
            SmtpClient: RemoteClient,
            pyodide: null,
            worker,
            stats: () =>
              new Promise((done) => {
                if (terminated) throw usageError("the pysmtp-wasm Worker was terminated");
                const ticket = nextId++;
                statsWaiting.set(ticket, done);
                post({ type: "stats", ticket });
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
              onterminate();
            },
          });
        } else if (data.type === "failed") {
          worker.terminate();
          reject(revive(data.error));
        } else if (data.type === "stats") {
          statsWaiting.get(data.ticket)?.(data.stats);
          statsWaiting.delete(data.ticket);
        } else {
          live.get(data.id)?._receive(data);
        }
      };
      worker.onmessage = ({ data }) => receive(data);
      worker.postMessage({ type: "load", options: loadOptions });
    });
  }

  return { boot, HIGH_WATER, LOW_WATER };
})();
