import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { SecretStore, rotateMasterKeyFile } from "./store.js";
import { generateMasterKey, loadOrCreateMasterKey, parseMasterKey, readMasterKeyRing, writeMasterKeyFile } from "./crypto.js";
import { PetriError } from "../errors.js";

const PG = { host: "db.internal", database: "app", user: "app_ro" };

function fresh() {
  const db = new Database(":memory:");
  const key = generateMasterKey();
  return { db, key, store: new SecretStore(db, key) };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PetriError, String(e));
    return e.code;
  }
  assert.fail("expected an error");
}

test("put/get/list/delete never expose the value; versions count up", () => {
  const { store, db } = fresh();
  const m1 = store.put("t1", "db", { value: "s3cret-pw", kind: "postgres", config: PG });
  assert.equal(m1.version, 1);
  assert.deepEqual(m1.scope, ["db.internal:5432/app"]);
  assert.equal((m1.config as { sslmode: string }).sslmode, "prefer");
  const m2 = store.put("t1", "db", { value: "s3cret-pw2", kind: "postgres", config: PG });
  assert.equal(m2.version, 2);
  assert.equal(m2.createdAt, m1.createdAt);
  assert.equal(store.resolve("t1", "db").value, "s3cret-pw2");
  for (const meta of [store.get("t1", "db"), ...store.list("t1")]) assert.ok(!JSON.stringify(meta).includes("s3cret"));
  // Nothing in the database is the plaintext either.
  const dump = JSON.stringify(db.prepare("SELECT * FROM vault_secrets").all(), (_k, v) => (v?.type === "Buffer" ? Buffer.from(v.data).toString("latin1") : v));
  assert.ok(!dump.includes("s3cret"));
  store.delete("t1", "db");
  assert.equal(code(() => store.get("t1", "db")), "SECRET_NOT_FOUND");
  assert.equal(code(() => store.delete("t1", "db")), "SECRET_NOT_FOUND");
});

test("tenants are isolated", () => {
  const { store } = fresh();
  store.put("A", "tok", { value: "token-aaaa", kind: "generic" });
  assert.equal(code(() => store.get("B", "tok")), "SECRET_NOT_FOUND");
  assert.equal(code(() => store.resolve("B", "tok")), "SECRET_NOT_FOUND");
  assert.deepEqual(store.list("B"), []);
});

test("a ciphertext moved to another row or tenant fails to decrypt", () => {
  const { store, db } = fresh();
  store.put("A", "one", { value: "value-one-1", kind: "generic" });
  store.put("A", "two", { value: "value-two-2", kind: "generic" });
  store.put("B", "one", { value: "value-b-one", kind: "generic" });
  const ct = (db.prepare("SELECT ciphertext FROM vault_secrets WHERE tenant_id='A' AND name='one'").get() as { ciphertext: Buffer }).ciphertext;
  db.prepare("UPDATE vault_secrets SET ciphertext=? WHERE tenant_id='A' AND name='two'").run(ct);
  assert.equal(code(() => store.resolve("A", "two")), "INTERNAL");
  db.prepare("UPDATE vault_secrets SET ciphertext=? WHERE tenant_id='B' AND name='one'").run(ct);
  assert.equal(code(() => store.resolve("B", "one")), "INTERNAL");
  // Even a whole row copied across tenants (same name) fails: the data key and AAD differ.
  assert.equal(store.resolve("A", "one").value, "value-one-1");
});

test("editing a secret's hosts in the database makes it undecryptable", () => {
  const { store, db } = fresh();
  store.put("A", "api", { value: "tok-123456", kind: "http", config: { hosts: ["api.example.com"] } });
  db.prepare("UPDATE vault_secrets SET config_json=? WHERE name='api'").run(JSON.stringify({ hosts: ["evil.example"], header: "Authorization", template: "Bearer {{value}}" }));
  assert.equal(code(() => store.resolve("A", "api")), "INTERNAL");
});

test("master key rotation re-wraps data keys; old key stops working", () => {
  const { store, db, key } = fresh();
  store.put("A", "x", { value: "value-xxxx", kind: "generic" });
  store.put("B", "y", { value: "value-yyyy", kind: "generic" });
  const newKey = generateMasterKey();
  const r = store.rotateMasterKey(newKey);
  assert.equal(r.rewrapped, 2);
  assert.equal(store.resolve("A", "x").value, "value-xxxx");
  assert.equal(store.resolve("B", "y").value, "value-yyyy");
  assert.equal(store.keysNotUnderCurrentMaster(), 0);
  assert.equal(new SecretStore(db, newKey).resolve("A", "x").value, "value-xxxx");
  const old = new SecretStore(db, key);
  assert.equal(code(() => old.resolve("A", "x")), "INTERNAL");
  assert.equal(old.keysNotUnderCurrentMaster(), 2);
  // New secrets after rotation are under the new key too.
  store.put("C", "z", { value: "value-zzzz", kind: "generic" });
  assert.equal(new SecretStore(db, newKey).resolve("C", "z").value, "value-zzzz");
});

