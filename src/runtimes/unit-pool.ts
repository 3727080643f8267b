import { PrestartGate, shapeKey } from "./launcher.js";
import type { RunSpec } from "./types.js";

/** Pre-starting of a runtime: how long a unit waits, and for which images (config). */
export interface WarmOptions {
  idleMs: number;
  images: Set<string>;
}

/** What the pool needs of a runtime's units. */
export interface UnitHooks<U> {
  /** Whether a waiting unit can still serve a run (its process lives). */
  alive(u: U): boolean;
  /** Removes a unit that will serve no run: its idle time is over, it died, or the pool closed. */
  discard(u: U, why: "expired" | "dead" | "closed"): void;
  /** Whether a waiting unit is still importing (warm interpreters; for the stats). */
  importing?(u: U): boolean;
  /** Whether a waiting unit has not said it is ready yet (warm interpreters: still starting or importing). */
  starting?(u: U): boolean;
}

/**
 * The pre-started units of one runtime (bwrap sandboxes, containers started by the OCI runtime
 * directly or through dockerd): at most one per shape (launcher.ts shapeKey), each used by one
 * run, removed after `idleMs` unused, started only as the pre-start policy allows (PrestartGate).
 * What a unit is, how it starts, dies and is removed stays the runtime's; the bookkeeping (one
 * per shape, expiry, hit and miss counts, starts in flight) is the same for all, and is here.
 */
export class UnitPool<U extends object> {
  readonly gate: PrestartGate;
  readonly opts?: WarmOptions;
  /** Shapes whose unit is still starting (asynchronous starts: Docker creates it in the background). */
  readonly preparing = new Map<string, Promise<void>>();
  private readonly units = new Map<string, U>();
  private readonly expiry = new Map<U, NodeJS.Timeout>();
  private closed = false;
  private hits = 0;
  private misses = 0;
  private passed = 0;

  constructor(opts: WarmOptions | undefined, private readonly hooks: UnitHooks<U>) {
    this.opts = opts && opts.idleMs > 0 ? opts : undefined;
    // A sandbox that runs again within the warm period is likely to run again: see PrestartGate.
    this.gate = new PrestartGate(this.opts?.idleMs);
  }

  /** Whether runs of this spec's image are pre-started at all. */
  enabled(spec: RunSpec): boolean {
    return Boolean(this.opts && !this.closed && this.opts.images.has(spec.image));
  }

  /** After a run of `spec`: keeps one unit of its shape ready, when the policy says a next run is likely. */
  replenish(spec: RunSpec, start: () => U | Promise<U>): void {
    if (!this.enabled(spec) || !this.gate.allowsAfter(spec)) return;
    this.fill(spec, start);
  }

  /** Starts a unit of this shape unless one is waiting or starting. `start` may throw (nothing kept). */
  fill(spec: RunSpec, start: () => U | Promise<U>): void {
    const key = shapeKey(spec);
    if (this.units.has(key) || this.preparing.has(key)) return;
    let made: U | Promise<U>;
    try {
      made = start();
    } catch {
      return;
    }
    if (!(made instanceof Promise)) return this.add(key, made);
    const p = made.then((u) => (this.closed ? this.hooks.discard(u, "closed") : this.add(key, u)))
      .catch(() => undefined)
      .finally(() => this.preparing.delete(key));
    this.preparing.set(key, p);
  }

  private add(key: string, u: U): void {
    const t = setTimeout(() => {
      this.release(u);
      this.hooks.discard(u, "expired");
    }, this.opts!.idleMs);
    t.unref();
    this.expiry.set(u, t);
    this.units.set(key, u);
  }

  /**
   * The unit waiting for this run's shape, now the run's; undefined when there is none (a miss),
   * it died (a miss; it is discarded), or `passOver` gives a reason not to use it now (it stays
   * for the next run; the reason is returned).
   */
  take(spec: RunSpec, passOver?: (u: U) => string | null): { unit?: U; passedOver?: string } {
    if (!this.enabled(spec)) return {};
    const key = shapeKey(spec);
    const u = this.units.get(key);
    if (!u) { this.misses++; return {}; }
    if (!this.hooks.alive(u)) {
      this.release(u);
      this.hooks.discard(u, "dead");
      this.misses++;
      return {};
    }
    const reason = passOver?.(u) ?? null;
    if (reason !== null) { this.passed++; return { passedOver: reason }; }
    this.release(u);
    this.hits++;
    return { unit: u };
  }

  /** Takes `u` out of the pool if it is waiting there (its expiry stops); true when it was. */
  release(u: U): boolean {
    clearTimeout(this.expiry.get(u));
    this.expiry.delete(u);
    for (const [key, v] of this.units) {
      if (v !== u) continue;
      this.units.delete(key);
      return true;
    }
    return false;
  }

  /** The units waiting now, with their shape keys. */
  waiting(): Array<[string, U]> {
    return [...this.units.entries()];
  }

  /** Stops pre-starting; returns the waiting units (now the caller's to remove). */
  close(): U[] {
    this.closed = true;
    const all = [...this.units.values()];
    for (const u of all) this.release(u);
    return all;
  }

  /** Units waiting, how often a run found one, and how often a waiting one was passed over. */
  /** Resolves once no unit is being started (asynchronous starts run in the background). */
  async settled(): Promise<void> {
    while (this.preparing.size > 0) await Promise.all(this.preparing.values());
  }

  stats(): { ready: number; hits: number; misses: number; passedOver: number; importing: number; starting: number } {
    const units = [...this.units.values()];
    const importing = units.filter((u) => this.hooks.importing?.(u)).length;
    const starting = units.filter((u) => this.hooks.starting?.(u)).length;
    return { ready: this.units.size, hits: this.hits, misses: this.misses, passedOver: this.passed, importing, starting };
  }
}
