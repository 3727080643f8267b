import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";
import { randomPassword, scramVerifier, startPostgres, type PgServer } from "./vault/support.js";

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
    t = await startTestServer();
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

  it("a sandbox cannot name a secret its tenant does not have", async () => {
    const other = (await t.api("POST", "/v1/keys", { body: { name: "other" } })).json.token;
    const r = await t.api("POST", "/v1/sandboxes", { key: other, body: { language: "python", secrets: ["db"] } });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, "SECRET_NOT_FOUND");
    assert.equal((await t.api("GET", "/v1/secrets/db", { key: other })).status, 404);
  });
});
