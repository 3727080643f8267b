import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { isMounted, mountsUnder, sh, shellMounter, unmount, type Mounter } from "./mounts.js";
import { removeTree } from "./changes.js";

/**
 * A run's view of its sandbox: the workspace and /cache, each an overlay whose lower layer is
 * the real directory and whose upper layer takes every write the run makes. Both upper layers
 * live on one small ext4 filesystem of exactly the run's write allowance (a sparse image,
 * loop-mounted: a "scratch"), so the quota is enforced by the kernel while the run writes: past
 * it, writes fail with ENOSPC and nothing more lands. Why not a tmpfs: its pages are shmem
 * charged to the writing run's memory cgroup (a 400 MB file in a 512 MB run would be OOM-killed)
 * and live in RAM until committed; the ext4 image costs page cache only, reclaimable, on disk.
 *
 * After the run the upper layers ARE the change set (changes.ts reads them); the view is then
 * committed or dropped, and closed: its overlays unmounted and its scratch emptied (O(changed
 * files)) and kept for another run of the same allowance, so formatting and loop-mounting an
 * image (tens of ms) is paid rarely, not per run.
 *
 *   <root>/scratch/<sid>/img   sparse image          <root>/<view id>/ws      workspace overlay
 *   <root>/scratch/<sid>/fs/   its ext4: ws/{upper,work}, cache/{upper,work}, .reserve
 *   <root>/<view id>/cache     cache overlay
 */
export interface ViewOptions {
  /** Where views live (a folder of the data directory, searchable by the sandbox uid). */
  root: string;
  id: string;
  lowerWorkspace: string;
  lowerCache: string;
  /** What the run may write, bytes (4 KiB blocks: a small file costs a block). */
  limitBytes: number;
  uid: number;
  gid: number;
}

const BLOCK = 4096;
/** How long after a view took the scratch kept ready another is made, if none came back by then. */
const REFILL_DELAY_MS = 1000;
const LAYERS = ["ws", "cache"] as const;

/**
 * `loop`: a loop-mounted ext4 image (on disk, page cache only). `tmpfs`: the fallback where loop
 * devices do not work (some containers, hosts without the loop module): still a filesystem of
 * exactly the allowance, so the kernel still enforces the quota, but its pages are shmem charged
 * to the writing run's memory cgroup: a run can then write at most min(quota, memory limit).
 */
export type ScratchKind = "loop" | "tmpfs";

/** One scratch filesystem of a fixed allowance, reusable once emptied. */
export class Scratch {
  private constructor(readonly dir: string, readonly limit: number) {}

  get fs(): string { return path.join(this.dir, "fs"); }

  /**
   * Which kind works here: `loop` when a 1 MiB loop scratch can be made and mounted, else
   * `tmpfs` (with the reason loop failed). Throws when neither works (no run could be bounded).
   */
  static async probe(root: string, owner: { uid: number; gid: number }, want: "auto" | ScratchKind): Promise<{ kind: ScratchKind; reason: string | null }> {
    let reason: string | null = null;
    for (const kind of want === "auto" ? (["loop", "tmpfs"] as const) : [want]) {
      try {
        const s = await Scratch.create(root, 1024 * 1024, owner, kind);
        await s.destroy();
        return { kind, reason };
      } catch (e) {
        reason = `${kind} scratch failed: ${String((e as Error).message ?? e).replace(/\s+/g, " ").slice(0, 300)}`;
      }
    }
    throw new Error(`no run scratch filesystem can be mounted here (${reason}); runs' writes could not be bounded`);
  }

