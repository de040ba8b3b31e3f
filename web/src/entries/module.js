// dist/pysmtp-wasm.mjs: the ES module (import PySmtp, { load } from "pysmtp-wasm"), whose
// declarations are web/src/pysmtp-wasm.d.ts.

import { createPySmtp } from "../loader.js";

/** @type {import("../pysmtp-wasm").PySmtpNamespace} */
const PySmtp = createPySmtp(import.meta.url);
// One PySmtp per page: a classic script loaded first keeps its own.
/** @type {any} */ (globalThis).PySmtp ??= PySmtp;

export const load = PySmtp.load;
export default PySmtp;
