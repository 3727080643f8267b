import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { openDatabase, type DB } from "../store/db.js";
import { WorkspaceStore } from "./workspaces.js";

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const sha = (s: string) => createHash("sha256").update(s).digest("hex");

describe("the workspace hash cache in the store", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hash-cache-"));
  const root = path.join(dir, "workspaces");
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const open = (): { db: DB; ws: WorkspaceStore } => {
    const db = openDatabase(dir);
    return { db, ws: new WorkspaceStore({ root, uid, gid, db }) };
  };
  const rows = (db: DB, sb: string) => (db.prepare("SELECT COUNT(*) AS n FROM file_hashes WHERE sandbox_id = ?").get(sb) as { n: number }).n;
  const state = async (ws: WorkspaceStore, sb: string) => {
    const s = await ws.syncState(sb, []);
    return Object.fromEntries([...s.entries].filter(([, e]) => e.type === "file").map(([p, e]) => [p, e.sha256]));
  };

  it("a re-opened store reads no unchanged file, re-reads one changed in place (same size and mtime), forgets removed files and deleted sandboxes", async () => {
    let { db, ws } = open();
    db.prepare("INSERT INTO tenants(id, name, created_at) VALUES ('t1', 't1', 0)").run();
    for (const id of ["sb_a", "sb_b"]) {
      db.prepare("INSERT INTO sandboxes(id, tenant_id, language, runtime, status, limits_json, created_at, last_active_at, idle_timeout_ms, ttl_ms, expires_at) VALUES (?, 't1', 'python', 'bwrap', 'ready', '{}', 0, 0, 0, 0, 0)").run(id);
      ws.create(id);
    }
    const files: Record<string, string> = {};
    for (let i = 0; i < 20; i++) files[`d${i % 3}/f${i}.txt`] = `content ${i} ${"x".repeat(i)}`;
    // Written behind the server's back: the first look reads them all.
    for (const [p, c] of Object.entries(files)) {
      fs.mkdirSync(path.join(root, "sb_a", path.dirname(p)), { recursive: true });
      fs.writeFileSync(path.join(root, "sb_a", p), c);
    }
    // A commit knows what it wrote.
    ws.commit("sb_b", [{ parts: ["up.txt"], staged: await ws.stage(Readable.from([Buffer.from("uploaded")]), 1 << 20) }], 1 << 30);
    assert.deepEqual(await state(ws, "sb_a"), Object.fromEntries(Object.entries(files).map(([p, c]) => [p, sha(c)])));
    assert.equal(ws.filesHashed, 20);
    assert.deepEqual(await state(ws, "sb_b"), { "up.txt": sha("uploaded") });
    assert.equal(ws.filesHashed, 20, "a committed file is known");
    await state(ws, "sb_a");
    assert.equal(ws.filesHashed, 20, "nothing read twice");
    ws.flush();
    db.close();

    // Changed while "the server was down": in place, same length, mtime put back.
    const victim = path.join(root, "sb_a", "d1/f4.txt");
    const st = fs.statSync(victim, { bigint: true });
    assert.equal(spawnSync("cp", ["-p", victim, path.join(dir, "ref")]).status, 0);
    const fd = fs.openSync(victim, "r+");
    fs.writeSync(fd, "CONTENT", 0);
    fs.closeSync(fd);
    // touch -r puts the mtime back to the nanosecond (utimes from JavaScript numbers would not).
    assert.equal(spawnSync("touch", ["-m", "-r", path.join(dir, "ref"), victim]).status, 0);
    const now = fs.statSync(victim, { bigint: true });
    assert.deepEqual([now.ino, now.size, now.mtimeNs], [st.ino, st.size, st.mtimeNs], "only the ctime tells");
    fs.rmSync(path.join(root, "sb_a", "d2/f5.txt"));

    ({ db, ws } = open());
    const after = await state(ws, "sb_a");
    assert.equal(after["d1/f4.txt"], sha(fs.readFileSync(victim, "utf8")), "the changed file's new content is hashed");
    assert.notEqual(after["d1/f4.txt"], sha(files["d1/f4.txt"]));
    assert.equal(ws.filesHashed, 1, "only the changed file was read");
    assert.equal(after["d0/f3.txt"], sha(files["d0/f3.txt"]));
    await new Promise((r) => setImmediate(r));
    assert.equal(rows(db, "sb_a"), 19, "the removed file's entry is pruned, the changed one replaced");
    assert.equal(rows(db, "sb_b"), 1);
    await ws.destroy("sb_b");
    await new Promise((r) => setImmediate(r));
    assert.equal(rows(db, "sb_b"), 0, "a deleted sandbox's entries go with it");
    // Rows of a sandbox the store no longer knows are dropped when the cache opens.
    db.prepare("DELETE FROM sandboxes WHERE id = 'sb_a'").run();
    ws.flush();
    db.close();
    ({ db, ws } = open());
    assert.equal(rows(db, "sb_a"), 0);
    db.close();
  });
});
