// Type declarations for pysmtp-wasm's JavaScript API (dist/pysmtp-wasm.js and .mjs).

/**
 * Where the WebSocket-to-TCP proxy for a target is: a ws:// or wss:// URL, or a function giving
 * one (called once, when a client is made). Anything else is an SmtpUsageError at construction.
 */
export type ProxyOption = string | ((host: string, port: number) => string);

export interface SmtpClientOptions {
  /** TLS from the first byte (implicit TLS, port 465). */
  useSecureTransport?: boolean;
  /** The client's host name for EHLO/LHLO (default "localhost"). */
  name?: string;
  /** Credentials; with both pass and xoauth2, the token is preferred. */
  auth?: { user: string; pass?: string; xoauth2?: string };
  /** Force a mechanism: "PLAIN", "LOGIN", "XOAUTH2" or "CRAM-MD5". */
  authMethod?: "PLAIN" | "LOGIN" | "XOAUTH2" | "CRAM-MD5" | string;
  /**
   * PEM certificate(s): trust exactly these (pinning); any of them ends a chain, a leaf included.
   * No PEM certificate in it, or a block that is not base64 of a certificate, is an
   * SmtpUsageError at construction.
   */
  ca?: string | string[];
  /** Send the message as given: no dot-stuffing, no line-ending repair. */
  disableEscaping?: boolean;
  /** Send with DATA even where the server offers CHUNKING (RFC 3030 BDAT, used by default). */
  disableChunking?: boolean;
  /** Never STARTTLS. */
  ignoreTLS?: boolean;
  /** STARTTLS even when not advertised; if it fails, error and no AUTH. */
  requireTLS?: boolean;
  /** Speak LMTP. */
  lmtp?: boolean;
  /**
   * Allow AUTH PLAIN, LOGIN or XOAUTH2 without TLS (default false: refused with an SmtpTlsError
   * before any credential is sent). In the page this is the only way: the proxy decides where
   * the bytes go, so no host (not "localhost" either) earns cleartext AUTH. (CPython exempts a
   * connection whose peer address is a loopback one, whatever the host as written.)
   */
  allowInsecureAuth?: boolean;
  /** Milliseconds to wait for the connection and greeting (default 30000). */
  timeoutGreeting?: number;
  /** Milliseconds to wait at least for any reply (default 10000). */
  timeoutSocketLowerBound?: number;
  /** Extra milliseconds per byte written since the last reply (default 0.1). */
  timeoutSocketMultiplier?: number;
  /** The proxy for this client (default: the one given to PySmtp.load). */
  proxy?: ProxyOption;
  /** The TLS engine (default: the one given to PySmtp.load, else "auto"). */
  tlsEngine?: TlsEngine;
}

/**
 * "auto" (the default) and "openssl": TLS 1.2/1.3 with OpenSSL (WebAssembly, dist/openssl/).
 * "forge": TLS 1.0/1.1 with node-forge (deprecated by RFC 8996; no forward secrecy), for a legacy
 * server you name: nothing falls back to it by itself, since anyone on the path can forge a
 * refusal of TLS 1.2/1.3. No engine needs WebCrypto or a secure context.
 */
export type TlsEngine = "auto" | "openssl" | "forge";

export interface Envelope {
  /** The sender (default "anonymous@" + name); "" is the null sender. Every address must be an
   *  RFC 5321 Mailbox (a dot-string or a proper quoted string, "@", a domain or an address
   *  literal; at most 254 octets): anything else is an SmtpEnvelopeError that says why. */
  from?: string;
  /** One recipient or several: every To, Cc and Bcc address. */
  to: string | string[];
  /** The message size in bytes, sent as SIZE= and checked against the server's limit. */
  size?: number;
  /** Delivery status notifications (RFC 3461); an SmtpEnvelopeError when the server has no DSN. */
  dsn?: Dsn;
  /** BODY=BINARYMIME: the bytes go unchanged in BDAT chunks (RFC 3030); an SmtpEnvelopeError
   *  unless the server offers BINARYMIME and CHUNKING. */
  binary?: boolean;
}

