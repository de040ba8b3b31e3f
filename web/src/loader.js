// pysmtp-wasm loader: boots Pyodide from files served beside this script, loads our wheel,
// and returns a JS SmtpClient class (client.js) with emailjs-smtp-client's API whose work is
// done by the Python engine; with { worker: true }, the one of remote.js instead. Each build
// (web/src/entries/) makes its PySmtp with createPySmtp(the script's own URL); the version,
// the wheel's name and the snapshot, if any, are build options (web/build.mjs: PYSMTP_BUILD).

import { liveClientCount, makeSmtpClient } from "./client.js";
import { defaultPort } from "./protocol.js";
import { bootRemote } from "./remote.js";
import { cacheAvailable, cacheKey, clearSnapshotCache, dropImage, readImage, reseed, scheduleImage, watchFirstIdle } from "./snapshot-cache.js";
import { PySmtpSocket } from "./socket.js";

/** What the build knows (web/build.mjs defines it): see web/src/build-info.d.ts. */
const { version: VERSION, wheel: WHEEL, snapshot: SNAPSHOT } = PYSMTP_BUILD;
const noop = () => {};

/** @type {Promise<any> | null} */
let booting = null;

/**
 * Run one of dist/'s scripts: a <script> element in a page. In the Worker of worker mode
 * (web/src/worker.js) there is no document, and it is a module Worker (Pyodide refuses classic
 * ones), so the script's ES-module twin is imported instead: pyodide/pyodide.mjs (whose
 * loadPyodide is made global, as pyodide.js does), and the ones the build makes of node-forge
 * and OpenSSL's glue (forge.min.mjs, openssl/openssl-tls.mjs), which set the same globals.
 * @param {string} url
 */
function loadScript(url) {
  if (typeof document === "undefined") {
    return import(url.replace(/\.js$/, ".mjs")).then(
      (module) => {
        if (typeof module.loadPyodide === "function") globalThis.loadPyodide ??= module.loadPyodide;
      },
      (error) => {
        throw new Error(`pysmtp-wasm: could not load ${url}: ${error && error.message}`);
      },
    );
  }
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(undefined);
    script.onerror = () => reject(new Error(`pysmtp-wasm: could not load ${url}`));
    document.head.appendChild(script);
  });
}

// SNAPSHOT (a build option): the Pyodide memory snapshot with pysmtp_wasm imported, when
// `./build.sh snapshot` made one ("pyodide/pysmtp-snapshot.bin"), else null: a page never asks
// for a file that is not there.

/** @param {string} href @returns {Promise<ArrayBuffer | null>} null when there is none */
function fetchSnapshot(href) {
  return fetch(href)
    .then((response) => (response.ok ? response.arrayBuffer() : null))
    .catch(() => null);
}

/**
 * @param {string} base
 * @param {any} options
 */
