import { createHash } from "node:crypto";
import { LAUNCHER_ARGV, launchLine } from "./launcher.js";
import type { Mount, RunSpec } from "./types.js";
import { nodeForm, nodeRunFits, nodeUnit } from "./warm-node.js";
import { PY_BOOT } from "./warm-python.js";

/**
 * Warm interpreters (docs/warm.md). A pre-started unit runs either the plain launcher (execs the
 * next run's argv) or, for runs that start an interpreter Petri knows, that interpreter itself:
 * started ahead with the environment of the run it was pre-started after, the image's heavy
 * modules imported, waiting on stdin for the next run. The next run is then executed in that
 * same fresh process when its semantics are guaranteed to equal a cold start's; otherwise the
 * unit execs the run's argv, which is the cold path. Either way the process is used once.
 */

/** What a pre-started unit runs, and what it was started with. */
export interface UnitPlan {
  kind: "launcher" | "python" | "node";
  argv: string[];
  /** The environment the unit's process was started with. */
  env: Record<string, string>;
  /** The environment of the run the unit was started after: the next run must match it. */
  predicted: Record<string, string>;
  /** The working directory of the run the unit was started after: the next run must match it. */
  cwd: string;
  /**
   * Where the unit's process starts. "/" for interpreters: `python3 -c` puts its working
   * directory first on sys.path while it starts, and nothing of a workspace may be imported
   * before the request (the run's cwd is entered at hand-over).
   */
  startCwd: string;
  /** Node units: the node options (up to `-e CODE`) the unit started with; the next run must have the same (warm-node.ts). */
  nodeOpts?: string[];
  /** Node units under gVisor: the command line the unit started with, which the next run must have (warm-node.ts, exactArgv). */
  exactArgv?: string[];
}

/** Per-run variables a warm run may set at hand-over: nothing reads them at start-up or import. */
export const LATE_ENV = new Set(["PETRI_DISPLAY_DIR"]);

/** Python variables Petri sets; any other PYTHON* variable could change how the interpreter starts. */
const PY_ENV_OK = new Set(["PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"]);

/**
 * Variables that make a process load code or data at start-up (the dynamic loader's, glibc's
 * gconv and locale paths, Python's start-up and path variables): a unit is only a warm
 * interpreter when the environment has none of them beyond Petri's own, so nothing from a
 * workspace runs before the request.
 */
function startupSafe(env: Record<string, string>): boolean {
  for (const k of Object.keys(env)) {
    if (k.startsWith("LD_") || k === "GCONV_PATH" || k === "LOCPATH" || k === "GLIBC_TUNABLES") return false;
    if (k.startsWith("PYTHON") && !PY_ENV_OK.has(k)) return false;
  }
  return true;
}

/** Entries Python would keep verbatim (absolute, normalised): anything else goes cold. */
function plainEntries(value: string | undefined): string[] | null {
  if (value === undefined || value === "") return [];
  const parts = value.split(":");
  for (const p of parts) {
    if (!p.startsWith("/") || p.includes("//") || p.endsWith("/") || p.split("/").some((s) => s === "." || s === "..")) return null;
  }
  return parts;
}

/** Whether `p` lies on a read-only mount or the image (read-only root), never on a writable mount, /tmp or /dev. */
function readOnlyPath(p: string, mounts: Mount[]): boolean {
  let best: Mount | undefined;
  for (const m of mounts) {
    if ((p === m.target || p.startsWith(m.target.endsWith("/") ? m.target : m.target + "/")) && (!best || m.target.length > best.target.length)) best = m;
  }
  if (best) return best.readonly;
  return !["/tmp", "/dev", "/proc", "/run", "/var/tmp"].some((w) => p === w || p.startsWith(w + "/"));
}

/** Room in the unit's command line for the run's (so /proc/self/cmdline can show the run's). */
const CMDLINE_ROOM = 16 * 1024;

/**
 * The unit to pre-start after a run of `spec` (warmInterpreters: false gives the plain launcher).
 * `fixedCmdline`: the runtime lets no process rewrite its own command line (gVisor), so a Node
 * unit starts with the command line of the run it follows (warm-node.ts, exactArgv).
 */
