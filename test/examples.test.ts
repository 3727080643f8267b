import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { startTestServer, containersOf, type TestServer } from "./helpers.js";

function runExample(t: TestServer, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.resolve("examples/agent-loop/agent.mjs"), ...args], {
      env: { ...process.env, PETRI_URL: t.url, PETRI_API_KEY: t.adminKey },
    });
    let out = "";
    child.stdout.on("data", (b: Buffer) => { out += b.toString(); });
    child.stderr.on("data", (b: Buffer) => { out += b.toString(); });
    child.on("exit", (code) => resolve({ code, out }));
  });
}

describe("examples/agent-loop: a scripted model drives a sandbox through GET /v1/tools and POST /v1/tools/call", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  for (const format of ["openai", "anthropic"]) {
    it(`${format}-style tool calls`, async () => {
      const r = await runExample(t, ["--format", format]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^tool create_sandbox → ok: created sandbox sb_/m);
      assert.match(r.out, /^tool run_code → ok: run ex_\w+ in sandbox sb_\w+: exit code 0/m);
      assert.match(r.out, /^tool delete_sandbox → ok: deleted sandbox/m);
      assert.match(r.out, /^final answer: The total is 29\.$/m);
      const left = await t.api("GET", "/v1/sandboxes");
      assert.equal(left.json.items.length, 0, "the agent cleaned up");
    });
  }

  it("GET /v1/tools serves both shapes from one definition", async () => {
    const oa = await t.api("GET", "/v1/tools");
    assert.equal(oa.status, 200);
    assert.equal(oa.json.format, "openai");
    const run = oa.json.tools.find((x: any) => x.function.name === "run_code");
    assert.equal(run.type, "function");
    assert.equal(run.function.parameters.type, "object");
    assert.ok(run.function.parameters.properties.code);
    const an = await t.api("GET", "/v1/tools?format=anthropic");
    const run2 = an.json.tools.find((x: any) => x.name === "run_code");
    assert.deepEqual(run2.input_schema, run.function.parameters);
    assert.equal((await t.api("GET", "/v1/tools?format=gemini")).status, 400);
    assert.equal((await t.api("GET", "/v1/tools", { key: null })).status, 401);
  });

  it("POST /v1/tools/call reports bad calls as tool errors the model can read", async () => {
    const unknown = await t.api("POST", "/v1/tools/call", { body: { name: "format_disk", arguments: {} } });
    assert.equal(unknown.status, 200);
    assert.equal(unknown.json.is_error, true);
    assert.match(unknown.json.content, /^error VALIDATION_ERROR: unknown tool "format_disk"/);
    const badJson = await t.api("POST", "/v1/tools/call", { body: { name: "list_files", arguments: "{not json" } });
    assert.equal(badJson.json.is_error, true);
    assert.match(badJson.json.content, /^error VALIDATION_ERROR: arguments are not valid JSON/);
    const missing = await t.api("POST", "/v1/tools/call", { body: { name: "list_files", arguments: {} } });
    assert.match(missing.json.content, /^error VALIDATION_ERROR: list_files: argument \(root\) must have required property 'sandbox_id'/);
  });
});
