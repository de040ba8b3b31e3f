// pysmtp-wasm snapshot cache: the second visit boots from a memory snapshot made in the user's
// own browser.
//
// After a page's first ordinary boot has reached its first onidle, at idle time, a module Worker
// (dist/pysmtp-wasm-snapshot-worker.js, web/src/entries/snapshot-worker.js) boots a Pyodide of
// its own with `_makeSnapshot`, unpacks the wheel and imports what web/make_snapshot.py imports,
// makes the memory snapshot and stores it in the origin's IndexedDB, as one Blob (read back
// off the main thread, without a join) or, where the engine refuses a Blob there (WebKit), as
// ArrayBuffers in parts of 2 MiB, under a key naming everything the image depends on:
// Pyodide's version, the wheel's and the loader's hashes (build options: web/build.mjs) and the
// engine's user agent. The next visit's loader (in the page, or in the Worker of worker mode)
// reads the entry and boots from it.
//
// Never worse than no cache: storage that is missing, refuses or does not answer, an entry of the
// wrong shape, size or digest, or a restore that fails: the ordinary boot runs, the bad entry is
// deleted, nothing is thrown at the page. Storing an image deletes the entries of other keys.

const DB_NAME = "pysmtp-wasm-snapshot-cache";
const STORE = "images";
/** How long storage may take to open, and to read or write, before the loader does without it (ms). */
const OPEN_WAIT_MS = 1000;
const STORAGE_WAIT_MS = 3000;
/** With no client reaching onidle, the image is made this long after the boot anyway (ms). */
const NO_CLIENT_MS = 10000;
const noop = () => {};
/** An image stored as ArrayBuffers (where a Blob is refused) is in parts of this size. */
const PART_BYTES = 2 * 1024 * 1024;

/** What web/make_snapshot.py imports (keep the two lists the same). */
export const MODULES =
  "asyncio, email.message, email.policy, email.utils, email.headerregistry, email.generator, " +
  "pysmtp_wasm, pysmtp_wasm._jsapi, pysmtp_wasm._browser, pysmtp_wasm._message";

/** The key of this build's image in this engine. */
export function cacheKey() {
  const { pyodide, wheel, loader } = PYSMTP_BUILD.cache;
  return `pyodide ${pyodide}; wheel ${wheel}; loader ${loader}; ${globalThis.navigator?.userAgent ?? ""}`;
}

/** @template T @param {Promise<T>} promise @param {number} ms @param {T} value @returns {Promise<T>} */
function within(promise, ms, value) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(value), ms);
    promise.then(
      (result) => {
        clearTimeout(timer);
        resolve(result);
      },
      () => {
        clearTimeout(timer);
        resolve(value);
      },
    );
  });
}

/** @param {IDBRequest} request @returns {Promise<any>} */
function settle(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("IndexedDB request failed"));
  });
}

/** The cache's database, or null: no IndexedDB, or it refused, failed or did not answer. */
function openCache() {
  /** @type {Promise<IDBDatabase | null>} */
  const opened = new Promise((resolve, reject) => {
    const request = globalThis.indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("blocked"));
  });
  opened.catch(() => {});
  const answer = within(opened, OPEN_WAIT_MS, null);
  // Answered too late: close it.
  answer.then((db) => {
    if (!db) opened.then((late) => late.close(), noop);
  });
  return answer;
}

/** @param {IDBDatabase} db @param {IDBTransactionMode} mode @param {(store: IDBObjectStore) => any} work */
function inTransaction(db, mode, work) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    Promise.resolve(work(tx.objectStore(STORE))).then((value) => (result = value), () => tx.abort());
  });
}

/** SHA-256 of the image, hex, or null where WebCrypto is not offered (not a secure context). */
async function digestOf(/** @type {ArrayBuffer | Uint8Array} */ buffer) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const bytes = new Uint8Array(await subtle.digest("SHA-256", /** @type {any} */ (buffer)));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Whether this engine offers storage at all (it may still refuse). */
export function cacheAvailable() {
  try {
    return typeof globalThis.indexedDB?.open === "function";
  } catch {
    return false; // (a getter that throws: a browser that refuses storage)
  }
}

