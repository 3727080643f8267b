import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * The root filesystem of direct OCI runs: the image's unpacked root (the directory bwrap runs
 * from, built by `petri images build`) under an overlay whose upper layer holds nothing but the
 * mount points Petri's mounts need (/petri/broker, /petri/snippet, /sbin/docker-init …).
 *
 * Why an overlay: an OCI runtime creates missing mount points inside the root it is given, which
 * would write into the shared image directory; Docker avoids that with the container's own
 * layer. Here one overlay per image is mounted once and shared by every run (runs see it
 * read-only: `root.readonly`), and mount points are created by Petri, as root, before the run,
 * so no runtime ever writes into it. The overlays live under the runtime's state directory and
 * are unmounted at close; a crash leaves them mounted, and the next start unmounts them.
 */
export class RootfsLayers {
  private readonly layers = new Map<string, { merged: string; made: Set<string> }>();

  /** Layers a crashed process of this instance left mounted under `dir` are unmounted first. */
  constructor(private readonly dir: string) {
    RootfsLayers.sweep(dir);
  }

  /** The shared root of `imageRoot` with every target in `targets` present ("file" or "dir"). */
  rootFor(imageRoot: string, targets: Array<{ path: string; kind: "file" | "dir" }>): string {
    let layer = this.layers.get(imageRoot);
    if (!layer) {
      layer = { merged: this.mount(imageRoot), made: new Set() };
      this.layers.set(imageRoot, layer);
    }
    for (const t of targets) {
      const key = `${t.kind}:${t.path}`;
      if (layer.made.has(key)) continue;
      ensureInRoot(layer.merged, t.path, t.kind);
      layer.made.add(key);
    }
    return layer.merged;
  }

  private mount(imageRoot: string): string {
    const id = createHash("sha256").update(imageRoot).digest("hex").slice(0, 16);
    const base = path.join(this.dir, id);
    const merged = path.join(base, "merged");
    // A layer a previous process of this instance left mounted (crash) is taken down first: its
    // upper layer may hold anything that process made.
    unmountIfMounted(merged);
    fs.rmSync(base, { recursive: true, force: true });
    for (const d of ["upper", "work", "merged"]) fs.mkdirSync(path.join(base, d), { recursive: true, mode: 0o755 });
    const r = spawnSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${imageRoot},upperdir=${base}/upper,workdir=${base}/work`, merged], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`could not mount the image's overlay (${imageRoot}): ${(r.stderr || r.error?.message || "").trim()}`);
    return merged;
  }

  /** Unmounts every layer (runs using them must be over). */
  close(): void {
    for (const { merged } of this.layers.values()) unmountIfMounted(merged);
    this.layers.clear();
    RootfsLayers.sweep(this.dir);
  }

  /**
   * Unmounts every layer under `dir` and removes it. Never removes a directory that is still a
   * mount point: that would delete through the overlay.
   */
  static sweep(dir: string): number {
    let n = 0;
    for (const id of safeReaddir(dir)) {
      const merged = path.join(dir, id, "merged");
      if (unmountIfMounted(merged)) n++;
      if (isMountPoint(merged)) throw new Error(`could not unmount ${merged}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    return n;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function isMountPoint(p: string): boolean {
  try {
    const mi = fs.readFileSync("/proc/self/mountinfo", "utf8");
    const esc = p.replace(/ /g, "\\040");
    return mi.split("\n").some((l) => l.split(" ")[4] === esc);
  } catch {
    return false;
  }
}

function unmountIfMounted(p: string): boolean {
  if (!isMountPoint(p)) return false;
  // Lazy: a run still holding it (its mount namespace) keeps it alive until it ends.
  spawnSync("umount", ["-l", p]);
  return true;
}

/**
 * Creates `target` (absolute, inside the run) under `root`, following the image's symlinks
 * inside the root only (e.g. /sbin -> usr/sbin), never out of it.
 */
export function ensureInRoot(root: string, target: string, kind: "file" | "dir"): void {
  let todo = target.split("/").filter(Boolean);
  if (todo.length === 0 || todo.some((p) => p === ".." || p === ".")) throw new Error(`bad mount target ${target}`);
  let cur = "/";
  let hops = 0;
  while (todo.length) {
    const [part, ...rest] = todo;
    const next = path.posix.join(cur, part);
    let st: fs.Stats | undefined;
    try { st = fs.lstatSync(path.join(root, next)); } catch { st = undefined; }
    if (st?.isSymbolicLink()) {
      if (++hops > 32) throw new Error(`too many symlinks resolving ${target} in the image`);
      // The link is read as the run would: absolute ones from the root, relative ones from
      // their directory; ".." never climbs above the root. Then the rest is resolved again.
      const link = fs.readlinkSync(path.join(root, next));
      const resolved = path.posix.normalize(path.posix.join(link.startsWith("/") ? "/" : cur, link));
      todo = [...resolved.split("/").filter((p) => p && p !== "."), ...rest];
      cur = "/";
      const clamped: string[] = [];
      for (const p of todo) {
        if (p === "..") clamped.pop();
        else clamped.push(p);
      }
      todo = clamped;
      continue;
    }
    if (!st) {
      if (rest.length === 0 && kind === "file") fs.writeFileSync(path.join(root, next), "", { mode: 0o644, flag: "wx" });
      else fs.mkdirSync(path.join(root, next), { mode: 0o755 });
    }
    cur = next;
    todo = rest;
  }
}
