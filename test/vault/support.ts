/**
 * Real servers for the vault tests: PostgreSQL from Debian's packages, a test CA made with the
 * openssl CLI, HTTPS upstreams, and runs inside real containers through the Docker runtime.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash, createHmac, pbkdf2Sync, randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { DEFAULT_IMAGE } from "../../src/images/recipe.js";
import { DockerRuntime } from "../../src/runtimes/docker.js";
import type { RunResult } from "../../src/runtimes/types.js";
import { parseEgressPolicy } from "../../src/vault/egress.js";
import type { BrokerSession } from "../../src/vault/session.js";

/**
 * The tests' upstreams listen on loopback, which the default egress policy refuses: the tests
 * open it the way an operator would (PETRI_EGRESS_PRIVATE_HOSTS=127.0.0.0/8,::1/128).
 */
export const LOOPBACK_OPEN = parseEgressPolicy({ privateHosts: "127.0.0.0/8,::1/128" });

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function randomPassword(): string {
  // Mixed alphabet so encoded forms (base64, URL) differ from the raw one.
  return "Pw+" + randomBytes(18).toString("base64").replace(/=/g, "") + "/&%";
}

// ---------- test CA (openssl CLI) ----------

export interface TestCa {
  caCert: string;
  serverCert: string;
  serverKey: string;
  dir: string;
}