/**
 * The stored image for key, or null: none, storage refused, or a bad record (deleted). Only the
 * record (its size, parts and digest) is read before this resolves: `buffer` is the image's size,
 * and `image` resolves to that same buffer once its Blob or parts are read into it and their
 * digest checked, and rejects (the entry deleted when it is bad) otherwise. The loader hands
 * Pyodide the buffer at once and lets it restore only once `image` has resolved, so that the
 * image is read while Pyodide compiles its WebAssembly (loader.js `restoring`).
 * @param {string} key
 * @returns {Promise<{image: Promise<Uint8Array>, buffer: Uint8Array, bytes: number} | null>}
 */
export async function readImage(key) {
  /** @type {IDBDatabase | null} */
  let db = null;
  try {
    if (!cacheAvailable()) return null;
    // No database yet (a first visit): do not create one now, on the boot's path (creating it
    // costs a file sync in some engines); the image's Worker creates it later.
    const listed = globalThis.indexedDB.databases?.();
    if (listed) {
      const names = await within(listed.then((all) => all.map((db) => db.name)), OPEN_WAIT_MS, null);
      if (names && !names.includes(DB_NAME)) return null;
    }
    db = await openCache();
    if (!db) return null;
    const opened = db;
    const record = await within(
      inTransaction(opened, "readonly", (store) => settle(store.get(key))),
      STORAGE_WAIT_MS,
      undefined,
    );
    if (record === undefined) return null;
    const bytes = record?.bytes;
    const count = record?.parts;
    const shaped = record?.blob ? count === 1 : count === Math.ceil(bytes / PART_BYTES);
    if (!Number.isInteger(bytes) || bytes < 1024 || !shaped) {
      await dropImage(key);
      return null;
    }
    db = null; // closed by the read of the parts
    const buffer = new Uint8Array(bytes);
    const image = readParts(opened, key, buffer, count).then(() =>
      record.digest
        ? digestOf(buffer).then((digest) => {
            if (digest && digest !== record.digest) throw new BadImage("the cached snapshot's digest does not match");
            return buffer;
          })
        : buffer,
    );
    image.catch((error) => error instanceof BadImage && dropImage(key));
    return { image, buffer, bytes };
  } catch {
    return null;
  } finally {
    db?.close();
  }
}

/** A stored image that is wrong (deleted), not storage that failed to answer (kept). */
class BadImage extends Error {}

/**
 * The image's parts from db (closed after), joined into buffer (or its one Blob's bytes copied
 * there), which is the image's size.
 * @param {IDBDatabase} db @param {string} key @param {Uint8Array} buffer @param {number} count
 */
async function readParts(db, key, buffer, count) {
  const bytes = buffer.length;
  /** @type {any[] | undefined} */
  let parts;
  try {
    const read = inTransaction(db, "readonly", (store) => settle(store.getAll(IDBKeyRange.bound([key, 0], [key, Infinity]))));
    parts = await within(read, STORAGE_WAIT_MS, undefined);
  } finally {
    db.close();
  }
  if (parts === undefined) throw new Error("storage did not answer");
  if (count === 1 && parts.length === 1 && parts[0] instanceof Blob) {
    if (parts[0].size !== bytes) throw new BadImage("the cached snapshot is truncated or damaged");
    buffer.set(new Uint8Array(await parts[0].arrayBuffer()));
    return;
  }
  const sizes = parts.map((part) => (part instanceof ArrayBuffer ? part.byteLength : -1));
  const total = sizes.reduce((sum, size) => (size < 0 ? NaN : sum + size), 0);
  if (parts.length !== count || total !== bytes) throw new BadImage("the cached snapshot is truncated or damaged");
  let offset = 0;
  for (const part of parts) {
    buffer.set(new Uint8Array(part), offset);
    offset += part.byteLength;
  }
}