async function boot(base, options) {
  const url = (/** @type {string} */ path) => new URL(path, base).href;
  /** @type {Promise<any> | null} */
  let forge = null;
  // node-forge is fetched only when a connection first needs TLS.
  const loadForge = () =>
    (forge ??= globalThis.forge
      ? Promise.resolve(globalThis.forge)
      : loadScript(url("forge.min.js")).then(() => globalThis.forge));
  /** @type {Promise<any> | null} */
  let openssl = null;
  // OpenSSL (openssl/openssl-tls.js and its .wasm) likewise: one instance per page, shared by
  // every connection. A failed load may be retried by a later connection; an instance that
  // trapped (openssl-lib.js `trap`) is never used again: the next connection gets a new one.
  /** @returns {Promise<any>} */
  const loadOpenSSL = () => {
    openssl ??= (globalThis.PySmtpOpenSSL ? Promise.resolve() : loadScript(url("openssl/openssl-tls.js")))
      .then(() => globalThis.PySmtpOpenSSL({ locateFile: (/** @type {string} */ file) => url(`openssl/${file}`) }));
    const loading = openssl;
    loading.catch(() => {
      if (openssl === loading) openssl = null;
    });
    return loading.then((module) => {
      if (!module?.pysmtpTrapped) return module;
      if (openssl === loading) openssl = null;
      return loadOpenSSL();
    });
  };
  Socket().defaults = {
    proxy: options.proxy,
    rootsUrl: url("roots.pem"),
    tlsEngine: options.tlsEngine,
    forge: loadForge,
    openssl: loadOpenSSL,
  };
  // Connections the page will want: opened now, so that they are ready when Python is.
  for (const target of [].concat(options.preconnect ?? [])) {
    const { host = "localhost", port, ...socketOptions } = target;
    const secure = !!socketOptions.useSecureTransport;
    Socket().preconnect(host, port ?? defaultPort(secure), { ...socketOptions, useSecureTransport: secure });
  }

  let pyodide = options.pyodide;
  // The wheel is fetched while Python boots (it is not needed when the snapshot has it).
  /** @type {Promise<ArrayBuffer> | null} */
  let wheel = null;
  const fetchWheel = () =>
    (wheel ??= fetch(url(WHEEL)).then((response) => {
      if (!response.ok) throw new Error(`pysmtp-wasm: could not load ${WHEEL}: HTTP ${response.status}`);
      return response.arrayBuffer();
    }));
  /** How Python booted: PySmtp.bootKind (the snapshot cache, the build's snapshot, or neither). */
  let bootKind = options.pyodide ? "given" : "fresh";
  if (!pyodide) {
    /** @type {Promise<any> | null} */
    const script = typeof globalThis.loadPyodide === "function" ? null : loadScript(url("pyodide/pyodide.js"));
    script?.catch(noop); // awaited below
    const config = { indexURL: url("pyodide/"), ...(options.pyodideOptions || {}) };
    // Pyodide's module script, imported now (Pyodide's own import of it gets the same module):
    // Pyodide compiles its WebAssembly only once it has loaded and run (100-250 ms in Firefox).
    const create = config.createPyodideModule
      ? Promise.resolve(config.createPyodideModule)
      : importModule(() => asmUrl(config.indexURL)).then((module) => module.default);
    create.catch(noop); // (awaited by a restore; a failed import fails only that)
    // The snapshot cache (snapshot-cache.js): the image this browser made on an earlier visit.
    const key = options.snapshotCache === false ? null : cacheKey();
    // Only its record is read here: its parts are read while Pyodide loads its own files.
    const cached = key && (await readImage(key));
    if (key) performance.mark("pysmtp-wasm:snapshot-cache-read");
    if (cached) {
      cached.image.then(() => performance.mark("pysmtp-wasm:snapshot-cache-image"), noop);
      await script;
      try {
        const restored = await globalThis.loadPyodide({ ...config, ...restoring(create, cached) });
        if (restored.runPython("'pysmtp_wasm._jsapi' in __import__('sys').modules")) {
          pyodide = restored;
          bootKind = "snapshot-cache";
        }
      } catch {
        // an image this engine cannot restore, or one that could not be read: the ordinary boot
      }
      // An image that was read but not restored is dropped here; one that could not be read is
      // kept (storage too slow), or dropped already (a bad one drops itself).
      if (!pyodide && (await cached.image.then(() => true, () => false))) await dropImage(key);
    }
    // A memory snapshot (`./build.sh snapshot`) boots Python with pysmtp_wasm already imported;
    // without one, or if it fails, the ordinary boot.
    const snapshot = pyodide || options.snapshot === false || !SNAPSHOT ? null : fetchSnapshot(url(SNAPSHOT));
    if (!pyodide && !snapshot) fetchWheel().catch(noop); // awaited below; a failure is reported there
    await script;
    const image = snapshot && (await snapshot);
    if (image) {
      pyodide = await globalThis.loadPyodide({ ...config, _loadSnapshot: image }).catch(() => null);
      if (pyodide) bootKind = "snapshot";
    }
    pyodide ??= await globalThis.loadPyodide(config);
    // A restored heap is a copy: its `random` would draw what every other restore draws.
    if (bootKind !== "fresh") reseed(pyodide);
    // User Timing marks: how long Pyodide took, and how long our part after it (bench/).
    performance.mark("pysmtp-wasm:pyodide-booted");
  }
  if (!pyodide.runPython("'pysmtp_wasm._jsapi' in __import__('sys').modules")) {
    // Our wheel is pure Python: unpacking it into site-packages is all it takes to install.
    // (pyodide.loadPackage(url) does the same, but its first use imports Pyodide's package
    // machinery: 150 ms of a cold start, where this takes under 20; bench/README.md.)
    const sitePackages = pyodide.runPython("__import__('site').getsitepackages()[0]");
    pyodide.unpackArchive(await fetchWheel(), "wheel", { extractDir: sitePackages });
  }
  const api = pyodide.pyimport("pysmtp_wasm._jsapi");
  performance.mark("pysmtp-wasm:loaded");
  return {
    SmtpClient: makeSmtpClient(api),
    bootKind,
    pyodide,
    /** Objects alive at the JS/Python boundary (for leak checks). */
    stats: () => ({ ...api.counters(), jsClients: liveClientCount() }),
  };
}

/**
 * The URL of Pyodide's module script as Pyodide makes it from indexURL: with a trailing slash
 * added, and a relative one resolved against the page (or the Worker's script).
 * @param {string} indexURL
 */
function asmUrl(indexURL) {
  const index = indexURL.endsWith("/") ? indexURL : `${indexURL}/`;
  return new URL("pyodide.asm.mjs", new URL(index, globalThis.location?.href)).href;
}

