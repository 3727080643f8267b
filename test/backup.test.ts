import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import pino from "pino";
import tar from "tar-stream";
import { loadConfig } from "../src/config.js";
import { createServer, type PetriServer } from "../src/server.js";
import { startTestServer, type TestServer } from "./helpers.js";

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
    const pack = tar.pack();
    pack.entry({ name: "lib/synced.py", size: Buffer.byteLength(synced) }, synced);
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const ch of pack) chunks.push(ch as Buffer);
    form.append("tar", new Blob([Buffer.concat(chunks)]), "files.tar");
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
