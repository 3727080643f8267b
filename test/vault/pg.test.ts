import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { generateMasterKey } from "../../src/vault/crypto.js";
import type { BrokerEvent } from "../../src/vault/events.js";
import { Redactor } from "../../src/vault/redact.js";
import { openBrokerSession, type BrokerSession } from "../../src/vault/session.js";
import { SecretStore } from "../../src/vault/store.js";
import { scramVerifier, dockerUsable, makeTestCa, randomPassword, readTree, runInSandbox, startPostgres, tmpDir, type PgServer, type TestCa, LOOPBACK_OPEN } from "./support.js";
import { LANGUAGES } from "../../src/exec/languages.js";

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../test/vault/fixtures");
const TENANT = "tn_bank";
const PASSWORD = randomPassword();
const ROLE = "app_reader";

let pg: PgServer;
let ca: TestCa;
let store: SecretStore;
let workDir: string;
const allEvents: BrokerEvent[] = [];
const pwRedactor = new Redactor([{ name: "maindb", value: PASSWORD }]);

/** Fails if the password shows up in any form (raw, base64, hex, URL-encoded…). */
function assertNoPassword(what: string, data: Buffer | string): void {
  const s = typeof data === "string" ? data : data.toString("latin1");
  assert.ok(!s.includes(PASSWORD), `${what} contains the password`);
  assert.deepEqual(pwRedactor.detect(data), [], `${what} contains an encoding of the password`);
}

before(async () => {
  workDir = tmpDir("petri-vault-pg-");
  ca = makeTestCa(path.join(workDir, "ca"), { dns: ["localhost"], ips: ["127.0.0.1"] });
  pg = await startPostgres({ tls: ca });
  pg.sql(`
    CREATE ROLE ${ROLE} LOGIN PASSWORD '${scramVerifier(PASSWORD)}';
    CREATE DATABASE appdb;
    \\c appdb
    CREATE TABLE widgets (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO widgets VALUES (1, 'sprocket'), (2, 'gear'), (3, 'flange');
    GRANT SELECT ON widgets TO ${ROLE};
  `);
  store = new SecretStore(new Database(":memory:"), generateMasterKey(), { egress: LOOPBACK_OPEN });
  const base = { host: "127.0.0.1", port: pg.port, database: "appdb", user: ROLE };
  store.put(TENANT, "maindb", { value: PASSWORD, kind: "postgres", config: { ...base, sslmode: "disable" } });
  store.put(TENANT, "tlsdb", { value: PASSWORD, kind: "postgres", config: { ...base, sslmode: "verify-full", ca: ca.caCert } });
  const other = makeTestCa(path.join(workDir, "other-ca"), { dns: ["localhost"], ips: ["127.0.0.1"] });
  store.put(TENANT, "wrongca", { value: PASSWORD, kind: "postgres", config: { ...base, sslmode: "verify-full", ca: other.caCert } });
  store.put(TENANT, "wrongpw", { value: "wrong-" + randomPassword(), kind: "postgres", config: { ...base, sslmode: "disable" } });
});

after(async () => {
  await pg?.stop();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

async function session(secrets: string[], events: BrokerEvent[] = []): Promise<{ s: BrokerSession; runDir: string; events: BrokerEvent[] }> {
  const runDir = path.join(fs.mkdtempSync(path.join(workDir, "run-")), "broker");
  const s = await openBrokerSession({
    egress: LOOPBACK_OPEN,
    store, tenantId: TENANT, sandboxId: "sb_test", execId: `ex_${Math.random().toString(36).slice(2)}`, secrets, runDir,
    onEvent: (e) => {
      events.push(e);
      allEvents.push(e);
    },
  });
  return { s, runDir, events };
}

/** libpq's psql against the broker socket. Asynchronous: the broker runs in this very process. */
function psql(runDir: string, dbname: string, sql: string): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile("psql", ["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", `host=${runDir}/pg dbname=${dbname} user=nobody password=wrong`, "-c", sql], { encoding: "utf8", timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ ok: !err, out: `${stdout}${stderr}` }),
    );
  });
}

