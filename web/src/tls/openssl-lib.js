// pysmtp-wasm TLS: the OpenSSL module (web/openssl/tls.c, built by web/openssl/build.sh) with
// what the engine needs around its exports: one scratch buffer, strings, and the trust
// contexts (SSL_CTX), the pinned ones counted by their users and freed after the last.

/** Bytes moved in and out of WebAssembly memory per call (4 TLS records). */
export const OPENSSL_SCRATCH = 64 * 1024;

/**
 * A trust context: an SSL_CTX* trusting some PEM certificates.
 * @typedef {object} Trust
 * @property {number} sslCtx the SSL_CTX* in WebAssembly memory
 * @property {number} count the certificates OpenSSL read
 * @property {number} skipped the certificates it could not read
 */

/**
 * One per module, and one module per page: every connection shares it (it is single-threaded;
 * calls never nest).
 */
export class OpenSSL {
  /** @param {any} module the Emscripten module (PySmtpOpenSSL() resolved) */
  constructor(module) {
    this.m = module;
    if (!module._pt_init()) {
      throw new Error("OpenSSL could not start (no entropy: crypto.getRandomValues is missing?)");
    }
    this.scratch = module._malloc(OPENSSL_SCRATCH);
    this.intPtr = module._malloc(4);
    this._decoder = new TextDecoder();
    /** @type {Map<string, Trust & {users: number}>} the contexts of `ca` options in use, by their PEM */
    this._pinned = new Map();
    /** @type {Map<string, Promise<Trust>>} this module's root stores, one per URL (an SSL_CTX* is an address in its memory) */
    this.rootStores = new Map();
    /**
     * The trap (a WebAssembly.RuntimeError) that ended a call into this module, or null. After
     * one, its memory cannot be trusted (a trap can stop OpenSSL, or its allocator, half-way
     * through an update, and leaves its stack pointer where it was): nothing calls into it
     * again, and the page's loader makes a new module for the next connection.
     * @type {Error | null}
     */
    this.trapped = null;
  }

  /** A call into the module trapped. @param {Error} error */
  trap(error) {
    if (this.trapped) return;
    this.trapped = error;
    this.m.pysmtpTrapped = true; // (what the loader looks at: it sees the module, not this)
  }

  /** @param {number} ptr a NUL-terminated string in WebAssembly memory */
  str(ptr) {
    const heap = this.m.HEAPU8;
    let end = ptr;
    while (heap[end]) end++;
    return this._decoder.decode(heap.subarray(ptr, end));
  }

  /**
   * @template T
   * @param {string} s @param {(ptr: number, length: number) => T} fn
   * @param {boolean} [cString] fn reads s as a C string (up to its first NUL): s must have none
   * @returns {T} fn called with s as a NUL-terminated UTF-8 string in WebAssembly memory
   */
  withString(s, fn, cString = false) {
    const bytes = new TextEncoder().encode(s);
    if (cString && bytes.includes(0)) throw new Error("a C string for OpenSSL holds a NUL, which would cut it short");
    const ptr = this.m._malloc(bytes.length + 1);
    try {
      this.m.HEAPU8.set(bytes, ptr);
      this.m.HEAPU8[ptr + bytes.length] = 0;
      return fn(ptr, bytes.length);
    } finally {
      this.m._free(ptr);
    }
  }

  /**
   * A new client context trusting the PEM certificates in `pem`.
   * @param {string} pem @param {boolean} pinned any of them may end a chain, a leaf included
   * @returns {Trust}
   */
  context(pem, pinned) {
    const sslCtx = this.m._pt_ctx_new(pinned ? 1 : 0);
    if (!sslCtx) throw new Error("OpenSSL could not make a TLS context");
    const count = this.withString(pem, (ptr, length) => this.m._pt_ctx_add_pem(sslCtx, ptr, length, this.intPtr));
    const skipped = this.m.HEAPU32[this.intPtr >> 2];
    return { sslCtx, count, skipped };
  }

  /** @param {Trust} trust a context no one uses (an SSL made from it holds its own reference) */
  freeContext(trust) {
    if (!this.trapped) this.m._pt_ctx_free(trust.sslCtx);
  }

  /**
   * The context of a `ca` option, shared by the connections that pin the same certificates;
   * `release` when done with it: the last release frees it.
   * @param {string} pem
   * @returns {{trust: Trust, release: () => void}}
   */
  acquirePinned(pem) {
    let entry = this._pinned.get(pem);
    if (!entry) {
      entry = { ...this.context(pem, true), users: 0 };
      this._pinned.set(pem, entry);
    }
    entry.users += 1;
    const held = /** @type {Trust & {users: number}} */ (entry);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      held.users -= 1;
      if (held.users === 0 && this._pinned.get(pem) === held) {
        this._pinned.delete(pem);
        this.freeContext(held);
      }
    };
    return { trust: held, release };
  }

  /** How many `ca` contexts are alive (for leak checks). */
  get pinnedContexts() {
    return this._pinned.size;
  }
}

/** @type {WeakMap<object, OpenSSL>} */
const openSSLs = new WeakMap();
/** @type {Promise<any> | null} the module made from globalThis.PySmtpOpenSSL */
let defaultOpenSSL = null;

/**
 * @param {any} option the Emscripten module, a function returning (a promise of) it, or
 *   undefined for globalThis.PySmtpOpenSSL (the factory openssl-tls.js defines)
 * @returns {Promise<OpenSSL>}
 */
export async function resolveOpenSSL(option) {
  let module = option;
  const factory = /** @type {any} */ (globalThis).PySmtpOpenSSL;
  if (module == null && typeof factory === "function") {
    module = defaultOpenSSL ??= factory(); // one instance per page
    if ((await module)?.pysmtpTrapped) module = defaultOpenSSL = factory(); // (a new one after a trap)
  }
  if (typeof module === "function" && typeof module._pt_new !== "function") module = module();
  module = await module;
  if (!module || typeof module._pt_new !== "function") {
    throw new Error("OpenSSL is not available (serve dist/openssl/ beside pysmtp-wasm.js, or pass options.openssl)");
  }
  let lib = openSSLs.get(module);
  if (!lib) {
    lib = new OpenSSL(module);
    openSSLs.set(module, lib);
  }
  if (lib.trapped) {
    throw new Error(
      `this OpenSSL module trapped on an earlier connection (${lib.trapped.message}) and cannot be trusted any ` +
        "more: give the socket's openssl option a new module",
    );
  }
  return lib;
}
