import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { rootfsDirFor } from "../images/build.js";
import { DEFAULT_IMAGE } from "../images/recipe.js";
import {
  BwrapRuntime,
  BwrapSetupError,
  RunCgroup,
  parseCgroupMounts,
  planCgroups,
  prepareCgroupParent,
  seccompProgram,
  type CgroupPlan,
} from "./bwrap.js";
import { bwrapStrategy } from "./detect.js";
import type { RunSpec } from "./types.js";

const HYBRID = `
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const PURE_V2 = `
24 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;
const V1_COMOUNTED = `
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:32 / /mnt/again rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
`;

describe("cgroup discovery", () => {
  test("hybrid host: every role on its v1 hierarchy, the near-empty v2 mount unused", () => {
    const h = parseCgroupMounts(HYBRID, () => ["hugetlb"]);
    assert.deepEqual(h.map((x) => `${x.version}:${x.mount}`), [
      "1:/sys/fs/cgroup/cpu", "1:/sys/fs/cgroup/cpuacct", "1:/sys/fs/cgroup/memory", "1:/sys/fs/cgroup/pids", "2:/sys/fs/cgroup/unified",
    ]);
    const plan = planCgroups(h);
    assert.deepEqual(plan.missing, []);
    assert.deepEqual(plan.hierarchies.map((x) => `${x.mount}=${x.roles.join(",")}`), [
      "/sys/fs/cgroup/memory=memory", "/sys/fs/cgroup/pids=pids", "/sys/fs/cgroup/cpu=cpu", "/sys/fs/cgroup/cpuacct=cpuacct",
      // joined with no role: the audit tracer tells runs apart by their v2 cgroup
      "/sys/fs/cgroup/unified=",
    ]);
  });

  test("pure v2: one hierarchy serves every role", () => {
    const plan = planCgroups(parseCgroupMounts(PURE_V2, () => ["cpuset", "cpu", "io", "memory", "pids"]));
    assert.deepEqual(plan.missing, []);
    assert.equal(plan.hierarchies.length, 1);
    assert.deepEqual(plan.hierarchies[0].roles, ["memory", "pids", "cpu", "cpuacct"]);
  });

  test("v2 without the memory controller: memory is missing, accounting still works", () => {
    const plan = planCgroups(parseCgroupMounts(PURE_V2, () => ["cpu", "pids"]));
    assert.deepEqual(plan.missing, ["memory"]);
  });

  test("co-mounted cpu,cpuacct and a hierarchy mounted twice", () => {
    const h = parseCgroupMounts(V1_COMOUNTED, () => []);
    assert.equal(h.length, 3, "the second mount of the memory hierarchy is the same hierarchy");
    const plan = planCgroups(h);
    assert.deepEqual(plan.hierarchies.map((x) => `${x.mount}=${x.roles.join(",")}`), [
      "/sys/fs/cgroup/memory=memory", "/sys/fs/cgroup/pids=pids", "/sys/fs/cgroup/cpu,cpuacct=cpu,cpuacct",
    ]);
  });
});