test("validation: names, kinds, values, configs; messages never echo the value", () => {
  const { store } = fresh();
  const v = "hunter2-secret";
  assert.equal(code(() => store.put("A", "../x", { value: v, kind: "generic" })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: "abc", kind: "generic" })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "nope" as "generic" })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "postgres", config: { host: "h" } })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "http", config: { hosts: ["bad host!"] } })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "http", config: { hosts: ["a.com"], template: "no placeholder" } })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "http", config: { hosts: ["a.com"], header: "Host" } })), "VALIDATION_ERROR");
  assert.equal(code(() => store.put("A", "x", { value: v, kind: "generic", config: { x: 1 } })), "VALIDATION_ERROR");
  try {
    store.put("A", "x", { value: v + "\n", kind: "http", config: { hosts: ["a.com"] } });
  } catch (e) {
    assert.ok(!(e as Error).message.includes(v));
  }
  const m = store.put("A", "x", { value: v, kind: "http", config: { hosts: ["API.Example.com", "*.example.org:8443"] } });
  assert.deepEqual((m.config as { hosts: string[] }).hosts, ["api.example.com", "*.example.org:8443"]);
});

test("loadOrCreateMasterKey: env wins; otherwise a 0600 file is created once and reused", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-mk-"));
  try {
    const file = path.join(dir, "sub", "master.key");
    const k1 = loadOrCreateMasterKey({ file });
    assert.equal(k1.length, 32);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(loadOrCreateMasterKey({ file }), k1);
    const hex = "ab".repeat(32);
    assert.deepEqual(loadOrCreateMasterKey({ env: hex, file }), Buffer.from(hex, "hex"));
    assert.deepEqual(loadOrCreateMasterKey({ env: k1.toString("base64"), file: "/nonexistent/x" }), k1);
    assert.throws(() => parseMasterKey("too-short"));
    fs.chmodSync(file, 0o644);
    assert.throws(() => loadOrCreateMasterKey({ file }), /chmod 600/);
    const k2 = generateMasterKey();
    writeMasterKeyFile(file, k2);
    assert.deepEqual(loadOrCreateMasterKey({ file }), k2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("rotating the key file from another process needs no server restart", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-rot-"));
  try {
    const file = path.join(dir, "master.key");
    const dbFile = path.join(dir, "petri.db");
    const oldKey = loadOrCreateMasterKey({ file });
    // The running server re-reads the key file when it meets a key it does not know.
    const server = new SecretStore(new Database(dbFile), oldKey, { reloadKeys: () => readMasterKeyRing(file) });
    server.put("A", "s", { value: "value-aaaa", kind: "generic" });
    // The rotation command, as a separate store on the same database.
    const cli = new SecretStore(new Database(dbFile), oldKey);
    const newKey = generateMasterKey();
    const rotating = rotateMasterKeyFile(cli, file, newKey, 200);
    // During the rotation the server keeps working, and wraps new tenants under the new key.
    server.put("B", "s", { value: "value-bbbb", kind: "generic" });
    assert.equal(server.resolve("A", "s").value, "value-aaaa");
    await rotating;
    assert.equal(readMasterKeyRing(file).length, 1);
    assert.deepEqual(readMasterKeyRing(file)[0], newKey);
    assert.equal(server.resolve("A", "s").value, "value-aaaa");
    assert.equal(server.resolve("B", "s").value, "value-bbbb");
    const fresh = new SecretStore(new Database(dbFile), newKey);
    assert.equal(fresh.resolve("A", "s").value, "value-aaaa");
    assert.equal(fresh.resolve("B", "s").value, "value-bbbb");
    assert.equal(fresh.keysNotUnderCurrentMaster(), 0);
    assert.equal(code(() => new SecretStore(new Database(dbFile), oldKey).resolve("A", "s")), "INTERNAL");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("rotated values are kept (encrypted, last few) for redaction, and go with the secret", () => {
  const { store, db } = fresh();
  for (let i = 1; i <= 8; i++) store.put("A", "tok", { value: `value-number-${i}`, kind: "generic" });
  const r = store.resolve("A", "tok");
  assert.equal(r.value, "value-number-8");
  assert.deepEqual(r.previous, ["value-number-7", "value-number-6", "value-number-5", "value-number-4", "value-number-3"]);
  assert.equal(store.redactorFor("A").redact("old value-number-4 here").text, "old [REDACTED:tok] here");
  const raw = Buffer.concat((db.prepare("SELECT ciphertext FROM vault_secret_history").all() as { ciphertext: Buffer }[]).map((x) => x.ciphertext));
  assert.equal(raw.includes(Buffer.from("value-number-7")), false, "history is encrypted");
  store.delete("A", "tok");
  assert.equal((db.prepare("SELECT count(*) AS n FROM vault_secret_history").get() as { n: number }).n, 0);
});
