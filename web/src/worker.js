// pysmtp-wasm worker: the Worker's side of PySmtp.load({ worker: true }).
//
// dist/pysmtp-wasm-worker.js (web/src/entries/worker.js) is the script of a module Worker:
// Pyodide, the Python engine, the sockets and TLS run here, in the in-page SmtpClient class of
// client.js, one per page client. This file only forwards: the page's calls (messages named
// after the seed's methods) to those clients, and their callbacks (named after the seed's
// callbacks) back to the page (remote.js). Nothing of SMTP on either side of postMessage; the
// messages are protocol.js's.

import { ACK_BYTES, CALLBACKS, MSG, outbox, unbatch, wire } from "./protocol.js";

/**
 * Serve the page from this Worker.
 * @param {{load: (options: any) => Promise<any>}} PySmtp this Worker's loader (in-page mode)
 */
export function serveWorker(PySmtp) {
  /** @type {any} what PySmtp.load resolved to in this Worker */
  let api = null;
  /** @type {Map<number, {client: any, seen: number, pending: number, taken: number, released: boolean}>} by the page's id, until FORGET */
  const clients = new Map();
  // The callbacks forwarded as they are (onclose also releases the client; onlog only when asked).
  const FORWARDED = CALLBACKS.filter((name) => name !== "onclose");

  // What one task says to the page goes in one message (ondone and onidle together, say).
  const { post } = outbox((message) => self.postMessage(message));

  /** @param {number} id */
  function create(id, /** @type {any[]} */ args) {
    const client = new api.SmtpClient(...args);
    const entry = { client, seen: 0, pending: 0, taken: 0, released: false };
    const event = (/** @type {string} */ name, /** @type {any[]} */ values) => {
      if (entry.taken) acknowledge(id, entry, false);
      post({ type: MSG.EVENT, id, name, args: values, state: client.state, seen: entry.seen });
    };
    for (const name of FORWARDED) {
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
    post({ type: MSG.SENT, id, bytes: entry.taken, full });
    entry.taken = 0;
  }

  /**
   * A client's connection has ended (not while a sendMail on it runs: it may connect again):
   * tell the page once. The client stays until the page forgets it (FORGET).
   */
  function release(/** @type {number} */ id, /** @type {any} */ entry) {
    if (clients.get(id) === entry && !entry.released) {
      entry.released = true;
      post({ type: MSG.RELEASED, id, seen: entry.seen });
    }
  }

  /** @param {number} id @param {string} name @param {any[]} args */
  function call(id, name, args) {
    const entry = clients.get(id);
    if (!entry) return; // closed and released: the page has its onclose
    const { client } = entry;
    entry.seen += 1;
    if (name === "onlog") {
      client.onlog = args[0] ? (/** @type {string} */ d, /** @type {string} */ t) => post({ type: MSG.EVENT, id, name: "onlog", args: [d, t] }) : null;
      return;
    }
    if (name === "sendMail") {
      const [mail, ticket, progress] = args;
      const options = progress ? { onprogress: (/** @type {number} */ sent, /** @type {number} */ total) => post({ type: MSG.PROGRESS, id, ticket, sent, total }) } : {};
      entry.pending += 1;
      entry.released = false; // (a closed client connects again: Python decides)
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
        post({ type: MSG.SETTLED, id, ticket, state: client.state, seen: entry.seen, lastResults, ...outcome });
        if (entry.pending === 0 && client.state === "closed") release(id, entry);
      });
      return;
    }
    let result;
    try {
      result = client[name](...args);
    } catch (error) {
      post({ type: MSG.REFUSED, id, name, error: wire(error) });
    }
    if (name === "send") {
      entry.taken += args[0].byteLength;
      if (result === false || entry.taken >= ACK_BYTES) acknowledge(id, entry, result === false);
    }
  }

  /** @param {any} data */
  async function receive(data) {
    if (data.type === MSG.LOAD) {
      try {
        api = await PySmtp.load(data.options);
        const jsapi = api.pyodide.pyimport("pysmtp_wasm._jsapi");
        post({ type: MSG.LOADED, bootKind: api.bootKind, rules: jsapi.usage_rules(), options: jsapi.option_grammar() });
      } catch (error) {
        post({ type: MSG.FAILED, error: wire(error) });
      }
    } else if (data.type === MSG.NEW) {
      try {
        create(data.id, data.args);
      } catch (error) {
        post({ type: MSG.REFUSED, id: data.id, name: "new", error: wire(error) });
      }
    } else if (data.type === MSG.CALL) {
      call(data.id, data.name, data.args);
    } else if (data.type === MSG.FORGET) {
      clients.get(data.id)?.client.close();
      clients.delete(data.id);
    } else if (data.type === MSG.STATS) {
      post({ type: MSG.STATS, ticket: data.ticket, stats: { ...api.stats(), workerClients: [...clients.values()].filter((e) => !e.released).length } });
    }
  }

  self.onmessage = (/** @type {MessageEvent} */ { data }) => unbatch(data, receive);
}
