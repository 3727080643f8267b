import os from "node:os";
import type { RunSpec } from "./types.js";

/**
 * Pre-starting pays when the machine has room for it; under saturation it doubles the work of
 * every run. Runtimes pre-start only while fewer runs than cores are in flight.
 */
export const PRESTART_MAX_INFLIGHT = os.availableParallelism();

/**
 * Counts a runtime's runs in flight and says whether pre-starting another sandbox pays.
 *
 * Pre-start policy: a run is followed by a pre-started unit only when its sandbox's use pattern
 * says another run is likely, i.e. the sandbox had another run within `repeatWithinMs` before
 * this one (from its second run on, while it keeps being used at least once per warm period).
 * A sandbox used once (create, run, delete) never leaves a unit behind that its deletion would
 * have to remove. Runs that belong to no sandbox (no sandbox label) keep the old rule.
 */
export class PrestartGate {
  private inflight = 0;
  /** Sandbox id → when its last run started, oldest first (re-inserted on every run). */
  private readonly lastRun = new Map<string, number>();

  constructor(private readonly repeatWithinMs = 60_000, private readonly maxTracked = 100_000) {}

  /** Runs `fn` as a run in flight; the run of `spec` counts as its sandbox's use until it ends. */
  async track<T>(fn: () => Promise<T>, spec?: RunSpec): Promise<T> {
    this.inflight++;
    try {
      return await fn();
    } finally {
      this.inflight--;
      if (spec) this.noteEnd(spec);
    }
  }

  /**
   * A run's end is the sandbox's latest use: a sandbox whose run lasted longer than the window
   * and that runs again at once is in use (recorded at the start only, the next run found its
   * sandbox idle and pre-started nothing; found by hostile-workspace's pre-start-on pass).
   */
  noteEnd(spec: RunSpec, now = Date.now()): void {
    const sb = spec.labels[LABEL_SANDBOX];
    if (sb === undefined) return;
    this.lastRun.delete(sb);
    this.lastRun.set(sb, now);
  }

  get allows(): boolean {
    return this.inflight <= PRESTART_MAX_INFLIGHT;
  }

  /** Sandboxes whose runs must not leave a pre-started unit behind (one-request runs). */
  private readonly quiet = new Map<string, number>();

  /** Until the returned function is called, runs of this sandbox pre-start nothing. */
  quietFor(sandboxId: string): () => void {
    this.quiet.set(sandboxId, (this.quiet.get(sandboxId) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.quiet.get(sandboxId) ?? 1) - 1;
      if (n <= 0) this.quiet.delete(sandboxId);
      else this.quiet.set(sandboxId, n);
    };
  }

  /**
   * Whether a run of this spec may be followed by a pre-started unit of its shape. Call once per
   * run: it records the run for the use-pattern rule above.
   */
  allowsAfter(spec: RunSpec, now = Date.now()): boolean {
    const sb = spec.labels[LABEL_SANDBOX];
    if (sb === undefined) return this.allows;
    const likely = this.noteRun(sb, now);
    return likely && this.allows && !this.quiet.has(sb);
  }

  /** Records a run of the sandbox; true when it ran before within the repeat window. */
  private noteRun(sandboxId: string, now: number): boolean {
    const prev = this.lastRun.get(sandboxId);
    this.lastRun.delete(sandboxId);
    this.lastRun.set(sandboxId, now);
    // Oldest first: forget what is outside the window (and bound the map).
    for (const [id, at] of this.lastRun) {
      if (now - at <= this.repeatWithinMs && this.lastRun.size <= this.maxTracked) break;
      this.lastRun.delete(id);
    }
    return prev !== undefined && now - prev <= this.repeatWithinMs;
  }
}

/** The label naming the sandbox a run belongs to (set by the exec service). */
export const LABEL_SANDBOX = "io.jhansi.petri.sandbox";

/**
 * Launcher of pre-started sandboxes (Docker containers, bwrap sandboxes): reads one JSON line
 * {argv, env, cwd} from stdin byte by byte (so no byte meant for the program is buffered away),
 * then execs the program in its own place, with the rest of stdin. Nothing of the launcher
 * remains after the exec; the sandbox is used for that one run and never again.
 */
const LAUNCHER = [
  "import os, json, signal",
  "b = b''",
  "while not b.endswith(b'\\n'):",
  "    c = os.read(0, 1)",
  "    if not c:",
  "        os._exit(125)",
  "    b += c",
  "s = json.loads(b)",
  "os.chdir(s['cwd'])",
  // Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: without
  // this, `yes | head` in a pre-started run would print 'Broken pipe' where a cold run is silent.
  "signal.signal(signal.SIGPIPE, signal.SIG_DFL); signal.signal(signal.SIGXFSZ, signal.SIG_DFL)",
  "try:",
  "    os.execvpe(s['argv'][0], s['argv'], s['env'])",
  "except OSError as e:",
  "    os.write(2, ('petri: cannot execute %s: %s\\n' % (s['argv'][0], e.strerror)).encode())",
  "    os._exit(127)",
].join("\n");
export const LAUNCHER_ARGV = ["python3", "-I", "-S", "-c", LAUNCHER];
export const LABEL_WARM = "io.jhansi.petri.warm";

/** The one line a pre-started launcher reads before it execs the run's program. */
export function launchLine(spec: RunSpec): string {
  return JSON.stringify({ argv: spec.argv, env: spec.env, cwd: spec.cwd }) + "\n";
}

/**
 * What must be equal for a pre-started unit to serve a run: everything fixed at start (image or
 * rootfs, mounts, limits, user, labels but the run's own id). argv, env, cwd and stdin are given
 * at hand-over.
 */
export function shapeKey(spec: RunSpec): string {
  const labels = { ...spec.labels };
  for (const k of Object.keys(labels)) if (k.endsWith(".exec")) delete labels[k];
  return JSON.stringify([spec.image, spec.rootfs ?? null, spec.mounts, spec.limits, spec.uid, spec.gid, labels]);
}
