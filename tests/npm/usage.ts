// A typed use of the package, checked by `tsc --noEmit` against the pysmtp-wasm.d.ts that a fresh
// project installed from the packed tarball (tests/test_npm_package.py). It touches every
// option, method and callback; the @ts-expect-error lines must stay errors.
import PySmtp, {
  load,
  type LoadOptions,
  type Mail,
  type PySmtpApi,
  type PySmtpWorkerApi,
  type RecipientResult,
  type SendMailResult,
  type SmtpClientOptions,
  type SmtpError,
} from "pysmtp-wasm";

const options: SmtpClientOptions = {
  useSecureTransport: true,
  name: "client.example.com",
  auth: { user: "me@example.com", pass: "app-password", xoauth2: "token" },
  authMethod: "PLAIN",
  ca: ["-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"],
  disableEscaping: false,
  ignoreTLS: false,
  requireTLS: true,
  lmtp: false,
  allowInsecureAuth: false,
  timeoutGreeting: 30000,
  timeoutSocketLowerBound: 10000,
  timeoutSocketMultiplier: 0.1,
  proxy: (host: string, port: number) => `ws://127.0.0.1:8080/?token=${host}:${port}`,
  tlsEngine: "auto",
};

const loadOptions: LoadOptions = {
  proxy: "ws://127.0.0.1:8080/",
  tlsEngine: "openssl",
  baseURL: "/pysmtp-wasm/",
  pyodideOptions: {},
  snapshot: false,
  preconnect: [{ host: "smtp.example.com", port: 465, useSecureTransport: true, ca: "pem", proxy: "ws://p/", tlsEngine: "forge" }],
};

async function inPage(): Promise<void> {
  const api: PySmtpApi = await load({ ...loadOptions, worker: false });
  const stats: { socketProxies: number; clients: number; jsClients: number } = api.stats();
  const client = new api.SmtpClient("smtp.example.com", 465, options);
  client.onidle = () => client.useEnvelope({ from: "me@example.com", to: ["you@example.org"], size: 100 });
  client.onready = (failed: string[]) => {
    const full: boolean = !client.send("Subject: hi\r\n\r\nhello\r\n");
    client.send(new Uint8Array([46, 13, 10]));
    client.send(new ArrayBuffer(8));
    if (!full) client.end();
    void failed;
  };
  client.ondrain = () => client.end();
  client.ondone = (success: boolean, results: RecipientResult[]) => {
    if (success && results[0].accepted && results[0].enhanced !== null) client.quit();
    else client.close();
  };
  client.onerror = (error: SmtpError) => {
    // code, enhanced and stage are null where there is none (never undefined).
    const evidence: [string, number | null, string | null, string | null, boolean, string | null | undefined] = [
      error.name, error.code, error.enhanced, error.stage, error.fatal, error.proxyReason,
    ];
    void evidence;
  };
  client.onclose = (isError: boolean) => void isError;
  client.onlog = (direction: "C" | "S" | "*", text: string) => void [direction, text];
  client.connect();
  const state: string = client.state;
  const last: RecipientResult[] = client.lastResults;
  const mail: Mail = {
    from: "me@example.com",
    to: "you@example.org",
    cc: ["c@example.org"],
    bcc: "b@example.org",
    replyTo: "r@example.com",
    subject: "Grüße",
    text: "hello",
    html: "<p>hello</p>",
    headers: { "X-Tag": "1" },
    attachments: [{ filename: "a.bin", content: new Uint8Array(3), contentType: "application/octet-stream" }],
  };
  const result: SendMailResult = await client.sendMail(mail, { onprogress: (sent: number, total: number) => void [sent, total] });
  const fields: [string[], string[], RecipientResult[], string, number] = [
    result.accepted, result.rejected, result.results, result.messageId, result.size,
  ];
  void [stats, state, last, fields];
  // @ts-expect-error: a typo in an option name is an error (as at run time)
  new api.SmtpClient("h", 25, { requireTls: true });
  // @ts-expect-error: subtls is gone
  new api.SmtpClient("h", 25, { tlsEngine: "subtls" });
  // @ts-expect-error: send() takes a string or bytes
  client.send(42);
}

async function inWorker(): Promise<void> {
  const api: PySmtpWorkerApi = await PySmtp.load({ worker: true, proxy: (host, port) => `ws://p/${host}/${port}` });
  const worker: Worker = api.worker;
  const stats = await api.stats();
  const counts: number[] = [stats.workerClients, stats.pageClients, stats.socketProxies];
  const none: null = api.pyodide;
  const client = new api.SmtpClient("localhost", 25, { proxy: "ws://127.0.0.1:8080/" });
  client.onidle = () => client.quit();
  client.connect();
  api.terminate();
  void [worker, counts, none];
  // @ts-expect-error: in worker mode stats() is a promise
  const sync: number = api.stats().clients;
  void sync;
}

const version: string = PySmtp.version;
PySmtp.Socket.PARK_MS = 1000;
const high: number = PySmtp.Socket.HIGH_WATER + PySmtp.Socket.LOW_WATER;
PySmtp.Socket.preconnect("localhost", 25, { proxy: "ws://p/" });
const viaGlobal: Promise<PySmtpApi> = globalThis.PySmtp.load();
void [inPage, inWorker, version, high, viaGlobal];
