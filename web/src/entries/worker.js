// dist/pysmtp-wasm-worker.js: the script of the module Worker of PySmtp.load({worker: true}):
// the in-page loader, serving the page's messages (worker.js).

import { createPySmtp } from "../loader.js";
import { serveWorker } from "../worker.js";

serveWorker(createPySmtp(location.href));
