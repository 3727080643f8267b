import assert from "node:assert/strict";
import fs from "node:fs";
import { describe, test } from "node:test";
import type Docker from "dockerode";
import { rootfsDirFor } from "../images/build.js";
import { DEFAULT_IMAGE } from "../images/recipe.js";
import {
  CRUN_HYBRID_FIX,
  bwrapStrategy,
  defaultStrategies,
  describeChoice,
  detectRuntimes,
  doctorText,
  dockerStrategy,
  gvisorStraceSeesHandover,
  pickRuntime,
  type RuntimeProbe,
  type RuntimeStrategy,
} from "./detect.js";

const fixed = (p: Partial<RuntimeProbe> & { id: string }): RuntimeStrategy => ({
  id: p.id,
  probe: async () => ({ name: p.id.split("/")[0], available: false, ...p }),
});

/** A stand-in for dockerode with just what the probe calls. */
function fakeDocker(o: { runtimes?: string[]; runtimeArgs?: Record<string, string[]>; infoError?: Error; image?: boolean; startError?: Error; status?: number }): Docker {
  return {
    info: async () => {
      if (o.infoError) throw o.infoError;
      const Runtimes = Object.fromEntries((o.runtimes ?? ["runc"]).map((r) => [r, o.runtimeArgs?.[r] ? { runtimeArgs: o.runtimeArgs[r] } : {}]));
      return { ServerVersion: "20.10.24", CgroupVersion: "1", Runtimes };
    },
    getImage: () => ({ inspect: async () => { if (o.image === false) throw new Error("no such image"); return {}; } }),
    createContainer: async () => ({
      start: async () => { if (o.startError) throw o.startError; },
      wait: async () => ({ StatusCode: o.status ?? 0 }),
      remove: async () => undefined,
    }),
  } as unknown as Docker;
}

