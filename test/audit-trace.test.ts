import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";
import { tracerPrerequisites } from "../src/tracing/tracer.js";

/**
 * The host tracer against the ground truth: a real program in a real sandbox on each runtime
 * logs what it did (files opened, programs run, connections tried, names looked up), and the
 * audit must show exactly those, with Petri's own helpers left out.
 */
const PROGRAM = String.raw`
import json, os, socket, subprocess
truth = {"opened": [], "programs": [], "connects": [], "names": []}
for i in range(5):
    p = "/workspace/in%d.txt" % i
    open(p).read()
    truth["opened"].append([p, "read"])
for i in range(3):
    p = "/tmp/out%d.txt" % i
    open(p, "w").write("x")
    truth["opened"].append([p, "write"])
try:
    open("/etc/shadow")
except OSError as e:
    truth["denied"] = ["/etc/shadow", e.errno]
for argv in (["/bin/true"], ["/bin/echo", "hi there"]):
    subprocess.run(argv, stdout=subprocess.DEVNULL)
    truth["programs"].append(argv)
for host, port in (("10.1.2.3", 8443), ("127.0.0.1", 9)):
    s = socket.socket()
    try:
        s.connect((host, port))
    except OSError as e:
        truth["connects"].append([host, port, e.errno])
    s.close()
# Name lookups through libc's getaddrinfo (Petri's Python shim answers socket.getaddrinfo itself).
subprocess.run(["getent", "ahosts", "audit-probe.example"], stdout=subprocess.DEVNULL)
truth["programs"].append(["getent", "ahosts", "audit-probe.example"])
truth["names"].append("audit-probe.example")
print(json.dumps(truth))
`;

const pre = tracerPrerequisites();

describe("host tracer: the audit shows what the program did", { skip: pre.ok ? false : `host cannot trace: ${(pre as { reason: string }).reason}` }, () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runc,crun,bwrap", PETRI_AUDIT_TRACE: "required", PETRI_WARM_IDLE_MS: "60000" });
    const st = await t.server.tracer.ready();
    assert.equal(st.state, "active", st.reason ?? "");
  });
  after(async () => { await t?.close(); });

  for (const runtime of ["runc", "crun", "bwrap"]) {
    it(`${runtime}: files, programs, connections and names match the program's own log`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      const sb = await createSandbox(t, { language: "python", runtime });
      for (let i = 0; i < 5; i++) await putFile(t, sb, `in${i}.txt`, `input ${i}`);
      await putFile(t, sb, "main.py", PROGRAM);
      // Twice: the second run takes a pre-started sandbox, whose launcher must not be counted.
      for (const round of [1, 2]) {
        const r = await exec(t, sb, { filename: "main.py" });
        assert.equal(r.json.exit_code, 0, r.text);
        const truth = JSON.parse(r.json.stdout.trim().split("\n").pop());
        const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
        const finish = recs.find((x) => x.action === "exec.finish");
        assert.equal(finish.detail.audit_level, "ebpf", `round ${round}: ${JSON.stringify(finish.detail)}`);
        assert.equal(finish.detail.trace_complete, true, finish.detail.audit_level_reason);

        const opens = recs.filter((x) => x.action === "file.open" && !x.detail.path.startsWith("["));
        for (const [p, access] of truth.opened) {
          assert.ok(opens.some((o) => o.detail.path === p && o.detail.access === access && o.outcome === "success"), `round ${round}: ${p} ${access} in ${JSON.stringify(opens.map((o) => o.detail.path))}`);
        }
        const shadow = opens.find((o) => o.detail.path === "/etc/shadow");
        assert.ok(shadow && shadow.outcome === "denied" && shadow.error_code === "EACCES", `the refused open is recorded: ${JSON.stringify(shadow)}`);

        const execs = recs.filter((x) => x.action === "process.exec");
        const argvs = execs.map((e) => JSON.stringify(e.detail.argv));
        assert.ok(argvs.includes(JSON.stringify(["python3", "main.py"])), `the program itself: ${argvs}`);
        for (const argv of truth.programs) assert.ok(argvs.includes(JSON.stringify(argv)), `round ${round}: ${JSON.stringify(argv)} in ${argvs}`);
        assert.equal(execs.length, 1 + truth.programs.length, `only the program and what it ran, none of Petri's helpers: ${argvs}`);
        for (const e of execs) assert.equal(typeof e.detail.pid, "number");

        const connects = recs.filter((x) => x.action === "net.connect" && x.detail.family === "inet");
        for (const [host, port] of truth.connects) {
          const c = connects.find((x) => x.detail.ip === host && x.detail.port === port);
          assert.ok(c, `round ${round}: connect ${host}:${port} in ${JSON.stringify(connects.map((x) => x.detail))}`);
          assert.notEqual(c.outcome, "success", "no network: the attempt failed and says why");
          assert.ok(c.error_code);
        }
        const names = recs.filter((x) => x.action === "dns.query").map((x) => x.detail.hostname);
        assert.ok(names.includes("audit-probe.example"), `getaddrinfo name: ${names}`);
        // Aggregated: library loading is one record, not dozens.
        assert.ok(recs.filter((x) => x.action === "file.open").length < 40, `${recs.length} records`);
      }
    });
  }
});
