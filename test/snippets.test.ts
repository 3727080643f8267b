import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

const RUNTIMES = ["runc", "crun", "runsc", "bwrap", "runsc-direct"];

/** Every process's argv on the host, as any local user can read it (ps). */
function hostCmdlines(): string {
  let out = "";
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try { out += fs.readFileSync(`/proc/${pid}/cmdline`, "latin1") + "\n"; } catch { /* gone */ }
  }
  return out;
}

/**
 * Snippets of every language on every runtime, cold and with pre-started containers: they run
 * from a read-only file, never from argv, with what `-c` gives (main module, cwd /workspace,
 * workspace modules importable, args after the program).
 */
for (const warm of ["0", "60000"]) {
  describe(`snippets by file (PETRI_WARM_IDLE_MS=${warm})`, () => {
    let t: TestServer;
    let names: string[];
    before(async () => {
      t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "auto", PETRI_WARM_IDLE_MS: warm });
      names = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
    });
    after(async () => { await t.close(); });

    for (const rt of RUNTIMES) {
      it(`${rt}: python, node (CommonJS and ES module), typescript, bash and go snippets and files`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        const py = await createSandbox(t, { language: "python", runtime: rt });
        await putFile(t, py, "helper.py", "X = 'from-helper'\n");
        // Twice: the second run may be served by a container pre-started after the first.
        for (let i = 0; i < 2; i++) {
          const r = await exec(t, py, {
            code: "import os, sys, helper\nprint(__name__, os.getcwd(), helper.X, sys.argv[1:])\n"
              + "print('hel' + 'per' in open('/proc/self/cmdline').read())\ntry:\n    open(sys.argv[0], 'a')\nexcept OSError:\n    print('ro')\n",
            args: ["a", "b"],
          });
          assert.equal(r.json.exit_code, 0, r.text);
          assert.equal(r.json.stdout, "__main__ /workspace from-helper ['a', 'b']\nFalse\nro\n", r.text);
          assert.deepEqual(r.json.files, { created: [], modified: [], deleted: [] });
        }

        const node = await createSandbox(t, { language: "node", runtime: rt });
        await putFile(t, node, "lib.js", "module.exports = 'from-lib';\n");
        await putFile(t, node, "main.js", "console.log(require('./lib.js'), process.argv.slice(2).join(','));\n");
        const n1 = await exec(t, node, { code: "console.log(require('./lib.js'), process.cwd(), process.argv.slice(1).join(','), typeof module)", args: ["x", "y"] });
        assert.equal(n1.json.stdout, "from-lib /workspace x,y object\n", n1.text);
        const n2 = await exec(t, node, { filename: "main.js", args: ["z"] });
        assert.equal(n2.json.stdout, "from-lib z\n", n2.text);
        // Module syntax or top-level await makes it an ES module, as `node -e` does; imports
        // resolve from /workspace, and a real syntax error is still reported as one.
        await putFile(t, node, "esm.mjs", "export const v = 'from-esm';\n");
        const n3 = await exec(t, node, {
          code: "import { v } from './esm.mjs';\nimport lib from './lib.js';\nawait new Promise((r) => setTimeout(r, 1));\n"
            + "console.log(v, lib, process.cwd(), process.argv.slice(1).join(','), typeof require)",
          args: ["e"],
        });
        assert.equal(n3.json.stdout, "from-esm from-lib /workspace e undefined\n", n3.text);
        const n4 = await exec(t, node, { code: "console.log('never');\nthis is not javascript(" });
        assert.equal(n4.json.exit_code, 1, n4.text);
        assert.match(n4.json.stderr, /SyntaxError/);
        assert.equal(n4.json.stdout, "");

        const ts = await createSandbox(t, { language: "typescript", runtime: rt });
        await putFile(t, ts, "util.ts", "export const double = (n: number): number => n * 2;\n");
        await putFile(t, ts, "lib.js", "module.exports = 'from-lib';\n");
        const t1 = await exec(t, ts, {
          code: "import { double } from './util.ts';\nenum Color { Red = 1 }\nconst x: number = double(Color.Red);\nconsole.log(x, process.argv.slice(1).join(','))",
          args: ["t"],
        });
        assert.equal(t1.json.stdout, "2 t\n", t1.text);
        const t2 = await exec(t, ts, { code: "interface P { a: number }\nconst p: P = { a: 3 };\nconsole.log(p.a, require('./lib.js'))" });
        assert.equal(t2.json.stdout, "3 from-lib\n", t2.text);

        const sh = await createSandbox(t, { language: "bash", runtime: rt });
        const b = await exec(t, sh, { code: "echo \"$1-$2\" $(pwd)\ntr '\\0' ' ' < /proc/$$/cmdline | grep -c p''wd || true", args: ["p", "q"] });
        assert.equal(b.json.stdout, "p-q /workspace\n0\n", b.text);

        const go = await createSandbox(t, { language: "go", runtime: rt });
        const g = await exec(t, go, { code: 'package main\nimport ("fmt"; "os")\nfunc main() { d, _ := os.Getwd(); fmt.Print("go ", d, " ", os.Args[1]) }\n', args: ["arg"], timeout_ms: 180000 });
        assert.equal(g.json.stdout, "go /workspace arg", g.text);
      });

      it(`${rt}: a snippet's code is not in any host process's argv while it runs`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        const sb = await createSandbox(t, { language: "python", runtime: rt });
        const marker = `MARKER-${Math.random().toString(36).slice(2)}`;
        const started = await exec(t, sb, { code: `# ${marker}\nimport time\nprint('up', flush=True)\ntime.sleep(3)\n`, detach: true });
        const id = started.json.id;
        let seen = false;
        let running = true;
        const deadline = Date.now() + 60000;
        while (running && Date.now() < deadline) {
          if (hostCmdlines().includes(marker)) seen = true;
          const st = await t.api("GET", `/v1/sandboxes/${sb}/exec/${id}`);
          running = st.json.status === "running";
          await new Promise((r) => setTimeout(r, 100));
        }
        const res = await t.api("GET", `/v1/sandboxes/${sb}/exec/${id}`);
        assert.equal(res.json.stdout, "up\n", res.text);
        assert.equal(seen, false, "the snippet's text showed up in a host process's argv");
      });
    }
  });
}

describe("a run that fails unexpectedly", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_RUNTIMES: "bwrap" }); });
  after(async () => { await t.close(); });

  it("ends failed with a clear error, frees its slot, and the server goes on", async () => {
    const sb = await createSandbox(t, { language: "python" });
    // The workspace vanishing under Petri is not a case any step expects.
    fs.rmSync(`${t.dataDir}/workspaces/${sb}`, { recursive: true, force: true });
    const r = await exec(t, sb, { code: "print(1)" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, "failed");
    assert.equal(r.json.error.code, "INTERNAL");
    assert.match(r.json.error.message, /Petri failed while handling this run/);
    assert.equal(t.server.exec.activeCount(), 0);
    const rec = await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}`);
    assert.equal(rec.json.status, "failed");
    const other = await createSandbox(t, { language: "python" });
    const ok = await exec(t, other, { code: "print('still here')" });
    assert.equal(ok.json.stdout, "still here\n", ok.text);
    // The sandbox can still be deleted.
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}`)).status, 204);
  });
});