describe("runtime detection (strategies)", () => {
  test("the first available strategy wins; the log line says why earlier ones did not apply", async () => {
    const probes = await detectRuntimes({
      strategies: [
        fixed({ id: "docker/crun", reason: "a test container under crun failed: cgroups in hybrid mode not supported", fix: CRUN_HYBRID_FIX }),
        fixed({ id: "docker/runc", available: true, reason: "Docker 20.10.24; test container ran in 600 ms" }),
        fixed({ id: "bwrap", available: true, reason: "bubblewrap 0.8" }),
      ],
    });
    assert.equal(pickRuntime(probes)?.id, "docker/runc");
    const line = describeChoice(probes);
    assert.match(line, /^runtime docker\/runc \(Docker 20\.10\.24; test container ran in 600 ms\); skipped docker\/crun: .*hybrid mode/);
  });

  test("nothing available: no runtime is picked (never unsandboxed), and the doctor says so", async () => {
    const probes = await detectRuntimes({
      strategies: [
        fixed({ id: "docker/runc", reason: "no Docker engine", fix: "apt-get install -y docker.io" }),
        { id: "bwrap", probe: async () => { throw new Error("boom"); } },
      ],
    });
    assert.equal(pickRuntime(probes), null);
    assert.equal(probes[1].available, false);
    assert.match(probes[1].reason!, /probe failed: boom/);
    assert.match(describeChoice(probes), /refusing to run code/);
    const text = doctorText(probes);
    assert.match(text, /\[missing\] docker\/runc\s+no Docker engine/);
    assert.match(text, /fix: apt-get install -y docker\.io/);
    assert.match(text, /never runs code unsandboxed/);
  });

  test("doctor prints multi-line fixes indented under their runtime", () => {
    const text = doctorText([
      { id: "docker/crun", name: "docker", available: false, reason: "hybrid", fix: CRUN_HYBRID_FIX },
      { id: "bwrap", name: "bwrap", available: true, reason: "ok" },
    ]);
    assert.match(text, /fix: # move every controller/);
    assert.match(text, /\n\s+ +mountpoint -q/);
    assert.match(text, /Default runtime: bwrap/);
  });

  test("preferences reorder the strategies", () => {
    assert.deepEqual(defaultStrategies().map((s) => s.id), ["docker/crun", "docker/runc", "docker/runsc", "bwrap"]);
    assert.deepEqual(defaultStrategies({ preferredOciRuntime: "runsc" }).map((s) => s.id), ["docker/runsc", "docker/crun", "docker/runc", "bwrap"]);
    assert.deepEqual(defaultStrategies({ preferredRuntime: "bwrap", ociRuntimes: ["runc"] }).map((s) => s.id), ["bwrap", "docker/runc"]);
  });
});

describe("docker strategy", () => {
  const image = "petri/runtime:test";
  test("no socket", async () => {
    const p = await dockerStrategy("runc", { dockerSocket: "/nonexistent/docker.sock" }).probe();
    assert.equal(p.available, false);
    assert.match(p.reason!, /no Docker engine/);
    assert.match(p.fix!, /apt-get install -y docker\.io/);
  });
  test("engine not answering", async () => {
    const p = await dockerStrategy("runc", { docker: fakeDocker({ infoError: new Error("connect ECONNREFUSED") }) }).probe();
    assert.match(p.reason!, /not reachable: connect ECONNREFUSED/);
  });
  test("OCI runtime not registered", async () => {
    const p = await dockerStrategy("runsc", { docker: fakeDocker({ runtimes: ["runc"] }), image }).probe();
    assert.match(p.reason!, /runsc is not registered/);
    assert.match(p.fix!, /daemon\.json/);
    assert.match(p.fix!, /--platform=ptrace/);
    assert.match(p.fix!, /--oci-seccomp/);
  });
  test("gVisor registered without --oci-seccomp is refused: Petri's seccomp profile would not apply", async () => {
    for (const oci of ["runsc", "runsc-trace"]) {
      const bare = ["--platform=ptrace", "--network=none", "--host-uds=open"];
      const p = await dockerStrategy(oci, { docker: fakeDocker({ runtimes: ["runc", oci], runtimeArgs: { [oci]: bare } }), image }).probe();
      assert.equal(p.available, false, oci);
      assert.match(p.reason!, new RegExp(`${oci} is registered with Docker without --oci-seccomp`));
      assert.match(p.fix!, /scripts\/setup\.sh/);
      const ok = await dockerStrategy(oci, { docker: fakeDocker({ runtimes: ["runc", oci], runtimeArgs: { [oci]: [...bare, "--oci-seccomp"] } }), image }).probe();
      assert.equal(ok.available, true, ok.reason);
    }
    assert.equal((await dockerStrategy("runc", { docker: fakeDocker({}), image }).probe()).available, true, "runc needs no flag");
  });
  test("image missing", async () => {
    const p = await dockerStrategy("runc", { docker: fakeDocker({ image: false }), image }).probe();
    assert.match(p.reason!, /image petri\/runtime:test is not in Docker/);
    assert.equal(p.fix, "petri images build");
  });
  test("crun on a hybrid cgroup host: the fix is the controller move", async () => {
    const err = new Error("(HTTP code 500) server error - failed to create shim task: OCI runtime create failed: cgroups in hybrid mode not supported, drop all controllers from cgroupv2: unknown");
    const p = await dockerStrategy("crun", { docker: fakeDocker({ runtimes: ["runc", "crun"], startError: err }), image }).probe();
    assert.equal(p.available, false);
    assert.match(p.reason!, /hybrid mode not supported/);
    assert.equal(p.fix, CRUN_HYBRID_FIX);
  });
  test("a working runtime", async () => {
    const p = await dockerStrategy("runc", { docker: fakeDocker({}), image }).probe();
    assert.equal(p.available, true, p.reason);
    assert.equal(p.variant, "runc");
    assert.match(p.reason!, /test container ran in \d+ ms/);
  });
});

describe("bwrap strategy", () => {
  test("binary missing", async () => {
    const p = await bwrapStrategy({ bwrapPath: "/nonexistent/bwrap" }).probe();
    assert.equal(p.available, false);
    assert.equal(p.fix, "apt-get install -y bubblewrap");
  });
  test("root filesystem missing", async () => {
    const p = await bwrapStrategy({ rootfs: "/nonexistent/rootfs" }).probe();
    assert.equal(p.available, false);
    assert.match(p.fix ?? "", /petri images build|bubblewrap|util-linux|root/);
  });
});

describe("this host", { skip: fs.existsSync("/usr/bin/bwrap") ? false : "no bubblewrap here" }, () => {
  test("detects bwrap with its cgroup layout by running a sandbox", async () => {
    const p = await bwrapStrategy({ rootfs: rootfsDirFor("/var/lib/petri/images", DEFAULT_IMAGE) }).probe();
    assert.equal(p.available, true, `${p.reason} / ${p.fix}`);
    assert.match(p.reason!, /bubblewrap 0\.\d+.*test sandbox ran in \d+ ms/);
  });
});

test("runsc-trace: warm interpreters only when its strace records the hand-over mark, which setup.sh's registration does", async () => {
  const { spawnSync } = await import("node:child_process");
  const os = await import("node:os");
  const path = await import("node:path");
  const { GVISOR_STRACE_SYSCALLS } = await import("./gvisor-trace.js");
  const reg = (args: string[]) => ({ "runsc-trace": { runtimeArgs: args } });
  const older = ["--platform=ptrace", "--oci-seccomp", "--strace", "--strace-syscalls=open,openat,creat,execve,execveat,connect"];
  assert.equal(gvisorStraceSeesHandover("runsc-trace", reg(older)), false, "the registration before access() was traced");
  assert.equal(gvisorStraceSeesHandover("runsc-trace", reg(["--strace"])), true, "--strace without a list traces every call");
  assert.equal(gvisorStraceSeesHandover("runsc-trace", reg(["--strace-syscalls=access,faccessat"])), false, "no --strace: nothing is traced");
  assert.equal(gvisorStraceSeesHandover("runsc-trace", {}), false);
  // The registration scripts/setup.sh writes (the real script, into a scratch daemon.json).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-daemonjson-"));
  try {
    const file = path.join(dir, "daemon.json");
    const r = spawnSync(process.execPath, ["scripts/docker-daemon-json.mjs", file], { encoding: "utf8" });
    assert.ok(r.status === 0 || r.status === 10, r.stderr);
    const runtimes = JSON.parse(fs.readFileSync(file, "utf8")).runtimes as Record<string, { runtimeArgs?: string[] }>;
    if (!runtimes["runsc-trace"]) {
      console.log("# SKIP part: /usr/bin/runsc is absent, so the script registers no runsc-trace to check");
      return;
    }
    assert.equal(gvisorStraceSeesHandover("runsc-trace", runtimes), true);
    const list = runtimes["runsc-trace"].runtimeArgs!.find((a) => a.startsWith("--strace-syscalls="))!.split("=")[1]!.split(",");
    assert.deepEqual(list, GVISOR_STRACE_SYSCALLS, "Docker's runsc-trace traces what runsc-direct traces");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
