// dist/pysmtp-wasm.js: the classic script (<script src>): defines globalThis.PySmtp.

import { createPySmtp } from "../loader.js";

// dist/ is beside this script: its own URL, read while it runs.
const SCRIPT_URL = (typeof document !== "undefined" && /** @type {HTMLScriptElement | null} */ (document.currentScript)?.src) || location.href;

/** @type {import("../pysmtp-wasm").PySmtpNamespace} */
const PySmtp = createPySmtp(SCRIPT_URL);
/** @type {any} */ (globalThis).PySmtp = PySmtp;
