import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, docker, type TestServer } from "./helpers.js";
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
    t = await startTestServer({ PETRI_RUNTIMES: "runc,crun,bwrap,runc-direct,crun-direct,runsc,runsc-direct", PETRI_AUDIT_TRACE: "required", PETRI_WARM_IDLE_MS: "60000" });
    const st = await t.server.tracer.ready();
    assert.equal(st.state, "active", st.reason ?? "");
    // Whether runsc runs are traced is asked of Docker's own runtime list, never of the audit under test.
    const info = (await docker.info()) as { Runtimes?: Record<string, { runtimeArgs?: string[] }> };
    runscTraceArgs = info.Runtimes?.["runsc-trace"]?.runtimeArgs ?? null;
  });
  let runscTraceArgs: string[] | null = null;
  after(async () => { await t?.close(); });

  // runsc is traced by gVisor's own strace (runsc-trace through Docker; runsc-direct passes the
  // same flags per run), which has no host pids or uids and sees no getaddrinfo names; under
  // Docker connects only when runsc-trace's --strace-syscalls lists connect (runsc-direct always does).
  for (const runtime of ["runc", "crun", "bwrap", "runc-direct", "crun-direct", "runsc", "runsc-direct"]) {
    it(`${runtime}: files, programs, connections and names match the program's own log`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      const gvisor = runtime === "runsc" || runtime === "runsc-direct";
      if (runtime === "runsc" && !runscTraceArgs) return ctx.skip("runsc-trace is not registered with Docker (run scripts/setup.sh)");
      const gvisorConnects = runtime === "runsc-direct" || Boolean(runscTraceArgs?.some((a) => a.startsWith("--strace-syscalls=") && a.includes("connect")));
      if (gvisor) ctx.diagnostic(`${runtime}: pids, uids and DNS names are not checked (gVisor's strace has none)${gvisorConnects ? "" : "; connects are not checked: runsc-trace's --strace-syscalls lacks connect here (scripts/setup.sh adds it)"}`);
      // Docker's runsc-trace pre-starts warm interpreters when its strace records their hand-over
      // mark (access: scripts/setup.sh registers it so); asked of Docker's own runtime list.
      const runscWarm = runtime === "runsc" && Boolean(runscTraceArgs?.some((a) => a.startsWith("--strace-syscalls=") && a.split("=")[1]!.split(",").includes("access")));
      const prestarts = runtime !== "runsc" || runscWarm;
      const sb = await createSandbox(t, { language: "python", runtime });
      for (let i = 0; i < 5; i++) await putFile(t, sb, `in${i}.txt`, `input ${i}`);
      await putFile(t, sb, "main.py", PROGRAM);
      // Three times: a sandbox that ran before gets a pre-started unit after its run, so the third
      // run takes one, whose launcher (or warm interpreter's start and imports) must not be counted.
      // Where units are warm interpreters (all but a runsc-trace without access), the third run must really run in one:
      // seen from the runtime's own result, not from the audit under test.
      const rt = t.server.runtimes.get(runtime) as any;
      const warmCapable = runscWarm || ["runc", "crun", "bwrap", "runc-direct", "crun-direct", "runsc-direct"].includes(runtime);
      let last: any = null;
      const orig = rt.run;
      rt.run = async (spec: unknown) => { last = await orig.call(rt, spec); return last; };
      try {
      for (const round of [1, 2, 3]) {
        if (round === 3 && prestarts) {
          const until = Date.now() + 90_000;
          while (!(rt.prestartStats?.().ready > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
          assert.ok(rt.prestartStats().ready > 0, "a unit was pre-started for the third run");
        }
        const hitsBefore = rt.prestartStats?.().hits ?? 0;
        const r = await exec(t, sb, { filename: "main.py" });
        assert.equal(r.json.exit_code, 0, r.text);
        if (round === 3 && prestarts) {
          assert.equal(rt.prestartStats().hits, hitsBefore + 1, "the third run took the pre-started unit");
          if (warmCapable) assert.equal(last?.timings?.interp, 1, `the third run ran in the warm interpreter: ${JSON.stringify(last?.timings)} ${last?.warmFallback ?? ""}`);
        }
        const truth = JSON.parse(r.json.stdout.trim().split("\n").pop());
        const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
        const finish = recs.find((x) => x.action === "exec.finish");
        assert.equal(finish.detail.audit_level, gvisor ? "gvisor-strace" : "ebpf", `round ${round}: ${JSON.stringify(finish.detail)}`);
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
        if (!gvisor) for (const e of execs) assert.equal(typeof e.detail.pid, "number");

        const connects = recs.filter((x) => x.action === "net.connect" && x.detail.family === "inet");
        if (!gvisor || gvisorConnects) for (const [host, port] of truth.connects) {
          const c = connects.find((x) => x.detail.ip === host && x.detail.port === port);
          assert.ok(c, `round ${round}: connect ${host}:${port} in ${JSON.stringify(connects.map((x) => x.detail))}`);
          assert.notEqual(c.outcome, "success", "no network: the attempt failed and says why");
          assert.ok(c.error_code);
        }
        const names = recs.filter((x) => x.action === "dns.query").map((x) => x.detail.hostname);
        if (!gvisor) assert.ok(names.includes("audit-probe.example"), `getaddrinfo name: ${names}`);
        // Aggregated: library loading is one record, not dozens.
        assert.ok(recs.filter((x) => x.action === "file.open").length < 40, `${recs.length} records`);
        if (round === 3 && warmCapable) {
          const self = execs.find((e) => JSON.stringify(e.detail.argv) === JSON.stringify(["python3", "main.py"]));
          assert.equal(self.detail.warm, true, `the program's record says it was handed to a warm interpreter: ${JSON.stringify(self.detail)}`);
          assert.match(self.detail.path, /python3/);
        }
      }
      } finally {
        rt.run = orig;
      }
    });
  }
});

