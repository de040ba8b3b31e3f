// pysmtp-wasm socket, the proxy's part: its URL checked, and its failures told apart as far as
// the browser lets us see. A WebSocket that never opened is followed by a diagnostic request to
// the proxy's address (does anything answer there, and is it HTTP?); a proxy that speaks our
// close codes (4000-4999, docs/proxy.md) is quoted.

/** How long the diagnostic request to a proxy that refused the WebSocket may take. */
const PROBE_MS = 3000;

/**
 * What is wrong with a proxy URL, in a user's words (null: nothing).
 * @param {unknown} url
 * @returns {string | null}
 */
export function proxyProblem(url) {
  if (url == null || url === "") {
    return (
      "option proxy is missing: give the WebSocket URL of your WebSocket-to-TCP proxy (ws:// or wss://), to " +
      "PySmtp.load({ proxy }) or to the client, as a string or a function (host, port) => string"
    );
  }
  if (typeof url !== "string") return `option proxy must be a ws:// or wss:// URL (a string), not a ${typeof url}`;
  let parsed;
  try {
    parsed = new URL(url);
  } catch (_) {
    return (
      `option proxy ${JSON.stringify(url)} is not a URL: give the proxy's whole WebSocket URL, ` +
      'such as "wss://mail.example.com/smtp-proxy"'
    );
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    const web = parsed.protocol === "http:" || parsed.protocol === "https:";
    const twin = web ? `${parsed.protocol === "https:" ? "wss" : "ws"}:${url.slice(parsed.protocol.length)}` : "";
    return (
      `option proxy ${JSON.stringify(url)} is not a WebSocket URL: it must start with ws:// or wss://` +
      (web ? ` (the WebSocket URL of that address is ${JSON.stringify(twin)})` : "")
    );
  }
  if (url.includes("#")) return `option proxy ${JSON.stringify(url)} has a #fragment, which a WebSocket URL cannot have`;
  return null;
}

/** @param {string} hostname @returns {boolean} a name or address of this machine */
function isLoopbackName(hostname) {
  const h = hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || /^127\./.test(h) || h === "::1";
}

/**
 * One diagnostic request: does anything answer HTTP(S) there? "answered" (any response: the
 * body and status are opaque to a no-cors request, and need not be more), "failed" (refused,
 * reset, or a TLS failure), "silent" (no answer in PROBE_MS), or "blocked" (the browser
 * refused the request itself: Content-Security-Policy or mixed content; then nothing can be
 * told). The request is a plain GET of the proxy URL's path, without its query (a token or a
 * ticket is not sent twice), and without credentials.
 * @param {string} url "http://host:port/path"
 * @returns {Promise<"answered" | "failed" | "silent" | "blocked">}
 */
async function probe(url) {
  const here = globalThis.location;
  if (typeof fetch !== "function") return "blocked";
  const target = new URL(url);
  if (here && here.protocol === "https:" && target.protocol === "http:" && !isLoopbackName(target.hostname)) {
    return "blocked"; // mixed content: the browser would refuse it without a word
  }
  let violated = false;
  /** @param {any} event */
  const onViolation = (event) => {
    if (String(event.blockedURI || "").startsWith(target.origin)) violated = true;
  };
  const events = typeof globalThis.addEventListener === "function" ? globalThis : null;
  if (events) events.addEventListener("securitypolicyviolation", onViolation);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), PROBE_MS);
  try {
    await fetch(target.href, {
      mode: "no-cors",
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      signal: abort.signal,
    });
    return "answered";
  } catch (_) {
    if (abort.signal.aborted) return "silent";
    await new Promise((resolve) => setTimeout(resolve, 0)); // the violation event is a task of its own
    return violated ? "blocked" : "failed";
  } finally {
    clearTimeout(timer);
    if (events) events.removeEventListener("securitypolicyviolation", onViolation);
  }
}

/**
 * Why a WebSocket to this proxy URL closed before it opened, as far as the browser lets us
 * find out (it reports every such failure as close 1006, and hides HTTP statuses).
 * @param {string} url a ws:// or wss:// URL
 * @returns {Promise<string>} what happened and what to check
 */
