import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, exec, type TestServer } from "./helpers.js";

/** Under gVisor the audit log also says which files the program opened and what it executed. */
describe("gVisor syscall trace in the audit log", () => {
  let t: TestServer;
  let names: string[] = [];
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runsc" });
    names = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
  });
  after(async () => { await t.close(); });

  it("records file.open and process.exec from runsc's strace, without env values", async (ctx) => {
    if (!names.includes("runsc")) return ctx.skip("runsc not available on this host");
    const sb = await createSandbox(t, { language: "python", runtime: "runsc" });
    const code = [
      "import subprocess",
      "open('/workspace/a.txt', 'w').write('hi')",
      "print(open('/etc/hostname').read().strip())",
      "subprocess.run(['ls'])",
    ].join("\n");
    const r = await exec(t, sb, { code, env: { TRACE_CANARY: "do-not-log-me" } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.exit_code, 0, r.text);
    assert.match(r.json.stdout, /a\.txt/);
    const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
    const opens = recs.filter((e) => e.action === "file.open");
    const execs = recs.filter((e) => e.action === "process.exec");
    if (opens.length === 0 && execs.length === 0) return ctx.skip("runsc-trace is not registered with Docker (run scripts/setup.sh)");
    assert.ok(opens.every((e) => e.kind === "file") && execs.every((e) => e.kind === "process"));
    const a = opens.find((e) => e.detail.path === "/workspace/a.txt");
    assert.ok(a, "the write of /workspace/a.txt is recorded");
    assert.equal(a.detail.write, true);
    assert.match(a.detail.flags, /O_WRONLY/);
    const h = opens.find((e) => e.detail.path === "/etc/hostname");
    assert.ok(h, "the read of /etc/hostname is recorded");
    assert.equal(h.detail.write, false);
    const ls = execs.find((e) => e.detail.path === "/usr/bin/ls");
    assert.deepEqual(ls?.detail.argv, ["ls"]);
    assert.ok(execs.some((e) => /python3/.test(e.detail.path) && e.detail.argv[0] === "python3"), JSON.stringify(execs.map((e) => e.detail)));
    assert.doesNotMatch(JSON.stringify(recs), /do-not-log-me/);
  });
});