/** A request for delivery status notifications (RFC 3461), with the RFC's names. */
export interface Dsn {
  /** When to notify: some of "SUCCESS", "FAILURE", "DELAY", or ["NEVER"] (NOTIFY= on each RCPT). */
  notify?: Array<"SUCCESS" | "FAILURE" | "DELAY"> | ["NEVER"];
  /** What a notification returns of the message: "FULL" or "HDRS" (RET= on MAIL). */
  ret?: "FULL" | "HDRS";
  /** The envelope identifier, printable ASCII, at most 100 characters (ENVID= on MAIL, xtext). */
  envid?: string;
  /** The original recipient's address (ORCPT=rfc822; on each RCPT, xtext). */
  orcpt?: string;
}

export interface RecipientResult {
  recipient: string;
  accepted: boolean;
  code: number;
  message: string;
  enhanced: string | null;
}

/** Every error the client reports or throws. */
export interface SmtpError extends Error {
  /** "SmtpReplyError", "SmtpAuthError", "SmtpRecipientsError", "SmtpProtocolError",
   *  "SmtpTimeoutError", "SmtpConnectionError", "SmtpTlsError", "SmtpEnvelopeError",
   *  "SmtpUsageError". */
  name: string;
  /** The SMTP reply code when a reply is involved, else null. */
  code: number | null;
  /** The RFC 3463 enhanced status code, e.g. "5.7.8", else null. */
  enhanced: string | null;
  /**
   * The step that failed, else null: the command whose reply failed or was awaited, in capitals
   * ("EHLO", "LHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "QUIT"),
   * or a step that is not a command, in lower case ("connect", "greeting", "tls", "envelope",
   * "message", "reply", "idle", "closed"). One spelling everywhere, in-page and in worker mode.
   */
  stage: string | null;
  /**
   * An SmtpConnectionError from a proxy that said why it refused (pysmtp-wasm's proxy: a
   * WebSocket close code 4000-4999): its reason's name, such as "unknown_token" or
   * "target_unreachable"; the message quotes its words.
   */
  proxyReason?: string | null;
  /** True for every error passed to onerror (the connection closes: onclose(true) follows);
   *  false for an SmtpUsageError thrown by a call in the wrong state (nothing changed). */
  fatal: boolean;
}

export interface Attachment {
  filename: string;
  /** Bytes are sent byte-identical (base64); a string with a text/* type is sent as UTF-8 text. */
  content: Uint8Array | ArrayBuffer | string;
  /** Default: guessed from the file name, else application/octet-stream. */
  contentType?: string;
}

export interface Mail {
  from: string;
  to?: string | string[];
  cc?: string | string[];
  /** Recipients that get the message but do not appear in its headers. */
  bcc?: string | string[];
  replyTo?: string;
  subject?: string;
  text?: string;
  html?: string;
  /** Extra headers: each name a field name (printable ASCII without ":" or space), each value
   *  without CR, LF or NUL; otherwise an SmtpEnvelopeError (stage "message"), nothing sent. */
  headers?: Record<string, string>;
  attachments?: Attachment[];
  /** Delivery status notifications for this message, as Envelope.dsn. */
  dsn?: Dsn;
}

export interface SendMailResult {
  accepted: string[];
  rejected: string[];
  results: RecipientResult[];
  messageId: string;
  /** Bytes sent. */
  size: number;
}

