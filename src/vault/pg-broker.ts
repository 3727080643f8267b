/**
 * PostgreSQL credential broker.
 *
 * A hand-written subset of the PostgreSQL v3 wire protocol is justified here: the broker has to
 * sit *inside* the protocol — answer the client's startup itself (no password asked), perform
 * the SCRAM exchange upstream with a password the client never sees, then relay messages while
 * reading statement texts for the audit trail and scrubbing anything upstream sends back. A
 * client library (pg, libpq) cannot be split that way, and a TCP relay cannot authenticate.
 *
 * Sandboxed code connects to a Unix socket `.s.PGSQL.5432` in the broker directory (libpq:
 * host=/petri/broker/pg; node-pg: host: "/petri/broker/pg"). Whatever user/password/database
 * it sends is ignored except that the database name picks the secret when a run may use
 * several postgres secrets.
 */
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { DEFAULT_EGRESS_POLICY, EgressRefused, guardedLookup, refuseLiteral, type EgressPolicy } from "./egress.js";
import type { BrokerEvent } from "./events.js";
import { classify, loadSqlGuard } from "./sql-guard.js";
import type { Redactor } from "./redact.js";
import type { PostgresConfig, ResolvedSecret } from "./store.js";

export const PG_SOCKET_NAME = ".s.PGSQL.5432";

const PROTOCOL_3_0 = 196608;
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const MAX_STARTUP = 10_000;
const MAX_MESSAGE = 256 * 1024 * 1024;
const MAX_SCRAM_ITERATIONS = 10_000_000;
export const STATEMENT_LOG_LIMIT = 4096;

/** Startup parameters a client may pass through; everything else (replication, options…) is dropped. */
const PASS_THROUGH_PARAMS = new Set([
  "application_name", "client_encoding", "datestyle", "timezone", "extra_float_digits", "intervalstyle",
  "search_path", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
]);

const BLOCKED_STATEMENT =
  "DO $petri_blocked$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'Petri broker: changing a role password through the broker is not allowed'; END $petri_blocked$";

export interface PgBrokerOptions {
  /** Host directory for the socket; created if missing. */
  socketDir: string;
  /** The run's postgres secrets (resolved). */
  secrets: ResolvedSecret[];
  /** Scrubs every secret of the run from what upstream sends back. */
  redactor: Redactor;
  onEvent: (ev: BrokerEvent) => void;
  /** The operator's egress policy; default: public addresses only. */
  egress?: EgressPolicy;
  /** Simultaneous client connections, default 32. */
  maxConnections?: number;
  /** Upstream connect + authentication timeout, milliseconds; default 15000. */
  connectTimeoutMs?: number;
}

class ProtocolError extends Error {
  constructor(message: string, readonly sqlstate = "08P01") {
    super(message);
  }
}

/** Error from the upstream server, with its fields (already redacted). */
class UpstreamError extends Error {
  constructor(readonly fields: Map<string, string>) {
    super(fields.get("M") ?? "upstream error");
  }
}

/** Pull-style reader used during startup/authentication, before switching to streaming relay. */
class Reader {
  private buf: Buffer = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;
  private readonly onData = (d: Buffer) => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this.pump();
  };
  private readonly onEnd = () => this.fail(new ProtocolError("connection closed"));
  private readonly onError = (e: Error) => this.fail(e);

  constructor(private readonly sock: net.Socket) {
    sock.on("data", this.onData);
    sock.on("end", this.onEnd);
    sock.on("close", this.onEnd);
    sock.on("error", this.onError);
  }

  read(n: number): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.pump();
    });
  }

  async readMessage(): Promise<{ type: number; body: Buffer }> {
    const head = await this.read(5);
    const l = head.readInt32BE(1);
    if (l < 4 || l > MAX_MESSAGE) throw new ProtocolError("invalid message length from server");
    return { type: head[0], body: await this.read(l - 4) };
  }

  /** Stops reading; returns bytes already received but not consumed. */
  detach(): Buffer {
    this.sock.off("data", this.onData);
    this.sock.off("end", this.onEnd);
    this.sock.off("close", this.onEnd);
    this.sock.off("error", this.onError);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    const w = this.want;
    this.want = null;
    w?.reject(e);
  }

  private pump(): void {
    if (this.want && this.buf.length >= this.want.n) {
      const w = this.want;
      this.want = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(out);
    }
  }
}

