import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

const petri = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/petri.js");

/** Every runtime the host offers, through HTTP: same contract, real isolation. */
describe("runtimes through the API", () => {
  let t: TestServer;
  let names: string[];
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "auto" });
    const r = await t.api("GET", "/v1/runtimes");
    names = r.json.runtimes.map((x: { name: string }) => x.name);
  });
  after(async () => { await t.close(); });

  it("probes runtimes and picks a default that works", async () => {
    const r = await t.api("GET", "/v1/runtimes");
    assert.ok(names.length >= 1);
    assert.ok(names.includes(r.json.default));
    assert.ok(names.includes("runc"), "runc is available on this host");
    assert.ok(names.includes("bwrap"), "bwrap is available on this host");
    const sb = (await t.api("POST", "/v1/sandboxes", { body: { language: "python" } })).json;
    assert.equal(sb.runtime, r.json.default);
  });

  it("gVisor: a sandbox asking for it really runs under gVisor's kernel", async (ctx) => {
    if (!names.includes("runsc")) return ctx.skip("runsc not available on this host");
    const sb = await createSandbox(t, { language: "python", runtime: "gvisor" });
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).json.runtime, "runsc");
    // gVisor's Sentry reports a fixed Linux 4.4.0 build (its dmesg, "Starting gVisor", is the
    // syslog call, which Petri's seccomp profile refuses under gVisor as everywhere else).
    const GVISOR_VERSION = /^Linux version 4\.4\.0 #1 SMP Sun Jan 10 15:06:54 PST 2016$/m;
    const r = await exec(t, sb, { code: "print(open('/proc/version').read())" });
    assert.match(r.json.stdout, GVISOR_VERSION, r.text);
    const runc = await createSandbox(t, { language: "python", runtime: "runc" });
    const plain = await exec(t, runc, { code: "print(open('/proc/version').read())" });
    assert.equal(plain.json.exit_code, 0, plain.text);
    assert.doesNotMatch(plain.json.stdout, GVISOR_VERSION);
  });

  for (const rt of ["runc", "crun", "runsc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"]) {
    it(`${rt}: the flow and the isolation basics are the same`, async (ctx) => {
      if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
      const sb = await createSandbox(t, { language: "python", runtime: rt, limits: { memory_mb: 128 } });
      await putFile(t, sb, "lib/util.py", "def f():\n    return 'util'\n");
      await putFile(t, sb, "main.py", [
        "import os, socket, sys",
        "from lib.util import f",
        "print(f(), sys.stdin.read(), os.getuid())",
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('NET')\nexcept OSError:\n    print('nonet')",
        "try:\n    open('/etc/x', 'w'); print('WROTE')\nexcept OSError:\n    print('rofs')",
        "print(os.path.exists('/root/.bash_history'), [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')])",
        "open('out.txt', 'w').write('x')",
      ].join("\n"));
      const r = await exec(t, sb, { filename: "main.py", stdin: "in" });
      assert.equal(r.json.exit_code, 0, r.text);
      assert.equal(r.json.stdout, "util in 65600\nnonet\nrofs\nFalse ['0000000000000000']\n");
      assert.deepEqual(r.json.files.created, ["out.txt"]);
      const oom = await exec(t, sb, { code: "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n" });
      assert.equal(oom.json.oom_killed, true, oom.text);
      const slow = await exec(t, sb, { code: "while True: pass", timeout_ms: 1000 });
      assert.equal(slow.json.timed_out, true);
    });
  }

  it("refuses a runtime the server does not offer", async () => {
    const r = await t.api("POST", "/v1/sandboxes", { body: { language: "python", runtime: "firecracker" } });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, "UNKNOWN_RUNTIME");
  });

  it("petri doctor says what is available and how to fix the rest", () => {
    const out = execFileSync(process.execPath, [petri, "doctor"], { env: { ...process.env, PETRI_LOG_LEVEL: "silent" } }).toString();
    assert.match(out, /\[ok\]\s+docker\/runc/);
    assert.match(out, /\[ok\]\s+bwrap/);
    assert.match(out, /Default runtime: /);
  });
});
