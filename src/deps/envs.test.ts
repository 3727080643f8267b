import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openDatabase } from "../store/db.js";
import { EnvStore } from "./envs.js";

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-envs-"));
  const db = openDatabase(dir);
  return { dir, db, store: new EnvStore(db, path.join(dir, "deps")) };
}

function install(store: EnvStore, tenant: string, lock: string, bytes: number) {
  const tmp = store.makeTemp(tenant);
  fs.writeFileSync(path.join(tmp, "payload"), Buffer.alloc(bytes));
  const id = EnvStore.envId("img", "python", lock);
  return store.commit(tenant, tmp, { id, ecosystem: "python", image: "img", lockSha256: "x", sizeBytes: bytes, packages: [{ name: lock, version: "1", hash: "", source: "" }] }, lock);
}

test("an environment appears only by rename of a finished install; the same lock is kept once", () => {
  const { dir, db, store } = setup();
  try {
    const a = install(store, "tn_a", "a==1", 10);
    assert.ok(fs.existsSync(path.join(a.dir, "petri-lock.json")));
    const again = install(store, "tn_a", "a==1", 10);
    assert.equal(again.id, a.id);
    assert.deepEqual(fs.readdirSync(path.join(store.root, "tn_a")), [a.id]);
    store.mapRequest("tn_a", "k1", a.id);
    assert.equal(store.lookupRequest("tn_a", "k1")?.id, a.id);
    assert.equal(store.lookupRequest("tn_b", "k1"), null, "another tenant does not see it");
    // A half install left by a crash is swept, and a row whose directory vanished is forgotten.
    store.makeTemp("tn_a");
    assert.equal(store.sweepTemps(), 1);
    fs.rmSync(a.dir, { recursive: true });
    assert.equal(store.lookupRequest("tn_a", "k1"), null);
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("quota eviction removes least recently used environments no run is using", () => {
  const { dir, db, store } = setup();
  try {
    const a = install(store, "tn_a", "a==1", 100);
    const b = install(store, "tn_a", "b==1", 100);
    db.prepare("UPDATE dep_envs SET last_used_at = 1 WHERE id = ?").run(a.id);
    db.prepare("UPDATE dep_envs SET last_used_at = 2 WHERE id = ?").run(b.id);
    const release = store.acquire(store.get("tn_a", a.id)!);
    const c = install(store, "tn_a", "c==1", 100);
    // a is older but in use: b goes.
    assert.deepEqual(store.evictToFit("tn_a", 250, c.id), [b.id]);
    assert.equal(fs.existsSync(b.dir), false);
    release();
    db.prepare("UPDATE dep_envs SET last_used_at = 1 WHERE id = ?").run(a.id);
    assert.deepEqual(store.evictUnused(5).map((e) => e.id), [a.id]);
    assert.deepEqual(store.list("tn_a").map((e) => e.id), [c.id]);
    assert.equal(store.tenantUsage("tn_a"), 100);
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