/** Splits a stream into protocol messages (type byte + int32 length). */
class Framer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onMessage: (type: number, raw: Buffer) => void) {}
  feed(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 5) {
      const l = this.buf.readInt32BE(1);
      if (l < 4 || l > MAX_MESSAGE) throw new ProtocolError("invalid message length");
      if (this.buf.length < l + 1) break;
      const raw = this.buf.subarray(0, l + 1);
      this.buf = this.buf.subarray(l + 1);
      this.onMessage(raw[0], raw);
    }
  }
}

function msg(type: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type.charCodeAt(0);
  h.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}
function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, "utf8"), Buffer.from([0])]);
}
function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function errorResponse(sqlstate: string, message: string, severity = "FATAL"): Buffer {
  return msg("E", Buffer.concat([cstr("S" + severity), cstr("V" + severity), cstr("C" + sqlstate), cstr("M" + message), Buffer.from([0])]));
}

function parseFields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    out.set(code, body.subarray(i + 1, end).toString("utf8"));
    i = end + 1;
  }
  return out;
}

function fieldsToError(fields: Map<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of fields) parts.push(cstr(k + v));
  parts.push(Buffer.from([0]));
  return msg("E", Buffer.concat(parts));
}

/** SASLprep (RFC 4013) as PostgreSQL applies it; like PostgreSQL, falls back to the raw password when it fails. */
function saslPrep(pw: string): Buffer {
  if (/^[\x20-\x7e]*$/.test(pw)) return Buffer.from(pw, "utf8");
  const mapped = pw
    .replace(/[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, "")
    .replace(/[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]/g, " ")
    .normalize("NFKC");
  if (/[\u0000-\u001F\u007F-\u009F\uE000-\uF8FF\uFFF9-\uFFFD\uD800-\uDFFF]/.test(mapped)) return Buffer.from(pw, "utf8");
  return Buffer.from(mapped, "utf8");
}

const hmac = (key: Buffer, data: string | Buffer) => createHmac("sha256", key).update(data).digest();

function md5hex(data: Buffer | string): string {
  return createHash("md5").update(data).digest("hex");
}

interface Upstream {
  sock: net.Socket;
  reader: Reader;
  preamble: Buffer[];
  backendKey: Buffer | null;
  tls: boolean;
  auth: string;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => {
        onTimeout();
        reject(new ProtocolError(`${what} timed out`, "08006"));
      }, ms);
    }),
  ]);
}

async function connectTcp(cfg: PostgresConfig, egress: EgressPolicy): Promise<net.Socket> {
  // The database host is the tenant's choice: it stays inside the operator's egress policy,
  // checked on the address actually connected to.
  const dest = { host: cfg.host, port: cfg.port };
  try {
    refuseLiteral(egress, [], dest);
  } catch (e) {
    throw new ProtocolError(`the database server's address is not allowed by this server's egress policy (${(e as EgressRefused).reason})`, "08004");
  }
  const sock = net.connect({ host: cfg.host, port: cfg.port, lookup: guardedLookup(egress, [], dest) });
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", (e) => reject(e instanceof EgressRefused
      ? new ProtocolError(`the database server's address is not allowed by this server's egress policy (${e.reason})`, "08004")
      : new ProtocolError(`could not connect to the database server (${(e as NodeJS.ErrnoException).code ?? e.message})`, "08001")));
  });
  return sock;
}

async function startTls(sock: net.Socket, cfg: PostgresConfig): Promise<tls.TLSSocket> {
  const verify = cfg.sslmode === "verify-ca" || cfg.sslmode === "verify-full";
  const t = tls.connect({
    socket: sock,
    servername: net.isIP(cfg.host) ? undefined : cfg.host,
    ca: cfg.ca,
    rejectUnauthorized: verify,
    // verify-ca checks the chain but not the name, as libpq does.
    checkServerIdentity: cfg.sslmode === "verify-full" ? tls.checkServerIdentity : () => undefined,
  });
  await new Promise<void>((resolve, reject) => {
    t.once("secureConnect", resolve);
    t.once("error", (e) => reject(new ProtocolError(`TLS to the database server failed: ${e.message}`, "08001")));
  });
  return t;
}