/**
 * import() of the URL that url() makes; a URL that cannot be made rejects too, never throws.
 * @param {() => string} url
 * @returns {Promise<any>}
 */
function importModule(url) {
  try {
    return import(url());
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * loadPyodide's options to restore the snapshot cache's image with Pyodide's WebAssembly compiled
 * while the image is still being read. Pyodide awaits `_loadSnapshot` before it compiles (it
 * sizes the memory from it), which would put the read and the compile one after the other (in
 * Firefox, which keeps no compiled code between visits, ~250 ms each): it gets the buffer
 * of the image's size at once, and the module it makes waits for the image to be in that buffer
 * (read and checked) before Pyodide restores from it. A bad image rejects the module: loadPyodide
 * fails, and the ordinary boot follows.
 * @param {Promise<any>} create Pyodide's createPyodideModule (imported early)
 * @param {{image: Promise<Uint8Array>, buffer: Uint8Array}} cached readImage's
 */
function restoring(create, cached) {
  return {
    _loadSnapshot: cached.buffer,
    createPyodideModule: async (/** @type {any} */ settings) => {
      const module = await (await create)(settings);
      await cached.image;
      return module;
    },
  };
}

/**
 * The page's one socket class (socket.js makes the first one loaded global: the classic
 * script and the ES module share it), whose defaults every client's sockets read.
 * @returns {typeof PySmtpSocket}
 */
function Socket() {
  return /** @type {any} */ (globalThis).PySmtpSocket ?? PySmtpSocket;
}

/**
 * PySmtp for a build whose script is at scriptUrl (dist/ is beside it).
 * @param {string} scriptUrl
 */
export function createPySmtp(scriptUrl) {
  const PySmtp = {
    version: VERSION,
    /**
     * Boot Pyodide and pysmtp-wasm (once per page; later calls return the same promise).
     * @param {{proxy?: string | ((host: string, port: number) => string), baseURL?: string,
     *          tlsEngine?: "auto" | "openssl" | "forge", pyodide?: any, pyodideOptions?: object,
     *          snapshot?: boolean, snapshotCache?: boolean, snapshotCacheImage?: boolean, preconnect?: object | object[], worker?: boolean}} [options]
     *   snapshot: false never uses dist/pyodide/pysmtp-snapshot.bin (default: use it when
     *   `./build.sh snapshot` made one)
     *   snapshotCache: false neither boots from nor makes the snapshot cache's image (default: both)
     *   (snapshotCacheImage: false, remote.js's to the Worker: boot from the cache, the page makes the image)
     *   preconnect: {host, port, useSecureTransport, ca, proxy, tlsEngine} (or a list of them): open
     *   these connections while Python boots; the first SmtpClient to the same target with the
     *   same options takes its connection over (the greeting, and the TLS handshake, already done)
     *   worker: true runs Pyodide, the engine, the sockets and TLS in one dedicated Worker
     *   (pysmtp-wasm-worker.js) shared by every client of the page; the SmtpClient is the same,
     *   its calls and callbacks forwarded by messages (web/src/remote.js)
     */
    load(options = {}) {
      if (!booting) {
        const base = new URL(options.baseURL ?? ".", scriptUrl).href;
        booting = (options.worker ? bootRemote(base, options, () => (booting = null)) : boot(base, options)).then((api) => {
          PySmtp.bootKind = api.bootKind ?? null;
          // The snapshot cache: after an ordinary boot, the image for the next visit is made in a
          // Worker once a client has reached its first onidle, at idle time.
          if (api.bootKind === "fresh" && options.snapshotCache !== false && options.snapshotCacheImage !== false && cacheAvailable() && typeof Worker === "function") {
            const { SmtpClient, idle } = watchFirstIdle(api.SmtpClient);
            api.SmtpClient = SmtpClient;
            PySmtp.snapshotCacheJob = scheduleImage(base, idle);
          }
          return api;
        });
        booting.catch(() => {
          booting = null; // a failed boot may be retried
        });
      }
      return booting;
    },
    /**
     * How the last load() booted Python: "snapshot-cache" (this browser's image of an earlier
     * visit), "snapshot" (the build's, `./build.sh snapshot`), "fresh" (neither), "given" (the
     * pyodide option); null before.
     * @type {import("./pysmtp-wasm").BootKind | null}
     */
    bootKind: null,
    /**
     * The making of the snapshot cache's image after this visit's ordinary boot: resolves to the
     * Worker's report ({stored, bytes, ...ms} or {stored: false, error}); null when none is made.
     * @type {Promise<any> | null}
     */
    snapshotCacheJob: null,
    /** Delete this origin's stored images; resolves to false if storage refused. */
    clearSnapshotCache,
    Socket: Socket(),
  };
  return PySmtp;
}
