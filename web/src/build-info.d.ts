// What web/build.mjs tells the bundle (esbuild's define): loader.js reads it.
declare const PYSMTP_BUILD: {
  /** pysmtp-wasm's version (pyproject.toml) */
  version: string;
  /** the wheel's file name in dist/ */
  wheel: string;
  /** the Pyodide memory snapshot's path in dist/ (`./build.sh snapshot`), or null */
  snapshot: string | null;
};