async function scram(up: { sock: net.Socket; reader: Reader }, mechanisms: string[], password: string): Promise<void> {
  if (!mechanisms.includes("SCRAM-SHA-256")) throw new ProtocolError(`server offers no supported SASL mechanism (${mechanisms.join(", ")})`, "28000");
  const clientNonce = randomBytes(18).toString("base64");
  const firstBare = `n=,r=${clientNonce}`;
  const first = Buffer.from(`n,,${firstBare}`);
  up.sock.write(msg("p", Buffer.concat([cstr("SCRAM-SHA-256"), int32(first.length), first])));

  const cont = await up.reader.readMessage();
  if (cont.type === 0x45) throw new UpstreamError(parseFields(cont.body));
  if (cont.type !== 0x52 || cont.body.readInt32BE(0) !== 11) throw new ProtocolError("unexpected message during SCRAM exchange");
  const serverFirst = cont.body.subarray(4).toString("utf8");
  const attrs = new Map(serverFirst.split(",").map((kv) => [kv.slice(0, 1), kv.slice(2)] as [string, string]));
  const nonce = attrs.get("r") ?? "";
  const salt = Buffer.from(attrs.get("s") ?? "", "base64");
  const iterations = Number(attrs.get("i"));
  if (!nonce.startsWith(clientNonce) || nonce.length <= clientNonce.length || salt.length === 0) throw new ProtocolError("invalid SCRAM server-first-message", "28000");
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_SCRAM_ITERATIONS) throw new ProtocolError("unreasonable SCRAM iteration count", "28000");

  const salted = await new Promise<Buffer>((resolve, reject) =>
    pbkdf2(saslPrep(password), salt, iterations, 32, "sha256", (e, k) => (e ? reject(e) : resolve(k))),
  );
  const finalNoProof = `c=biws,r=${nonce}`;
  const authMessage = `${firstBare},${serverFirst},${finalNoProof}`;
  const clientKey = hmac(salted, "Client Key");
  const storedKey = createHash("sha256").update(clientKey).digest();
  const clientSig = hmac(storedKey, authMessage);
  const proof = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ clientSig[i];
  const serverSig = hmac(hmac(salted, "Server Key"), authMessage);
  salted.fill(0);
  up.sock.write(msg("p", Buffer.from(`${finalNoProof},p=${proof.toString("base64")}`)));

  const fin = await up.reader.readMessage();
  if (fin.type === 0x45) throw new UpstreamError(parseFields(fin.body));
  if (fin.type !== 0x52 || fin.body.readInt32BE(0) !== 12) throw new ProtocolError("unexpected message at the end of SCRAM exchange");
  const v = /(?:^|,)v=([^,]+)/.exec(fin.body.subarray(4).toString("utf8"));
  const got = v ? Buffer.from(v[1], "base64") : Buffer.alloc(0);
  // Mutual authentication: only a server holding the role's verifier can produce this.
  if (got.length !== serverSig.length || !timingSafeEqual(got, serverSig)) throw new ProtocolError("database server failed SCRAM server authentication", "28000");
}