export function unitPlan(spec: RunSpec, opts: { interpreters: boolean; fixedCmdline?: boolean }): UnitPlan {
  const launcher: UnitPlan = { kind: "launcher", argv: LAUNCHER_ARGV, env: { PATH: "/usr/bin:/bin" }, predicted: spec.env, cwd: spec.cwd, startCwd: spec.cwd };
  const hint = spec.interpreter;
  if (opts.interpreters && hint?.kind === "node") {
    const unit = nodeUnit(spec, (p) => readOnlyPath(p, spec.mounts), { exactArgv: opts.fixedCmdline });
    return unit ? {
      kind: "node", argv: unit.argv, env: unit.env ?? { ...spec.env }, predicted: spec.env, cwd: spec.cwd, startCwd: "/", nodeOpts: unit.opts,
      ...(unit.exact ? { exactArgv: unit.argv } : {}),
    } : launcher;
  }
  if (!opts.interpreters || hint?.kind !== "python" || !startupSafe(spec.env)) return launcher;
  const pp = plainEntries(spec.env.PYTHONPATH);
  if (pp === null) return launcher;
  // Only read-only entries at start: site imports sitecustomize from PYTHONPATH, and nothing of a
  // workspace may run before the request. The run's full path is set at hand-over.
  const env = { ...spec.env };
  const ro = pp.filter((p) => readOnlyPath(p, spec.mounts));
  if (ro.length) env.PYTHONPATH = ro.join(":");
  else delete env.PYTHONPATH;
  const argv = ["python3", "-c", PY_BOOT, (hint.preload ?? []).join(","), (hint.triggers ?? []).join(","), (hint.firstUse ?? []).join(","), hint.freeze ? "freeze" : ""];
  const used = argv.reduce((a, s) => a + Buffer.byteLength(s) + 1, 0);
  argv.push(" ".repeat(Math.max(0, CMDLINE_ROOM - used)));
  return { kind: "python", argv, env, predicted: spec.env, cwd: spec.cwd, startCwd: "/" };
}

/**
 * What a unit is started with beyond its shape (launcher.ts shapeKey): the interpreter, Node's
 * options (file or `-e`, node or TypeScript) and a file run's command, cwd and environment but
 * the per-run variables. Runs of one form key are served in-process by each other's units
 * (inProcess); runs of different keys may not be, so a sandbox alternating forms needs its units
 * started in the form of the run after next (UnitPool's prediction).
 */