/** Delete key's entry (a bad or unusable image); never throws. @param {string} key */
export async function dropImage(key) {
  try {
    const db = await openCache();
    if (!db) return;
    try {
      await inTransaction(db, "readwrite", (store) => {
        store.delete(key);
        return settle(store.delete(IDBKeyRange.bound([key, 0], [key, Infinity])));
      });
    } finally {
      db.close();
    }
  } catch {
    // nothing to do: the next visit finds it bad again, and tries again
  }
}

/** PySmtp.clearSnapshotCache(): delete every stored image. Resolves to false if storage refused. */
export async function clearSnapshotCache() {
  try {
    if (!cacheAvailable()) return false;
    const request = globalThis.indexedDB.deleteDatabase(DB_NAME);
    return await within(settle(request).then(() => true), STORAGE_WAIT_MS, false);
  } catch {
    return false;
  }
}

/**
 * Store an image under key and delete every other key's: as one Blob, or where the engine
 * refuses a Blob in IndexedDB (WebKit), as ArrayBuffers in parts of PART_BYTES (one put of 31 MB
 * costs some engines a long task on the page's main thread: bench/README.md).
 * @param {string} key @param {ArrayBuffer} buffer @returns {Promise<{stored: boolean, blob?: boolean, error?: string}>}
 */
async function storeImage(key, buffer) {
  const digest = await digestOf(buffer);
  const db = await openCache();
  if (!db) return { stored: false, error: "storage refused or unavailable" };
  try {
    /** @param {boolean} blob */
    const put = (blob) =>
      inTransaction(db, "readwrite", async (store) => {
        const keys = await settle(store.getAllKeys());
        for (const old of keys) store.delete(old);
        // Under [key, 0], [key, 1], ...; the record under key says how many, and in which form.
        const parts = blob ? 1 : Math.ceil(buffer.byteLength / PART_BYTES);
        if (blob) store.put(new Blob([buffer]), [key, 0]);
        else for (let i = 0; i < parts; i++) store.put(buffer.slice(i * PART_BYTES, (i + 1) * PART_BYTES), [key, i]);
        return settle(store.put({ bytes: buffer.byteLength, parts, blob, digest, made: Date.now() }, key));
      });
    // Whether this engine takes a Blob in IndexedDB, asked with a small one first: WebKit
    // refuses it only after it has copied the whole Blob (a 90-100 ms gap on the page's main
    // thread, measured, for the image).
    const probe = "pysmtp-wasm:blob-probe";
    const blob = await inTransaction(db, "readwrite", (store) => {
      store.put(new Blob([new Uint8Array(16)]), probe);
      return settle(store.delete(probe));
    }).then(
      () => true,
      () => false,
    );
    try {
      await put(blob);
      return { stored: true, blob };
    } catch (error) {
      if (!blob) throw error;
      await put(false);
      return { stored: true, blob: false };
    }
  } finally {
    db.close();
  }
}

/**
 * Python's `random` after a restore: reseeded from the browser's CSPRNG, so that two restores of
 * one image do not draw the same MIME boundaries and Message-IDs.
 * @param {any} pyodide
 */
export function reseed(pyodide) {
  const seed = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const hex = Array.from(seed, (b) => b.toString(16).padStart(2, "0")).join("");
  pyodide.runPython(`__import__("random").seed(int("${hex}", 16))`);
}

/**
 * In the snapshot Worker: boot, import, make the image, store it.
 * @param {{indexURL: string, wheelURL: string, key: string}} job
 */