async function openUpstream(secret: ResolvedSecret, clientParams: Map<string, string>, redactor: Redactor, egress: EgressPolicy): Promise<Upstream> {
  const cfg = secret.config as PostgresConfig;
  let sock = await connectTcp(cfg, egress);
  let reader = new Reader(sock);
  let isTls = false;
  try {
    if (cfg.sslmode !== "disable") {
      sock.write(Buffer.concat([int32(8), int32(SSL_REQUEST)]));
      const answer = (await reader.read(1))[0];
      if (answer === 0x53) {
        // Bytes after 'S' but before the handshake would be unauthenticated injection (CVE-2021-23222).
        if (reader.detach().length > 0) throw new ProtocolError("server sent data after accepting TLS", "08P01");
        sock = await startTls(sock, cfg);
        reader = new Reader(sock);
        isTls = true;
      } else if (answer === 0x4e) {
        if (cfg.sslmode !== "prefer") throw new ProtocolError(`database server does not support TLS (sslmode=${cfg.sslmode})`, "08001");
      } else {
        throw new ProtocolError("unexpected answer to SSLRequest", "08P01");
      }
    }

    const params: Buffer[] = [cstr("user"), cstr(cfg.user), cstr("database"), cstr(cfg.database)];
    for (const [k, v] of clientParams) if (PASS_THROUGH_PARAMS.has(k.toLowerCase())) params.push(cstr(k), cstr(v));
    const body = Buffer.concat([int32(PROTOCOL_3_0), ...params, Buffer.from([0])]);
    sock.write(Buffer.concat([int32(body.length + 4), body]));

    let auth = "trust";
    for (;;) {
      const m = await reader.readMessage();
      if (m.type === 0x45) throw new UpstreamError(redactFields(parseFields(m.body), redactor));
      if (m.type === 0x4e || m.type === 0x76) continue; // NoticeResponse, NegotiateProtocolVersion
      if (m.type !== 0x52) throw new ProtocolError("unexpected message during authentication");
      const code = m.body.readInt32BE(0);
      if (code === 0) break;
      if (code === 10) {
        const mechs = m.body.subarray(4).toString("utf8").split("\0").filter(Boolean);
        await scram({ sock, reader }, mechs, secret.value);
        auth = "scram-sha-256";
      } else if (code === 5) {
        const salt = m.body.subarray(4, 8);
        const inner = md5hex(Buffer.concat([Buffer.from(secret.value, "utf8"), Buffer.from(cfg.user, "utf8")]));
        sock.write(msg("p", cstr("md5" + md5hex(Buffer.concat([Buffer.from(inner), salt])))));
        auth = "md5";
      } else if (code === 3) {
        // Anyone between us and the server would read a cleartext password: only over TLS.
        if (!isTls) throw new ProtocolError("database server asked for a cleartext password over an unencrypted connection; refused", "28000");
        sock.write(msg("p", cstr(secret.value)));
        auth = "password";
      } else {
        throw new ProtocolError(`database server asked for an unsupported authentication method (${code})`, "28000");
      }
    }

    const preamble: Buffer[] = [];
    let backendKey: Buffer | null = null;
    for (;;) {
      const m = await reader.readMessage();
      if (m.type === 0x45) throw new UpstreamError(redactFields(parseFields(m.body), redactor));
      const raw = msg(String.fromCharCode(m.type), m.body);
      if (m.type === 0x4b) backendKey = Buffer.from(m.body);
      preamble.push(redactMessage(m.type, raw, redactor));
      if (m.type === 0x5a) break;
    }
    return { sock, reader, preamble, backendKey, tls: isTls, auth };
  } catch (e) {
    reader.detach();
    sock.destroy();
    throw e;
  }
}

function redactFields(fields: Map<string, string>, redactor: Redactor): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of fields) out.set(k, redactor.redact(v).text);
  return out;
}

/**
 * Removes secret values from a backend message before it reaches the client. String-only
 * messages are redacted as a whole; DataRow fields are redacted one by one so lengths stay right.
 */
export function redactMessage(type: number, raw: Buffer, redactor: Redactor): Buffer {
  if (redactor.empty) return raw;
  const body = raw.subarray(5);
  // E N S A: NUL-terminated strings; d: CopyData raw bytes; D: DataRow.
  if (type === 0x45 || type === 0x4e || type === 0x53 || type === 0x41 || type === 0x64) {
    if (redactor.detect(body).length === 0) return raw;
    return msg(String.fromCharCode(type), redactor.redactBuffer(body).data);
  }
  if (type === 0x44) {
    if (redactor.detect(body).length === 0) return raw;
    const n = body.readInt16BE(0);
    const parts: Buffer[] = [body.subarray(0, 2)];
    let i = 2;
    for (let f = 0; f < n; f++) {
      const l = body.readInt32BE(i);
      i += 4;
      if (l < 0) {
        parts.push(int32(l));
        continue;
      }
      const v = redactor.redactBuffer(body.subarray(i, i + l)).data;
      i += l;
      parts.push(int32(v.length), v);
    }
    return msg("D", Buffer.concat(parts));
  }
  return raw;
}

function truncate(s: string, n = STATEMENT_LOG_LIMIT): string {
  return s.length > n ? s.slice(0, n) + `…[${s.length - n} more chars]` : s;
}

export class PgBroker {
  readonly socketPath: string;
  private server: net.Server | null = null;
  private readonly clients = new Set<net.Socket>();
  private readonly backendKeys = new Map<string, PostgresConfig>();
  private nextConn = 1;

  private constructor(private readonly opts: PgBrokerOptions) {
    this.socketPath = path.join(opts.socketDir, PG_SOCKET_NAME);
  }

