// What web/build.mjs tells the bundle (esbuild's define): loader.js reads it.
declare const PYSMTP_BUILD: {
  /** pysmtp-wasm's version (pyproject.toml) */
  version: string;
  /** the wheel's file name in dist/ */
  wheel: string;
  /** the Pyodide memory snapshot's path in dist/ (`./build.sh snapshot`), or null */
  snapshot: string | null;
  /** what an image of the snapshot cache depends on (web/src/snapshot-cache.js) */
  cache: {
    /** Pyodide's version (web/node_modules/pyodide) */
    pyodide: string;
    /** the wheel's SHA-256, 16 hex digits */
    wheel: string;
    /** web/src's and web/build.mjs's SHA-256, 16 hex digits */
    loader: string;
  };
};