export declare class SmtpClient {
  /** Throws an SmtpUsageError for a host with a control character or a space, a port outside
   *  1-65535, or an option the engine refuses (credentials with CR, LF or NUL, say). */
  constructor(host?: string, port?: number, options?: SmtpClientOptions);
  connect(): void;
  useEnvelope(envelope: Envelope): void;
  /** Returns false when the buffer is full: wait for ondrain. */
  send(chunk: string | Uint8Array | ArrayBuffer): boolean;
  end(): void;
  /**
   * Build the MIME message and send it (connecting if needed); rejects with an SmtpError (after
   * onclose(true) when the error closed the connection). On a closed or closing client it opens
   * a new connection by itself.
   */
  sendMail(mail: Mail, options?: { onprogress?: (sent: number, total: number) => void }): Promise<SendMailResult>;
  quit(): void;
  close(): void;
  readonly state: string;
  /** The last message's results, one per recipient (ondone's second argument; sendMail sets it too). */
  readonly lastResults: RecipientResult[];
  onidle: () => void;
  onready: (failedRecipients: string[]) => void;
  ondone: (success: boolean, results: RecipientResult[]) => void;
  onerror: (error: SmtpError) => void;
  onclose: (isError: boolean) => void;
  ondrain: () => void;
  /** One transcript line: "C" client, "S" server, "*" note. Secrets are masked. */
  onlog: (direction: "C" | "S" | "*", text: string) => void;
}

export interface LoadOptions {
  /** The default proxy for every client. */
  proxy?: ProxyOption;
  /** The default TLS engine for every client (default "auto"). */
  tlsEngine?: TlsEngine;
  /** Where dist/ is (default: beside the script). */
  baseURL?: string;
  /** An already loaded Pyodide to use instead of booting one. */
  pyodide?: unknown;
  /** Extra options for loadPyodide(). */
  pyodideOptions?: object;
  /** false: never use dist/pyodide/pysmtp-snapshot.bin; default: use it when `./build.sh snapshot` made one. */
  snapshot?: boolean;
  /**
   * false: neither boot from nor make the snapshot cache's image. By default, after an ordinary
   * boot, once a client has reached its first onidle and the page is idle, a Worker
   * (pysmtp-wasm-snapshot-worker.js) makes a memory snapshot in this browser and stores it in the
   * origin's IndexedDB; the next visit boots from it (`PySmtp.bootKind === "snapshot-cache"`).
   * A stale, corrupt or unusable image, or storage that refuses, means the ordinary boot.
   */
  snapshotCache?: boolean;
  /**
   * Connections to open while Python boots. The first SmtpClient to the same target with the
   * same options (useSecureTransport, ca, proxy, tlsEngine) takes the connection over, with
   * the greeting (and the TLS handshake) already done; unclaimed, it closes after 30 s.
   */
  preconnect?: PreconnectTarget | PreconnectTarget[];
  /**
   * true: run Pyodide, the engine, the sockets and TLS in one dedicated module Worker
   * (pysmtp-wasm-worker.js) shared by every client of the page, so that booting and sending
   * never block the page's main thread. The SmtpClient is the same; see PySmtpWorkerApi for
   * what differs. `proxy` functions are called on the page (once per client or preconnect target).
   */
  worker?: boolean;
}

export interface PreconnectTarget {
  /** Default "localhost". */
  host?: string;
  /** Default 465 with useSecureTransport, else 25. */
  port?: number;
  useSecureTransport?: boolean;
  ca?: string | string[];
  proxy?: ProxyOption;
  tlsEngine?: TlsEngine;
}

/** The socket adapter (TCP through websockify, TLS in JavaScript); SmtpClient uses it. */
export interface PySmtpSocketClass {
  /**
   * What is wrong with these arguments, in a user's words (null: nothing): the host, the port,
   * the proxy URL (call a proxy function first), `ca`, `tlsEngine`, `servername`.
   */
  check(host: string, port: number, options: PreconnectTarget & { servername?: string }): string | null;
  /** Open a connection now for a client that comes later (LoadOptions.preconnect). */
  preconnect(host: string, port: number, options: PreconnectTarget): void;
  /** How long a preconnected socket waits for its client (ms, default 30000). */
  PARK_MS: number;
  /** send() returns false at this many buffered bytes; ondrain comes below LOW_WATER. */
  HIGH_WATER: number;
  LOW_WATER: number;
}

/**
 * How Python booted: "snapshot-cache" (this browser's image from an earlier visit),
 * "snapshot" (the build's, `./build.sh snapshot`), "fresh" (the ordinary boot), "given" (the
 * `pyodide` option).
 */
