import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startTestServer, createSandbox, type TestServer } from "./helpers.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe("delta sync", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => { await t.close(); });

  async function sync(sb: string, files: Record<string, string>, opts: { send?: "missing" | "none" } = {}) {
    const manifest = { files: Object.entries(files).map(([path, c]) => ({ path, sha256: sha(c), size: Buffer.byteLength(c) })) };
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
});
