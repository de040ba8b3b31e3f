// pysmtp-wasm demo page: boots PySmtp, sends one message per click with SmtpClient.sendMail,
// shows the SMTP transcript, and lists what the demo's embedded server received.
// Served by web/demo/serve.py (./build.sh serve), whose JSON API gives the targets.
"use strict";

(() => {
  /** @param {string} id */
  const $ = (id) => /** @type {any} */ (document.getElementById(id));

  /**
   * A DOM element; children are nodes or text (never HTML: message headers come from outside).
   * @param {string} tag @param {Record<string, any>} [attrs] @param {...any} children
   */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  /** @param {number} bytes */
  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  /** @param {string} list "a@x, b@y" -> ["a@x", "b@y"] */
  const addresses = (list) => list.split(/[,;\n]/).map((a) => a.trim()).filter(Boolean);

  // The security choices, as SmtpClient options.
  const SECURITY = {
    starttls: {}, // STARTTLS whenever the server offers it (the client's default)
    requiretls: { requireTLS: true },
    tls: { useSecureTransport: true },
    none: { ignoreTLS: true },
  };

  const page = {
    /** @type {any} */ api: null,
    /** @type {any} */ config: { targets: [], embedded: false },
    sending: false,
    statusTimer: 0,
  };

  /**
   * @param {"loading" | "ready" | "sending" | "sent" | "error"} state
   * @param {string} text
   */
  function setState(state, text) {
    document.body.dataset.state = state;
    $("status-text").textContent = text;
    $("status").title = text;
    updateSendButton();
  }

  function updateSendButton() {
    const state = document.body.dataset.state;
    $("send").disabled = !page.api || page.sending;
    $("send-label").textContent =
      state === "loading" ? "Loading…" : page.sending ? "Sending…" : "Send";
  }

  // -- configuration ----------------------------------------------------------------------------

  async function loadConfig() {
    try {
      const response = await fetch("api/config", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      page.config = await response.json();
    } catch (error) {
      // Served by some other static server: the settings are the user's to fill in.
      page.config = { targets: [], embedded: false, unavailable: String(error) };
    }
    const select = $("target");
    select.replaceChildren();
    page.config.targets.forEach((/** @type {any} */ target, /** @type {number} */ index) => {
      select.append(h("option", { value: index, text: target.name }));
    });
    if (!page.config.targets.length) select.append(h("option", { value: "", text: "no configured target" }));
    select.disabled = page.config.targets.length < 2;
    selectTarget(0);

    if (page.config.user) {
      $("user").value = page.config.user;
      $("password").value = page.config.password || "";
    }
    if (page.config.embedded) {
      $("from").value = "demo@example.com";
      $("to").value = "alice@example.org, bob@example.net";
      $("subject").value = "Hello from Python in WebAssembly ✉";
      $("text").value =
        "Hi Alice and Bob,\n\nthis message was composed in the browser and sent by pysmtp-wasm: " +
        "its SMTP engine is Python, running in Pyodide, and its bytes went through a WebSocket " +
        "proxy to the SMTP server.\n\nCheers!\n";
    } else {
      $("inbox-note").textContent = page.config.unavailable
        ? "no demo API here: run ./build.sh serve"
        : "the embedded server is off: messages go to the real server";
    }
  }

  /** @param {number} index */
  function selectTarget(index) {
    const target = page.config.targets[index];
    if (!target) return;
    $("host").value = target.host ?? "";
    $("port").value = target.port ?? "";
    $("security").value = target.security in SECURITY ? target.security : "starttls";
    $("ca").value = target.ca ?? "";
    $("proxy").value = target.proxy ?? "";
  }

  // -- booting ----------------------------------------------------------------------------------

  async function boot() {
    const started = performance.now();
    const elapsed = () => ((performance.now() - started) / 1000).toFixed(1);
    setState("loading", "Loading Python (Pyodide)… 0.0 s");
    page.statusTimer = window.setInterval(() => {
      if (document.body.dataset.state === "loading") {
        setState("loading", `Loading Python (Pyodide)… ${elapsed()} s`);
      }
    }, 100);
    try {
      if (typeof PySmtp === "undefined") throw new Error("pysmtp-wasm.js did not load");
      page.api = await PySmtp.load();
      window.clearInterval(page.statusTimer);
      setState("ready", `Ready · Python booted in ${elapsed()} s`);
    } catch (error) {
      window.clearInterval(page.statusTimer);
      setState("error", `Could not load: ${errorText(error)}`);
      showError(error, "Pyodide did not load");
    }
  }

  // -- sending ----------------------------------------------------------------------------------

  /** The message from the form, in sendMail's shape. */
  async function readMessage() {
    /** @type {File[]} */
    const files = Array.from($("attachments").files || []);
    const attachments = await Promise.all(
      files.map(async (file) => ({
        filename: file.name,
        content: new Uint8Array(await file.arrayBuffer()),
        contentType: file.type || "application/octet-stream",
      })),
    );
    const cc = addresses($("cc").value);
    const bcc = addresses($("bcc").value);
    return {
      from: $("from").value.trim(),
      to: addresses($("to").value),
      ...(cc.length ? { cc } : {}),
      ...(bcc.length ? { bcc } : {}),
      subject: $("subject").value,
      text: $("text").value,
      ...(attachments.length ? { attachments } : {}),
    };
  }

  /** The client's options from the server settings. */
  function readOptions() {
    const security = /** @type {keyof typeof SECURITY} */ ($("security").value);
    /** @type {Record<string, any>} */
    const options = { ...SECURITY[security] };
    const proxy = $("proxy").value.trim();
    if (proxy) options.proxy = proxy;
    const ca = $("ca").value.trim();
    if (ca) options.ca = ca;
    const user = $("user").value.trim();
    if (user) options.auth = { user, pass: $("password").value };
    return options;
  }

  /** @param {SubmitEvent} event */
  async function send(event) {
    event.preventDefault();
    if (!page.api || page.sending) return;
    page.sending = true;
    clearSession();
    setState("sending", "Connecting…");
    const started = performance.now();
    /** @type {any} */
    let client = null;
    try {
      const message = await readMessage();
      const host = $("host").value.trim() || "localhost";
      const port = Number.parseInt($("port").value, 10);
      client = new page.api.SmtpClient(host, Number.isFinite(port) ? port : undefined, readOptions());
      client.onlog = log;
      if (typeof client.sendMail !== "function") {
        const error = new Error("this build's SmtpClient has no sendMail() yet");
        error.name = "NotImplementedError";
        throw error;
      }
      const result = await client.sendMail(message, {
        onprogress: (/** @type {number} */ sent, /** @type {number} */ total) => {
          progress(sent, total);
          if (document.body.dataset.state === "sending") {
            setState("sending", total ? `Sending… ${Math.floor((100 * sent) / total)} %` : "Sending…");
          }
        },
      });
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      showResult(result, seconds);
      const rejected = result.rejected?.length ?? 0;
      setState(
        "sent",
        `Sent in ${seconds} s · ${result.accepted?.length ?? 0} accepted` + (rejected ? `, ${rejected} rejected` : ""),
      );
    } catch (error) {
      showError(error, "Not sent");
      setState("error", `Not sent · ${errorText(error, false)}`);
    } finally {
      // sendMail leaves the connection idle: say goodbye. After a fatal error it is closed already.
      if (client && client.state !== "closed") {
        try {
          client.quit();
        } catch {
          // closed in the meantime: nothing to do
        }
      }
      page.sending = false;
      updateSendButton();
    }
  }

  // -- the session panel ------------------------------------------------------------------------

  function clearSession() {
    $("transcript").replaceChildren();
    $("result").hidden = true;
    $("result").replaceChildren();
    $("progress").value = 0;
    $("progress").max = 1;
    $("progress-text").textContent = "connecting…";
  }

  const DIRECTIONS = /** @type {Record<string, string>} */ ({ C: "c", S: "s", "*": "n" });
  const MAX_LINES = 5000;

  /** @param {string} direction "C" | "S" | "*" @param {string} text */
  function log(direction, text) {
    const box = $("transcript");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.querySelector(".empty")?.remove();
    const time = new Date().toLocaleTimeString([], { hour12: false });
    box.append(
      h(
        "div",
        { class: `line ${DIRECTIONS[direction] || "n"}` },
        h("span", { class: "time", text: time }),
        h("span", { class: "dir", text: direction }),
        h("span", { class: "text", text }),
      ),
    );
    while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  /** @param {number} sent @param {number} total */
  function progress(sent, total) {
    const bar = $("progress");
    if (total > 0) {
      bar.max = total;
      bar.value = Math.min(sent, total);
      $("progress-text").textContent = `${formatSize(sent)} of ${formatSize(total)}`;
    } else {
      $("progress-text").textContent = `${formatSize(sent)} sent`;
    }
  }

  /** "SmtpAuthError 535 5.7.8: message" @param {any} error @param {boolean} [withMessage] */
  function errorText(error, withMessage = true) {
    if (!error) return "unknown error";
    const code = [error.code, error.enhanced].filter((x) => x !== undefined && x !== null).join(" ");
    const head = `${error.name || "Error"}${code ? ` ${code}` : ""}`;
    return withMessage ? `${head}: ${error.message || String(error)}` : head;
  }

  /** @param {any} error @param {string} title */
  function showError(error, title) {
    const e = error || {};
    const box = $("result");
    box.className = "result bad";
    box.replaceChildren(
      h("h3", {}, title),
      h(
        "dl",
        {},
        h("dt", { text: "error" }),
        h("dd", { text: e.name || "Error" }),
        e.code !== undefined && e.code !== null ? [h("dt", { text: "code" }), h("dd", { text: e.code })] : null,
        e.enhanced ? [h("dt", { text: "enhanced" }), h("dd", { text: e.enhanced })] : null,
        e.stage ? [h("dt", { text: "stage" }), h("dd", { text: e.stage })] : null,
        h("dt", { text: "message" }),
        h("dd", { class: "error-message", text: e.message || String(error) }),
      ),
    );
    box.hidden = false;
    if ($("progress-text").textContent === "connecting…") $("progress-text").textContent = "not sent";
  }

  /** "250 2.0.0 OK", whether or not the server's text repeats the enhanced code. @param {any} r */
  function replyText(r) {
    const message = String(r.message ?? "");
    const enhanced = r.enhanced && !message.startsWith(r.enhanced) ? ` ${r.enhanced}` : "";
    return `${r.code ?? ""}${enhanced} ${message}`.trim();
  }

  /** @param {any} result @param {string} seconds */
  function showResult(result, seconds) {
    const accepted = Array.from(result.accepted || []);
    const rejected = Array.from(result.rejected || []);
    const replies = new Map(Array.from(result.results || [], (/** @type {any} */ r) => [r.recipient, r]));
    /** @param {string} address @param {string} kind */
    const chip = (address, kind) => {
      const reply = replies.get(address);
      const title = reply ? replyText(reply) : "";
      return h("li", { class: `chip ${kind}`, title }, address);
    };
    const first = Array.from(result.results || [])[0];
    const box = $("result");
    box.className = "result ok";
    box.replaceChildren(
      h("h3", {}, `Sent in ${seconds} s`),
      h(
        "dl",
        {},
        h("dt", { text: "accepted" }),
        h("dd", {}, accepted.length ? h("ul", { class: "chips" }, accepted.map((a) => chip(a, "ok"))) : "none"),
        rejected.length
          ? [h("dt", { text: "rejected" }), h("dd", {}, h("ul", { class: "chips" }, rejected.map((a) => chip(a, "bad"))))]
          : null,
        first ? [h("dt", { text: "reply" }), h("dd", { text: replyText(first) })] : null,
        h("dt", { text: "Message-ID" }),
        h("dd", { class: "error-message", text: result.messageId ?? "" }),
        h("dt", { text: "size" }),
        h("dd", { text: formatSize(result.size ?? 0) }),
      ),
    );
    box.hidden = false;
    if (result.size) progress(result.size, result.size);
  }

  // -- attachments chosen -----------------------------------------------------------------------

  function listAttachments() {
    const files = Array.from($("attachments").files || []);
    $("attachment-list").replaceChildren(
      ...files.map((/** @type {File} */ file) =>
        h("li", { class: "chip" }, file.name, h("small", { text: formatSize(file.size) })),
      ),
    );
  }

  // -- received messages ------------------------------------------------------------------------

  let lastInbox = "";
  /** @type {Set<string> | null} */
  let seen = null;

  async function pollMessages() {
    try {
      const response = await fetch("api/messages", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const text = await response.text();
      if (text !== lastInbox) {
        lastInbox = text;
        renderMessages(JSON.parse(text));
      }
    } catch {
      if (lastInbox !== "unavailable") {
        lastInbox = "unavailable";
        $("messages").replaceChildren(h("p", { class: "empty", text: "The demo server's API is not reachable." }));
      }
    } finally {
      window.setTimeout(pollMessages, 2000);
    }
  }

  /** @param {any[]} messages */
  function renderMessages(messages) {
    $("message-count").textContent = String(messages.length);
    const fresh = seen; // null on the first render: nothing is highlighted then
    seen = new Set(messages.map((m) => m.id));
    if (!messages.length) {
      $("messages").replaceChildren(h("p", { class: "empty", text: "Nothing received yet." }));
      return;
    }
    $("messages").replaceChildren(...messages.map((m) => renderMessage(m, fresh !== null && !fresh.has(m.id))));
  }

  /** @param {any} m @param {boolean} isNew */
  function renderMessage(m, isNew) {
    const headers = m.headers || {};
    const received = new Date(m.received);
    const sameDay = received.toDateString() === new Date().toDateString();
    const when = sameDay
      ? received.toLocaleTimeString([], { hour12: false })
      : received.toLocaleString([], { hour12: false });
    /** @type {any[]} */
    const rows = [];
    /** @param {string} name @param {any} value @param {boolean} [plain] */
    const row = (name, value, plain = false) => {
      if (value === undefined || value === null || value === "") return;
      rows.push(h("dt", { text: name }), h("dd", { class: plain ? "plain" : undefined, text: value }));
    };
    row("MAIL FROM", `<${m.mail_from ?? ""}>`);
    row("RCPT TO", (m.rcpt_tos || []).map((/** @type {string} */ r) => `<${r}>`).join(", "));
    row("To", headers.To, true);
    row("Cc", headers.Cc, true);
    row("Date", headers.Date, true);
    row("Message-ID", headers["Message-ID"]);
    const attachments = m.attachments || [];
    return h(
      "article",
      { class: `message${isNew ? " fresh" : ""}`, "data-id": m.id },
      h(
        "div",
        { class: "message-head" },
        h("h3", { class: `message-subject${headers.Subject ? "" : " none"}`, text: headers.Subject || "(no subject)" }),
        h("time", { class: "message-time", datetime: m.received, title: received.toString(), text: when }),
      ),
      h("p", { class: "message-from", text: headers.From ? `from ${headers.From}` : "no From header" }),
      h(
        "div",
        { class: "badges" },
        m.tls ? h("span", { class: "badge ok", text: "TLS" }) : h("span", { class: "badge warn", text: "no TLS" }),
        m.login
          ? h("span", { class: "badge accent", text: `login ${m.login}` })
          : h("span", { class: "badge", text: "no login" }),
        m.via ? h("span", { class: "badge", text: m.via === "smtps" ? "implicit TLS port" : "SMTP port" }) : null,
        h("span", { class: "badge", text: formatSize(m.size ?? 0) }),
        attachments.length
          ? h("span", { class: "badge", text: `${attachments.length} attachment${attachments.length > 1 ? "s" : ""}` })
          : null,
        h(
          "a",
          { class: "eml", href: `api/messages/${encodeURIComponent(m.id)}.eml`, download: `${m.id}.eml` },
          "Download .eml ↓",
        ),
      ),
      h("dl", {}, rows),
      attachments.length
        ? h(
            "ul",
            { class: "attachments" },
            attachments.map((/** @type {any} */ a) =>
              h(
                "li",
                { class: "chip", title: a.content_type },
                a.filename || "(unnamed)",
                h("small", { text: `${a.content_type} · ${formatSize(a.size ?? 0)}` }),
              ),
            ),
          )
        : null,
    );
  }

  // -- start ------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("mail").addEventListener("submit", send);
    $("target").addEventListener("change", () => selectTarget(Number($("target").value)));
    $("attachments").addEventListener("change", listAttachments);
    const booted = boot();
    loadConfig().finally(() => {
      pollMessages();
      // Boot may have finished first: keep its state.
      return booted;
    });
  });
})();
