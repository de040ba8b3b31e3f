// pysmtp-wasm remote: the options' grammar (from _usage.py option_grammar), checked on the
// page's side of a Worker as Python would, so that new SmtpClient() throws at once there too.

/** Python's isprintable() is false for these (and a space is printable). */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
/** The same for the EHLO name's check, but for unassigned code points: the browser's Unicode may
 * be older than Python's, and this check must never refuse what the engine accepts. */
const NAME_UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Zs}]/u;
/** A UTF-16 surrogate without its other half (Python cannot encode it: _options refuses it). */
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
export function optionProblem(grammar, options) {
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