  static async start(opts: PgBrokerOptions): Promise<PgBroker> {
    await loadSqlGuard();
    const b = new PgBroker(opts);
    fs.mkdirSync(opts.socketDir, { recursive: true, mode: 0o755 });
    fs.chmodSync(opts.socketDir, 0o755);
    fs.rmSync(b.socketPath, { force: true });
    const server = net.createServer((s) => void b.handle(s));
    server.maxConnections = opts.maxConnections ?? 32;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(b.socketPath, () => resolve());
    });
    // The sandbox runs as an unprivileged uid; connecting to a Unix socket needs write permission on it.
    fs.chmodSync(b.socketPath, 0o666);
    b.server = server;
    return b;
  }

  async close(): Promise<void> {
    for (const s of this.clients) s.destroy();
    this.clients.clear();
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
    this.server = null;
    fs.rmSync(this.socketPath, { force: true });
  }

  private emit(action: string, outcome: BrokerEvent["outcome"], detail: Record<string, unknown>): void {
    try {
      this.opts.onEvent({ kind: "datastore", action, outcome, detail });
    } catch {
      /* an event sink failure must not break the relay */
    }
  }

  private pick(database: string | undefined): ResolvedSecret | null {
    const list = this.opts.secrets;
    const byName = list.find((s) => s.name === database);
    if (byName) return byName;
    return list.length === 1 ? list[0] : null;
  }

  private async handle(client: net.Socket): Promise<void> {
    this.clients.add(client);
    client.on("close", () => this.clients.delete(client));
    client.on("error", () => undefined);
    const conn = this.nextConn++;
    const reader = new Reader(client);
    let upstream: Upstream | null = null;
    let secretName: string | undefined;
    const startTimer = setTimeout(() => client.destroy(), this.opts.connectTimeoutMs ?? 15_000);
    try {
      // 1. Client startup: refuse TLS/GSS (the socket never leaves the host), read parameters.
      let params: Map<string, string>;
      let minor = 0;
      for (;;) {
        const l = (await reader.read(4)).readInt32BE(0);
        if (l < 8 || l > MAX_STARTUP) throw new ProtocolError("invalid startup packet length");
        const body = await reader.read(l - 4);
        const code = body.readInt32BE(0);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          client.write("N");
          continue;
        }
        if (code === CANCEL_REQUEST) {
          await this.cancel(body.subarray(4, 12));
          client.end();
          return;
        }
        if (code >> 16 !== 3) throw new ProtocolError("unsupported frontend protocol", "0A000");
        minor = code & 0xffff;
        params = new Map();
        const parts = body.subarray(4).toString("utf8").split("\0");
        for (let i = 0; i + 1 < parts.length && parts[i] !== ""; i += 2) params.set(parts[i], parts[i + 1]);
        break;
      }

      const secret = this.pick(params.get("database"));
      if (!secret) {
        const names = this.opts.secrets.map((s) => s.name).join(", ");
        this.emit("connect", "denied", { connection: conn, reason: "unknown_database", requested: truncate(params.get("database") ?? "", 64) });
        client.end(errorResponse("3D000", `database "${truncate(params.get("database") ?? "", 64)}" is not available to this run; use one of: ${names}`));
        return;
      }
      secretName = secret.name;
      const cfg = secret.config as PostgresConfig;

      // 2. Authenticate upstream with the stored credentials.
      const opening = openUpstream(secret, params, this.opts.redactor, this.opts.egress ?? DEFAULT_EGRESS_POLICY);
      upstream = await withTimeout(opening, this.opts.connectTimeoutMs ?? 15_000, "connecting to the database server", () => {
        opening.then((u) => u.sock.destroy(), () => undefined);
      });
      clearTimeout(startTimer);
      const detail = { connection: conn, secret: secret.name, host: cfg.host, port: cfg.port, database: cfg.database, user: cfg.user, tls: upstream.tls, auth: upstream.auth };
      this.emit("connect", "success", detail);

      // 3. Tell the client it is in, replaying what the server said after authentication.
      const hello: Buffer[] = [];
      const unsupported = [...params.keys()].filter((k) => k.startsWith("_pq_."));
      if (minor > 0 || unsupported.length > 0) {
        hello.push(msg("v", Buffer.concat([int32(0), int32(unsupported.length), ...unsupported.map(cstr)])));
      }
      hello.push(msg("R", int32(0)), ...upstream.preamble);
      client.write(Buffer.concat(hello));
      const keyId = upstream.backendKey ? upstream.backendKey.toString("hex") : null;
      if (keyId) this.backendKeys.set(keyId, cfg);

      // 4. Relay.
      await this.relay(conn, secret, client, reader.detach(), upstream);
      if (keyId) this.backendKeys.delete(keyId);
    } catch (e) {
      clearTimeout(startTimer);
      const fields = e instanceof UpstreamError ? e.fields : null;
      const message = fields ? (fields.get("M") ?? "database error") : (e as Error).message;
      this.emit("connect", "failure", { connection: conn, secret: secretName, reason: this.opts.redactor.redact(message).text, sqlstate: fields?.get("C") ?? (e as ProtocolError).sqlstate });
      if (!client.destroyed) {
        client.end(fields ? fieldsToError(fields) : errorResponse((e as ProtocolError).sqlstate ?? "08006", this.opts.redactor.redact(`Petri broker: ${message}`).text));
      }
      upstream?.sock.destroy();
    } finally {
      clearTimeout(startTimer);
    }
  }

  private relay(conn: number, secret: ResolvedSecret, client: net.Socket, early: Buffer, up: Upstream): Promise<void> {
    const started = Date.now();
    let bytesFromClient = 0;
    let bytesFromServer = 0;
    let statements = 0;
    const redactor = this.opts.redactor;
    const server = up.sock;
    const upstreamEarly = up.reader.detach();

    const fromClient = new Framer((type, raw) => {
      let out = raw;
      let text: string | null = null;
      let protocol = "simple";
      let cut = 0;
      if (type === 0x51) {
        // Query: string
        text = raw.subarray(5, raw.length - 1).toString("utf8");
      } else if (type === 0x50) {
        // Parse: name\0 query\0 int16 nparams int32[]
        const nameEnd = raw.indexOf(0, 5);
        cut = raw.indexOf(0, nameEnd + 1);
        if (nameEnd > 0 && cut > 0) {
          text = raw.subarray(nameEnd + 1, cut).toString("utf8");
          protocol = "extended";
        }
      }
      if (text !== null) {
        statements++;
        const verdict = classify(text);
        const blocked = verdict.blocked;
        if (blocked) {
          // Rewritten rather than answered by us, so the server keeps transaction and
          // pipeline state consistent and the client sees an ordinary error.
          if (type === 0x51) out = msg("Q", cstr(BLOCKED_STATEMENT));
          else {
            const nameEnd = raw.indexOf(0, 5);
            out = msg("P", Buffer.concat([raw.subarray(5, nameEnd + 1), cstr(BLOCKED_STATEMENT), raw.subarray(cut + 1)]));
          }
        }
        this.emit("query", blocked ? "denied" : "success", {
          connection: conn,
          secret: secret.name,
          protocol,
          statement: truncate(redactor.redact(text).text),
          ...(verdict.blocked ? { reason: verdict.reason, rule: verdict.detail } : {}),
        });
      }
      bytesFromClient += out.length;
      if (!server.write(out)) client.pause();
    });
    const fromServer = new Framer((type, raw) => {
      const out = redactMessage(type, raw, redactor);
      bytesFromServer += out.length;
      if (!client.write(out)) server.pause();
    });

    return new Promise<void>((resolve) => {
      let done = false;
      const finish = (reason: string) => {
        if (done) return;
        done = true;
        client.destroy();
        server.destroy();
        this.emit("disconnect", "success", { connection: conn, secret: secret.name, reason, durationMs: Date.now() - started, statements, bytesFromClient, bytesFromServer });
        resolve();
      };
      const guard = (f: () => void, who: string) => {
        try {
          f();
        } catch (e) {
          if (who === "client" && !client.destroyed) client.write(errorResponse("08P01", `Petri broker: ${(e as Error).message}`));
          finish(`protocol error from ${who}`);
        }
      };
      client.on("data", (d: Buffer) => guard(() => fromClient.feed(d), "client"));
      server.on("data", (d: Buffer) => guard(() => fromServer.feed(d), "server"));
      client.on("drain", () => server.resume());
      server.on("drain", () => client.resume());
      client.on("close", () => finish("client closed"));
      server.on("close", () => finish("server closed"));
      client.on("end", () => finish("client closed"));
      server.on("end", () => finish("server closed"));
      server.on("error", () => finish("server error"));
      if (early.length) guard(() => fromClient.feed(early), "client");
      if (upstreamEarly.length) guard(() => fromServer.feed(upstreamEarly), "server");
    });
  }

  /** Forwards a CancelRequest, but only for a backend this session opened. */
  private async cancel(key: Buffer): Promise<void> {
    const cfg = this.backendKeys.get(key.toString("hex"));
    this.emit("cancel", cfg ? "success" : "denied", cfg ? {} : { reason: "unknown_backend" });
    if (!cfg) return;
    try {
      const s = await connectTcp(cfg, this.opts.egress ?? DEFAULT_EGRESS_POLICY);
      s.end(Buffer.concat([int32(16), int32(CANCEL_REQUEST), key]));
    } catch {
      /* best effort, as in libpq */
    }
  }
}
