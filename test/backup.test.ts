import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { createServer, type PetriServer } from "../src/server.js";
import { startTestServer, tarOf, type TestServer } from "./helpers.js";

const BIN = path.resolve("bin/petri.js");

function petri(args: string[], env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("backup while runs are in flight, restore on a second server", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "petri-backup-"));
  let a: TestServer | undefined;
  let b: PetriServer | undefined;
  after(async () => {
    await a?.close();
    await b?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("same sandboxes, files, run records; secrets decrypt; the audit log verifies", async () => {
    a = await startTestServer({ PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "0" });
    const key = await a.api("POST", "/v1/keys", { body: { name: "backup-tenant" } });
    assert.equal(key.status, 201, key.text);
    const token = key.json.token as string;
    const tenant = key.json.key.tenant_id as string;
    assert.equal((await a.api("PUT", "/v1/secrets/db_password", { key: token, body: { value: "s3cret-value-xyz", kind: "generic" } })).status, 201);
    const sb = (await a.api("POST", "/v1/sandboxes", { key: token, body: { language: "python" } })).json.id as string;
    const put = await a.api("PUT", `/v1/sandboxes/${sb}/files/data.txt`, { key: token, raw: "hello backup", headers: { "content-type": "application/octet-stream" } });
    assert.equal(put.status, 201, put.text);
    // A synced file is its content-store blob hard-linked into the workspace: stored once.
    const synced = `print('synced ${Date.now()}')\n`;
    const syncedSha = createHash("sha256").update(synced).digest("hex");
    const form = new FormData();
    form.append("manifest", JSON.stringify({ files: [{ path: "lib/synced.py", sha256: syncedSha, size: Buffer.byteLength(synced) }], archive: "tar" }));
    form.append("tar", new Blob([await tarOf({ "lib/synced.py": synced })]), "files.tar");
    const applied = await a.api("POST", `/v1/sandboxes/${sb}/sync/apply`, { key: token, raw: form });
    assert.equal(applied.status, 200, applied.text);
    const linkedIn = (root: string, blobs: string) => {
      const w = fs.statSync(path.join(root, sb, "lib", "synced.py"));
      const bl = fs.statSync(path.join(blobs, tenant, syncedSha.slice(0, 2), syncedSha));
      return { same: w.ino === bl.ino, nlink: w.nlink, content: fs.readFileSync(path.join(root, sb, "lib", "synced.py"), "utf8") };
    };
    assert.deepEqual(linkedIn(path.join(a.dataDir, "workspaces"), path.join(a.dataDir, "blobs")), { same: true, nlink: 2, content: synced });
    const done = await a.api("POST", `/v1/sandboxes/${sb}/exec`, { key: token, body: { code: "print(open('data.txt').read())" } });
    assert.equal(done.json.stdout, "hello backup\n", done.text);

    // Runs in flight while the backup is taken: they write into the workspace as it is copied.
    const inflight = [0, 1].map((i) => a!.api("POST", `/v1/sandboxes/${sb}/exec`, {
      key: token, body: { code: `import time\nfor j in range(20):\n    open('busy${i}.txt', 'a').write('x' * 1000)\n    time.sleep(0.1)\nprint('done')` },
    }));
    await new Promise((r) => setTimeout(r, 700));
    const dir = path.join(tmp, "backup");
    const bk = petri(["backup", dir], { PETRI_DATA_DIR: a.dataDir });
    assert.equal(bk.status, 0, bk.out);
    for (const r of await Promise.all(inflight)) assert.equal(r.json.stdout, "done\n", r.text);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));
    assert.deepEqual(manifest.contents.sort(), ["audit", "blobs", "master.key", "petri.db", "workspaces"]);
    assert.equal(fs.statSync(path.join(dir, "master.key")).mode & 0o777, 0o600);
    assert.deepEqual(linkedIn(path.join(dir, "workspaces"), path.join(dir, "blobs")), { same: true, nlink: 2, content: synced }, "the backup keeps the hard link: the file is stored once");

    // A backup never overwrites, a restore never replaces a live data directory.
    assert.notEqual(petri(["backup", dir], { PETRI_DATA_DIR: a.dataDir }).status, 0);
    assert.match(petri(["restore", dir], { PETRI_DATA_DIR: a.dataDir }).out, /not empty/);

    const bData = path.join(tmp, "second");
    const rs = petri(["restore", dir], { PETRI_DATA_DIR: bData });
    assert.equal(rs.status, 0, rs.out);
    b = await createServer(loadConfig({ PETRI_DATA_DIR: bData, PETRI_PORT: "0", PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "0", PETRI_LOG_LEVEL: "silent" }), { logger: pino({ level: "silent" }) });
    assert.notEqual(b.instanceId, a.server.instanceId, "a restored server reaps only its own containers");
    const bApi = (method: string, p: string, body?: unknown) => b!.app.inject({ method: method as "GET", url: p, headers: { authorization: `Bearer ${token}` }, ...(body ? { payload: body as object } : {}) });

    assert.equal((await bApi("GET", `/v1/sandboxes/${sb}`)).statusCode, 200);
    assert.equal((await bApi("GET", `/v1/sandboxes/${sb}/files/data.txt`)).body, "hello backup");
    assert.deepEqual(linkedIn(path.join(bData, "workspaces"), path.join(bData, "blobs")), { same: true, nlink: 2, content: synced }, "the restore recreates the hard link");
    assert.equal((await bApi("GET", `/v1/sandboxes/${sb}/files/lib/synced.py`)).body, synced);
    // The restored server is a new process: its first sync plan compares in full (and finds the file).
    const quick = JSON.parse((await bApi("POST", `/v1/sandboxes/${sb}/sync/plan`, { manifest_sha256: createHash("sha256").update(`lib/synced.py\n${syncedSha}\n${Buffer.byteLength(synced)}\n\n`).digest("hex") })).body);
    assert.equal(quick.up_to_date, false, JSON.stringify(quick));
    const full = JSON.parse((await bApi("POST", `/v1/sandboxes/${sb}/sync/plan`, { files: [{ path: "lib/synced.py", sha256: syncedSha, size: Buffer.byteLength(synced) }] })).body);
    assert.deepEqual([full.unchanged, full.up_to_date], [["lib/synced.py"], true], JSON.stringify(full));
    const history = JSON.parse((await bApi("GET", `/v1/sandboxes/${sb}/exec`)).body);
    assert.ok(JSON.stringify(history).includes(done.json.id), "run records survive");
    const again = JSON.parse((await bApi("POST", `/v1/sandboxes/${sb}/exec`, { code: "print(open('data.txt').read())" })).body);
    assert.equal(again.stdout, "hello backup\n", JSON.stringify(again));
    assert.equal(b.vault.resolve(tenant, "db_password").value, "s3cret-value-xyz", "the restored master key decrypts the secret");

    await b.close();
    b = undefined;
    const verify = petri(["audit", "verify", path.join(bData, "audit")], {});
    assert.equal(verify.status, 0, verify.out);
  });
});

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe("backup and restore keep a synced file one file: its blob linked into the workspace", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "petri-backup-links-"));
  let a: TestServer | undefined;
  let b: PetriServer | undefined;
  after(async () => {
    await a?.close();
    await b?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("one copy in the backup; restored as blob and workspace file sharing an inode; sync, runs and later writes behave as before", async () => {
    a = await startTestServer({ PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "0" });
    const key = (await a.api("POST", "/v1/keys", { body: { name: "links-tenant" } })).json;
    const token = key.token as string;
    const tenant = key.key.tenant_id as string;
    const files: Record<string, string> = {
      "app/main.py": `print(open('data/a.txt').read(), end='')\n`,
      "data/a.txt": `alpha ${Date.now()}\n`.repeat(2000),
      "run.sh": `#!/bin/sh\necho ${Date.now()}\n`,
    };
    const modes: Record<string, number> = { "app/main.py": 0o644, "data/a.txt": 0o644, "run.sh": 0o755 };
    type Call = (method: string, p: string, opts?: { body?: unknown; raw?: FormData | string; headers?: Record<string, string> }) => Promise<{ status: number; json: any; text: string }>;
    const syncTar = async (call: Call, sb: string, want: Record<string, string>) => {
      const manifest = { files: Object.entries(want).map(([p, c]) => ({ path: p, sha256: sha(c), size: Buffer.byteLength(c), mode: modes[p] ?? 0o644 })), archive: "tar" };
      const plan = await call("POST", `/v1/sandboxes/${sb}/sync/plan`, { body: manifest });
      assert.equal(plan.status, 200, plan.text);
      const form = new FormData();
      form.append("manifest", JSON.stringify(manifest));
      const send = Object.fromEntries((plan.json.missing as string[]).map((p) => [p, want[p]]));
      if (Object.keys(send).length) form.append("tar", new Blob([await tarOf(send)]), "files.tar");
      const r = await call("POST", `/v1/sandboxes/${sb}/sync/apply`, { raw: form });
      assert.equal(r.status, 200, r.text);
      return { plan: plan.json, apply: r.json };
    };
    const callA: Call = (m, p, o = {}) => a!.api(m, p, { ...o, key: token });
    const sb = (await callA("POST", "/v1/sandboxes", { body: { language: "python" } })).json.id as string;
    await syncTar(callA, sb, files);
    const blobIn = (root: string, p: string) => path.join(root, "blobs", tenant, sha(files[p]).slice(0, 2), sha(files[p]));
    const wsIn = (root: string, p: string) => path.join(root, "workspaces", sb, p);
    for (const p of Object.keys(files)) {
      const w: fs.Stats = fs.statSync(wsIn(a.dataDir, p));
      assert.deepEqual([w.ino, w.nlink], [fs.statSync(blobIn(a.dataDir, p)).ino, 2], `${p} is its blob, linked (the layout a backup must keep)`);
    }

    const dir = path.join(tmp, "backup");
    const bk = petri(["backup", dir], { PETRI_DATA_DIR: a.dataDir });
    assert.equal(bk.status, 0, bk.out);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));
    assert.equal(manifest.linked_files, Object.keys(files).length);
    // One copy: each synced file's bytes are one inode in the backup, named by both paths.
    let stored = 0;
    const seen = new Set<number>();
    for (const p of Object.keys(files)) {
      const w = fs.statSync(wsIn(dir, p));
      const bl = fs.statSync(blobIn(dir, p));
      assert.equal(w.ino, bl.ino, `${p}: the backup's workspace file is its blob's copy, linked`);
      assert.equal(w.nlink, 2);
      assert.equal(w.mode & 0o777, modes[p]);
      assert.equal(fs.readFileSync(wsIn(dir, p), "utf8"), files[p]);
      for (const st of [w, bl]) if (!seen.has(st.ino)) { seen.add(st.ino); stored += st.size; }
    }
    const content = Object.values(files).reduce((n, c) => n + Buffer.byteLength(c), 0);
    assert.equal(stored, content, "the synced bytes are stored once, not twice");

    const bData = path.join(tmp, "restored");
    const rs = petri(["restore", dir], { PETRI_DATA_DIR: bData });
    assert.equal(rs.status, 0, rs.out);
    const owner = fs.statSync(path.join(a.dataDir, "workspaces", sb));
    for (const p of Object.keys(files)) {
      const w = fs.statSync(wsIn(bData, p));
      assert.deepEqual([w.ino, w.nlink], [fs.statSync(blobIn(bData, p)).ino, 2], `${p}: restored as one file, the blob linked into the workspace, as on the original`);
      assert.equal(w.mode & 0o777, modes[p]);
      assert.deepEqual([w.uid, w.gid], [owner.uid, owner.gid]);
      assert.ok(fs.readFileSync(wsIn(bData, p)).equals(Buffer.from(files[p])), `${p} reads back byte-identical`);
    }

    b = await createServer(loadConfig({ PETRI_DATA_DIR: bData, PETRI_PORT: "0", PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "0", PETRI_LOG_LEVEL: "silent" }), { logger: pino({ level: "silent" }) });
    await b.app.listen({ host: "127.0.0.1", port: 0 });
    const addr = b.app.server.address();
    const bUrl = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
    const callB: Call = async (method, p, o = {}) => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...(o.headers ?? {}) };
      let body: RequestInit["body"] = o.raw;
      if (o.body !== undefined) { body = JSON.stringify(o.body); headers["content-type"] = "application/json"; }
      const res = await fetch(bUrl + p, { method, headers, body });
      const text = await res.text();
      let json: any;
      try { json = JSON.parse(text); } catch { /* not JSON */ }
      return { status: res.status, json, text };
    };

    // A sync on the restored server knows the files (nothing to send) and adds a new one.
    const more = { ...files, "data/b.txt": `beta ${Date.now()}\n` };
    const again = await syncTar(callB, sb, more);
    assert.deepEqual(again.plan.missing, ["data/b.txt"], "the restored files are known to the sync as they are");
    assert.equal(fs.statSync(wsIn(bData, "data/a.txt")).nlink, 2, "an unchanged file stays linked to its blob");

    // A run reads them and overwrites one in place: no conflict (nothing changed under it), and
    // the write lands in the workspace as a new file, never in the shared blob.
    const run = await callB("POST", `/v1/sandboxes/${sb}/exec`, { body: { code: "import subprocess\nprint(subprocess.run(['python3', 'app/main.py'], capture_output=True, text=True).stdout == open('data/a.txt').read())\nopen('data/a.txt', 'w').write('changed by a run')\nprint(open('data/b.txt').read(), end='')" } });
    assert.equal(run.status, 200, run.text);
    assert.equal(run.json.exit_code, 0, run.text);
    assert.equal(run.json.stdout, `True\n${more["data/b.txt"]}`, run.text);
    assert.deepEqual(run.json.conflicts ?? [], [], "the run's conflict check is not tripped by the restore");
    assert.equal(run.json.committed, true, run.text);
    assert.equal((await callB("GET", `/v1/sandboxes/${sb}/files/data/a.txt`)).text, "changed by a run");
    assert.equal(sha(fs.readFileSync(blobIn(bData, "data/a.txt"))), sha(files["data/a.txt"]), "the blob keeps its bytes");
    assert.equal(fs.statSync(blobIn(bData, "data/a.txt")).nlink, 1, "the workspace got its own file");
    // An upload replaces a linked file the same way.
    const put = await callB("PUT", `/v1/sandboxes/${sb}/files/run.sh`, { raw: "echo uploaded\n", headers: { "content-type": "application/octet-stream" } });
    assert.equal(put.status, 201, put.text);
    assert.equal(sha(fs.readFileSync(blobIn(bData, "run.sh"))), sha(files["run.sh"]), "an upload leaves the blob alone");
    // A second sandbox gets a blob still linked into the first as its own copy, and links a free one.
    const sb2 = (await callB("POST", "/v1/sandboxes", { body: { language: "python" } })).json.id as string;
    const r2 = await syncTar(callB, sb2, files);
    assert.equal(r2.apply.reused, Object.keys(files).length, JSON.stringify(r2.apply));
    const ws2 = (p: string) => fs.statSync(path.join(bData, "workspaces", sb2, p));
    assert.notEqual(ws2("app/main.py").ino, fs.statSync(blobIn(bData, "app/main.py")).ino, "no two sandboxes share an inode after a restore");
    assert.equal(ws2("data/a.txt").ino, fs.statSync(blobIn(bData, "data/a.txt")).ino, "a blob no workspace links any more is linked again");
  });
});