export async function makeImage({ indexURL, wheelURL, key }) {
  const t0 = performance.now();
  let stage = "boot";
  try {
    const { loadPyodide } = await import(/* @vite-ignore */ `${indexURL}pyodide.mjs`);
    const wheel = fetch(wheelURL).then((response) => {
      if (!response.ok) throw new Error(`could not load the wheel: HTTP ${response.status}`);
      return response.arrayBuffer();
    });
    wheel.catch(() => {});
    const pyodide = await loadPyodide({ indexURL, _makeSnapshot: true, stdout: () => {}, stderr: () => {} });
    const t1 = performance.now();
    stage = "imports";
    pyodide.FS.writeFile("/tmp/pysmtp.whl", new Uint8Array(await wheel));
    pyodide.runPython(`
import os, site, zipfile
zipfile.ZipFile("/tmp/pysmtp.whl").extractall(site.getsitepackages()[0])
os.remove("/tmp/pysmtp.whl")
import ${MODULES}
`);
    const t2 = performance.now();
    stage = "make";
    const image = pyodide.makeMemorySnapshot();
    const buffer = image.byteOffset === 0 && image.byteLength === image.buffer.byteLength ? image.buffer : image.slice().buffer;
    const t3 = performance.now();
    stage = "store";
    const stored = await storeImage(key, buffer);
    const t4 = performance.now();
    return {
      ...stored,
      bytes: buffer.byteLength,
      bootMs: t1 - t0,
      importMs: t2 - t1,
      makeMs: t3 - t2,
      storeMs: t4 - t3,
      workerMs: t4 - t0,
    };
  } catch (error) {
    return { stored: false, error: `${stage}: ${(error && /** @type {any} */ (error).message) || error}` };
  }
}

/**
 * The page's side: once a client has reached its first onidle (or NO_CLIENT_MS after the boot),
 * at idle time, make and store the image in a Worker. Resolves to the Worker's report (never
 * rejects); the Worker is ended after it.
 * @param {string} base where dist/ is
 * @param {Promise<void>} firstIdle
 * @returns {Promise<any>}
 */
export function scheduleImage(base, firstIdle) {
  const noClient = new Promise((resolve) => setTimeout(resolve, NO_CLIENT_MS));
  return Promise.race([firstIdle, noClient])
    .then(
      () =>
        new Promise((resolve) => {
          const idle = /** @type {any} */ (globalThis).requestIdleCallback;
          if (typeof idle === "function") idle(resolve, { timeout: 2000 });
          else setTimeout(resolve, 200);
        }),
    )
    .then(
      () =>
        new Promise((resolve) => {
          const t0 = performance.now();
          let worker;
          const finish = (/** @type {any} */ report) => {
            worker?.terminate();
            resolve({ ...report, totalMs: performance.now() - t0 });
          };
          try {
            worker = new Worker(new URL("pysmtp-wasm-snapshot-worker.js", base).href, { type: "module", name: "pysmtp-wasm-snapshot" });
          } catch (error) {
            finish({ stored: false, error: `worker: ${/** @type {any} */ (error)?.message ?? error}` });
            return;
          }
          worker.onmessage = (/** @type {MessageEvent} */ { data }) => finish(data);
          worker.onerror = (/** @type {ErrorEvent} */ event) => {
            event.preventDefault?.();
            finish({ stored: false, error: `worker: ${event.message || "failed to start"}` });
          };
          worker.postMessage({ indexURL: new URL("pyodide/", base).href, wheelURL: new URL(PYSMTP_BUILD.wheel, base).href, key: cacheKey() });
        }),
    )
    .catch((error) => ({ stored: false, error: String(error?.message ?? error), totalMs: 0 }));
}

/**
 * SmtpClient whose instances resolve `idle` at the first onidle of any of them (to start the
 * image after it, never before), told by the class's `_notice` hook: the page's callbacks are
 * left exactly as the page set them.
 * @param {any} SmtpClient
 * @returns {{SmtpClient: any, idle: Promise<void>}}
 */
export function watchFirstIdle(SmtpClient) {
  /** @type {() => void} */
  let seen = () => {};
  /** @type {Promise<void>} */
  const idle = new Promise((resolve) => (seen = resolve));
  class Watched extends SmtpClient {
    /** @param {string} name */
    _notice(name) {
      if (name === "onidle") seen();
      super._notice(name);
    }
  }
  Object.defineProperty(Watched, "name", { value: SmtpClient.name });
  return { SmtpClient: Watched, idle };
}
