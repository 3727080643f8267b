import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTestServer, createSandbox, exec, putFile, tarOf, type TestServer } from "./helpers.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe("delta sync", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => { await t.close(); });

  async function sync(sb: string, files: Record<string, string>, opts: { send?: "missing" | "none"; deleteExtraneous?: boolean } = {}) {
    const manifest = { files: Object.entries(files).map(([path, c]) => ({ path, sha256: sha(c), size: Buffer.byteLength(c) })), delete_extraneous: opts.deleteExtraneous ?? true };
    const plan = await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: manifest });
    assert.equal(plan.status, 200, plan.text);
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest));
    if (opts.send !== "none") for (const p of plan.json.missing) form.append(p, new Blob([files[p]]), "f");
    const apply = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
    return { plan: plan.json, apply };
  }

  it("sends only what changed, deletes what went away, and reuses content across a tenant's sandboxes", async () => {
    const sb = await createSandbox(t);
    const files: Record<string, string> = {};
    for (let i = 0; i < 50; i++) files[`src/f${i}.py`] = `print(${i})\n`.repeat(100);
    const first = await sync(sb, files);
    assert.equal(first.apply.status, 200, first.apply.text);
    assert.equal(first.plan.missing.length, 50);
    assert.equal(first.apply.json.uploaded, 50);

    const again = await sync(sb, files);
    assert.deepEqual(again.plan.missing, []);
    assert.equal(again.apply.json.bytes_received, 0);
    assert.equal(again.apply.json.unchanged, 50);

    files["src/f3.py"] = "print('changed')\n";
    delete files["src/f4.py"];
    const one = await sync(sb, files);
    assert.deepEqual(one.plan.missing, ["src/f3.py"]);
    assert.deepEqual(one.plan.delete, ["src/f4.py"]);
    assert.equal(one.apply.json.bytes_received, Buffer.byteLength(files["src/f3.py"]));
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/src/f3.py`)).text, "print('changed')\n");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/src/f4.py`)).status, 404);

    const second = await createSandbox(t);
    const reuse = await sync(second, files);
    assert.deepEqual(reuse.plan.missing, [], "content the tenant already sent is not sent again");
    assert.equal(reuse.apply.json.reused, 49);
    assert.equal((await t.api("GET", `/v1/sandboxes/${second}/files/src/f7.py`)).text, files["src/f7.py"]);

    const other = (await t.api("POST", "/v1/keys", { body: { name: "other-tenant" } })).json.token;
    const foreign = (await t.api("POST", "/v1/sandboxes", { body: { language: "python" }, key: other })).json.id;
    const plan = await t.api("POST", `/v1/sandboxes/${foreign}/sync/plan`, { body: { files: [{ path: "a.py", sha256: sha(files["src/f7.py"]), size: 700 }] }, key: other });
    assert.deepEqual(plan.json.missing, ["a.py"], "another tenant cannot use content it never sent");
  });

  it("refuses content that does not match the manifest, and incomplete applies", async () => {
    const sb = await createSandbox(t);
    const manifest = { files: [{ path: "a.txt", sha256: sha("good"), size: 4 }] };
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest));
    form.append("a.txt", new Blob(["evil"]), "f");
    const r = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, "VALIDATION_ERROR");
    const missing = await sync(sb, { "b.txt": "unique-content-" + Date.now() }, { send: "none" });
    assert.equal(missing.apply.status, 400);
    assert.match(missing.apply.json.error.message, /missing content/);
    assert.equal((await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: { files: [{ path: "../x", sha256: sha("x"), size: 1 }] } })).json.error.code, "INVALID_PATH");
  });

  it("many small files travel as one tar part; a manifest entry outside it or a non-file entry is refused", async () => {
    const sb = await createSandbox(t);
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`pkg/m${i % 7}/f${i}.txt`] = `content ${i}\n`;
    const manifest = { files: Object.entries(files).map(([p, c]) => ({ path: p, sha256: sha(c), size: Buffer.byteLength(c), mode: p.endsWith("0.txt") ? 0o755 : 0o644 })), archive: "tar" };
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest));
    form.append("tar", new Blob([await tarOf(files)], { type: "application/x-tar" }), "files.tar");
    const r = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.uploaded, 300);
    const l = await t.api("GET", `/v1/sandboxes/${sb}/files`);
    assert.equal(l.json.files.filter((f: { type: string }) => f.type === "file").length, 300);
    assert.equal(l.json.files.find((f: { path: string }) => f.path === "pkg/m3/f10.txt").mode, 0o755);
    assert.equal(l.json.files.find((f: { path: string }) => f.path === "pkg/m4/f11.txt").mode, 0o644);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/pkg/m5/f299.txt`)).text, files["pkg/m5/f299.txt"]);

    const bad = new FormData();
    bad.append("manifest", JSON.stringify({ files: [{ path: "a.txt", sha256: sha("a"), size: 1 }], archive: "tar" }));
    bad.append("tar", new Blob([await tarOf({ "a.txt": "a", "b.txt": "b" })]), "x.tar");
    const rb = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: bad });
    assert.equal(rb.status, 400, rb.text);
    assert.match(rb.json.error.message, /b\.txt is not in the manifest/);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/a.txt`)).status, 404, "all files or none");
  });

  it("quotas count bytes on disk: a manifest that claims size 0 for a big reused blob puts nothing in (was: 12.6 MB in a 1 MB workspace)", async () => {
    const big = "z".repeat(3 << 20);
    const roomy = await createSandbox(t, { language: "python", limits: { workspace_mb: 20 } });
    assert.equal((await sync(roomy, { "big.bin": big })).apply.status, 200);
    const small = await createSandbox(t, { language: "python", limits: { workspace_mb: 1 } });
    const manifest = { files: [0, 1, 2, 3].map((i) => ({ path: `copy${i}.bin`, sha256: sha(big), size: 0 })) };
    const plan = await t.api("POST", `/v1/sandboxes/${small}/sync/plan`, { body: manifest });
    assert.deepEqual(plan.json.reusable, [], "a blob is only reused for the size it really has");
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest));
    const r = await t.api("POST", `/v1/sandboxes/${small}/sync/apply`, { raw: form });
    assert.equal(r.status, 400, r.text);
    // Declaring the true size is refused by the quota, which counts the blob's real bytes.
    const honest = { files: [0, 1, 2, 3].map((i) => ({ path: `copy${i}.bin`, sha256: sha(big), size: big.length })) };
    const f2 = new FormData();
    f2.append("manifest", JSON.stringify(honest));
    const r2 = await t.api("POST", `/v1/sandboxes/${small}/sync/apply`, { raw: f2 });
    assert.equal(r2.status, 413, r2.text);
    assert.equal(r2.json.error.code, "WORKSPACE_QUOTA_EXCEEDED");
    const l = await t.api("GET", `/v1/sandboxes/${small}/files`);
    assert.deepEqual(l.json.files, []);
  });

  it("target folder, delete_extraneous off by default, and files uploaded outside sync are known to it", async () => {
    const sb = await createSandbox(t);
    const files = { "main.py": "print(1)\n", "lib/u.py": "x = 1\n" };
    await putFile(t, sb, "proj/lib/u.py", files["lib/u.py"]);
    await putFile(t, sb, "proj/output.csv", "a,b\n");
    await putFile(t, sb, "elsewhere.txt", "keep");
    const manifest = (extra: Record<string, unknown> = {}) => ({ files: Object.entries(files).map(([p, c]) => ({ path: p, sha256: sha(c), size: Buffer.byteLength(c) })), target: "proj", ...extra });
    const plan = await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: manifest() });
    assert.deepEqual(plan.json.unchanged, ["lib/u.py"], "the uploaded file is known: not sent again");
    assert.deepEqual(plan.json.delete, [], "nothing is deleted unless asked");
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest()));
    for (const p of plan.json.missing) form.append(p, new Blob([files[p as keyof typeof files]]), "f");
    const r = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.uploaded, 1);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/proj/main.py`)).text, files["main.py"]);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/proj/output.csv`)).status, 200, "a run's output survives a re-sync");
    const del = await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: manifest({ delete_extraneous: true }) });
    assert.deepEqual(del.json.delete, ["output.csv"], "deletion stays inside the target");
  });

  it("the content store drops blobs no sandbox references, and stays within the tenant's quota", async () => {
    const key = (await t.api("POST", "/v1/keys", { body: { name: "blob-tenant" } })).json;
    const tenant = key.key.tenant_id;
    await t.api("PUT", `/v1/tenants/${tenant}/quotas`, { body: { max_workspace_mb: 2 } });
    const mk = async () => (await t.api("POST", "/v1/sandboxes", { body: { language: "python" }, key: key.token })).json.id;
    const blobDir = path.join(t.dataDir, "blobs", tenant);
    const blobs = () => fs.existsSync(blobDir) ? fs.readdirSync(blobDir).filter((d) => d.length === 2).flatMap((d) => fs.readdirSync(path.join(blobDir, d))) : [];
    const a = await mk();
    const one = "1".repeat(600_000);
    const syncAs = async (sb: string, files: Record<string, string>) => {
      const manifest = { files: Object.entries(files).map(([p, c]) => ({ path: p, sha256: sha(c), size: c.length })) };
      const form = new FormData();
      form.append("manifest", JSON.stringify(manifest));
      for (const [p, c] of Object.entries(files)) form.append(p, new Blob([c]), "f");
      return t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form, key: key.token });
    };
    assert.equal((await syncAs(a, { "one.bin": one })).status, 200);
    assert.deepEqual(blobs(), [sha(one)]);
    assert.ok([202, 204].includes((await t.api("DELETE", `/v1/sandboxes/${a}`, { key: key.token })).status));
    await t.server.sandboxes.settled();
    assert.deepEqual(blobs(), [], "a blob no live sandbox references is removed with the sandbox");
    // Blobs stay referenced while their sandbox lives, even when the workspace file is gone:
    // past the tenant's 2 MB the store keeps what fits, and the sync still succeeds.
    const b = await mk();
    for (const ch of ["x", "y", "w"]) {
      const r = await syncAs(b, { [`${ch}.bin`]: ch.repeat(900_000) });
      assert.equal(r.status, 200, r.text);
      assert.equal((await t.api("DELETE", `/v1/sandboxes/${b}/files/${ch}.bin`, { key: key.token })).status, 204);
    }
    assert.equal(blobs().length, 2, "the third blob did not fit");
    const total = blobs().reduce((n, s) => n + fs.statSync(path.join(blobDir, s.slice(0, 2), s)).size, 0);
    assert.ok(total <= 2 * 1024 * 1024, `content store holds ${total} bytes for a 2 MB tenant`);
  });

  it("a synced file is its blob hard-linked (one file made per file), but no two sandboxes ever share an inode: a chmod stays in its sandbox, a reused blob gets the sync's time", async () => {
    const key = (await t.api("POST", "/v1/keys", { body: { name: "link-tenant" } })).json;
    const tenant = key.key.tenant_id as string;
    const mk = async () => (await t.api("POST", "/v1/sandboxes", { body: { language: "python" }, key: key.token })).json.id as string;
    const files: Record<string, string> = { "app/main.py": `print('linked ${Date.now()}')\n`, "run.sh": `#!/bin/sh\necho ${Date.now()}\n` };
    const modes: Record<string, number> = { "app/main.py": 0o644, "run.sh": 0o755 };
    const syncTar = async (sb: string, mode: Record<string, number> = modes) => {
      const manifest = { files: Object.entries(files).map(([p, c]) => ({ path: p, sha256: sha(c), size: Buffer.byteLength(c), mode: mode[p] })), archive: "tar" };
      const plan = await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: manifest, key: key.token });
      const form = new FormData();
      form.append("manifest", JSON.stringify(manifest));
      const send = Object.fromEntries((plan.json.missing as string[]).map((p) => [p, files[p]]));
      if (Object.keys(send).length) form.append("tar", new Blob([await tarOf(send)]), "files.tar");
      const r = await t.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form, key: key.token });
      assert.equal(r.status, 200, r.text);
      return r.json;
    };
    const blob = (p: string) => path.join(t.dataDir, "blobs", tenant, sha(files[p]).slice(0, 2), sha(files[p]));
    const inWs = (sb: string, p: string) => path.join(t.dataDir, "workspaces", sb, p);
    const a = await mk();
    assert.equal((await syncTar(a)).uploaded, 2);
    const owner = fs.statSync(path.join(t.dataDir, "workspaces", a));
    for (const p of Object.keys(files)) {
      const w = fs.statSync(inWs(a, p));
      assert.equal(w.ino, fs.statSync(blob(p)).ino, `${p} is the blob, linked`);
      assert.equal(w.nlink, 2);
      assert.equal(w.mode & 0o777, modes[p]);
      assert.deepEqual([w.uid, w.gid], [owner.uid, owner.gid], "owned like every workspace file");
      assert.equal(fs.readFileSync(inWs(a, p), "utf8"), files[p]);
    }
    // A second sandbox gets the same content from the store, as its own copy: the blob is linked already.
    const b = await mk();
    assert.equal((await syncTar(b)).reused, 2);
    const bMain = fs.statSync(inWs(b, "app/main.py"));
    assert.notEqual(bMain.ino, fs.statSync(blob("app/main.py")).ino, "a blob linked into one sandbox is copied into another");
    assert.equal(fs.statSync(inWs(b, "run.sh")).mode & 0o777, 0o755);
    // Making main.py executable in sandbox a (a re-sync with the new mode) leaves b's alone.
    await syncTar(a, { ...modes, "app/main.py": 0o755 });
    assert.equal(fs.statSync(inWs(a, "app/main.py")).mode & 0o777, 0o755);
    assert.equal(fs.statSync(inWs(b, "app/main.py")).mode & 0o777, 0o644, "a chmod in one sandbox does not reach another's file");
    // Once no workspace links a blob, the next sandbox may link it; its time is the sync's, not the
    // blob's (a build tool comparing times must see the synced file as new).
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${a}/files/run.sh`, { key: key.token })).status, 204);
    const old = new Date(Date.now() - 86_400_000);
    fs.utimesSync(blob("run.sh"), old, old);
    const c = await mk();
    const before = Date.now();
    assert.equal((await syncTar(c)).reused, 2);
    const cRun = fs.statSync(inWs(c, "run.sh"));
    assert.equal(cRun.ino, fs.statSync(blob("run.sh")).ino, "an unlinked blob is linked again");
    assert.ok(cRun.mtimeMs >= before - 1000, `the linked file's mtime ${new Date(cRun.mtimeMs).toISOString()} is the sync's`);
    assert.equal((await t.api("GET", `/v1/sandboxes/${c}/files/run.sh`, { key: key.token })).text, files["run.sh"]);
  });

  it("deleting a sandbox of thousands of files: gone for the API and from its place at once, its bytes and record after, never removed twice", async () => {
    const sb = await createSandbox(t);
    const dir = path.join(t.dataDir, "workspaces", sb);
    for (let d = 0; d < 30; d++) {
      fs.mkdirSync(path.join(dir, `d${d}`));
      for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(dir, `d${d}`, `f${i}`), "x");
    }
    const trash = path.join(t.dataDir, "workspaces", ".trash");
    // The removal of 3,000 files outlasts a zero wait: the call answers "not yet" (the API's 202).
    const done = await t.server.sandboxes.destroy(sb, { waitMs: 0 });
    assert.equal(done, false, "the call did not wait for the bytes");
    assert.equal(fs.existsSync(dir), false, "the workspace left its place at once");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 404);
    assert.ok(t.server.db.prepare("SELECT id FROM sandboxes WHERE id = ?").get(sb), "the record stays while the bytes are there");
    // The janitor running meanwhile leaves a deletion under way to itself.
    assert.deepEqual(t.server.sandboxes.pendingDeletions().filter((id) => id === sb), []);
    await t.server.reapNow();
    await t.server.sandboxes.settled();
    assert.equal(t.server.db.prepare("SELECT id FROM sandboxes WHERE id = ?").get(sb), undefined, "the record went with the bytes");
    assert.deepEqual(fs.readdirSync(trash), [], "nothing left in the trash");
  });
});

/** The quick check's digest, computed as the API documents it (independently of the server's code). */
const digestOf = (entries: { path: string; sha256: string; size: number; mode?: number }[]) =>
  sha(entries.map((e) => `${e.path}\n${e.sha256}\n${e.size}\n${e.mode ?? ""}\n`).join(""));
const entriesOf = (files: Record<string, string>, modes: Record<string, number> = {}) =>
  Object.entries(files).map(([p, c]) => ({ path: p, sha256: sha(c), size: Buffer.byteLength(c), mode: modes[p] ?? 0o644 }));

/** Plan (quick check or full) and apply against one server, as the SDKs do it. */
function syncClient(t: () => TestServer, key: () => string) {
  const api = (m: string, p: string, o: Parameters<TestServer["api"]>[2] = {}) => t().api(m, p, { key: key(), ...o });
  return {
    async quick(sb: string, entries: ReturnType<typeof entriesOf>, extra: Record<string, unknown> = {}): Promise<boolean> {
      const r = await api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: { manifest_sha256: digestOf(entries), ...extra } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual([r.json.missing, r.json.reusable, r.json.delete], [[], [], []], "a quick check plans nothing");
      return r.json.up_to_date;
    },
    async plan(sb: string, entries: ReturnType<typeof entriesOf>) {
      const r = await api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: { files: entries } });
      assert.equal(r.status, 200, r.text);
      return r.json as { missing: string[]; reusable: string[]; unchanged: string[]; delete: string[]; up_to_date: boolean };
    },
    async apply(sb: string, files: Record<string, string>, entries: ReturnType<typeof entriesOf>, extra: Record<string, unknown> = {}) {
      const form = new FormData();
      form.append("manifest", JSON.stringify({ files: entries, ...extra }));
      for (const [p, c] of Object.entries(files)) form.append(p, new Blob([c]), "f");
      const r = await api("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
      assert.equal(r.status, 200, r.text);
      return r.json;
    },
  };
}

describe("sync's quick check (manifest_sha256): up to date only while nothing changed the workspace", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => { await t.close(); });

  it("uploads, deletes, run commits, other syncs and chmods each end it; a full plan after each is right, and a sync puts the files back", async () => {
    const c = syncClient(() => t, () => t.adminKey);
    const sb = await createSandbox(t);
    const files: Record<string, string> = { "a.py": "print('a')\n", "lib/b.py": "B = 1\n", "c.txt": "c\n" };
    const entries = entriesOf(files);
    assert.equal(await c.quick(sb, entries), false, "never synced");
    await c.apply(sb, files, entries);
    assert.equal(await c.quick(sb, entries), true, "just synced");
    assert.equal(await c.quick(sb, entries, { delete_extraneous: true }), false, "the sync kept other files: it cannot vouch there are none");
    assert.equal(await c.quick(sb, entries, { target: "sub" }), false, "another target folder");
    assert.equal(await c.quick(sb, entriesOf({ ...files, "c.txt": "C\n" })), false, "another manifest");
    // A run that changes nothing commits nothing: the mark holds.
    assert.equal((await exec(t, sb, { code: "print(open('a.py').read())" })).json.stdout, "print('a')\n\n");
    assert.equal(await c.quick(sb, entries), true, "a run that wrote nothing leaves it up to date");

    /** After a change: the quick check says no, the full plan finds exactly `changed`, a sync restores it. */
    const expectChanged = async (what: string, changed: string[]) => {
      assert.equal(await c.quick(sb, entries), false, `after ${what}, the quick check says not up to date`);
      const plan = await c.plan(sb, entries);
      assert.deepEqual([...plan.missing, ...plan.reusable].sort(), changed, `after ${what}, the full plan finds it`);
      await c.apply(sb, Object.fromEntries(plan.missing.map((p) => [p, files[p]])), entries);
      for (const p of changed) assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/${p}`)).text, files[p], `${p} is back after ${what}`);
      assert.equal(await c.quick(sb, entries), true, `synced again after ${what}`);
    };
    assert.equal((await putFile(t, sb, "a.py", "print('A')\n")).status, 201);
    await expectChanged("an upload over a synced file", ["a.py"]);
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}/files/lib/b.py`)).status, 204);
    await expectChanged("a delete", ["lib/b.py"]);
    const run = await exec(t, sb, { code: "open('c.txt', 'w').write('c\\n' * 2)" });
    assert.equal(run.json.committed, true, run.text);
    await expectChanged("a run's commit", ["c.txt"]);
    // A run that rewrites a file with the bytes it had changes nothing (its change set is empty).
    const same = await exec(t, sb, { code: "open('c.txt', 'w').write('c\\n')" });
    assert.deepEqual(same.json.files, { created: [], modified: [], deleted: [] }, same.text);
    assert.equal(await c.quick(sb, entries), true, "a run that rewrote a file with the same bytes changed nothing");
    assert.equal((await c.plan(sb, entries)).up_to_date, true, "and the full comparison agrees");
    // An upload elsewhere changes the workspace too: the quick check is conservative.
    assert.equal((await putFile(t, sb, "other/x.txt", "x")).status, 201);
    assert.equal(await c.quick(sb, entries), false, "after an upload elsewhere");
    assert.equal((await c.plan(sb, entries)).up_to_date, true);

    // Another client's sync (one more file, one file made executable) ends the first manifest's mark.
    const files2 = { ...files, "d.txt": "d\n" };
    const entries2 = entriesOf(files2, { "a.py": 0o755 });
    await c.apply(sb, { "d.txt": "d\n" }, entries2);
    assert.equal(await c.quick(sb, entries), false, "the workspace now holds another manifest");
    assert.equal(await c.quick(sb, entries2), true, "the one just synced");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files?recursive=true`)).json.files.find((f: { path: string }) => f.path === "a.py").mode, 0o755);
    // Back to the first manifest (a.py loses its executable bit: a chmod, nothing sent).
    const back = await c.plan(sb, entries);
    assert.equal(back.up_to_date, false, "a mode differs");
    await c.apply(sb, {}, entries, { delete_extraneous: true });
    assert.equal(await c.quick(sb, entries, { delete_extraneous: true }), true, "a sync that deleted extraneous files vouches for their absence");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/d.txt`)).status, 404);
    const metrics = (await t.api("GET", "/metrics")).text;
    assert.match(metrics, /petri_sync_plans_total\{kind="quick_hit"\} [1-9]/);
    assert.match(metrics, /petri_sync_plans_total\{kind="quick_miss"\} [1-9]/);
  });

  it("refuses a plan without files or a digest, and a malformed digest", async () => {
    const sb = await createSandbox(t);
    for (const body of [{}, { manifest_sha256: "abc" }]) {
      const r = await t.api("POST", `/v1/sandboxes/${sb}/sync/plan`, { body });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.code, "VALIDATION_ERROR");
    }
  });
});

describe("the server's hash cache survives a restart", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-sync-restart-"));
  const env = { PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: `pk_test_restart_${Date.now().toString(36)}` };
  let t: TestServer | undefined;
  after(async () => {
    await t?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const hashed = async () => Number(/^petri_workspace_files_hashed_total (\d+)/m.exec((await t!.api("GET", "/metrics")).text)?.[1]);

  it("the first plan after a restart reads no unchanged file, and finds the one changed while the server was down (same size, same mtime)", async () => {
    t = await startTestServer(env);
    const c = syncClient(() => t!, () => env.PETRI_ADMIN_TOKEN);
    const sb = await createSandbox(t, undefined, env.PETRI_ADMIN_TOKEN);
    const files: Record<string, string> = {};
    for (let i = 0; i < 40; i++) files[`pkg/m${i}.py`] = `# module ${i}\nVALUE = ${1000 + i}\n`;
    const entries = entriesOf(files);
    await c.apply(sb, files, entries);
    // The same bytes uploaded again: a file of its own (a synced file shares its inode with the
    // content store's blob, which an in-place write below would change too).
    assert.equal((await putFile(t, sb, "pkg/m7.py", files["pkg/m7.py"], env.PETRI_ADMIN_TOKEN)).status, 201);
    assert.equal((await c.plan(sb, entries)).unchanged.length, 40);
    assert.equal(await hashed(), 0, "files a sync or an upload wrote are known without reading them");
    await t.close();
    t = undefined;

    // While the server is down, one file gets other bytes of the same length in place (same
    // inode), its mtime put back: only its ctime tells.
    const victim = path.join(dataDir, "workspaces", sb, "pkg", "m7.py");
    const st = fs.statSync(victim, { bigint: true });
    const ref = path.join(dataDir, "mtime-ref");
    assert.equal(spawnSync("cp", ["-p", victim, ref]).status, 0);
    const fd = fs.openSync(victim, "r+");
    fs.writeSync(fd, Buffer.from(files["pkg/m7.py"].replace("1007", "9999")), 0, undefined, 0);
    fs.closeSync(fd);
    // touch -r sets the mtime to the nanosecond (utimes from JavaScript numbers would not).
    assert.equal(spawnSync("touch", ["-m", "-r", ref, victim]).status, 0);
    const now = fs.statSync(victim, { bigint: true });
    assert.deepEqual([now.ino, now.size, now.mtimeNs], [st.ino, st.size, st.mtimeNs], "same inode, size and mtime");
    assert.notEqual(now.ctimeNs, st.ctimeNs);

    t = await startTestServer(env);
    assert.equal(await c.quick(sb, entries), false, "a new process vouches for nothing");
    const plan = await c.plan(sb, entries);
    assert.deepEqual([...plan.missing, ...plan.reusable], ["pkg/m7.py"], "the file changed while the server was down is found");
    assert.equal(plan.unchanged.length, 39);
    assert.equal(await hashed(), 1, "only the changed file was read: the others' hashes came from the store");
    await c.apply(sb, {}, entries);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/pkg/m7.py`, { key: env.PETRI_ADMIN_TOKEN })).text, files["pkg/m7.py"]);
  });
});