/**
 * Execs made by a thread other than the process's first: the kernel's de_thread() gives such a
 * thread its process's pid, so the exec returns under another id than it entered with. A child
 * does it, then the program itself (after printing its log), replacing itself with /bin/true.
 */
const THREAD_EXEC_PROGRAM = String.raw`
import json, os, threading
truth = {"programs": [["/bin/echo", "from a thread"], ["/bin/true", "self"]]}
pid = os.fork()
if pid == 0:
    os.dup2(os.open("/dev/null", os.O_WRONLY), 1)
    threading.Thread(target=lambda: os.execv("/bin/echo", ["/bin/echo", "from a thread"])).start()
    threading.Event().wait(30)
    os._exit(9)
truth["child_exit"] = os.waitpid(pid, 0)[1]
print(json.dumps(truth), flush=True)
threading.Thread(target=lambda: os.execv("/bin/true", ["/bin/true", "self"])).start()
threading.Event().wait(30)
`;

describe("host tracer: execs by threads other than the leader are recorded", { skip: pre.ok ? false : `host cannot trace: ${(pre as { reason: string }).reason}` }, () => {
  let t: TestServer;
  let runscTrace = false;
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runc,crun,bwrap,runc-direct,crun-direct,runsc-direct,runsc", PETRI_AUDIT_TRACE: "required", PETRI_WARM_IDLE_MS: "60000" });
    const info = (await docker.info()) as { Runtimes?: Record<string, unknown> };
    runscTrace = Boolean(info.Runtimes?.["runsc-trace"]);
  });
  after(async () => { await t?.close(); });

  // gVisor's strace (runsc-direct, Docker's runsc-trace) is checked the same way: only programs.
  for (const runtime of ["runc", "crun", "bwrap", "runc-direct", "crun-direct", "runsc-direct", "runsc"]) {
    it(`${runtime}: a child's exec from a thread and the program's own are in the audit`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      if (runtime === "runsc" && !runscTrace) return ctx.skip("runsc-trace is not registered with Docker (run scripts/setup.sh)");
      const sb = await createSandbox(t, { language: "python", runtime });
      await putFile(t, sb, "main.py", THREAD_EXEC_PROGRAM);
      // Twice: the second run may take a pre-started (warm) unit.
      for (const round of [1, 2]) {
        const r = await exec(t, sb, { filename: "main.py" });
        assert.equal(r.json.exit_code, 0, r.text);
        const truth = JSON.parse(r.json.stdout.trim().split("\n").pop());
        assert.equal(truth.child_exit, 0, "the child's thread executed /bin/echo");
        const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
        const finish = recs.find((x) => x.action === "exec.finish");
        assert.equal(finish.detail.trace_complete, true, `round ${round}: ${finish.detail.audit_level_reason}`);
        const argvs = recs.filter((x) => x.action === "process.exec").map((e) => JSON.stringify(e.detail.argv));
        assert.ok(argvs.includes(JSON.stringify(["python3", "main.py"])), `round ${round}: the program itself: ${argvs}`);
        for (const argv of truth.programs) assert.ok(argvs.includes(JSON.stringify(argv)), `round ${round}: ${JSON.stringify(argv)} in ${argvs}`);
        assert.equal(argvs.length, 1 + truth.programs.length, `round ${round}: only the program and what it ran: ${argvs}`);
      }
    });
  }
});

