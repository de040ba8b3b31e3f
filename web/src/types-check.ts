// pysmtp-wasm.d.ts used as the README shows (its quick start, the npm section, sendMail and the
// callbacks): checked by `tsc -p web` in lint, so the declarations stay usable as documented.
// (The entries, web/src/entries/, are typed by the same file: tsc checks the code against it.)
import PySmtp, { load, type PySmtpApi, type SmtpError } from "./pysmtp-wasm";

export async function readmeQuickStart(): Promise<void> {
  const api: PySmtpApi = await PySmtp.load({ proxy: "ws://127.0.0.1:8080/?token=mail" });
  const client = new api.SmtpClient("smtp.example.com", 465, {
    useSecureTransport: true,
    auth: { user: "me@example.com", pass: "app-password" },
  });
  client.onidle = () => client.useEnvelope({ from: "me@example.com", to: ["you@example.org"] });
  client.onready = (failed: string[]) => {
    if (failed.length) client.quit();
    client.send("Subject: hello\r\n\r\nHello from the browser.\r\n");
    client.end();
  };
  client.ondone = (success: boolean) => (success ? client.quit() : client.close());
  client.onerror = (error: SmtpError) => console.error(error.name, error.code, error.stage, error.message);
  client.onclose = (isError: boolean) => console.log("closed", isError);
  client.connect();
}

export async function readmeWorker(): Promise<void> {
  const { SmtpClient } = await load({
    worker: true,
    baseURL: new URL("/pysmtp-wasm/", location.href).href,
    proxy: "wss://mail.example.com/smtp-proxy",
  });
  const client = new SmtpClient("localhost", 587, { requireTLS: true, ca: "-----BEGIN CERTIFICATE-----" });
  const sent = await client.sendMail(
    { from: "me@example.com", to: "you@example.org", subject: "hi", text: "hello" },
    { onprogress: (done: number, total: number) => console.log(done, total) },
  );
  console.log(sent.accepted, sent.rejected, sent.messageId, sent.size);
  client.quit();
}

// The classic script's global is the same namespace.
export const sameNamespace: typeof PySmtp = globalThis.PySmtp;

// The snapshot cache: how Python booted, the image's making, dropping it.
export async function snapshotCache(): Promise<void> {
  const api = await PySmtp.load({ snapshotCache: true });
  const kind: "snapshot-cache" | "snapshot" | "fresh" | "given" = api.bootKind;
  console.log(kind, PySmtp.bootKind);
  const report = await PySmtp.snapshotCacheJob;
  if (report && report.stored) console.log(report.bytes, report.totalMs);
  const cleared: boolean = await PySmtp.clearSnapshotCache();
  console.log(cleared);
}
