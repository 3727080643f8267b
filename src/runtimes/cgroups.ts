import fs from "node:fs";
import path from "node:path";

/**
 * Per-run accounting through a parent cgroup. Docker is told to put each run's container under
 * its own cgroup parent; the container's own cgroup vanishes with the container, but the parent's
 * counters (peak memory, CPU time) are hierarchical and outlive it, so they can be read after the
 * run without racing the container's exit. Works on cgroup v1 (this host's layout, hybrid) and v2.
 */
export type CgroupLayout = { kind: "v1"; root: string } | { kind: "v2"; root: string } | { kind: "none" };

export function detectCgroupLayout(root = "/sys/fs/cgroup"): CgroupLayout {
  if (fs.existsSync(path.join(root, "cgroup.controllers"))) return { kind: "v2", root };
  if (fs.existsSync(path.join(root, "memory", "memory.max_usage_in_bytes"))) return { kind: "v1", root };
  return { kind: "none" };
}

export function readNumber(file: string): number | null {
  try {
    const v = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

export interface CgroupUsage {
  peakMemoryBytes: number | null;
  cpuTimeMs: number | null;
}

export function readUsage(layout: CgroupLayout, rel: string): CgroupUsage {
  if (layout.kind === "v1") {
    const mem = readNumber(path.join(layout.root, "memory", rel, "memory.max_usage_in_bytes"));
    const cpuNs = readNumber(path.join(layout.root, "cpuacct", rel, "cpuacct.usage"));
    return { peakMemoryBytes: mem, cpuTimeMs: cpuNs === null ? null : Math.round(cpuNs / 1e6) };
  }
  if (layout.kind === "v2") {
    const dir = path.join(layout.root, rel);
    const mem = readNumber(path.join(dir, "memory.peak"));
    let cpuTimeMs: number | null = null;
    try {
      const m = /usage_usec (\d+)/.exec(fs.readFileSync(path.join(dir, "cpu.stat"), "utf8"));
      if (m) cpuTimeMs = Math.round(Number(m[1]) / 1000);
    } catch { /* not there */ }
    return { peakMemoryBytes: mem, cpuTimeMs };
  }
  return { peakMemoryBytes: null, cpuTimeMs: null };
}

/** Removes the (now empty) parent cgroup in every hierarchy where it exists. */
export function removeCgroup(layout: CgroupLayout, rel: string): void {
  const dirs: string[] = [];
  if (layout.kind === "v1") {
    for (const ctrl of safeReaddir(layout.root)) dirs.push(path.join(layout.root, ctrl, rel));
  } else if (layout.kind === "v2") {
    dirs.push(path.join(layout.root, rel));
  }
  for (const d of dirs) {
    try { fs.rmdirSync(d); } catch { /* absent or busy: the reaper tries again */ }
  }
}

/** Lists run cgroups left under a parent (e.g. after a crash) so the reaper can remove them. */
export function listChildCgroups(layout: CgroupLayout, parentRel: string): string[] {
  if (layout.kind === "none") return [];
  const base = layout.kind === "v1" ? path.join(layout.root, "memory", parentRel) : path.join(layout.root, parentRel);
  return safeReaddir(base).filter((n) => fs.statSync(path.join(base, n), { throwIfNoEntry: false })?.isDirectory()).map((n) => `${parentRel}/${n}`);
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