export async function diagnoseProxy(url) {
  const parsed = new URL(url);
  const secure = parsed.protocol === "wss:";
  const where = parsed.host;
  const web = `${secure ? "https" : "http"}://${where}${parsed.pathname}`;
  const hasToken = /[?&]token=/.test(parsed.search);
  const token = hasToken ? "the token in the URL" : "the URL's token (it has none: a proxy with a token file refuses it)";
  const refused =
    `an HTTP${secure ? "S" : ""} server answers at ${where}, but it did not accept the WebSocket: either it is not a ` +
    `WebSocket proxy, or the proxy refused this URL (an unknown or missing token, an origin it does not allow): check ` +
    `${token}, and the proxy's log`;
  const nobody =
    `nothing answers at ${where} (the connection was refused or failed${secure ? ", or its TLS certificate is not trusted by the browser" : ""}): ` +
    "is the proxy running, and is this its address and port?";
  const unknown =
    "the browser refused the diagnostic request to that address too (the page's Content-Security-Policy, or " +
    "mixed content), so it cannot tell why: check the proxy's address, its token and its log";
  const first = await probe(web);
  if (first === "answered") return refused;
  if (first === "blocked") return unknown;
  if (first === "silent") {
    return `something at ${where} accepted the connection but did not answer HTTP within ${PROBE_MS / 1000} s: check the address, and the proxy's log`;
  }
  if (secure) {
    const plain = await probe(`http://${where}${parsed.pathname}`);
    if (plain === "answered") {
      return (
        `a plain HTTP server answers at ${where}, not HTTPS: the proxy speaks ws://, not wss://; use ` +
        `${JSON.stringify(`ws://${url.slice("wss://".length)}`)}, or put TLS in front of the proxy`
      );
    }
  }
  return nobody;
}

/**
 * A close with a code in 4000-4999: our proxy (pysmtp-wasm-proxy) refused, and its reason is
 * "<reason-name>: <words for a human>" (docs/proxy.md, its close codes).
 * @param {string} proxyUrl @param {number} code @param {string} reason
 * @returns {{message: string, proxyReason: string | null}}
 */
export function proxyRefusal(proxyUrl, code, reason) {
  const match = /^([a-z][a-z0-9_]*)(?::\s*([\s\S]*))?$/.exec(reason.trim());
  const proxyReason = match ? match[1] : null;
  const words = match ? match[2] || match[1] : reason || "no reason given";
  const said = `(${proxyReason ? `${proxyReason}, ` : ""}WebSocket close ${code})`;
  const origin = globalThis.location ? globalThis.location.origin : "this page's origin";
  /** @type {Record<number, string>} */
  const hints = {
    4400: "check the proxy URL and its token",
    4401: "the ticket in the proxy URL is missing, wrong or expired: get a new one from your server",
    4403: `the proxy does not accept pages from ${origin}: add this origin to its allowed origins`,
    4404: "the proxy has no target for the token in this URL: check the token",
    4408: "nothing was sent either way for the proxy's idle timeout",
    4429: "the proxy's limit of sessions is reached: try again later",
    4503: "the proxy is shutting down: try again in a moment",
  };
  if (code === 4502 || code === 4504) {
    return { message: `the proxy at ${proxyUrl} could not connect to the SMTP server: ${words} ${said}`, proxyReason };
  }
  const hint = hints[code] || "see the proxy's log";
  return { message: `the proxy at ${proxyUrl} refused the connection: ${words} ${said}; ${hint}`, proxyReason };
}

/**
 * Why an open connection ended with a close code that is not a normal close (1000, 1005).
 * @param {string} proxyUrl @param {number} code @param {string} closeInfo
 */
export function lostConnection(proxyUrl, code, closeInfo) {
  const proxy = `the proxy at ${proxyUrl}`;
  const why =
    code === 1006
      ? "the connection to the proxy was lost (the proxy, or the network to it, went away)"
      : code === 1009
        ? `${proxy} closed the connection: a message over its size limit`
        : code === 1001
          ? `${proxy} is going away (restarting or shutting down)`
          : `${proxy} closed the connection`;
  return `${why} (${closeInfo})`;
}

/**
 * websockify's close 1011 ("Failed to connect to downstream server"). It chooses the server (a
 * fixed target, or the one its token names), not the page's host and port: do not name those.
 * @param {string} proxyUrl @param {string} reason @param {boolean} gotData @param {string} closeInfo
 */
export function serverUnreachable(proxyUrl, reason, gotData, closeInfo) {
  const proxy = `the proxy at ${proxyUrl}`;
  return /Failed to connect/i.test(reason) || !gotData
    ? `${proxy} could not connect to its SMTP server (${closeInfo}): check that the server the proxy ` +
        "reaches for this URL is up; the proxy's log names the address it tried"
    : `${proxy} reported an error on the connection to its SMTP server (${closeInfo}); see the proxy's log`;
}

/**
 * The WebSocket opened, then closed before the SMTP server's first byte.
 * @param {string} proxyUrl @param {string} closeInfo
 */
export function closedBeforeData(proxyUrl, closeInfo) {
  return (
    `the proxy at ${proxyUrl} accepted the WebSocket, then closed it before the SMTP server sent a byte (${closeInfo}): ` +
    "the server it reached closed the connection at once, or the proxy dropped it; the proxy's log says which"
  );
}
