import { LABEL_SANDBOX, PrestartGate, shapeKey } from "./launcher.js";
import type { RunSpec } from "./types.js";
import { unitFormKey } from "./warm.js";

/** Sandboxes whose latest run forms are remembered (the oldest forgotten first). */
const MAX_FORMS = 2_000;

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
  private predicted = 0;
  /** Sandbox (or shape) → the forms of its last four runs within the warm period, oldest first; latest sandboxes last (bounded). */
  private readonly lastForms = new Map<string, Array<{ form: string; at: number } & Pick<RunSpec, "argv" | "env" | "cwd" | "interpreter">>>();

  constructor(opts: WarmOptions | undefined, private readonly hooks: UnitHooks<U>) {
    this.opts = opts && opts.idleMs > 0 ? opts : undefined;
    // A sandbox that runs again within the warm period is likely to run again: see PrestartGate.
    this.gate = new PrestartGate(this.opts?.idleMs);
  }

  /** Whether runs of this spec's image are pre-started at all. */
  enabled(spec: RunSpec): boolean {
    return Boolean(this.opts && !this.closed && this.opts.images.has(spec.image));
  }

  /**
   * A run of `spec` starts: records it for the pre-start policy (PrestartGate) and its form (for
   * `nextForm`); true when a unit should follow it. Call once per run.
   */
  wantsAfter(spec: RunSpec): boolean {
    if (!this.enabled(spec)) return false;
    this.noteForm(spec);
    return this.gate.allowsAfter(spec);
  }

  /** After a run of `spec` (the runtime's own path): one unit ready for the next, when the policy says a next run is likely. */
  replenish(spec: RunSpec, start: (next: RunSpec) => U | Promise<U>): void {
    if (!this.wantsAfter(spec)) return;
    const next = this.nextForm(spec);
    this.fill(next, () => start(next));
  }

  /** A unit for the run after `spec`, asked for by the exec service (which recorded the run with wantsAfter). */
  prestart(spec: RunSpec, start: (next: RunSpec) => U | Promise<U>): void {
    if (!this.enabled(spec) || !this.gate.allows) return;
    const next = this.nextForm(spec);
    this.fill(next, () => start(next));
  }

  /** Records the form of a run of `spec` in its sandbox's (else its shape's) last four. */
  private noteForm(spec: RunSpec): void {
    const key = spec.labels[LABEL_SANDBOX] ?? shapeKey(spec);
    const now = Date.now();
    const runs = (this.lastForms.get(key) ?? []).filter((r) => now - r.at <= this.opts!.idleMs);
    this.lastForms.delete(key);
    this.lastForms.set(key, [...runs.slice(-3), { form: unitFormKey(spec), at: now, argv: spec.argv, env: spec.env, cwd: spec.cwd, interpreter: spec.interpreter }]);
    // Oldest first: forget what is past the warm period, and bound the map.
    for (const [k, r] of this.lastForms) {
      if (this.lastForms.size <= MAX_FORMS && now - r[r.length - 1].at <= this.opts!.idleMs) break;
      this.lastForms.delete(k);
    }
  }

  /**
   * The spec to start the next unit with after a run of `spec`. A unit serves in-process only a
   * run of its own form (warm.ts unitFormKey: file or snippet, node or TypeScript, env, cwd), and
   * is started in the form of the run it follows — unless the sandbox's last four runs alternate
   * (A, B, A, B): then the next run most likely is A again, and the unit takes the form of the run
   * before this one. So a sandbox alternating forms (file, snippet, file…) gets warm runs from its
   * fifth run on instead of none; one that repeats its form, switches for good (A, A, B, B) or
   * deviates once (A, A, B, A, A: three runs were not enough, they read a one-off B as the start
   * of an alternation) is unchanged. Only the form (argv, env, cwd, interpreter) comes from the
   * earlier run; the shape (mounts, limits) and labels are this run's.
   */
  private nextForm(spec: RunSpec): RunSpec {
    const runs = this.lastForms.get(spec.labels[LABEL_SANDBOX] ?? shapeKey(spec)) ?? [];
    if (runs.length < 4) return spec;
    const [w, x, y, z] = runs.slice(-4);
    if (z.form !== unitFormKey(spec) || w.form !== y.form || x.form !== z.form || y.form === z.form) return spec;
    this.predicted++;
    return { ...spec, argv: y.argv, env: y.env, cwd: y.cwd, interpreter: y.interpreter };
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

  stats(): { ready: number; hits: number; misses: number; passedOver: number; importing: number; starting: number; predicted: number } {
    const units = [...this.units.values()];
    const importing = units.filter((u) => this.hooks.importing?.(u)).length;
    const starting = units.filter((u) => this.hooks.starting?.(u)).length;
    return { ready: this.units.size, hits: this.hits, misses: this.misses, passedOver: this.passed, importing, starting, predicted: this.predicted };
  }
}