  static async create(root: string, limitBytes: number, owner: { uid: number; gid: number }, kind: ScratchKind = "loop"): Promise<Scratch> {
    const limit = Math.max(BLOCK, Math.ceil(limitBytes / BLOCK) * BLOCK);
    // The views' root must stay searchable by the sandbox uid (bwrap binds as that uid).
    fs.mkdirSync(root, { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.join(root, "scratch"), { recursive: true, mode: 0o700 });
    const dir = path.join(root, "scratch", randomBytes(8).toString("hex"));
    fs.mkdirSync(dir, { mode: 0o700 });
    const s = new Scratch(dir, limit);
    if (kind === "tmpfs") {
      try {
        fs.mkdirSync(s.fs, { mode: 0o700 });
        // One inode per block, as the ext4 scratch has.
        await sh("mount", ["-t", "tmpfs", "-o", `size=${limit},nr_inodes=${Math.max(1024, limit / BLOCK)},mode=0700,nosuid,nodev`, "petri-scratch", s.fs]);
        s.reset(owner);
        return s;
      } catch (e) {
        await s.destroy().catch(() => undefined);
        throw e;
      }
    }
    try {
      // One inode per block of the image (a file needs a block anyway) at 256 bytes each: the
      // inode tables take 1/16 of the image, bitmaps and group descriptors about 1 % more, so 10 %
      // over the allowance plus 8 MiB of slack always leaves at least the allowance free (with
      // less, the default 512 MiB quota's scratch came out 6.8 MB short: never back to its full
      // allowance, so never reused, and every cold run paid mkfs and a loop mount). The .reserve
      // file then takes whatever is free beyond the allowance; the image is sparse.
      const size = Math.ceil((limit * 1.1 + 8 * 1024 * 1024) / BLOCK) * BLOCK;
      const img = path.join(dir, "img");
      fs.writeFileSync(img, "", { mode: 0o600 });
      fs.truncateSync(img, size);
      fs.mkdirSync(s.fs, { mode: 0o700 });
      await sh("sh", ["-ec", `mkfs.ext4 -q -F -b ${BLOCK} -i ${BLOCK} -I 256 -m 0 -O ^has_journal,^resize_inode -E lazy_itable_init=1,nodiscard,root_owner=0:0 "$1"; mount -o loop,noatime,nosuid,nodev "$1" "$2"`, "petri-scratch", img, s.fs]);
      s.reset(owner);
      const st = fs.statfsSync(s.fs);
      const spare = Math.floor((st.bavail * st.bsize - limit) / BLOCK) * BLOCK;
      if (spare > 0) await sh("fallocate", ["-l", String(spare), path.join(s.fs, ".reserve")]);
      return s;
    } catch (e) {
      await s.destroy().catch(() => undefined);
      throw e;
    }
  }

  /** Empty upper and work directories, the upper roots looking like the workspace root to a run. */
  reset(owner: { uid: number; gid: number }): void {
    for (const name of LAYERS) {
      const layer = path.join(this.fs, name);
      if (fs.existsSync(layer)) removeTree(Buffer.from(layer));
      fs.mkdirSync(layer, { mode: 0o700 });
      fs.mkdirSync(path.join(layer, "work"), { mode: 0o700 });
      const upper = path.join(layer, "upper");
      fs.mkdirSync(upper, { mode: 0o755 });
      fs.chownSync(upper, owner.uid, owner.gid);
      fs.chmodSync(upper, 0o755);
    }
  }

  freeBytes(): number {
    const st = fs.statfsSync(this.fs);
    return st.bavail * st.bsize;
  }

  async destroy(): Promise<void> {
    for (let i = 0; i < 5 && isMounted(this.fs); i++) await unmount(this.fs);
    if (mountsUnder(this.dir).length) throw new Error(`cannot remove ${this.dir}: still mounted`);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Emptied scratches by allowance, for the next views, kept for a while: `keep` of them plus one
 * per scratch in use. A run's scratch comes back after its result, before its sandbox's next
 * run takes one; with a fixed `keep` below the runs in flight (8 clients on 2 cores) the pool
 * overflowed and ran dry in turn, and a run in three paid mkfs, a loop mount and an unmount.
 *
 * And one scratch of the default allowance always made ahead (`keepReady`): a cold run, a fresh
 * sandbox's first run or a one-request run only mounts its overlays, it never waits for mkfs and
 * a loop mount (tens of ms). That one is not tied to any sandbox, holds nothing (emptied, or
 * never used), never expires and is made again in the background when a view took it and none
 * came back.
 */
export class ScratchPool {
  private readonly idle = new Map<number, { s: Scratch; timer: NodeJS.Timeout | null }[]>();
  private closed = false;
  /** Scratches taken and not given back (in views). */
  private out = 0;
  /** The allowance kept ready, once asked (keepReady), with its owner. */
  private ready: { limit: number; owner: { uid: number; gid: number } } | null = null;
  private making: Promise<void> | null = null;
  private refillTimer: NodeJS.Timeout | null = null;

  /** Set from the start-up probe (Scratch.probe); loop until then. */
  kind: ScratchKind = "loop";
  /** How the views on these scratches mount their overlays (ViewPool sets the mount helper). */
  mounter: Mounter = shellMounter;

  constructor(private readonly root: string, private readonly opts: { keep: number; idleMs: number; log?: (e: unknown) => void }) {}

  private static round(limitBytes: number): number {
    return Math.max(BLOCK, Math.ceil(limitBytes / BLOCK) * BLOCK);
  }

  /** From now on one scratch of this allowance is always ready (made in the background). */
  keepReady(limitBytes: number, owner: { uid: number; gid: number }): void {
    this.ready = { limit: ScratchPool.round(limitBytes), owner };
    this.refill();
  }

  /** Makes the ready scratch when none of its allowance is idle (one at a time; never throws). */
  private refill(): void {
    const r = this.ready;
    if (!r || this.closed || this.making || (this.idle.get(r.limit)?.length ?? 0) > 0) return;
    this.making = (async () => {
      try {
        const s = await Scratch.create(this.root, r.limit, r.owner, this.kind);
        if (this.closed) await s.destroy();
        else this.park(s, false);
      } catch (e) {
        // A run then makes its own, as without this pool; the next take tries again.
        this.opts.log?.(e);
      }
    })().finally(() => { this.making = null; });
  }

  /**
   * A moment after a view took one: runs back to back give their scratches back within that
   * moment, and then nothing is made (formatting one per run in the background would cost
   * every run CPU on a busy host).
   */
  private refillSoon(): void {
    if (!this.ready || this.refillTimer) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = null;
      this.refill();
    }, REFILL_DELAY_MS);
    this.refillTimer.unref();
  }

  /** Resolves once no ready scratch is being made (tests, close). */
  async settled(): Promise<void> {
    while (this.making) await this.making;
  }

  async take(limitBytes: number, owner: { uid: number; gid: number }): Promise<Scratch> {
    const limit = ScratchPool.round(limitBytes);
    const list = this.idle.get(limit);
    const got = list?.pop();
    if (got) {
      if (got.timer) clearTimeout(got.timer);
      this.out++;
      this.refillSoon();
      return got.s;
    }
    const s = await Scratch.create(this.root, limit, owner, this.kind);
    this.out++;
    return s;
  }

  /** Destroys a taken scratch that no view will use. */
  async discard(s: Scratch): Promise<void> {
    this.out = Math.max(0, this.out - 1);
    await s.destroy().catch(() => undefined);
  }

  /** Takes back a scratch whose layers are unmounted; empties it, or destroys it if unsure. */
  async give(s: Scratch, owner: { uid: number; gid: number }): Promise<void> {
    this.out = Math.max(0, this.out - 1);
    const list = this.idle.get(s.limit) ?? [];
    try {
      if (this.closed || list.length >= this.opts.keep + this.out) throw new Error("not kept");
      s.reset(owner);
      // Back to the full allowance (a leftover would shrink the next run's): else not reusable.
      if (s.freeBytes() < s.limit) throw new Error("not empty");
    } catch {
      await s.destroy();
      this.refill();
      return;
    }
    // The first idle one of the ready allowance does not expire: it is the one kept ready.
    this.park(s, this.ready?.limit !== s.limit || list.length > 0);
  }

  private park(s: Scratch, expires: boolean): void {
    const list = this.idle.get(s.limit) ?? [];
    const timer = expires ? setTimeout(() => {
      const l = this.idle.get(s.limit);
      const i = l?.findIndex((x) => x.s === s) ?? -1;
      if (i < 0) return;
      // The last one of the ready allowance stays: it is now the one kept ready.
      if (this.ready?.limit === s.limit && l!.length === 1) {
        l![i]!.timer = null;
        return;
      }
      l!.splice(i, 1);
      void s.destroy().catch(() => undefined);
    }, this.opts.idleMs) : null;
    timer?.unref();
    list.push({ s, timer });
    this.idle.set(s.limit, list);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    await this.settled();
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    for (const x of all) {
      if (x.timer) clearTimeout(x.timer);
      await x.s.destroy().catch(() => undefined);
    }
  }
}

export class WorkspaceView {
  /** When the overlays were mounted: a lower entry changed after this was changed by someone else. */
  readonly mountedAtMs: number;
  private closed = false;

