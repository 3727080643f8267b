import fs from "node:fs";
import path from "node:path";
import { mountsUnder, unmountAllUnder } from "../exec/overlay/mounts.js";

/**
 * Removes what a conformance test file killed before its clean-up left behind: the test runner
 * kills a file past its time limit, and the programs of a direct OCI run it was in the middle of
 * (crun/runc/runsc run the container outside the test's process group) live on in the cgroups
 * named after that file's pid — some of the suite's programs loop forever on purpose, and they
 * then take the CPU from every test after them. Only cgroups `petri-conformance-<pid>-…` whose pid
 * is no longer alive are touched (this suite's own, of a dead test process), and the state
 * directories `/run/petri/conformance-<pid>-…` beside them (their mounts, the containers' root
 * filesystems, unmounted first: never removed through). Returns how many processes were killed.
 */
export async function sweepDeadConformanceRuns(cgroupRoot = "/sys/fs/cgroup", stateRoot = "/run/petri"): Promise<number> {
  const dead = (pid: number) => {
    try { process.kill(pid, 0); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === "ESRCH"; }
  };
  const stale = (name: string) => {
    const m = /^(?:petri-)?conformance-(\d+)-/.exec(name);
    return m !== null && Number(m[1]) !== process.pid && dead(Number(m[1]));
  };
  const hierarchies = [cgroupRoot, ...list(cgroupRoot).map((d) => path.join(cgroupRoot, d))].filter((d) => fs.existsSync(path.join(d, "cgroup.procs")));
  const groups = hierarchies.flatMap((h) => list(h).filter(stale).map((d) => path.join(h, d)));
  const killed = new Set<number>();
  // Kill first everywhere (a process is in one cgroup per hierarchy), then remove, deepest first.
  for (let round = 0; round < 5; round++) {
    let seen = 0;
    for (const g of groups) for (const dir of tree(g)) for (const pid of procs(dir)) {
      seen++;
      try { process.kill(pid, "SIGKILL"); killed.add(pid); } catch { /* gone already */ }
    }
    if (seen === 0) break;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  for (const g of groups) for (const dir of tree(g).reverse()) {
    try { fs.rmdirSync(dir); } catch { /* busy or gone: the next sweep tries again */ }
  }
  for (const d of list(stateRoot).filter(stale)) {
    const dir = path.join(stateRoot, d);
    await unmountAllUnder(dir).catch(() => 0);
    if (mountsUnder(dir).length === 0) fs.rmSync(dir, { recursive: true, force: true });
  }
  return killed.size;
}

function list(dir: string): string[] {
  try { return fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name); } catch { return []; }
}

/** A cgroup and every cgroup below it, parents first. */
function tree(dir: string): string[] {
  return [dir, ...list(dir).flatMap((d) => tree(path.join(dir, d)))];
}

function procs(dir: string): number[] {
  try { return fs.readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number); } catch { return []; }
}
