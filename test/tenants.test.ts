import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

describe("tenants, keys and quotas", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => { await t.close(); });

  it("keys of one tenant share its sandboxes; another tenant gets 404 for every route, even with guessed ids", async () => {
    const tenant = (await t.api("POST", "/v1/tenants", { body: { name: "acme" } })).json;
    const a1 = (await t.api("POST", "/v1/keys", { body: { name: "a1", tenant_id: tenant.id } })).json.token;
    const a2 = (await t.api("POST", "/v1/keys", { body: { name: "a2", tenant_id: tenant.id } })).json.token;
    const b = (await t.api("POST", "/v1/keys", { body: { name: "b" } })).json.token;
    const sb = await createSandbox(t, { language: "python" }, a1);
    await putFile(t, sb, "x.py", "print('x')", a1);
    const run = await exec(t, sb, { filename: "x.py" }, a1);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`, { key: a2 })).status, 200, "same tenant, other key");
    const routes: [string, string][] = [
      ["GET", `/v1/sandboxes/${sb}`], ["DELETE", `/v1/sandboxes/${sb}`], ["GET", `/v1/sandboxes/${sb}/files`],
      ["GET", `/v1/sandboxes/${sb}/files/x.py`], ["PUT", `/v1/sandboxes/${sb}/files/y.py`], ["DELETE", `/v1/sandboxes/${sb}/files/x.py`],
      ["POST", `/v1/sandboxes/${sb}/exec`], ["GET", `/v1/sandboxes/${sb}/exec`], ["GET", `/v1/sandboxes/${sb}/exec/${run.json.id}`],
      ["DELETE", `/v1/sandboxes/${sb}/exec/${run.json.id}`], ["POST", `/v1/sandboxes/${sb}/exec/${run.json.id}/stdin`],
      ["POST", `/v1/sandboxes/${sb}/sync/plan`], ["GET", `/v1/tenants/${tenant.id}`],
    ];
    for (const [m, p] of routes) {
      const body = m === "POST" && p.endsWith("/exec") ? { code: "1" } : p.endsWith("/plan") ? { files: [] } : p.endsWith("/stdin") ? { data: "x" } : undefined;
      const r = await t.api(m, p, { key: b, body, raw: m === "PUT" ? "x" : undefined });
      assert.equal(r.status, 404, `${m} ${p} → ${r.status} ${r.text}`);
    }
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/x.py`, { key: a1 })).text, "print('x')", "untouched");
    assert.deepEqual((await t.api("GET", "/v1/sandboxes", { key: b })).json.items, []);
    // Non-admin keys cannot manage tenants or keys.
    assert.equal((await t.api("POST", "/v1/keys", { key: a1, body: { name: "x" } })).status, 403);
    assert.equal((await t.api("POST", "/v1/tenants", { key: a1, body: { name: "x" } })).status, 403);
    assert.equal((await t.api("PUT", `/v1/tenants/${tenant.id}/quotas`, { key: a1, body: { max_sandboxes: 1000 } })).status, 403);
  });

  it("quotas: live sandboxes, concurrent runs, workspace bytes → 429 QUOTA_EXCEEDED", async () => {
    const tenant = (await t.api("POST", "/v1/tenants", { body: { name: "small" } })).json;
    const key = (await t.api("POST", "/v1/keys", { body: { tenant_id: tenant.id } })).json.token;
    const q = await t.api("PUT", `/v1/tenants/${tenant.id}/quotas`, { body: { max_sandboxes: 2, max_concurrent_runs: 1, max_workspace_mb: 1 } });
    assert.deepEqual(q.json, { max_sandboxes: 2, max_concurrent_runs: 1, max_workspace_mb: 1 });
    const s1 = await createSandbox(t, { language: "python" }, key);
    const s2 = await createSandbox(t, { language: "python" }, key);
    const third = await t.api("POST", "/v1/sandboxes", { key, body: { language: "python" } });
    assert.equal(third.status, 429);
    assert.equal(third.json.error.code, "QUOTA_EXCEEDED");
    assert.match(third.json.error.message, /max_sandboxes/);

    const long = await exec(t, s1, { code: "import time; time.sleep(3)", detach: true }, key);
    assert.equal(long.status, 202);
    const second = await exec(t, s2, { code: "print(1)" }, key);
    assert.equal(second.status, 429);
    assert.match(second.json.error.message, /max_concurrent_runs/);
    await t.api("DELETE", `/v1/sandboxes/${s1}/exec/${long.json.id}`, { key });
    assert.equal((await exec(t, s2, { code: "print(1)" }, key)).json.stdout, "1\n", "the slot is free again");

    assert.equal((await putFile(t, s1, "a.bin", Buffer.alloc(700 * 1024), key)).status, 201);
    const over = await putFile(t, s2, "b.bin", Buffer.alloc(700 * 1024), key);
    assert.equal(over.status, 429, over.text);
    assert.match(over.json.error.message, /max_workspace_mb/);
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${s1}`, { key })).status, 204);
    assert.equal((await putFile(t, s2, "b.bin", Buffer.alloc(700 * 1024), key)).status, 201, "deleting frees the tenant's bytes");
    const info = await t.api("GET", `/v1/tenants/${tenant.id}`, { key });
    assert.equal(info.json.quotas.max_sandboxes, 2);
  });
});
