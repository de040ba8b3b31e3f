// An SMTP server inside the page (or Node) itself, in place of the page's socket class
// (PySmtpSocket): it answers each command after one macrotask (a MessageChannel message, as a
// socket's event would come) and discards what it is sent. With it, what a client costs the page
// per message is measured with no network, no proxy and no server process at all: the same for
// pysmtp-wasm (`onreceive`, whose result is written back) and for emailjs-smtp-client (`ondata`,
// through bench/tcp-shim.js). Used by bench/pages/work.js (`pageCost`) and bench/micro.mjs.
// A classic script: it sets globalThis.InstantServer.
"use strict";

(() => {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  /** One MessageChannel for every hop: a queue of callbacks run one per message. */
  const queue = [];
  const channel = new MessageChannel();
  channel.port1.onmessage = () => queue.shift()();
  channel.port1.unref?.(); // (Node: the channel alone does not keep the process up)
  const hop = (callback) => {
    queue.push(callback);
    channel.port2.postMessage(null);
  };

  class InstantServer {
    static defaults = {};
    /** Replies sent by every server of the page since it loaded (the hops a workload took). */
    static replies = 0;
    /**
     * null, or {what: ms}: the ms spent in the client's handler of each reply (onreceive, with
     * the write of its answer; or ondata), by what the reply answers ("MAIL", "RCPT", "DATA",
     * "end of data", ...), summed (bench/pages/work.js phaseProfile).
     */
    static timing = null;
    static open() {
      return new this(); // (a subclass's open makes one of its own)
    }
    static check() {
      return null; // any host, port and options will do
    }
    /** One empty hop, awaited: what the server's scheduling costs a reply, to set beside. */
    static hop() {
      return new Promise((resolve) => hop(resolve));
    }

    constructor() {
      for (const name of ["onopen", "ondata", "onreceive", "onsecure", "ondrain", "onerror", "onclose"]) this[name] = null;
      this.inData = false;
      this.tail = "";
      this.answering = "connect"; // what the next reply answers (timing's key)
      this.bufferedAmount = 0;
      this.readyState = "open";
      hop(() => {
        this.onopen?.({ type: "open" });
        this.reply("220 instant ESMTP");
      });
    }

    reply(text) {
      InstantServer.replies += 1;
      const bytes = encoder.encode(text + "\r\n");
      const what = this.answering;
      hop(() => {
        const t = InstantServer.timing ? performance.now() : 0;
        if (this.onreceive) {
          // as PySmtpSocket does (web/src/socket.js): a binary string up to 256 bytes, and the
          // answer written back (a binary string, or bytes)
          const answer = this.onreceive(bytes.length <= 256 ? String.fromCharCode.apply(null, bytes) : bytes.buffer);
          if (typeof answer === "string") this.sendText(answer);
          else if (answer) this.send(answer);
        } else this.ondata?.({ type: "data", data: bytes.buffer });
        const timing = InstantServer.timing;
        if (timing) timing[what] = (timing[what] || 0) + performance.now() - t;
      });
    }

    send(data) {
      const u8 = data instanceof Uint8Array ? data : new Uint8Array(data);
      if (this.inData) {
        // only the last bytes matter: is it the end of the data?
        const end = String.fromCharCode(...u8.subarray(Math.max(0, u8.length - 5)));
        this.tail = (this.tail + end).slice(-5);
        if (this.tail === "\r\n.\r\n") {
          this.inData = false;
          this.tail = "";
          this.answering = "end of data";
          this.reply("250 2.0.0 queued");
        }
        return true;
      }
      for (const line of decoder.decode(u8).split("\r\n")) {
        if (!line) continue;
        const verb = line.slice(0, 4).toUpperCase();
        this.answering = verb;
        if (verb === "EHLO") this.reply("250-instant\r\n250-8BITMIME\r\n250 SIZE 100000000");
        else if (verb === "DATA") {
          this.inData = true;
          this.reply("354 go ahead");
        } else if (verb === "QUIT") {
          this.reply("221 bye");
          hop(() => this.close());
        } else this.reply("250 ok");
      }
      return true;
    }

    /** @param {string} text a binary string (a char a byte) */
    sendText(text) {
      const u8 = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) u8[i] = text.charCodeAt(i);
      return this.send(u8);
    }

    upgradeToSecure() {}
    suspend() {}
    resume() {}
    close() {
      if (this.readyState === "closed") return;
      this.readyState = "closed";
      hop(() => this.onclose?.({ type: "close" }));
    }
  }

  globalThis.InstantServer = InstantServer;
})();
