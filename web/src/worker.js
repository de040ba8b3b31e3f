// pysmtp-wasm worker: the Worker's side of PySmtp.load({ worker: true }).
//
// The build wraps it with tls.js, socket.js and loader.js into dist/pysmtp-wasm-worker.js,
// the script of a module Worker: Pyodide, the Python engine, the sockets and TLS run here, in
// the in-page SmtpClient class of loader.js, one per page client. This file only forwards:
// the page's calls (messages named after the seed's methods) to those clients, and their
// callbacks (named after the seed's callbacks) back to the page (web/src/remote.js). Nothing
// of SMTP on either side of postMessage.
//
// Messages from the page: {type: "load", options} once; then per client `id`:
//   {type: "new", id, args}; {type: "call", id, name, args} for connect, useEnvelope, send
//   (args[0] a transferred Uint8Array), end, quit, close, onlog (args[0]: whether to log),
//   sendMail (args[0] the mail; progress reports when args[1]); and {type: "stats", ticket}.
// What one task posts goes as one {type: "batch", messages} (either way).
// Messages to the page: {type: "loaded", rules, options} (the tables of _usage.py: which call
//   each state allows, the options' grammar) or {type: "failed", error};
//   {type: "event", id, name, args, state, seen} for onidle, onready, ondone, onerror, ondrain,
//   onlog, onclose; {type: "sent", id, bytes, full} for the send() calls taken (ACK_BYTES);
//   {type: "refused", id, name, error} when a call threw in the Worker all the same (the page let it through on an older
//   state: the connection ended meanwhile); {type: "settled", id, ticket, ok, value};
//   {type: "progress", id, ticket, sent, total}; {type: "released", id}; {type: "stats", ...}.

(() => {
  /** @type {any} what PySmtp.load resolved to in this Worker */
  let api = null;
  /** @type {Map<number, {client: any, seen: number, pending: number, taken: number}>} */
  const clients = new Map();
  // The bytes of send() calls taken are reported to the page (its backpressure) with the next
  // message about that client, at once when the socket is full, and at least every ACK_BYTES:
  // less than remote.js's LOW_WATER, so the page's count of bytes not taken falls to its
  // ondrain mark once the Worker has taken them all.
  const ACK_BYTES = 1024 * 1024;
  const CALLBACKS = ["onidle", "onready", "ondone", "onerror", "ondrain"];

  // What one task says to the page goes in one message (ondone and onidle together, say): each
  // message costs a wake-up of the page's thread, and small messages are bound by those.
  /** @type {object[]} */
  let outbox = [];
  const flush = () => {
    const messages = outbox;
    outbox = [];
    self.postMessage(messages.length === 1 ? messages[0] : { type: "batch", messages });
  };
  /** @param {object} message */
  const post = (message) => {
    if (outbox.push(message) === 1) queueMicrotask(flush);
  };

  /**
   * An Error as data (structured cloning keeps only name and message of an Error).
   * @param {any} error
   */
  function wire(error) {
    const out = { name: error?.name ?? "Error", message: String(error?.message ?? error) };
    for (const field of ["code", "enhanced", "stage", "fatal", "proxyReason"]) {
      if (error && error[field] !== undefined) out[field] = error[field];
    }
    return out;
  }

  /** @param {number} id */
  function create(id, /** @type {any[]} */ args) {
    const client = new api.SmtpClient(...args);
    const entry = { client, seen: 0, pending: 0, taken: 0 };
    const event = (/** @type {string} */ name, /** @type {any[]} */ values) => {
      if (entry.taken) acknowledge(id, entry, false);
      post({ type: "event", id, name, args: values, state: client.state, seen: entry.seen });
    };
    for (const name of CALLBACKS) {
      client[name] = (/** @type {any[]} */ ...values) => event(name, name === "onerror" ? [wire(values[0])] : values);
    }
    client.onclose = (/** @type {boolean} */ isError) => {
      event("onclose", [isError]);
      if (entry.pending === 0) release(id, entry);
    };
    clients.set(id, entry);
  }

  /** @param {number} id @param {any} entry @param {boolean} full */
  function acknowledge(id, entry, full) {
    post({ type: "sent", id, bytes: entry.taken, full });
    entry.taken = 0;
  }

  /** Forget a closed client (not while a sendMail on it runs: it may connect again). */
  function release(/** @type {number} */ id, /** @type {any} */ entry) {
    if (clients.get(id) === entry) {
      clients.delete(id);
      post({ type: "released", id });
    }
  }

  /** @param {number} id @param {string} name @param {any[]} args */
  function call(id, name, args) {
    const entry = clients.get(id);
    if (!entry) return; // closed and released: the page has its onclose
    const { client } = entry;
    entry.seen += 1;
    if (name === "onlog") {
      client.onlog = args[0] ? (/** @type {string} */ d, /** @type {string} */ t) => post({ type: "event", id, name: "onlog", args: [d, t] }) : null;
      return;
    }
    if (name === "sendMail") {
      const [mail, ticket, progress] = args;
      const options = progress ? { onprogress: (/** @type {number} */ sent, /** @type {number} */ total) => post({ type: "progress", id, ticket, sent, total }) } : {};
      entry.pending += 1;
      let promise;
      try {
        promise = client.sendMail(mail, options);
      } catch (error) {
        promise = Promise.reject(error);
      }
      promise.then(
        (value) => ({ ok: true, value }),
        (error) => ({ ok: false, value: wire(error) }),
      ).then((outcome) => {
        entry.pending -= 1;
        const lastResults = client.lastResults;
        post({ type: "settled", id, ticket, state: client.state, seen: entry.seen, lastResults, ...outcome });
        if (entry.pending === 0 && client.state === "closed") release(id, entry);
      });
      return;
    }
    let result;
    try {
      result = client[name](...args);
    } catch (error) {
      post({ type: "refused", id, name, error: wire(error) });
    }
    if (name === "send") {
      entry.taken += args[0].byteLength;
      if (result === false || entry.taken >= ACK_BYTES) acknowledge(id, entry, result === false);
    }
  }

  /** @param {any} data */
  async function receive(data) {
    if (data.type === "batch") {
      for (const message of data.messages) receive(message);
    } else if (data.type === "load") {
      try {
        api = await PySmtp.load(data.options);
        const jsapi = api.pyodide.pyimport("pysmtp_wasm._jsapi");
        post({ type: "loaded", rules: jsapi.usage_rules(), options: jsapi.option_grammar() });
      } catch (error) {
        post({ type: "failed", error: wire(error) });
      }
    } else if (data.type === "new") {
      try {
        create(data.id, data.args);
      } catch (error) {
        post({ type: "refused", id: data.id, name: "new", error: wire(error) });
      }
    } else if (data.type === "call") {
      call(data.id, data.name, data.args);
    } else if (data.type === "stats") {
      post({ type: "stats", ticket: data.ticket, stats: { ...api.stats(), workerClients: clients.size } });
    }
  }

  self.onmessage = (/** @type {MessageEvent} */ { data }) => receive(data);
})();
