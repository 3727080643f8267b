import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tar from "tar-stream";
import { startTestServer, createSandbox, putFile, type TestServer } from "./helpers.js";

/** A tar archive of `files` (path → content), as the SDKs send many small files in one part. */
async function tarOf(files: Record<string, string | Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, c] of Object.entries(files)) pack.entry({ name, size: Buffer.byteLength(c) }, c);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

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
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${a}`, { key: key.token })).status, 204);
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
});
