import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

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

/** mount(8) arguments for an overlay: `lower` read-only below, writes to `upper` (same filesystem as `work`). */
export function overlayArgs(o: { lower: string; upper: string; work: string; target: string }): string[] {
  for (const p of [o.lower, o.upper, o.work]) {
    // The option string separates with ',' and ':'; our own paths never contain them.
    if (/[,:\\]/.test(p)) throw new Error(`unusable path for an overlay: ${p}`);
  }
  // redirect_dir/metacopy off: every changed file's data and every renamed directory's entries
  // are really in the upper layer, so reading it tells the whole change. index/xino off: nothing
  // is remembered about the lower layer beyond this mount. volatile: the upper layer is scratch
  // (committed by copying), so no sync of it is ever waited for, not even at unmount.
  return ["-t", "overlay", "overlay", "-o",
    `lowerdir=${o.lower},upperdir=${o.upper},workdir=${o.work},redirect_dir=off,metacopy=off,index=off,xino=off,nfs_export=off,volatile`, o.target];
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
