import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { PetriError } from "../errors.js";
import { generateMasterKey } from "./crypto.js";
import { openBrokerSession, wrapWithForwarder } from "./session.js";
import { SecretStore } from "./store.js";

function setup() {
  const store = new SecretStore(new Database(":memory:"), generateMasterKey());
  store.put("t", "db", { value: "db-password-123", kind: "postgres", config: { host: "db.example.com", port: 1, database: "d", user: "u" } });
  store.put("t", "api", { value: "api-token-456", kind: "http", config: { hosts: ["api.example.com"] } });
  store.put("t", "misc", { value: "generic-789", kind: "generic" });
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), "petri-sess-"));
  const runDir = path.join(parent, "broker");
  after(() => fs.rmSync(parent, { recursive: true, force: true }));
  return { store, runDir };
}

test("a session exposes placeholders and endpoints, never values, and cleans up", async () => {
  const { store, runDir } = setup();
  const s = await openBrokerSession({ store, tenantId: "t", sandboxId: "sb_1", execId: "ex_1", secrets: ["db", "api", "misc"], runDir, onEvent: () => undefined });
  try {
    assert.match(s.env.PETRI_SECRET_DB, /^petri-secret:db:[0-9a-f]{24}$/);
    assert.equal(s.env.PETRI_SECRET_API, s.placeholders.api);
    assert.equal(s.env.PGHOST, "/petri/broker/pg");
    assert.equal(s.env.HTTPS_PROXY, "http://127.0.0.1:3128");
    assert.equal(s.env.SSL_CERT_FILE, "/petri/broker/ca-bundle.pem");
    assert.deepEqual(s.mount, { source: runDir, target: "/petri/broker", readonly: true });
    const everything = JSON.stringify(s.env) + fs.readdirSync(runDir, { recursive: true }).map((f) => {
      const p = path.join(runDir, String(f));
      return fs.statSync(p).isFile() ? fs.readFileSync(p, "utf8") : "";
    }).join("");
    for (const v of ["db-password-123", "api-token-456", "generic-789"]) assert.ok(!everything.includes(v));
    // The unprivileged sandbox user must be able to connect to both sockets.
    assert.equal(fs.statSync(path.join(runDir, "pg", ".s.PGSQL.5432")).mode & 0o777, 0o666);
    assert.equal(fs.statSync(path.join(runDir, "http.sock")).mode & 0o777, 0o666);
    assert.equal(fs.statSync(runDir).mode & 0o777, 0o755);
    assert.ok(s.files.includes("/petri/broker/ca-bundle.pem"));
    const wrapped = s.wrapArgv(["python3", "main.py"]);
    assert.deepEqual(wrapped.slice(0, 2), ["/bin/sh", "-c"]);
    assert.deepEqual(wrapped.slice(-2), ["python3", "main.py"]);
    assert.equal(s.redactor.redact("x db-password-123 y").text, "x [REDACTED:db] y");
  } finally {
    await s.close();
  }
  assert.ok(!fs.existsSync(runDir));
});

test("without http secrets or allowed hosts there is no proxy and argv is untouched", async () => {
  const { store, runDir } = setup();
  const s = await openBrokerSession({ store, tenantId: "t", sandboxId: "sb_1", execId: "ex_2", secrets: ["misc"], runDir, onEvent: () => undefined });
  try {
    assert.deepEqual(s.wrapArgv(["a", "b"]), ["a", "b"]);
    assert.equal(s.env.HTTPS_PROXY, undefined);
    assert.equal(s.env.PGHOST, undefined);
  } finally {
    await s.close();
  }
});

test("an unknown or other tenant's secret fails the session with SECRET_NOT_FOUND and leaves nothing", async () => {
  const { store, runDir } = setup();
  await assert.rejects(
    openBrokerSession({ store, tenantId: "other", sandboxId: "sb", execId: "ex", secrets: ["db"], runDir, onEvent: () => undefined }),
    (e: unknown) => e instanceof PetriError && e.code === "SECRET_NOT_FOUND",
  );
  assert.ok(!fs.existsSync(runDir));
});

test("the forwarder script is plain sh", () => {
  const [sh, c, script, name, ...rest] = wrapWithForwarder(["x", "it's"]);
  assert.equal(sh, "/bin/sh");
  assert.equal(c, "-c");
  assert.match(script, /socat TCP-LISTEN:3128,bind=127\.0\.0\.1/);
  assert.match(script, /exec "\$@"$/);
  assert.equal(name, "petri-run");
  assert.deepEqual(rest, ["x", "it's"]);
});
