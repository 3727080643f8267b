import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { MountHelper, OverlayMount } from "./mount-helper.js";

/**
 * The few mount operations a run's workspace view needs, through util-linux's own tools (Node
 * has no mount(2); the tools are what an operator would type, and they handle loop devices).
 */
export function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

/**
 * The options of every view overlay after its directories. redirect_dir/metacopy off: every
 * changed file's data and every renamed directory's entries are really in the upper layer, so
 * reading it tells the whole change. index/xino off: nothing is remembered about the lower layer
 * beyond this mount. volatile: the upper layer is scratch (committed by copying), so no sync of it
 * is ever waited for, not even at unmount.
 */
export const OVERLAY_FIXED_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off,nfs_export=off,volatile";

/** mount(8) arguments for an overlay: `lower` read-only below, writes to `upper` (same filesystem as `work`). */
export function overlayArgs(o: OverlayMount): string[] {
  for (const p of [o.lower, o.upper, o.work]) {
    // The option string separates with ',' and ':'; our own paths never contain them.
    if (/[,:\\]/.test(p)) throw new Error(`unusable path for an overlay: ${p}`);
  }
  return ["-t", "overlay", "overlay", "-o", `lowerdir=${o.lower},upperdir=${o.upper},workdir=${o.work},${OVERLAY_FIXED_OPTIONS}`, o.target];
}

/**
 * How views mount and unmount their overlays: through the long-lived mount helper (no process per
 * mount; mount-helper.ts), or through mount(8) where the helper cannot run.
 */
export interface Mounter {
  /** What mounts now: "helper", or "mount(8)" (also a helper's mounter whose helper cannot start). */
  readonly kind: "helper" | "mount(8)";
  /** Starts what it needs; never throws (a helper that cannot start leaves mount(8)). */
  ready(): Promise<void>;
  /** Mounts the overlays in order; on a failure none of them stays mounted. */
  overlay(mounts: OverlayMount[]): Promise<void>;
  /** Unmounts each target that is mounted (detached when still busy); never throws for one that is not. */
  unmount(targets: string[]): Promise<void>;
  close(): void;
}

export const shellMounter: Mounter = {
  kind: "mount(8)",
  async ready() { /* nothing to start */ },
  async overlay(mounts) {
    if (mounts.length === 0) return;
    // All overlays in one process: a spawn costs more than a mount. overlayArgs gives 6 arguments each.
    const arg = (n: number) => `"\${${n}}"`;
    const script = mounts.map((_, i) => `mount ${[1, 2, 3, 4, 5, 6].map((k) => arg(6 * i + k)).join(" ")}`).join("; ");
    try {
      await sh("sh", ["-ec", script, "petri-view", ...mounts.flatMap(overlayArgs)]);
    } catch (e) {
      for (const m of mounts) if (isMounted(m.target)) await unmount(m.target).catch(() => undefined);
      throw e;
    }
  },
  async unmount(targets) {
    const mounted = targets.filter((p) => isMounted(p));
    if (mounted.length === 0) return;
    try {
      await sh("umount", mounted);
    } catch {
      for (const p of mounted) if (isMounted(p)) await unmount(p);
    }
  },
  close() { /* nothing held */ },
};

/**
 * The mount helper where it runs, mount(8) for a request it cannot take because it cannot be
 * started (python3 missing, say): a run never fails for want of the helper.
 */
export function helperMounter(helper: MountHelper, o: { onFallback?: (e: unknown) => void } = {}): Mounter {
  let usable = true;
  const started = async (): Promise<boolean> => {
    try {
      await helper.start();
      usable = true;
    } catch (e) {
      usable = false;
      o.onFallback?.(e);
    }
    return usable;
  };
  return {
    get kind() { return usable ? "helper" as const : "mount(8)" as const; },
    async ready() { await started(); },
    async overlay(mounts) {
      if (!(await started())) return shellMounter.overlay(mounts);
      await helper.overlay(mounts);
    },
    async unmount(targets) {
      if (!(await started())) return shellMounter.unmount(targets);
      await helper.unmount(targets);
    },
    close() { helper.close(); },
  };
}

export async function unmount(target: string): Promise<void> {
  try {
    await sh("umount", [target]);
  } catch (e) {
    if (!isMounted(target)) return;
    // Still referenced (a container's mount namespace not yet gone): detach now, freed when unused.
    await sh("umount", ["-l", target]).catch(() => { throw e; });
  }
}

/** Mount points at or below `dir`, deepest first, from this process's mount table. */
export function mountsUnder(dir: string): string[] {
  const root = path.resolve(dir);
  let info = "";
  try {
    info = fs.readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of info.split("\n")) {
    const mp = line.split(" ")[4];
    if (!mp) continue;
    const p = mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (p === root || p.startsWith(root + "/")) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

export function isMounted(target: string): boolean {
  return mountsUnder(target).includes(path.resolve(target));
}

/** Unmounts everything below `dir` (crash leftovers), deepest first. Returns how many. */
export async function unmountAllUnder(dir: string): Promise<number> {
  let n = 0;
  for (const mp of mountsUnder(dir)) {
    await unmount(mp).catch(() => undefined);
    n++;
  }
  return n;
}
