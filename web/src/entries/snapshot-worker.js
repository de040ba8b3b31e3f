// dist/pysmtp-wasm-snapshot-worker.js: the module Worker that makes the snapshot cache's image
// (web/src/snapshot-cache.js): one job, one report, then the page ends it.

import { makeImage } from "../snapshot-cache.js";

self.onmessage = async (/** @type {MessageEvent} */ { data }) => {
  self.postMessage(await makeImage(data));
};