export function makeTestCa(dir: string, names: { dns: string[]; ips: string[] }): TestCa {
  fs.mkdirSync(dir, { recursive: true });
  const p = (f: string) => path.join(dir, f);
  const ossl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  ossl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2", "-subj", "/CN=Petri Test Upstream CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  ossl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", `/CN=${names.dns[0] ?? names.ips[0]}`]);
  const san = [...names.dns.map((d) => `DNS:${d}`), ...names.ips.map((i) => `IP:${i}`)].join(",");
  fs.writeFileSync(p("ext.cnf"), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`);
  ossl(["x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p("server.crt"), "-days", "2", "-extfile", p("ext.cnf")]);
  return { caCert: fs.readFileSync(p("ca.crt"), "utf8"), serverCert: fs.readFileSync(p("server.crt"), "utf8"), serverKey: fs.readFileSync(p("server.key"), "utf8"), dir };
}

// ---------- PostgreSQL ----------

export interface PgServer {
  port: number;
  socketDir: string;
  logFile: string;
  /** Runs SQL as the superuser over the Unix socket (trust), returns psql's output. */
  sql: (sql: string) => string;
  stop: () => Promise<void>;
}

function pgBin(): string {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, "bin", "initdb"))) : [];
  if (!versions.length) {
    execFileSync("apt-get", ["install", "-y", "postgresql"], { stdio: "ignore" });
    return pgBin();
  }
  versions.sort((a, b) => Number(b) - Number(a));
  return path.join(base, versions[0], "bin");
}

/**
 * initdb refuses root: run as the `postgres` user when we are root. setpriv execs in place (no
 * parent left like runuser's), so signals reach the server directly.
 */
function asPg(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", cmd, ...args]] : [cmd, args];
}

/**
 * A SCRAM-SHA-256 verifier for CREATE ROLE … PASSWORD: the server (and its statement log)
 * never sees the password itself, as in a careful production setup.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(Buffer.from(password, "utf8"), salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

export async function startPostgres(opts: { tls?: TestCa } = {}): Promise<PgServer> {
  const bin = pgBin();
  const root = tmpDir("petri-pg-");
  const data = path.join(root, "data");
  const socketDir = path.join(root, "sock");
  const logFile = path.join(root, "server.log");
  fs.mkdirSync(socketDir);
  if (process.getuid?.() === 0) execFileSync("chown", ["-R", "postgres:postgres", root]);
  fs.chmodSync(root, 0o755);
  const [c1, a1] = asPg(path.join(bin, "initdb"), ["-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"]);
  execFileSync(c1, a1, { stdio: "ignore" });
  const port = await freePort();
  const conf: string[] = [
    `listen_addresses = '127.0.0.1'`, `port = ${port}`, `unix_socket_directories = '${socketDir}'`,
    `password_encryption = 'scram-sha-256'`, `fsync = off`, `log_statement = 'all'`, `log_connections = on`,
  ];
  if (opts.tls) {
    for (const [f, v] of [["server.crt", opts.tls.serverCert], ["server.key", opts.tls.serverKey]] as const) fs.writeFileSync(path.join(data, f), v, { mode: 0o600 });
    if (process.getuid?.() === 0) execFileSync("chown", ["postgres:postgres", path.join(data, "server.crt"), path.join(data, "server.key")]);
    conf.push("ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'");
  }
  fs.appendFileSync(path.join(data, "postgresql.conf"), "\n" + conf.join("\n") + "\n");
  fs.writeFileSync(path.join(data, "pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n");
  fs.writeFileSync(logFile, "");
  if (process.getuid?.() === 0) execFileSync("chown", ["postgres:postgres", logFile, path.join(data, "pg_hba.conf")]);
  const [c2, a2] = asPg(path.join(bin, "postgres"), ["-D", data]);
  const log = fs.openSync(logFile, "a");
  const proc: ChildProcess = spawn(c2, a2, { stdio: ["ignore", log, log] });
  // If the test process dies without stop(), do not leave a server behind.
  const onExit = () => proc.kill("SIGINT");
  process.once("exit", onExit);
  const psql = (sql: string) => {
    const [c, a] = asPg(path.join(bin, "psql"), ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDir, "-p", String(port), "-d", "postgres", "-f", "-"]);
    return execFileSync(c, a, { input: sql, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
  };
  for (let i = 0; ; i++) {
    try {
      psql("SELECT 1");
      break;
    } catch (e) {
      if (i > 100 || proc.exitCode !== null) throw new Error(`postgres did not start: ${fs.readFileSync(logFile, "utf8").slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    port,
    socketDir,
    logFile,
    sql: psql,
    stop: async () => {
      process.off("exit", onExit);
      if (proc.exitCode === null) {
        proc.kill("SIGINT");
        await new Promise((r) => proc.once("exit", r));
      }
      fs.closeSync(log);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

// ---------- containers ----------

export const docker = new Docker();

export async function dockerUsable(): Promise<string | null> {
  try {
    await docker.ping();
    await docker.getImage(DEFAULT_IMAGE).inspect();
    return null;
  } catch (e) {
    return `Docker or image ${DEFAULT_IMAGE} unavailable: ${(e as Error).message}`;
  }
}

/** Runs argv in a fresh container the way the engine does, with the session's env, mount and wrapper. */
export async function runInSandbox(session: BrokerSession, argv: string[], files: Record<string, string>, opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  const ws = tmpDir("petri-vault-ws-");
  try {
    for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(ws, name), content);
    execFileSync("chown", ["-R", "1000:1000", ws]);
    const runtime = new DockerRuntime({ docker, ociRuntime: "runc" });
    return await runtime.run({
      image: DEFAULT_IMAGE,
      argv: session.wrapArgv(argv),
      env: { HOME: "/tmp", PATH: "/usr/local/bin:/usr/bin:/bin", ...(opts.env ?? {}), ...session.env },
      cwd: "/workspace",
      mounts: [{ source: ws, target: "/workspace", readonly: false }, session.mount],
      limits: { memoryBytes: 512 * 1024 * 1024, cpus: 1, pids: 256, openFiles: 1024, fileSizeBytes: 64 * 1024 * 1024, tmpfsBytes: 64 * 1024 * 1024 },
      timeoutMs: opts.timeoutMs ?? 60_000,
      outputLimitBytes: 16 * 1024 * 1024,
      uid: 1000,
      gid: 1000,
      labels: { "petri.test": "vault" },
    });
  } finally {
    fs.rmSync(ws, { recursive: true, force: true });
  }
}

/** Every file under dir (recursively), as bytes. */
export function readTree(dir: string): Buffer[] {
  const out: Buffer[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...readTree(p));
    else if (e.isFile()) out.push(fs.readFileSync(p));
  }
  return out;
}
