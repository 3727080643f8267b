import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, containersOf, type TestServer } from "./helpers.js";
import type { RunResult } from "../src/runtimes/types.js";

/** Waits (bounded) until the runtime has a pre-started unit up and done with its imports. */
async function unitUp(t: TestServer, runtime: string): Promise<void> {
  const rt = t.server.runtimes.get(runtime)!;
  const stats = () => (rt.prestartStats?.() ?? { ready: 0 }) as { ready: number; importing?: number };
  const preparing = () => ((rt as unknown as { preparing?: Map<unknown, unknown> | Set<unknown> }).preparing?.size ?? 0);
  for (let end = Date.now() + 60_000; (stats().ready === 0 || (stats().importing ?? 0) > 0 || preparing() > 0) && Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Pre-started containers: single-use, as isolated as cold ones, and gone once a sandbox idles.
 * A sandbox's runs are checked to be really served by a pre-started unit and its warm interpreter.
 */
for (const runtime of ["runc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"]) describe(`pre-started (warm) sandboxes: ${runtime}`, () => {
  let t: TestServer;
  const INIT = runtime === "bwrap" ? "/usr/bin/bwrap" : "/sbin/docker-init";
  before(async () => { t = await startTestServer({ PETRI_WARM_IDLE_MS: "3000", PETRI_RUNTIMES: runtime }); });
  after(async () => {
    await t.close();
    assert.equal(await containersOf(t.server.instanceId), 0, "closing removes pre-started containers");
    for (const rt of t.server.runtimes.values()) {
      assert.equal(await rt.count({ "io.jhansi.petri.instance": t.server.instanceId }), 0, "and pre-started sandboxes");
    }
  });

  const probe = [
    "import os, socket, sys",
    "print('host', open('/proc/sys/kernel/hostname').read().strip())",
    "print('marker', os.path.exists('/tmp/marker'))",
    "open('/tmp/marker', 'w').write('x')",
    "print('uid', os.getuid(), 'ppid', os.getppid(), 'init', open('/proc/1/cmdline').read().split(chr(0))[0])",
    "print('procs', sorted(open(f'/proc/{p}/cmdline').read().split(chr(0))[0] for p in os.listdir('/proc') if p.isdigit()))",
    "print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs'))])",
    "print('ifaces', sorted(n for _, n in socket.if_nameindex()))",
    "print('env', sorted(k for k in os.environ if k not in ('PWD',)))",
    "print('stdin', sys.stdin.read())",
    "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print('rofs', e.errno)",
  ].join("\n");

  it("a second run gets a new container with the same isolation, env and stdin semantics", async () => {
    const sb = await createSandbox(t, { language: "python", runtime });
    await putFile(t, sb, "probe.py", probe);
    // What the runtime itself reported of each run: whether a unit served it, and ran it in its interpreter.
    const rt = t.server.runtimes.get(runtime)!;
    const results: RunResult[] = [];
    const run = rt.run.bind(rt);
    rt.run = async (spec) => { const r = await run(spec); results.push(r); return r; };
    const outs: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        // The unit the second run pre-started is waited for: the third run must find it.
        if (i === 2) await unitUp(t, runtime);
        const r = await exec(t, sb, { filename: "probe.py", stdin: `in${i}`, env: { ONLY: "1" } });
        assert.equal(r.json.exit_code, 0, r.text);
        outs.push(r.json.stdout);
      }
    } finally {
      rt.run = run;
    }
    const last = results.at(-1)!;
    assert.equal(last.timings?.warm, 1, `the third run started in the unit its sandbox's second run pre-started: ${JSON.stringify(last.timings)}`);
    assert.equal(last.timings?.interp, 1, `and ran in its pre-started interpreter: ${JSON.stringify(last.timings)} ${last.warmFallback ?? ""}`);
    const hosts = outs.map((o) => /host (\S+)/.exec(o)![1]);
    // A container's hostname is its id; bwrap sandboxes all say "sandbox", and the fresh /tmp
    // (no marker from the run before) shows they are new as well.
    if (runtime === "runc") assert.equal(new Set(hosts).size, 3, "every run had its own container");
    for (const [i, o] of outs.entries()) {
      assert.match(o, /marker False/, "no state carried over in /tmp");
      assert.ok(o.includes(`uid 65600 ppid 1 init ${INIT}\n`), `the program runs right under the sandbox's init: ${o}`);
      assert.ok(o.includes(`procs ['${INIT}', 'python3']`), `nothing of the launcher remains: it exec'd into the program: ${o}`);
      // gVisor's /proc/self/status has no NoNewPrivs line, and it checks permissions before the
      // read-only mount (EACCES for the sandbox user on the image's /etc); the write fails either way.
      const gvisor = runtime === "runsc-direct";
      assert.match(o, gvisor ? /\['0000000000000000'(, '1')?\]/ : /\['0000000000000000', '1'\]/);
      assert.match(o, /ifaces \['lo'\]/);
      assert.match(o, gvisor ? /rofs (30|13)/ : /rofs 30/);
      assert.match(o, new RegExp(`stdin in${i}\\n`));
      const env = /env (\[.*\])/.exec(o)![1];
      assert.ok(env.includes("'ONLY'") && !env.includes("SUDO") , env);
    }
    // The next run's workspace view, and the unit on it, are made ready after the result is sent.
    let waiting = 0;
    for (const until = Date.now() + 15000; waiting === 0 && Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
      waiting = 0;
      for (const rt of t.server.runtimes.values()) waiting += await rt.count({ "io.jhansi.petri.sandbox": sb });
    }
    assert.ok(waiting >= 1, "a pre-started sandbox waits for the next run");
  });

  it("timeouts, exit codes and stdin EOF behave as in a cold container", async () => {
    const sb = await createSandbox(t, { language: "python", runtime });
    await putFile(t, sb, "a.py", "import sys\nprint(sys.stdin.read() == '')\nsys.exit(7)\n");
    for (let i = 0; i < 2; i++) {
      const r = await exec(t, sb, { filename: "a.py" });
      assert.equal(r.json.exit_code, 7);
      assert.equal(r.json.stdout, "True\n");
    }
    const slow = await exec(t, sb, { code: "while True: pass", timeout_ms: 1000 });
    assert.equal(slow.json.timed_out, true);
    const after = await exec(t, sb, { code: "print('fine')" });
    assert.equal(after.json.stdout, "fine\n");
    assert.equal((await exec(t, sb, { code: "x", args: [] })).json.exit_code, 1);
  });

  it("pre-start policy: a sandbox's first run leaves nothing behind; its second run within the warm period does", async () => {
    // A server of its own with a warm period long enough that a loaded machine's runs stay within it.
    const t2 = await startTestServer({ PETRI_WARM_IDLE_MS: "120000", PETRI_RUNTIMES: runtime });
    try {
      const liveOf = async (sb: string) => {
        let n = 0;
        for (const rt of t2.server.runtimes.values()) n += await rt.count({ "io.jhansi.petri.sandbox": sb });
        return n;
      };
      const sb = await createSandbox(t2, { language: "python", runtime });
      assert.equal((await exec(t2, sb, { code: "print(1)" })).json.exit_code, 0);
      await new Promise((r) => setTimeout(r, 700)); // a pre-start begins at hand-over: give it time to show
      assert.equal(await liveOf(sb), 0, "one run says nothing about the next: nothing pre-started");
      assert.equal((await exec(t2, sb, { code: "print(2)" })).json.exit_code, 0);
      let n = 0;
      for (let i = 0; i < 200 && (n = await liveOf(sb)) === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(n, 1, "a second run within the warm period: one unit waits for the next");
      assert.equal((await t2.api("DELETE", `/v1/sandboxes/${sb}`)).status, 204);
      assert.equal(await liveOf(sb), 0);
    } finally {
      await t2.close();
    }
  });

  it("an idle sandbox runs nothing once the warm period is over; deleting removes them at once", async () => {
    const sb = await createSandbox(t, { language: "python", runtime });
    await exec(t, sb, { code: "print(1)" });
    await exec(t, sb, { code: "print(1)" });
    const live = async () => {
      let n = await containersOf(t);
      for (const rt of t.server.runtimes.values()) n += await rt.count({ "io.jhansi.petri.instance": t.server.instanceId });
      return n;
    };
    // The unit is pre-started on the next run's workspace view, which is mounted after the result.
    let started = 0;
    for (const until = Date.now() + 15000; (started = await live()) === 0 && Date.now() < until;) await new Promise((r) => setTimeout(r, 100));
    assert.ok(started > 0, "a unit was pre-started");
    const until = Date.now() + 15000;
    while ((await live()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await live(), 0);
    const other = await createSandbox(t, { language: "python", runtime });
    await exec(t, other, { code: "print(1)" });
    await exec(t, other, { code: "print(1)" });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${other}`)).status, 204);
    assert.equal(await live(), 0);
  });
});

/**
 * Warm Node through the API (docs/warm.md, "Node"): production runs (plan.ts: agent helpers,
 * NODE_OPTIONS preload, snippet mount) of a sandbox that keeps running go to a pre-started node,
 * and print what the cold first runs printed. The host audit tracer is off here: a traced run
 * never goes warm (docs/warm.md, rule 4), and this test is about the runs that do.
 */
for (const runtime of ["bwrap", "runc", "runsc-direct"]) describe(`warm Node and TypeScript through the API: ${runtime}`, () => {
  let t: TestServer;
  const interp: (number | undefined)[] = [];
  before(async () => {
    t = await startTestServer({ PETRI_WARM_IDLE_MS: "120000", PETRI_RUNTIMES: runtime, PETRI_AUDIT_TRACE: "off" });
    for (const rt of t.server.runtimes.values()) {
      const run = rt.run.bind(rt);
      rt.run = async (spec) => {
        const r = await run(spec);
        interp.push(r.timings?.interp);
        return r;
      };
    }
  });
  after(async () => { await t.close(); });

  async function unitReady(): Promise<void> {
    for (let i = 0; i < 300; i++) {
      let ready = 0;
      for (const rt of t.server.runtimes.values()) ready += rt.prestartStats?.().ready ?? 0;
      if (ready > 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const REPORT = "console.log(require.main === module, process.argv.slice(2), process.execArgv.length, __filename, process.cwd(), require('fs').readFileSync(0, 'utf8'), process.env.ONLY, Object.keys(require.cache));\n";
  const cases = [
    { language: "node", file: "main.js", content: REPORT },
    { language: "typescript", file: "main.ts", content: "const n: number = 1;\n" + REPORT },
    { language: "node", code: "console.log(typeof require, module.id, __filename, process.argv.slice(1), require('fs').readFileSync(0, 'utf8'))" },
    { language: "typescript", code: "const s: string = 'ts';\nconsole.log(s, typeof require, process.argv.slice(1), require('fs').readFileSync(0, 'utf8'))" },
  ];
  for (const c of cases) {
    it(`${c.language} ${c.file ? "file" : "snippet"}: from the third run on in a pre-started node, printing what the cold runs printed`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      // gVisor: a unit starts with the command line of the run it follows (docs/warm.md, "Node"); a
      // snippet's holds its run's id, so snippets are not warm there.
      if (runtime === "runsc-direct" && !c.file) return ctx.skip("gVisor: snippets are not warm (their command line holds the run's id)");
      const sb = await createSandbox(t, { language: c.language, runtime });
      if (c.file) await putFile(t, sb, c.file, c.content!);
      const outs: string[] = [];
      interp.length = 0;
      for (let i = 0; i < 6; i++) {
        if (i >= 2) await unitReady();
        const r = await exec(t, sb, { ...(c.file ? { filename: c.file } : { code: c.code }), args: ["a", "b c"], stdin: "input", env: { ONLY: "1" } });
        assert.equal(r.json.exit_code, 0, r.text);
        outs.push(r.json.stdout);
      }
      // The first run of a sandbox leaves no unit; the second pre-starts one, used by the third, and
      // so on. A loaded machine may still be creating a unit when the run comes (a miss, cold): at
      // least two of the last four must have run in the pre-started node, and none may fall back.
      assert.deepEqual(interp.slice(0, 2), [undefined, undefined], JSON.stringify(interp));
      assert.ok(interp.filter((x) => x === 1).length >= 2 && !interp.includes(0), `runs 3 to 6 ran in the pre-started node: ${JSON.stringify(interp)}`);
      for (const o of outs) assert.equal(o, outs[0]);
      assert.match(outs[0], /input/);
      // Its unit goes with it, so the next case waits for its own unit only.
      assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}`)).status, 204);
    });
  }

  it("node, alternating file and snippet runs: from the fifth run on in a pre-started node of the next run's form (docs/warm.md, \"Alternating forms\")", async (ctx) => {
    if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
    if (runtime === "runsc-direct") return ctx.skip("gVisor: snippets are not warm (their command line holds the run's id)");
    const sb = await createSandbox(t, { language: "node", runtime });
    const program = "console.log('hello', typeof require, process.argv.length, require.main === module)";
    await putFile(t, sb, "main.js", program + "\n");
    const outs: string[] = [];
    interp.length = 0;
    for (let i = 0; i < 8; i++) {
      if (i >= 2) await unitReady();
      const r = await exec(t, sb, i % 2 === 0 ? { filename: "main.js" } : { code: program });
      assert.equal(r.json.exit_code, 0, r.text);
      outs.push(r.json.stdout);
    }
    // Run 1 leaves no unit, runs 2 to 4 find the other form's (exec'd cold); from run 5 on the
    // alternation is seen. A loaded machine may still be creating a unit (a miss): at least two
    // of runs 5 to 8 must have run in the pre-started node, and none may fall back.
    assert.deepEqual(interp.slice(0, 4), [undefined, undefined, undefined, undefined], JSON.stringify(interp));
    assert.ok(interp.slice(4).filter((x) => x === 1).length >= 2 && !interp.includes(0), `runs 5 to 8 ran in the pre-started node: ${JSON.stringify(interp)}`);
    for (let i = 2; i < 8; i++) assert.equal(outs[i], outs[i % 2], `run ${i + 1} printed what the cold run of its form printed`);
    assert.equal(outs[0], "hello function 2 true\n");
    assert.equal(outs[1], "hello function 1 false\n");
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}`)).status, 204);
  });
});