test("libpq on the host: SCRAM upstream, TLS verify-full upstream, wrong CA and unknown database refused", async () => {
  const { s, runDir, events } = await session(["maindb", "tlsdb", "wrongca", "wrongpw"]);
  try {
    const plain = await psql(runDir, "maindb", "SELECT name FROM widgets ORDER BY id");
    assert.ok(plain.ok, plain.out);
    assert.deepEqual(plain.out.trim().split("\n"), ["sprocket", "gear", "flange"]);
    const viaTls = await psql(runDir, "tlsdb", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert.ok(viaTls.ok, viaTls.out);
    assert.equal(viaTls.out.trim(), "t");
    const badCa = await psql(runDir, "wrongca", "SELECT 1");
    assert.ok(!badCa.ok);
    assert.match(badCa.out, /TLS to the database server failed/);
    const badPw = await psql(runDir, "wrongpw", "SELECT 1");
    assert.ok(!badPw.ok);
    assert.match(badPw.out, /password authentication failed/);
    const unknown = await psql(runDir, "postgres", "SELECT 1");
    assert.ok(!unknown.ok);
    assert.match(unknown.out, /not available to this run; use one of: maindb, tlsdb, wrongca, wrongpw/);
    // SQL errors come back as ordinary errors, session stays usable.
    const sqlErr = await psql(runDir, "maindb", "SELECT * FROM nope");
    assert.match(sqlErr.out, /relation "nope" does not exist/);

    const connects = events.filter((e) => e.kind === "datastore" && e.action === "connect");
    const ok = connects.filter((e) => e.outcome === "success");
    assert.ok(ok.some((e) => e.detail.secret === "maindb" && e.detail.auth === "scram-sha-256" && e.detail.tls === false));
    assert.ok(ok.some((e) => e.detail.secret === "tlsdb" && e.detail.tls === true));
    assert.ok(connects.some((e) => e.outcome === "failure" && e.detail.secret === "wrongca"));
    assert.ok(connects.some((e) => e.outcome === "denied" && e.detail.reason === "unknown_database"));
    const queries = events.filter((e) => e.action === "query").map((e) => e.detail.statement);
    assert.ok(queries.includes("SELECT name FROM widgets ORDER BY id"));
    assert.ok(events.every((e) => e.detail.tenantId === TENANT && e.detail.sandboxId === "sb_test"));
  } finally {
    await s.close();
  }
  assert.ok(!fs.existsSync(runDir), "session close removes the run directory it created");
});

test("password changes through the broker are refused however they are spelled (real parser), against real PostgreSQL", async () => {
  const { s, runDir, events } = await session(["maindb"]);
  try {
    for (const sql of [
      `ALTER/**/ROLE ${ROLE} PASSWORD 'attacker-knows-this'`,
      `ALTER/* a /* nested */ one */USER ${ROLE} WITH PASSWORD E'attacker\\'s'`,
      `SELECT 1; ALTER ROLE CURRENT_USER PASSWORD $x$attacker$x$`,
      `DO $$ BEGIN EXECUTE 'ALTER ROLE ' || current_user || ' PASSWORD ''attacker'''; END $$`,
    ]) {
      const r = await psql(runDir, "maindb", sql);
      assert.ok(!r.ok, `${sql}: ${r.out}`);
      assert.match(r.out, /changing a role password through the broker is not allowed/, sql);
    }
    // The stored password still works: nothing was changed.
    const still = await psql(runDir, "maindb", "SELECT count(*) FROM widgets");
    assert.ok(still.ok, still.out);
    assert.equal(events.filter((e) => e.action === "query" && e.detail.reason === "role_password_change").length, 4);
  } finally {
    await s.close();
  }
});

/** A minimal raw-protocol client, to test cancel and extended-protocol handling precisely. */
class RawClient {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  constructor(readonly sock: net.Socket) {
    sock.on("data", (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiters.splice(0).forEach((w) => w());
    });
    sock.on("close", () => this.waiters.splice(0).forEach((w) => w()));
  }
  static async connect(socketPath: string, database: string): Promise<{ c: RawClient; backendKey: Buffer }> {
    const sock = net.connect(socketPath);
    await new Promise((r) => sock.once("connect", r));
    const c = new RawClient(sock);
    const params = Buffer.from(`user\0x\0database\0${database}\0\0`);
    const head = Buffer.alloc(8);
    head.writeInt32BE(8 + params.length);
    head.writeInt32BE(196608, 4);
    sock.write(Buffer.concat([head, params]));
    const msgs = await c.until("Z");
    const k = msgs.find((m) => m.type === "K");
    assert.ok(k, "BackendKeyData relayed");
    return { c, backendKey: k.body };
  }
  send(type: string, body: Buffer): void {
    const h = Buffer.alloc(5);
    h[0] = type.charCodeAt(0);
    h.writeInt32BE(body.length + 4, 1);
    this.sock.write(Buffer.concat([h, body]));
  }
  async until(type: string, timeoutMs = 10_000): Promise<{ type: string; body: Buffer }[]> {
    const out: { type: string; body: Buffer }[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.buf.length >= 5 && this.buf.length >= this.buf.readInt32BE(1) + 1) {
        const l = this.buf.readInt32BE(1);
        const m = { type: String.fromCharCode(this.buf[0]), body: this.buf.subarray(5, l + 1) };
        this.buf = this.buf.subarray(l + 1);
        out.push(m);
        if (m.type === type) return out;
      }
      if (this.sock.destroyed || Date.now() > deadline) throw new Error(`no ${type} (got ${out.map((m) => m.type).join("")})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

const z = (s: string) => Buffer.from(s + "\0");

test("cancel requests reach the right backend; extended-protocol password change is blocked", async () => {
  const { s, runDir, events } = await session(["maindb"]);
  try {
    const sockPath = path.join(runDir, "pg", ".s.PGSQL.5432");
    const { c, backendKey } = await RawClient.connect(sockPath, "anything");
    const t0 = Date.now();
    c.send("Q", z("SELECT pg_sleep(20)"));
    await new Promise((r) => setTimeout(r, 300));
    const cancel = net.connect(sockPath);
    await new Promise((r) => cancel.once("connect", r));
    const pkt = Buffer.alloc(16);
    pkt.writeInt32BE(16);
    pkt.writeInt32BE(80877102, 4);
    backendKey.copy(pkt, 8);
    cancel.end(pkt);
    const msgs = await c.until("Z");
    const err = msgs.find((m) => m.type === "E");
    assert.ok(err && err.body.toString().includes("57014"), "query was cancelled");
    assert.ok(Date.now() - t0 < 10_000);

    // Extended protocol: Parse/Bind/Execute/Sync of a password change fails server-side, the
    // connection stays in sync, and the vault's password keeps working.
    c.send("P", Buffer.concat([z(""), z(`ALTER ROLE ${ROLE} PASSWORD 'attacker-knows-this'`), Buffer.from([0, 0])]));
    c.send("B", Buffer.concat([z(""), z(""), Buffer.from([0, 0, 0, 0, 0, 0])]));
    c.send("E", Buffer.concat([z(""), Buffer.from([0, 0, 0, 0])]));
    c.send("S", Buffer.alloc(0));
    const ext = await c.until("Z");
    assert.ok(ext.some((m) => m.type === "E" && m.body.toString().includes("not allowed")), ext.map((m) => m.type).join(""));
    c.send("Q", z("SELECT count(*) FROM widgets"));
    const rows = await c.until("Z");
    const d = rows.find((m) => m.type === "D");
    assert.ok(d && d.body.toString().includes("3"));
    c.sock.destroy();
    assert.ok((await psql(runDir, "maindb", "SELECT 1")).ok, "password unchanged");
    assert.ok(events.some((e) => e.action === "query" && e.outcome === "denied" && e.detail.reason === "role_password_change"));
    assert.ok(events.some((e) => e.action === "cancel" && e.outcome === "success"));
  } finally {
    await s.close();
  }
});

for (const lang of ["python", "node"] as const) {
  test(`${lang} in a real container queries through the broker and cannot find the password`, async (t) => {
    const why = await dockerUsable();
    if (why) return t.skip(why);
    const { s, runDir, events } = await session(["maindb"]);
    try {
      // What the container is given beyond the image: env and the broker directory.
      assertNoPassword("session env", JSON.stringify(s.env));
      for (const f of readTree(runDir)) assertNoPassword("run directory file", f);

      const script = lang === "python" ? "pg_attack.py" : "pg_attack.js";
      const argv = lang === "python" ? ["python3", "/workspace/" + script] : ["node", "/workspace/" + script];
      // With the language's environment, as the engine runs it (node finds Debian's pg through NODE_PATH).
      const res = await runInSandbox(s, argv, { [script]: fs.readFileSync(path.join(FIXTURES, script), "utf8") }, { timeoutMs: 120_000, env: LANGUAGES[lang].env });
      const stdout = res.stdout.toString();
      if (process.env.PETRI_VAULT_TEST_DUMP) fs.writeFileSync(path.join(process.env.PETRI_VAULT_TEST_DUMP, `pg-${lang}.out`), Buffer.concat([res.stdout, Buffer.from("\n--- stderr ---\n"), res.stderr]));
      assert.equal(res.exitCode, 0, `exit ${res.exitCode}\n${stdout.slice(-3000)}\n${res.stderr.toString().slice(-3000)}`);
      assert.match(stdout, lang === "python" ? /ROWS \[\[1, "sprocket"\], \[2, "gear"\], \[3, "flange"\]\]/ : /ROWS \[\{"id":1,"name":"sprocket"\},\{"id":2,"name":"gear"\},\{"id":3,"name":"flange"\}\]/);
      if (lang === "python") assert.match(stdout, /STILL_WORKS 3/);
      else assert.match(stdout, /URL_ROWS 3/);
      assert.ok(stdout.includes("permission denied for table pg_authid"), "tried pg_authid");
      assert.ok(stdout.includes("changing a role password through the broker is not allowed"));
      assert.ok(stdout.includes("petri-secret:maindb:"), "the code sees the placeholder");

      // The raw output, before any redaction, holds nothing the code could have learned.
      assertNoPassword(`${lang} stdout`, res.stdout);
      assertNoPassword(`${lang} stderr`, res.stderr);
      const redacted = s.redactor.redact(res.stdout);
      assert.deepEqual(redacted.redactions, []);
      assertNoPassword("events", JSON.stringify(events));
      assertNoPassword("postgres server log", fs.readFileSync(pg.logFile));

      const stmts = events.filter((e) => e.kind === "datastore" && e.action === "query").map((e) => String(e.detail.statement));
      assert.ok(stmts.some((q) => q.startsWith("SELECT id, name FROM widgets")), stmts.join("\n"));
      assert.ok(events.some((e) => e.action === "connect" && e.outcome === "success" && e.detail.user === ROLE));
    } finally {
      await s.close();
    }
  });
}

test("nothing the tests recorded anywhere contains the password", () => {
  assertNoPassword("all events", JSON.stringify(allEvents));
  assertNoPassword("postgres server log", fs.readFileSync(pg.logFile));
});
