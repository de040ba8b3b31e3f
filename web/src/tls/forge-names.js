// pysmtp-wasm TLS, node-forge's host-name check: OpenSSL checks the name itself
// (X509_VERIFY_PARAM_set1_host), node-forge does not, so forge.js does it with this (RFC 6125:
// subjectAltName DNS and IP entries, the CN only without DNS entries, one left-most wildcard).

import { normalizeName } from "./common.js";

/** @param {string} s @returns {number[] | null} */
function parseIPv4(s) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const bytes = m.slice(1).map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

/** @param {string} s @returns {number[] | null} 16 bytes */
function parseIPv6(s) {
  s = s.replace(/%.*$/, ""); // zone id
  if (!/^[0-9a-f:.]+$/i.test(s) || s.split("::").length > 2) return null;
  const [head, tail = null] = s.split("::");
  /** @param {string} part */
  const groups = (part) => {
    if (!part) return [];
    /** @type {number[]} */
    const out = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-f]{1,4}$/i.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const a = groups(head);
  const b = tail === null ? [] : groups(tail);
  if (!a || !b) return null;
  let all;
  if (tail === null) {
    if (a.length !== 8) return null;
    all = a;
  } else {
    if (a.length + b.length > 7) return null;
    all = [...a, ...new Array(8 - a.length - b.length).fill(0), ...b];
  }
  return all.flatMap((g) => [g >> 8, g & 255]);
}

/** @param {string} host @returns {number[] | null} the address bytes when host is an IP literal */
export function ipBytes(host) {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  return h.includes(":") ? parseIPv6(h) : parseIPv4(h);
}

/** @param {string} pattern a dNSName or CN @param {string} host normalized */
function dnsMatches(pattern, host) {
  const p = normalizeName(pattern);
  if (!p || !host) return false;
  if (!p.includes("*")) return p === host;
  // Only a whole left-most "*" label, over at least two more labels; it matches one label.
  if (!p.startsWith("*.")) return false;
  const rest = p.slice(2);
  if (rest.includes("*") || rest.split(".").length < 2) return false;
  const dot = host.indexOf(".");
  return dot > 0 && host.slice(dot + 1) === rest;
}

/**
 * @param {any} cert a forge certificate
 * @param {string} servername
 * @returns {{ok: boolean, names: string[]}}
 */
export function forgeCheckHostName(cert, servername) {
  const host = normalizeName(servername);
  const ip = ipBytes(host);
  const san = cert.getExtension("subjectAltName");
  const altNames = (san && san.altNames) || [];
  const dnsNames = altNames.filter((n) => n.type === 2).map((n) => String(n.value));
  const ipNames = altNames.filter((n) => n.type === 7);
  const cns = dnsNames.length
    ? []
    : cert.subject.attributes.filter((a) => a.shortName === "CN" || a.type === "2.5.4.3").map((a) => String(a.value));
  const names = [...dnsNames, ...ipNames.map((n) => n.ip || "(an IP address)"), ...cns];
  let ok;
  if (ip) {
    ok = ipNames.some((n) => {
      const v = String(n.value);
      return v.length === ip.length && ip.every((b, i) => v.charCodeAt(i) === b);
    });
  } else {
    ok = [...dnsNames, ...cns].some((pattern) => dnsMatches(pattern, host));
  }
  return { ok, names };
}