describe("per-run cgroup files (on a fake cgroupfs)", () => {
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-fakecg-")); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const limits = { memoryBytes: 128 << 20, cpus: 0.5, pids: 10, openFiles: 64, fileSizeBytes: 1 << 20, tmpfsBytes: 1 << 20 };

  test("v1: limits written per controller, usage read back", () => {
    for (const c of ["memory", "pids", "cpu", "cpuacct"]) fs.mkdirSync(path.join(dir, "v1", c), { recursive: true });
    const plan = planCgroups(["memory", "pids", "cpu", "cpuacct"].map((c) => ({ version: 1 as const, mount: path.join(dir, "v1", c), controllers: [c] })));
    prepareCgroupParent(plan, "petri-bwrap");
    const cg = RunCgroup.create(plan, "petri-bwrap", "r-1", limits);
    const read = (c: string, f: string) => fs.readFileSync(path.join(dir, "v1", c, "petri-bwrap", "r-1", f), "utf8");
    assert.equal(read("memory", "memory.limit_in_bytes"), String(128 << 20));
    assert.equal(read("pids", "pids.max"), "12", "bwrap's two processes come on top of the limit");
    assert.equal(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert.equal(read("cpu", "cpu.cfs_period_us"), "100000");
    assert.deepEqual(cg.procsFiles.map((f) => path.relative(dir, f)), [
      "v1/memory/petri-bwrap/r-1/cgroup.procs", "v1/pids/petri-bwrap/r-1/cgroup.procs", "v1/cpu/petri-bwrap/r-1/cgroup.procs", "v1/cpuacct/petri-bwrap/r-1/cgroup.procs",
    ]);
    fs.writeFileSync(path.join(dir, "v1/memory/petri-bwrap/r-1/memory.max_usage_in_bytes"), "4096\n");
    fs.writeFileSync(path.join(dir, "v1/memory/petri-bwrap/r-1/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
    fs.writeFileSync(path.join(dir, "v1/cpuacct/petri-bwrap/r-1/cpuacct.usage"), "2500000\n");
    assert.deepEqual(cg.usage(), { peakMemoryBytes: 4096, cpuTimeMs: 3, oomKills: 1 });
  });

  test("v2: controllers delegated top-down, limits in one directory", () => {
    const mount = path.join(dir, "v2");
    fs.mkdirSync(mount, { recursive: true });
    const plan: CgroupPlan = planCgroups([{ version: 2, mount, controllers: ["memory", "pids", "cpu"] }]);
    prepareCgroupParent(plan, "petri/bwrap");
    assert.equal(fs.readFileSync(path.join(mount, "cgroup.subtree_control"), "utf8"), "+memory +pids +cpu");
    assert.equal(fs.readFileSync(path.join(mount, "petri", "bwrap", "cgroup.subtree_control"), "utf8"), "+memory +pids +cpu");
    const cg = RunCgroup.create(plan, "petri/bwrap", "r-2", limits);
    const run = path.join(mount, "petri", "bwrap", "r-2");
    assert.equal(fs.readFileSync(path.join(run, "memory.max"), "utf8"), String(128 << 20));
    assert.equal(fs.readFileSync(path.join(run, "cpu.max"), "utf8"), "50000 100000");
    assert.equal(fs.readFileSync(path.join(run, "pids.max"), "utf8"), "12");
    fs.writeFileSync(path.join(run, "memory.peak"), "8192\n");
    fs.writeFileSync(path.join(run, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n");
    fs.writeFileSync(path.join(run, "cpu.stat"), "usage_usec 12000\nuser_usec 10000\n");
    assert.deepEqual(cg.usage(), { peakMemoryBytes: 8192, cpuTimeMs: 12, oomKills: 0 });
    assert.equal(cg.pids().length, 0);
  });
});

describe("seccomp program", () => {
  test("x86_64: checks the arch first, ends in allow, one deny pair per syscall", () => {
    const p = seccompProgram("x64")!;
    assert.equal(p.length % 8, 0);
    assert.equal(p.readUInt16LE(0), 0x20); // ld [arch]
    assert.equal(p.readUInt32LE(12), 0xc000003e);
    assert.equal(p.readUInt32LE(p.length - 4), 0x7fff0000); // ret ALLOW
    assert.ok(p.length / 8 < 4096, "BPF programs are limited to 4096 instructions");
  });
  test("an architecture without a table gets no filter rather than a wrong one", () => {
    assert.equal(seccompProgram("s390x"), null);
  });
});

const ROOTFS = rootfsDirFor("/var/lib/petri/images", DEFAULT_IMAGE);
const probe = await bwrapStrategy({ rootfs: ROOTFS }).probe();

describe("BwrapRuntime specifics", { skip: probe.available ? false : `bwrap unavailable: ${probe.reason}` }, () => {
  let rt: BwrapRuntime;
  let ws: string;
  before(() => {
    rt = new BwrapRuntime();
    ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bwrap-"));
    fs.chownSync(ws, 1000, 1000);
  });
  after(async () => {
    await rt.close();
    fs.rmSync(ws, { recursive: true, force: true });
  });
  const spec = (argv: string[], extra: Partial<RunSpec> = {}): RunSpec => ({
    image: DEFAULT_IMAGE,
    rootfs: ROOTFS,
    argv,
    env: { PATH: "/usr/bin:/bin" },
    cwd: "/workspace",
    mounts: [{ source: ws, target: "/workspace", readonly: false }],
    limits: { memoryBytes: 128 << 20, cpus: 1, pids: 32, openFiles: 64, fileSizeBytes: 1 << 20, tmpfsBytes: 1 << 20 },
    timeoutMs: 10_000,
    outputLimitBytes: 64 * 1024,
    uid: 1000,
    gid: 1000,
    labels: { "io.jhansi.petri.test": "bwrap" },
    ...extra,
  });
  const py = (code: string) => ["python3", "-c", code];

  test("seccomp: keyrings, bpf and io_uring are refused with EPERM", async () => {
    const r = await rt.run(spec(py([
      "import ctypes",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "out = []",
      "for nr, args in [(250, (0, -3, 0)), (321, (0, 0, 0)), (425, (1, 0))]:",
      "    ctypes.set_errno(0); rc = libc.syscall(nr, *args); out.append((rc, ctypes.get_errno()))",
      "print(out)",
    ].join("\n"))));
    assert.equal(r.stdout.toString().trim(), "[(-1, 1), (-1, 1), (-1, 1)]", r.stderr.toString());
  });

  test("no nested user namespaces (no route to namespace-only kernel surface)", async () => {
    const r = await rt.run(spec(["unshare", "--user", "--map-root-user", "true"]));
    assert.notEqual(r.exitCode, 0);
  });

  test("the sandbox sees no cgroupfs, no host /sys, and a fresh /proc", async () => {
    const r = await rt.run(spec(py("import os; print(os.path.exists('/sys/fs/cgroup/memory'), len([p for p in os.listdir('/proc') if p.isdigit()]), open('/proc/sys/kernel/hostname').read().strip())")));
    const [cgroupfs, procs, hostname] = r.stdout.toString().trim().split(" ");
    assert.equal(cgroupfs, "False");
    assert.ok(Number(procs) <= 3, `sees ${procs} processes`);
    assert.equal(hostname, "sandbox");
  });

  test("read-only mounts are read-only", async () => {
    const r = await rt.run(spec(py("open('/workspace/x', 'w')"), { mounts: [{ source: ws, target: "/workspace", readonly: true }] }));
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr.toString(), /Read-only file system/);
  });

  test("a mount target missing from the image is created, and / stays read-only", async () => {
    const r = await rt.run(spec(py("import os\nprint(os.listdir('/data/in'))\ntry:\n    open('/newfile', 'w')\nexcept OSError as e:\n    print(type(e).__name__)"), {
      cwd: "/",
      mounts: [{ source: ws, target: "/data/in", readonly: true }],
    }));
    assert.equal(r.exitCode, 0, r.stderr.toString());
    assert.match(r.stdout.toString(), /OSError|PermissionError/);
  });

  test("setup failures throw instead of looking like the program's exit", async () => {
    await assert.rejects(rt.run(spec(["no-such-program"])), (e: Error) => e instanceof BwrapSetupError && /execvp/.test(e.message));
    await assert.rejects(rt.run(spec(["true"], { rootfs: undefined })), BwrapSetupError);
    await assert.rejects(rt.run(spec(["true"], { uid: 0 })), /root/);
    await assert.rejects(rt.run(spec(["true"], { mounts: [{ source: "/nonexistent-petri", target: "/workspace", readonly: false }] })), /Can't find source path/);
  });

  test("count and reap see live runs by label; reaped runs say killed", async () => {
    const labels = { "io.jhansi.petri.test": "reap-me" };
    const p = rt.run(spec(["sleep", "30"], { labels }));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await rt.count(labels), 1);
    assert.equal(await rt.count({ "io.jhansi.petri.test": "other" }), 0);
    assert.equal(await rt.reap(labels), 1);
    const r = await p;
    assert.equal(r.killed, true);
    assert.equal(await rt.count(labels), 0);
  });

  test("reap removes cgroups a dead Petri process left behind", async () => {
    // A pid that cannot be alive (above pid_max).
    const stale = "r-99999999-0-abcdef";
    const dirs = ["memory", "pids"].map((c) => path.join("/sys/fs/cgroup", c, "petri-bwrap", stale)).filter((d) => fs.existsSync(path.dirname(d)));
    for (const d of dirs) fs.mkdirSync(d);
    await rt.reap({});
    for (const d of dirs) assert.equal(fs.existsSync(d), false, `${d} is still there`);
  });

  test("many concurrent runs: all succeed, nothing left behind", async () => {
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => rt.run(spec(py(`print(${i})`)))));
    results.forEach((r, i) => assert.equal(r.stdout.toString(), `${i}\n`));
    const left = fs.readdirSync("/sys/fs/cgroup/memory/petri-bwrap").filter((n) => n.startsWith(`r-${process.pid}-`));
    assert.deepEqual(left, []);
  });
});
