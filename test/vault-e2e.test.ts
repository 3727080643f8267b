import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import dns from "node:dns";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";
import { makeTestCa, randomPassword, scramVerifier, startPostgres, type PgServer } from "./vault/support.js";

/**
 * TenantVault through the public API: a secret stored with PUT /v1/secrets is used by sandboxed
 * code through the PostgreSQL broker, and its value appears in no response, record or file.
 */
describe("vault through the API", () => {
  let t: TestServer;
  let pg: PgServer;
  const PASSWORD = "pw_" + randomPassword();
  before(async () => {
    pg = await startPostgres();
    pg.sql(`CREATE ROLE app LOGIN PASSWORD '${scramVerifier(PASSWORD)}'; CREATE DATABASE appdb OWNER app;`);
    pg.sql(`\\c appdb\nCREATE TABLE widgets(id int, name text); INSERT INTO widgets VALUES (1, 'sprocket'), (2, 'gear'); ALTER TABLE widgets OWNER TO app;`);
    t = await startTestServer({ PETRI_EGRESS_PRIVATE_HOSTS: "127.0.0.0/8" });
  });
  after(async () => {
    await t?.close();
    await pg?.stop();
  });

  it("code queries through the broker, never sees the password, and the password is nowhere", async () => {
    const put = await t.api("PUT", "/v1/secrets/db", { body: { kind: "postgres", value: PASSWORD, config: { host: "127.0.0.1", port: pg.port, database: "appdb", user: "app" } } });
    assert.ok(put.status === 200 || put.status === 201, put.text);
    assert.doesNotMatch(put.text, new RegExp(PASSWORD));
    const meta = await t.api("GET", "/v1/secrets/db");
    assert.equal(meta.json.name, "db");
    assert.doesNotMatch(meta.text, new RegExp(PASSWORD));

    const sb = await createSandbox(t, { language: "python", secrets: ["db"] });
    assert.deepEqual((await t.api("GET", `/v1/sandboxes/${sb}`)).json.secrets, ["db"]);
    await putFile(t, sb, "q.py", [
      "import os, psycopg2",
      "conn = psycopg2.connect('')",
      "cur = conn.cursor()",
      "cur.execute('SELECT name FROM widgets ORDER BY id')",
      "print([r[0] for r in cur.fetchall()])",
      "cur.execute('SELECT current_user')",
      "print(cur.fetchone()[0])",
      "print(sorted(os.environ.items()))",
      "print(open('/proc/self/environ', 'rb').read())",
      "for root, dirs, files in os.walk('/petri/broker'):",
      "    for f in files:",
      "        p = os.path.join(root, f)",
      "        try:\n            print(p, open(p, 'rb').read()[:4096])\n        except Exception as e:\n            print(p, type(e).__name__)",
    ].join("\n"));
    const r = await exec(t, sb, { filename: "q.py" });
    assert.equal(r.json.exit_code, 0, r.text);
    assert.match(r.json.stdout, /\['sprocket', 'gear'\]\napp\n/);
    assert.doesNotMatch(r.text, new RegExp(PASSWORD), "the run's response has no password");

    const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
    const queries = recs.filter((x) => x.kind === "datastore");
    assert.ok(queries.some((x) => JSON.stringify(x.detail).includes("SELECT name FROM widgets")), JSON.stringify(recs.map((x) => x.action)));

    // An uploaded file that contains the value is redacted on download.
    await putFile(t, sb, "config.ini", `password=${PASSWORD}\n`);
    const dl = await t.api("GET", `/v1/sandboxes/${sb}/files/config.ini`);
    assert.equal(dl.text, "password=[REDACTED:db]\n");
    // And output that somehow carries it is redacted, with the result saying so.
    const echo = await exec(t, sb, { code: "print(open('config.ini').read())" });
    assert.equal(echo.json.stdout, "password=[REDACTED:db]\n\n");
    assert.deepEqual(echo.json.redactions, ["db"]);

    for (const dir of [path.join(t.dataDir, "audit"), path.join(t.dataDir, "runs")]) {
      if (!fs.existsSync(dir)) continue;
      for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
        if (!e.isFile()) continue;
        const p = path.join(e.parentPath ?? e.path, e.name);
        assert.equal(fs.readFileSync(p).includes(PASSWORD), false, `${p} contains the password`);
      }
    }
    const db = fs.readFileSync(path.join(t.dataDir, "petri.db"));
    assert.equal(db.includes(PASSWORD), false, "stored encrypted");
  });

  it("without allowed hosts there is no network; off-list hosts are refused and audited", async () => {
    const sb = await createSandbox(t, { language: "python", allow_hosts: ["allowed.invalid"] });
    const r = await exec(t, sb, {
      code: [
        "import urllib.request, os",
        "print('proxy', os.environ.get('HTTP_PROXY'))",
        "try:\n    urllib.request.urlopen('http://not-allowed.invalid/x', timeout=5)\n    print('REACHED')\nexcept Exception as e:\n    print('refused', getattr(e, 'code', type(e).__name__))",
      ].join("\n"),
    });
    assert.match(r.json.stdout, /refused 403/, r.text);
    const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&kind=network`)).json.items as any[];
    const denied = recs.find((x) => x.outcome === "denied");
    assert.ok(denied, JSON.stringify(recs));
    assert.match(JSON.stringify(denied.detail), /not-allowed\.invalid/);
  });

  it("downloads are redacted for secrets granted per run and for rotated values", async () => {
    const first = "runtok_" + randomPassword();
    const second = "runtok2_" + randomPassword();
    assert.equal((await t.api("PUT", "/v1/secrets/runtok", { body: { kind: "generic", value: first } })).status, 201);
    const sb = await createSandbox(t, { language: "python" });
    const r = await exec(t, sb, { code: "import os; open('seen.txt', 'w').write(os.environ['PETRI_SECRET_RUNTOK'])", secrets: ["runtok"] });
    assert.equal(r.json.exit_code, 0, r.text);
    const placeholder = (await t.api("GET", `/v1/sandboxes/${sb}/files/seen.txt`)).text;
    assert.match(placeholder, /^petri-secret:runtok:/, "the run saw a placeholder");
    // The value reaches the workspace some other way (an upload, a tool that logged it).
    await putFile(t, sb, "leak.txt", `v1=${first}\n`);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/leak.txt`)).text, "v1=[REDACTED:runtok]\n");
    // Rotated: the old value stays redacted next to the new one.
    assert.equal((await t.api("PUT", "/v1/secrets/runtok", { body: { kind: "generic", value: second } })).status, 200);
    await putFile(t, sb, "leak2.txt", `v1=${first} v2=${second}\n`);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/leak2.txt`)).text, "v1=[REDACTED:runtok] v2=[REDACTED:runtok]\n");
    const out = await exec(t, sb, { code: "print(open('leak2.txt').read())", secrets: ["runtok"] });
    assert.equal(out.json.stdout, "v1=[REDACTED:runtok] v2=[REDACTED:runtok]\n\n", "output knows the rotated value too");
  });

  it("a sandbox cannot name a secret its tenant does not have", async () => {
    const other = (await t.api("POST", "/v1/keys", { body: { name: "other" } })).json.token;
    const r = await t.api("POST", "/v1/sandboxes", { key: other, body: { language: "python", secrets: ["db"] } });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, "SECRET_NOT_FOUND");
    assert.equal((await t.api("GET", "/v1/secrets/db", { key: other })).status, 404);
  });
});

/**
 * SSRF through the egress broker (issue 9): a tenant's allow_hosts and secret hosts stay inside
 * the operator's policy; loopback, metadata and private destinations are refused by default,
 * on the address a name resolves to when the broker connects.
 */
describe("egress policy through the API (default policy: nothing private opened)", () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t?.close();
  });

  it("malformed host patterns are a 400, private and metadata destinations a 403, for sandboxes, runs and secrets", async () => {
    for (const bad of ["http://evil/", "evil.example/path", "user@evil.example", "evil.example:22/x", "a b"]) {
      const r = await t.api("POST", "/v1/sandboxes", { body: { language: "python", allow_hosts: [bad] } });
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
      assert.equal(r.json.error.code, "VALIDATION_ERROR");
    }
    for (const priv of ["127.0.0.1:22", "169.254.169.254", "localhost:2375", "[::1]:8080", "10.0.0.1:443", "[::ffff:169.254.169.254]"]) {
      const r = await t.api("POST", "/v1/sandboxes", { body: { language: "python", allow_hosts: [priv] } });
      assert.equal(r.status, 403, `${priv}: ${r.text}`);
      assert.equal(r.json.error.code, "EGRESS_NOT_ALLOWED");
    }
    const sb = await createSandbox(t, { language: "python" });
    const run = await exec(t, sb, { code: "print(1)", allow_hosts: ["169.254.169.254:80"] });
    assert.equal(run.status, 403, run.text);
    assert.equal(run.json.error.code, "EGRESS_NOT_ALLOWED");
    const badRun = await exec(t, sb, { code: "print(1)", allow_hosts: ["http://evil/"] });
    assert.equal(badRun.status, 400, badRun.text);
    const secret = await t.api("PUT", "/v1/secrets/docker", { body: { kind: "http", value: "token-1234567", config: { hosts: ["localhost:2375"] } } });
    assert.equal(secret.status, 403, secret.text);
    assert.equal(secret.json.error.code, "EGRESS_NOT_ALLOWED");
    const pgSecret = await t.api("PUT", "/v1/secrets/pg", { body: { kind: "postgres", value: "pw-1234567", config: { host: "127.0.0.1", port: 5432, database: "d", user: "u" } } });
    assert.equal(pgSecret.status, 403, pgSecret.text);
    const fine = await t.api("POST", "/v1/sandboxes", { body: { language: "python", allow_hosts: ["API.example.com", "*.example.org:8443"] } });
    assert.equal(fine.status, 201, fine.text);
    assert.deepEqual(fine.json.allow_hosts, ["api.example.com", "*.example.org:8443"]);
  });

  it("a run cannot reach Petri's own API through the broker by a name that resolves to this host", async (ctx) => {
    const name = os.hostname();
    const addrs = await dns.promises.lookup(name, { all: true }).catch(() => []);
    if (addrs.length === 0) return ctx.skip(`this host's name ${name} does not resolve, so there is no name pointing back at it to try`);
    const port = new URL(t.url).port;
    const sb = await createSandbox(t, { language: "python", allow_hosts: [`${name}:${port}`] });
    const r = await exec(t, sb, {
      code: [
        "import urllib.request",
        `req = urllib.request.Request('http://${name}:${port}/v1/sandboxes')`,
        "try:\n    print('REACHED', urllib.request.urlopen(req, timeout=10).status)\nexcept Exception as e:\n    print('refused', getattr(e, 'code', type(e).__name__), e.headers.get('x-petri-denied') if hasattr(e, 'headers') and e.headers else '')",
      ].join("\n"),
    });
    assert.equal(r.json.exit_code, 0, r.text);
    assert.match(r.json.stdout, /^refused 403 private_address$/m, r.text);
    const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&kind=network`)).json.items as any[];
    assert.ok(recs.some((x) => x.outcome === "denied" && x.detail.reason === "private_address"), JSON.stringify(recs.map((x) => x.detail)));
  });
});

/**
 * The vault on every runtime (issue 9: it failed on bwrap and runsc): the code sees placeholders
 * only, reaches PostgreSQL and an HTTPS API through the brokers, cannot find the values in its
 * environment or mounts, and cannot read the token back through an echo with 6-byte Ranges or
 * through a request-log viewer on another allowed host.
 */
// Production runs with pre-started sandboxes; the tests run both ways.
for (const warmIdleMs of ["0", "60000"]) describe(`vault on every runtime, against real PostgreSQL and a real HTTPS upstream (PETRI_WARM_IDLE_MS=${warmIdleMs})`, () => {
  let t: TestServer;
  let pg: PgServer;
  let work: string;
  let upstream: https.Server;
  let port = 0;
  let logViewer: http.Server;
  let logPort = 0;
  const PASSWORD = "pw_" + randomPassword();
  const TOKEN = "tok_" + randomPassword();
  const seen: http.IncomingHttpHeaders[] = [];
  let runtimes: string[] = [];

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "petri-vault-rt-"));
    const ca = makeTestCa(path.join(work, "ca"), { dns: ["localhost"], ips: ["127.0.0.1"] });
    upstream = https.createServer({ cert: ca.serverCert, key: ca.serverKey }, (req, res) => {
      const url = new URL(req.url ?? "/", "https://x");
      seen.push(req.headers);
      if (url.pathname === "/whoami") return void res.end(req.headers.authorization === `Bearer ${TOKEN}` ? "you are alice" : "who are you?");
      const echoed = Buffer.from(JSON.stringify(req.headers));
      const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ""));
      if (!range) return void res.end(echoed);
      res.statusCode = 206;
      res.setHeader("content-range", `bytes ${range[1]}-${range[2]}/${echoed.length}`);
      res.end(echoed.subarray(Number(range[1]), Number(range[2]) + 1));
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    port = (upstream.address() as net.AddressInfo).port;
    // The same service's request-log viewer, on another host name and without a secret.
    logViewer = http.createServer((_req, res) => res.end(JSON.stringify(seen)));
    await new Promise<void>((r) => logViewer.listen(0, "127.0.0.1", () => r()));
    logPort = (logViewer.address() as net.AddressInfo).port;
    pg = await startPostgres();
    pg.sql(`CREATE ROLE app LOGIN PASSWORD '${scramVerifier(PASSWORD)}'; CREATE DATABASE appdb OWNER app;`);
    t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "auto", PETRI_EGRESS_PRIVATE_HOSTS: "127.0.0.0/8", PETRI_WARM_IDLE_MS: warmIdleMs });
    runtimes = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
    assert.equal((await t.api("PUT", "/v1/secrets/db", { body: { kind: "postgres", value: PASSWORD, config: { host: "127.0.0.1", port: pg.port, database: "appdb", user: "app" } } })).status, 201);
    assert.equal((await t.api("PUT", "/v1/secrets/api", { body: { kind: "http", value: TOKEN, config: { hosts: [`127.0.0.1:${port}`], upstreamCa: ca.caCert } } })).status, 201);
  });
  after(async () => {
    await t?.close();
    await pg?.stop();
    upstream?.close();
    logViewer?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const program = (port: number, logPort: number) => [
    "import json, os, subprocess, sys, urllib.request, psycopg2",
    "def get(url, headers={}):",
    "    try:",
    "        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as r: return r.status, r.read().decode()",
    "    except urllib.error.HTTPError as e: return e.code, e.read().decode()",
    "    except Exception as e: return 'ERR', repr(e)",
    "conn = psycopg2.connect('')",
    "cur = conn.cursor(); cur.execute('SELECT current_user'); print('PG', cur.fetchone()[0])",
    `A = 'https://127.0.0.1:${port}'`,
    `B = 'http://localhost:${logPort}'`,
    "print('WHOAMI', *get(A + '/whoami'))",
    "print('ECHO', *get(A + '/echo'))",
    "print('RANGE', ''.join(str(get(A + '/echo', {'Range': 'bytes=%d-%d' % (i, i + 5)})[1]) for i in range(0, 120, 6)))",
    "print('LOG', *get(B + '/log'))",
    "blob = repr(sorted(os.environ.items()))",
    "for root, _, files in os.walk('/petri'):",
    "    for f in files:",
    "        try: blob += open(os.path.join(root, f), 'rb').read().decode('latin1')",
    "        except Exception: pass",
    "print('LOOKED', len(blob))",
    "print('ENV', os.environ.get('PETRI_SECRET_API', '')[:20], os.environ.get('PETRI_SECRET_DB', '')[:19])",
  ].join("\n");

  for (const rt of ["runc", "crun", "runsc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"]) {
    it(`${rt}: placeholders only, brokers reachable, the values never readable`, async (ctx) => {
      if (!runtimes.includes(rt)) return ctx.skip(`${rt} is not available on this host`);
      const sb = await createSandbox(t, { language: "python", runtime: rt, secrets: ["db", "api"], allow_hosts: [`localhost:${logPort}`] });
      const noSockets = await t.server.runtimes.get(rt)?.hostSockets?.();
      const r = await exec(t, sb, { code: program(port, logPort), timeout_ms: 120_000 });
      if (noSockets) {
        // This engine's registration of the runtime cannot reach the brokers: fail closed, and say why.
        assert.equal(r.json.error?.code, "RUNTIME_UNAVAILABLE", r.text);
        assert.match(r.json.error.message, /--host-uds=open/);
        return ctx.skip(`${rt}: ${noSockets} — checked that runs fail closed with that message`);
      }
      const out = r.json.stdout as string;
      assert.equal(r.json.exit_code, 0, r.text);
      assert.match(out, /^PG app$/m);
      assert.match(out, /^WHOAMI 200 you are alice$/m);
      assert.match(out, /^ECHO 200 .*Bearer \[REDACTED:api\]/m);
      assert.match(out, /^RANGE /m);
      assert.match(out, /^LOG 200 .*\[REDACTED:api\]/m);
      assert.match(out, /^LOOKED \d+$/m);
      assert.match(out, /^ENV petri-secret:api:[0-9a-f]* petri-secret:db:[0-9a-f]*$/m);
      assert.ok(!r.text.includes(TOKEN) && !r.text.includes(PASSWORD), "a value reached the run's output");
      for (let i = 0; i + 8 <= TOKEN.length; i++) assert.ok(!out.includes(TOKEN.slice(i, i + 8)), `a piece of the token came back: ${TOKEN.slice(i, i + 8)}`);
      assert.ok(!seen.some((h) => h.range !== undefined), "the upstream saw a Range header");
    });
  }
});