export type BootKind = "snapshot-cache" | "snapshot" | "fresh" | "given";

/** What the Worker making the snapshot cache's image reported. */
export interface SnapshotCacheReport {
  /** Whether the image is stored. */
  stored: boolean;
  /** Why not, when it is not. */
  error?: string;
  /** The image's size in bytes. */
  bytes?: number;
  /** In the Worker: Pyodide's boot, the wheel and imports, makeMemorySnapshot, the IndexedDB put, all (ms). */
  bootMs?: number;
  importMs?: number;
  makeMs?: number;
  storeMs?: number;
  workerMs?: number;
  /** On the page, from starting the Worker to its report (ms). */
  totalMs: number;
}

export interface PySmtpApi {
  SmtpClient: typeof SmtpClient;
  bootKind: BootKind;
  /** The Pyodide instance: Python code in it can `import pysmtp_wasm`. */
  pyodide: any;
  /** Objects alive at the JS/Python boundary (leak checks): a connection's own are gone by the time its `onclose` runs. */
  stats(): { socketProxies: number; clients: number; jsClients: number };
}

/**
 * What PySmtp.load({worker: true}) resolves to. The SmtpClient has the same constructor, options,
 * methods, callbacks and errors as in-page, with these differences: a chunk given to send() as a
 * Uint8Array that fills its ArrayBuffer, or an ArrayBuffer, is transferred to the Worker (it is
 * empty afterwards; a view on part of a buffer is copied); a constructor argument is checked
 * against the grammar the engine sent when the Worker booted and thrown by the constructor as
 * in-page, with the engine's words (what only the Worker can refuse ends a connect() already
 * called in onerror then onclose(true), and is thrown by the next call); callbacks come a
 * message later; close() reports onclose(false) asynchronously.
 */
export interface PySmtpWorkerApi {
  SmtpClient: typeof SmtpClient;
  /** How Python booted in the Worker. */
  bootKind: BootKind;
  /** Pyodide is in the Worker, not in the page. */
  pyodide: null;
  /** The dedicated Worker. */
  worker: Worker;
  /** Objects alive at the boundary in the Worker, its clients, and the page's clients. */
  stats(): Promise<{ socketProxies: number; clients: number; jsClients: number; workerClients: number; pageClients: number }>;
  /**
   * End the Worker and every connection in it at once: no callbacks, pending sendMail promises
   * and later stats() reject, every later call throws; PySmtp.load may boot a new one.
   */
  terminate(): void;
}

export interface PySmtpNamespace {
  version: string;
  Socket: PySmtpSocketClass;
  /** How the last load() booted Python (null before it resolved). */
  bootKind: BootKind | null;
  /**
   * The making of the snapshot cache's image after this visit's ordinary boot (started after
   * the first onidle, at idle time); null when none is made (booted from an image, the build's
   * snapshot, `snapshotCache: false`, no IndexedDB). Never rejects.
   */
  snapshotCacheJob: Promise<SnapshotCacheReport> | null;
  /** Delete this origin's stored snapshot cache images; false if storage refused. */
  clearSnapshotCache(): Promise<boolean>;
  load(options: LoadOptions & { worker: true }): Promise<PySmtpWorkerApi>;
  load(options?: LoadOptions & { worker?: false }): Promise<PySmtpApi>;
  load(options?: LoadOptions): Promise<PySmtpApi | PySmtpWorkerApi>;
}

export declare function load(options: LoadOptions & { worker: true }): Promise<PySmtpWorkerApi>;
export declare function load(options?: LoadOptions & { worker?: false }): Promise<PySmtpApi>;
export declare function load(options?: LoadOptions): Promise<PySmtpApi | PySmtpWorkerApi>;
declare const PySmtp: PySmtpNamespace;
export default PySmtp;

declare global {
  // Defined by the classic script dist/pysmtp-wasm.js.
  var PySmtp: PySmtpNamespace;
}
