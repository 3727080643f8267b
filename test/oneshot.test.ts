import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestServer, createSandbox, exec, containersOf, imageBuilt, type TestServer } from "./helpers.js";

/**
 * POST /v1/run: a throw-away sandbox per request, on real runtimes, with pre-starting switched on
 * so that "nothing pre-started for it" is tested against a server that does pre-start.
 */
for (const runtime of ["runc", "bwrap"]) describe(`one-request runs: ${runtime}`, () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_WARM_IDLE_MS: "30000", PETRI_RUNTIMES: runtime }); });
  after(async () => {
    await t.close();
    assert.equal(await containersOf(t.server.instanceId), 0);
  });

  const units = async (sb: string) => {
    let n = 0;
    for (const rt of t.server.runtimes.values()) n += await rt.count({ "io.jhansi.petri.sandbox": sb });
    return n;
  };
  /** Waits (bounded) for the deletion started after the answer. */
  const gone = async (sb: string) => {
    const dir = t.server.deps.workspaces.dirFor(sb);
    for (let i = 0; i < 300 && (fs.existsSync(dir) || t.server.sandboxes.tenantOf(sb) !== undefined); i++) await sleep(100);
    return { dir: fs.existsSync(dir), record: t.server.sandboxes.tenantOf(sb) !== undefined };
  };

  it("runs inline files (text and base64) with args, stdin and env, then the sandbox is gone", async () => {
    const r = await t.api("POST", "/v1/run", { body: {
      language: "python", runtime,
      files: [
        { path: "main.py", content: "import sys, os, lib\nprint(lib.x, sys.argv[1:], sys.stdin.read(), os.environ['K'], open('data/b.bin','rb').read())\nsys.exit(3)\n" },
        { path: "lib.py", content: Buffer.from("x = 42\n").toString("base64"), encoding: "base64" },
        { path: "data/b.bin", content: Buffer.from([0, 1, 255]).toString("base64"), encoding: "base64" },
      ],
      args: ["a", "b"], stdin: "in", env: { K: "v" },
    } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.exit_code, 3);
    assert.equal(r.json.stdout, "42 ['a', 'b'] in v b'\\x00\\x01\\xff'\n");
    assert.equal(r.json.entry, "main.py");
    assert.equal(r.json.runtime, runtime);
    const sb = r.json.sandbox_id as string;
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 404, "gone from the API when the answer arrives");
    assert.deepEqual(await gone(sb), { dir: false, record: false }, "workspace and records removed after the answer");
    await sleep(1000); // a pre-start would have been begun at the run's hand-over; give it time to show
    assert.equal(await units(sb), 0, "no container or sandbox with its label is left (nothing pre-started)");
  });

  it("nothing is pre-started while it runs or after (a normal run here would pre-start one)", async () => {
    const mine = async () => {
      let n = 0;
      for (const rt of t.server.runtimes.values()) n += await rt.count({ "io.jhansi.petri.instance": t.server.instanceId });
      return n;
    };
    assert.equal(await mine(), 0, "nothing of this server is running before");
    let done = false;
    let most = 0;
    const req = t.api("POST", "/v1/run", { body: { language: "python", runtime, code: "import time\ntime.sleep(2)\nprint('ok')" } })
      .finally(() => { done = true; });
    // A pre-start begins at the run's hand-over, so it would show as a second unit during the run.
    while (!done) { most = Math.max(most, await mine()); await sleep(50); }
    const r = await req;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stdout, "ok\n");
    assert.equal(most, 1, "only the run's own unit ever existed");
    assert.deepEqual(await gone(r.json.sandbox_id), { dir: false, record: false });
    assert.equal(await mine(), 0, "and none is left");
  });

  it("a snippet with no files; filename choosing among files", async () => {
    const a = await t.api("POST", "/v1/run", { body: { language: "python", runtime, code: "print(6*7)" } });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.stdout, "42\n");
    const b = await t.api("POST", "/v1/run", { body: { language: "bash", runtime, filename: "b.sh", files: [{ path: "a.sh", content: "echo a" }, { path: "b.sh", content: "echo b; cat a.sh" }] } });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.stdout, "b\necho a");
    for (const sb of [a.json.sandbox_id, b.json.sandbox_id]) {
      assert.deepEqual(await gone(sb), { dir: false, record: false });
      assert.equal(await units(sb), 0);
    }
  });

  it("image picks the sandbox's image: pandas in datascience", async (ctx) => {
    const ds = imageBuilt("datascience");
    if (!ds.ok) {
      ctx.skip(`SKIP: the datascience image (${ds.ref}) is not built here; scripts/setup.sh builds it`);
      return;
    }
    const r = await t.api("POST", "/v1/run", { body: { language: "python", image: "datascience", runtime, code: "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2]}).a.sum())", timeout_ms: 120_000 } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stdout, "3\n", r.json.stderr);
    assert.deepEqual(await gone(r.json.sandbox_id), { dir: false, record: false });
  });

  it("the control: a normal sandbox's runs on this server do leave a pre-started unit", async () => {
    const sb = await createSandbox(t, { language: "python", runtime });
    // From its second run on a sandbox looks used again and again (the pre-start policy).
    assert.equal((await exec(t, sb, { code: "print(1)" })).json.exit_code, 0);
    assert.equal((await exec(t, sb, { code: "print(2)" })).json.exit_code, 0);
    let n = 0;
    for (let i = 0; i < 100 && (n = await units(sb)) === 0; i++) await sleep(100);
    assert.ok(n >= 1, "pre-starting is on, so the one-request checks above are meaningful");
    await t.api("DELETE", `/v1/sandboxes/${sb}`);
  });

  it("bad input is a 400 with a stable code and creates no sandbox", async () => {
    const before = t.server.sandboxes.count();
    const cases: [unknown, string][] = [
      [{ language: "python", runtime, files: [{ path: "../x.py", content: "1" }] }, "INVALID_PATH"],
      [{ language: "python", runtime, files: [{ path: "/abs.py", content: "1" }] }, "INVALID_PATH"],
      [{ language: "python", runtime, files: [{ path: "a.py", content: "not base64!", encoding: "base64" }] }, "INVALID_ENCODING"],
      [{ language: "python", runtime, files: [{ path: "a.py", content: "1", encoding: "latin1" }] }, "VALIDATION_ERROR"],
      [{ language: "python", runtime }, "VALIDATION_ERROR"],
      [{ language: "python", runtime, code: "1", filename: "a.py", files: [{ path: "a.py", content: "1" }] }, "VALIDATION_ERROR"],
      [{ language: "python", runtime, filename: "b.py", files: [{ path: "a.py", content: "1" }] }, "VALIDATION_ERROR"],
      [{ language: "cobol", runtime, code: "1" }, "UNKNOWN_LANGUAGE"],
      [{ language: "python", image: "no-such-image", runtime, code: "1" }, "UNKNOWN_IMAGE"],
      [{ language: "python", runtime, code: "1", env: { "1BAD": "x" } }, "VALIDATION_ERROR"],
      [{ language: "python", runtime, code: "1", nope: 1 }, "VALIDATION_ERROR"],
    ];
    for (const [body, code] of cases) {
      const r = await t.api("POST", "/v1/run", { body });
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.error.code, code, JSON.stringify(body));
    }
    // The env name is checked after the sandbox exists: that one must be removed too.
    for (let i = 0; i < 100 && t.server.sandboxes.count() !== before; i++) await sleep(100);
    assert.equal(t.server.sandboxes.count(), before, "no sandbox is left behind by a refused request");
  });

  it("needs a key", async () => {
    const r = await t.api("POST", "/v1/run", { body: { language: "python", runtime, code: "print(1)" }, key: null });
    assert.equal(r.status, 401);
  });
});