export function unitFormKey(spec: RunSpec): string {
  const kind = spec.interpreter?.kind ?? null;
  const node = kind === "node" ? nodeForm(spec.argv) : null;
  // A file's name and arguments too: under gVisor a Node unit serves only the very command it was
  // started with (exactArgv). A snippet's file name holds the run's id: its form is its options.
  const form = node ? [...node.opts, ...(node.evalCode ? [] : spec.argv.slice(1 + node.opts.length))] : null;
  const env = Object.entries(spec.env).filter(([k]) => !LATE_ENV.has(k)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash("sha256").update(JSON.stringify([kind, form, spec.cwd, env])).digest("base64");
}

/** Whether the run can be executed in the unit's pre-started interpreter (else the unit execs it). */
export function inProcess(unit: UnitPlan, spec: RunSpec): boolean {
  if (unit.kind === "launcher" || spec.interpreter?.kind !== unit.kind || spec.cwd !== unit.cwd) return false;
  const a = spec.argv;
  const form = unit.kind === "node" ? nodeRunFits(unit.nodeOpts ?? [], spec) : a[0] === "python3" && ((a[1] === "-c" && a.length >= 3) || (a.length >= 2 && a[1] !== "" && !a[1].startsWith("-")));
  if (!form) return false;
  if (unit.exactArgv && (unit.exactArgv.length !== a.length || unit.exactArgv.some((x, i) => x !== a[i]))) return false;
  if (unit.kind === "python" && plainEntries(spec.env.PYTHONPATH) === null) return false;
  const keys = new Set([...Object.keys(unit.predicted), ...Object.keys(spec.env)]);
  for (const k of keys) if (!LATE_ENV.has(k) && unit.predicted[k] !== spec.env[k]) return false;
  return true;
}

/** The bytes that hand a run to a pre-started unit, and whether it was asked to run in-process. */
export function handover(unit: UnitPlan, spec: RunSpec): { bytes: Buffer; inProcess: boolean } {
  if (unit.kind === "launcher") return { bytes: Buffer.from(launchLine(spec)), inProcess: false };
  const run = inProcess(unit, spec);
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
  const unset = Object.keys(unit.env).filter((k) => !(k in spec.env));
  const fields = [run ? "run" : "exec", spec.cwd, String(spec.argv.length), ...spec.argv, String(env.length), ...env, String(unset.length), ...unset];
  const body = Buffer.from(fields.join("\0"), "utf8");
  const header = Buffer.from(body.length.toString(16).padStart(8, "0") + "\n");
  return { bytes: Buffer.concat([header, body]), inProcess: run };
}

const FRAME = "\0petri-warm:";

/**
 * Reads a warm unit's frames off the front of its stdout and passes the rest on. Before the
 * hand-over the unit says how far its start has come: `importing` (the preload began) and
 * `ready` (it waits for a run); the host reads them while the unit waits in the pool, so a run
 * can tell a unit still importing from one that is ready (docs/warm.md, "A run that arrives
 * during the imports"). After the hand-over, an in-process run's status: "1" ran in the
 * pre-started interpreter; "0 REASON" went cold. Frames the host has not read yet when the run
 * arrives are taken off the run's output as well. Output that does not begin with a frame is
 * passed on untouched, and nothing is taken off once the frames the unit owes are read.
 */
export class StatusFrame {
  private pending: Buffer | null = Buffer.alloc(0);
  status: { warm: boolean; reason?: string } | null = null;
  /** How far the unit's start has come, as it said. */
  phase: "starting" | "importing" | "ready" = "starting";
  /** When the unit said `ready`, and when the run was handed over (performance.now()). */
  readyAt?: number;
  handedOverAt?: number;
  private expectStatus = false;
  /** Called when the unit says `ready` (its imports are done; a run handed over before starts now). */
  onReady?: () => void;

  constructor(private pass: (b: Buffer) => void) {}

  /** The run is handed over: its output goes to `pass`; a status frame follows when it runs in-process. */
  handover(pass: (b: Buffer) => void, expectStatus: boolean): void {
    this.pass = pass;
    this.expectStatus = expectStatus;
    this.handedOverAt = performance.now();
    this.phaseAtHandover = this.phase;
    if (this.done() && this.pending !== null) this.flush(this.pending);
  }

  /** The unit's phase when the run was handed over. */
  phaseAtHandover?: "starting" | "importing" | "ready";

  /** How long a run handed over while the unit was importing waited for the imports (ms), else undefined. */
  get importWaitMs(): number | undefined {
    if (this.phaseAtHandover !== "importing" || this.handedOverAt === undefined) return undefined;
    return this.readyAt === undefined ? performance.now() - this.handedOverAt : this.readyAt - this.handedOverAt;
  }

  private done(): boolean {
    if (this.status) return true;
    return this.handedOverAt !== undefined && this.phase === "ready" && !this.expectStatus;
  }

  push(b: Buffer): void {
    if (this.pending === null) return this.pass(b);
    let all = this.pending.length ? Buffer.concat([this.pending, b]) : b;
    const prefix = Buffer.from(FRAME, "utf8");
    while (!this.done()) {
      const n = Math.min(all.length, prefix.length);
      if (n === 0) { this.pending = all; return; }
      if (!all.subarray(0, n).equals(prefix.subarray(0, n))) return this.flush(all);
      const nl = all.indexOf(0x0a);
      if (nl < 0) { this.pending = all; return; }
      const line = all.subarray(prefix.length, nl).toString("utf8");
      all = all.subarray(nl + 1);
      if (line === "importing") this.phase = "importing";
      else if (line === "ready") { this.phase = "ready"; this.readyAt = performance.now(); this.onReady?.(); }
      else this.status = line.startsWith("1") ? { warm: true } : { warm: false, reason: line.slice(2) };
    }
    this.flush(all);
  }

  /** Passes on whatever was held back (at the end of the run). */
  end(): void {
    if (this.pending && this.pending.length) this.pass(this.pending);
    this.pending = null;
  }

  private flush(all: Buffer): void {
    this.pending = null;
    if (all.length) this.pass(all);
  }
}

/**
 * How long a run handed to a warm interpreter still importing may wait for the imports, on top of
 * its own time limit, which starts with its program (run-io.ts armTimeLimit). Imports of the
 * image's own modules take seconds at worst; the bound only ends a unit that hangs.
 */
export const IMPORT_WAIT_MAX_MS = 60_000;

/** Top-level names a Python source imports (the same reading as the bootstrap's, warm-python.ts). */
function pyImports(source: string): Set<string> {
  const used = new Set<string>();
  for (const m of source.matchAll(/^[ \t]*(?:from[ \t]+([\w.]+)|import[ \t]+([^\n#;]+))/gm)) {
    for (const part of (m[1] ?? m[2]).split(",")) used.add(part.trim().split(" ")[0].split(".")[0]);
  }
  return used;
}

/**
 * Whether a run arriving while the unit still imports the data stack should pass it over and
 * start cold at once (the reason), or wait for the imports (null): it waits only when it would
 * run in that interpreter and use the stack — then the rest of the import costs less than a cold
 * start's full import. A run that would exec cold anyway (other env, cwd, form), or a snippet
 * that imports none of the stack, gains nothing by waiting. A file's imports are read by the
 * unit at hand-over (the host does not read workspace files), so a file run waits.
 */
export function passOverWhileImporting(unit: UnitPlan, frame: StatusFrame | undefined, spec: RunSpec): string | null {
  if (unit.kind !== "python" || frame?.phase !== "importing") return null;
  const why = "the pre-started interpreter was still importing the data stack";
  if (!inProcess(unit, spec)) return `${why}, and this run would not run in it: started cold at once`;
  const a = spec.argv;
  if (a[1] === "-c") {
    const stack = new Set([...(spec.interpreter?.preload ?? []), ...(spec.interpreter?.triggers ?? [])].map((m) => m.split(".")[0]));
    if (![...pyImports(a[2])].some((m) => stack.has(m))) return `${why}, which this snippet does not import: started cold at once`;
  }
  return null;
}