  private constructor(readonly dir: string, readonly opts: ViewOptions, readonly scratch: Scratch, mountedAtMs: number) {
    this.mountedAtMs = mountedAtMs;
  }

  get workspace(): string { return path.join(this.dir, "ws"); }
  get cache(): string { return path.join(this.dir, "cache"); }
  get workspaceUpper(): string { return path.join(this.scratch.fs, "ws", "upper"); }
  get cacheUpper(): string { return path.join(this.scratch.fs, "cache", "upper"); }

  static async open(o: ViewOptions, pool: ScratchPool): Promise<WorkspaceView> {
    const scratch = await pool.take(o.limitBytes, o);
    const dir = path.join(o.root, o.id);
    try {
      fs.mkdirSync(dir, { mode: 0o711 });
      for (const name of LAYERS) fs.mkdirSync(path.join(dir, name), { mode: 0o755 });
      const t = Date.now();
      const lowers = { ws: o.lowerWorkspace, cache: o.lowerCache };
      await pool.mounter.overlay(LAYERS.map((name) => ({
        lower: lowers[name], upper: path.join(scratch.fs, name, "upper"), work: path.join(scratch.fs, name, "work"), target: path.join(dir, name),
      })));
      return new WorkspaceView(dir, o, scratch, t);
    } catch (e) {
      for (const name of LAYERS) if (isMounted(path.join(dir, name))) await unmount(path.join(dir, name)).catch(() => undefined);
      if (mountsUnder(dir).length === 0) fs.rmSync(dir, { recursive: true, force: true });
      await pool.discard(scratch);
      throw e;
    }
  }

  /** Bytes the run could still write. */
  freeBytes(): number {
    return this.scratch.freeBytes();
  }

  /** Unmounts the overlays and gives the scratch back. Safe to call twice. */
  async close(pool: ScratchPool): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const targets = LAYERS.map((n) => path.join(this.dir, n));
    await pool.mounter.unmount(targets);
    // Never remove through a mount: rmdir removes only an empty directory and refuses a mount
    // point (EBUSY), so the workspace behind an overlay still mounted is never reached. (Reading
    // the mount table to check instead cost a parse of it per run, and it grows with the runs.)
    // Off the event loop: right after an unmount these rmdirs took ~5 ms per view under 8 clients
    // (CPU profile of the server), all of it blocking every other request.
    try {
      for (const p of targets) await fs.promises.rmdir(p);
      await fs.promises.rmdir(this.dir);
    } catch {
      const left = mountsUnder(this.dir);
      if (left.length) throw new Error(`cannot remove ${this.dir}: still mounted: ${left.join(", ")}`);
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    // Emptied and kept, or destroyed when it does not come back to its full allowance.
    await pool.give(this.scratch, this.opts);
  }
}