/**
 * The same for Node, whose warm units mark the hand-over with a refused open (warm-node.ts): the
 * third run runs in a pre-started node, and the audit must still match the program's own log.
 */
const NODE_PROGRAM = String.raw`
const fs = require("fs"), net = require("net"), cp = require("child_process");
const truth = { opened: [], programs: [], connects: [] };
for (let i = 0; i < 5; i++) { const p = "/workspace/in" + i + ".txt"; fs.readFileSync(p); truth.opened.push([p, "read"]); }
for (let i = 0; i < 3; i++) { const p = "/tmp/nout" + i + ".txt"; fs.writeFileSync(p, "x"); truth.opened.push([p, "write"]); }
for (const argv of [["/bin/true"], ["/bin/echo", "hi there"]]) { cp.spawnSync(argv[0], argv.slice(1)); truth.programs.push(argv); }
const s = net.connect(8443, "10.1.2.3");
s.on("error", (e) => { truth.connects.push(["10.1.2.3", 8443, e.code]); console.log(JSON.stringify(truth)); });
`;

describe("host tracer: warm Node runs are recorded like cold ones", { skip: pre.ok ? false : `host cannot trace: ${(pre as { reason: string }).reason}` }, () => {
  let t: TestServer;
  let runscTraceArgs: string[] | null = null;
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runc,crun,bwrap,runc-direct,crun-direct,runsc,runsc-direct", PETRI_AUDIT_TRACE: "required", PETRI_WARM_IDLE_MS: "60000" });
    const info = (await docker.info()) as { Runtimes?: Record<string, { runtimeArgs?: string[] }> };
    runscTraceArgs = info.Runtimes?.["runsc-trace"]?.runtimeArgs ?? null;
  });
  after(async () => { await t?.close(); });

  // Under gVisor (gVisor's strace: Node's mark is the same refused open, seen by the strace
  // parser) the unit starts with the command line of the run it follows: the third run of
  // main.js is the one warm.
  for (const runtime of ["runc", "crun", "bwrap", "runc-direct", "crun-direct", "runsc-direct", "runsc"]) {
    it(`${runtime}: files, programs and connections of a warm node run match its own log`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      if (runtime === "runsc" && !runscTraceArgs) return ctx.skip("runsc-trace is not registered with Docker (run scripts/setup.sh)");
      const gvisor = runtime === "runsc" || runtime === "runsc-direct";
      const gvisorConnects = runtime === "runsc-direct" || Boolean(runscTraceArgs?.some((a) => a.startsWith("--strace-syscalls=") && a.includes("connect")));
      if (gvisor && !gvisorConnects) ctx.diagnostic("connects are not checked: runsc-trace's --strace-syscalls lacks connect here (scripts/setup.sh adds it)");
      const sb = await createSandbox(t, { language: "node", runtime });
      for (let i = 0; i < 5; i++) await putFile(t, sb, `in${i}.txt`, `input ${i}`);
      await putFile(t, sb, "main.js", NODE_PROGRAM);
      const rt = t.server.runtimes.get(runtime) as any;
      let last: any = null;
      const orig = rt.run;
      rt.run = async (spec: unknown) => { last = await orig.call(rt, spec); return last; };
      try {
        for (const round of [1, 2, 3]) {
          if (round === 3) {
            const until = Date.now() + 90_000;
            while (!(rt.prestartStats?.().ready > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
          }
          const r = await exec(t, sb, { filename: "main.js" });
          assert.equal(r.json.exit_code, 0, r.text);
          if (round === 3) assert.equal(last?.timings?.interp, 1, `the third run ran in the warm node: ${JSON.stringify(last?.timings)} ${last?.warmFallback ?? ""}`);
          const truth = JSON.parse(r.json.stdout.trim().split("\n").pop());
          const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
          const finish = recs.find((x) => x.action === "exec.finish");
          assert.equal(finish.detail.audit_level, gvisor ? "gvisor-strace" : "ebpf", `round ${round}: ${JSON.stringify(finish.detail)}`);
          assert.equal(finish.detail.trace_complete, true, finish.detail.audit_level_reason);
          const opens = recs.filter((x) => x.action === "file.open" && !x.detail.path.startsWith("["));
          for (const [p, access] of truth.opened) {
            assert.ok(opens.some((o) => o.detail.path === p && o.detail.access === access), `round ${round}: ${p} ${access} in ${JSON.stringify(opens.map((o) => o.detail.path))}`);
          }
          if (round === 3) {
            // Nothing of the unit's own start (node's bootstrap, Petri's preload and hold) is the program's.
            assert.ok(!opens.some((o) => /\/petri\/agent\/node\//.test(o.detail.path)), `Petri's preload or hold counted as the program's: ${JSON.stringify(opens.map((o) => o.detail.path))}`);
            const self = recs.find((x) => x.action === "process.exec" && JSON.stringify(x.detail.argv) === JSON.stringify(["node", "main.js"]));
            assert.equal(self?.detail.warm, true, `the program's record says it was handed to a warm node: ${JSON.stringify(self?.detail)}`);
          }
          assert.ok(!opens.some((o) => o.detail.flags?.includes("O_DIRECTORY") && o.detail.flags?.includes("O_CREAT")), "the hand-over mark is not an open of the program");
          const execs = recs.filter((x) => x.action === "process.exec");
          const argvs = execs.map((e) => JSON.stringify(e.detail.argv));
          assert.ok(argvs.includes(JSON.stringify(["node", "main.js"])), `round ${round}: the program itself: ${argvs}`);
          for (const argv of truth.programs) assert.ok(argvs.includes(JSON.stringify(argv)), `round ${round}: ${JSON.stringify(argv)} in ${argvs}`);
          assert.equal(execs.length, 1 + truth.programs.length, `round ${round}: only the program and what it ran: ${argvs}`);
          const connects = recs.filter((x) => x.action === "net.connect" && x.detail.family === "inet");
          if (!gvisor || gvisorConnects) assert.ok(connects.some((c) => c.detail.ip === "10.1.2.3" && c.detail.port === 8443), `round ${round}: ${JSON.stringify(connects.map((x) => x.detail))}`);
        }
      } finally {
        rt.run = orig;
      }
    });
  }
});

/**
 * Two servers on one host (here in one process, as parallel tests or CI would have them): each
 * tracer follows only the runs its own server registered. Both run a program at the same time;
 * each audit holds its own program's files and none of the other's, and neither tracer received
 * a single event of the other's runs (under the old name-based scope both received all).
 */
describe("two servers at once: each tracer sees only its own server's runs", { skip: pre.ok ? false : `host cannot trace: ${(pre as { reason: string }).reason}` }, () => {
  const servers: TestServer[] = [];
  before(async () => {
    for (let i = 0; i < 2; i++) servers.push(await startTestServer({ PETRI_RUNTIMES: "runc,bwrap", PETRI_AUDIT_TRACE: "required" }));
  });
  after(async () => { for (const s of servers) await s.close(); });

  for (const runtime of ["runc", "bwrap"]) {
    it(`${runtime}: concurrent runs on two servers, each audit holds only its own`, async (ctx) => {
      if (!servers.every((s) => s.server.runtimes.has(runtime))) return ctx.skip(`${runtime} is not available on this host`);
      const foreignBefore = servers.map((s) => s.server.tracer.status().foreign_events);
      const program = (label: string) => `import time\nfor i in range(40):\n    open("/tmp/${label}-%d.txt" % i, "w").write("x")\n    time.sleep(0.02)\nprint("done")\n`;
      const sbs = await Promise.all(servers.map((s) => createSandbox(s, { language: "python", runtime })));
      const results = await Promise.all(servers.map((s, i) => exec(s, sbs[i], { code: program(`server${i}`) })));
      for (let i = 0; i < 2; i++) {
        const r = results[i];
        assert.equal(r.json.exit_code, 0, r.text);
        const recs = (await servers[i].api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
        const finish = recs.find((x) => x.action === "exec.finish");
        assert.equal(finish.detail.trace_complete, true, finish.detail.audit_level_reason);
        const paths = recs.filter((x) => x.action === "file.open").map((x) => x.detail.path as string);
        assert.equal(paths.filter((p) => p.startsWith(`/tmp/server${i}-`)).length, 40, `server ${i}: its own 40 files in ${paths}; ${JSON.stringify(finish.detail.trace_counts)} ${recs.filter((x) => x.action === "process.exec").map((x) => JSON.stringify(x.detail.argv))}`);
        assert.equal(paths.filter((p) => p.startsWith(`/tmp/server${1 - i}-`)).length, 0, `server ${i}: none of the other's files`);
        assert.equal(servers[i].server.tracer.status().foreign_events, foreignBefore[i], `server ${i}'s tracer received events of runs it never registered`);
      }
    });
  }
});

/**
 * A name that is not UTF-8 (bytes 63 61 66 e9 = "caf" + Latin-1 é) is kept exactly everywhere:
 * the run's `files`, the workspace-diff record, the tracer's open record, the listing, and the
 * download and deletion by `path_b64`.
 */
describe("names that are not UTF-8 are recorded losslessly", () => {
  let t: TestServer;
  const RAW = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74]); // caf\xe9.txt
  const B64 = RAW.toString("base64");
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runc,bwrap", PETRI_AUDIT_TRACE: pre.ok ? "required" : "off" });
  });
  after(async () => { await t?.close(); });

  for (const runtime of ["runc", "bwrap"]) {
    it(`${runtime}: run result, audit records, listing, download and delete`, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      const sb = await createSandbox(t, { language: "python", runtime });
      // Two names that differ only in their invalid byte must stay two files.
      const r = await exec(t, sb, { code: "open(b'/workspace/caf\\xe9.txt', 'w').write('one')\nopen(b'/workspace/caf\\xe8.txt', 'w').write('two')" });
      assert.equal(r.json.exit_code, 0, r.text);
      assert.equal(r.json.files.created.length, 2, JSON.stringify(r.json.files));
      const raw = r.json.files.non_utf8 as { change: string; path: string; path_b64: string }[];
      assert.ok(raw.some((x) => x.change === "created" && x.path_b64 === B64), JSON.stringify(r.json.files));
      assert.equal(raw.length, 2);

      const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
      const created = recs.filter((x) => x.action === "file.create");
      assert.equal(created.length, 2, JSON.stringify(created.map((x) => x.detail)));
      assert.ok(created.some((x) => x.detail.path_b64 === B64 && x.detail.path === "caf\ufffd.txt"), JSON.stringify(created.map((x) => x.detail)));
      if (!pre.ok) ctx.diagnostic(`SKIPPED part: the tracer's open record is not checked (host cannot trace: ${(pre as { reason: string }).reason})`);
      else {
        const open = recs.find((x) => x.action === "file.open" && x.detail.path_b64 === Buffer.concat([Buffer.from("/workspace/"), RAW]).toString("base64"));
        assert.ok(open, `the tracer's open record: ${JSON.stringify(recs.filter((x) => x.action === "file.open").map((x) => x.detail))}`);
        assert.equal(open.detail.access, "write");
      }

      const list = (await t.api("GET", `/v1/sandboxes/${sb}/files`)).json.files as any[];
      assert.ok(list.some((f) => f.path_b64 === B64));
      const dl = await t.api("GET", `/v1/sandboxes/${sb}/files/?path_b64=${encodeURIComponent(B64)}`);
      assert.equal(dl.status, 200, dl.text);
      assert.equal(dl.text, "one");
      const del = await t.api("DELETE", `/v1/sandboxes/${sb}/files/?path_b64=${encodeURIComponent(B64)}`);
      assert.equal(del.status, 204, del.text);
      const api = (await t.api("GET", `/v1/audit?sandbox_id=${sb}&action=files.delete`)).json.items as any[];
      assert.equal(api[0]?.detail.path_b64, B64, JSON.stringify(api));
      const after = (await t.api("GET", `/v1/sandboxes/${sb}/files`)).json.files as any[];
      assert.ok(!after.some((f) => f.path_b64 === B64) && after.some((f) => f.path_b64 !== undefined), "only the other one is left");
    });
  }
});
