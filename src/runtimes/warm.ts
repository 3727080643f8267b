import { LAUNCHER_ARGV, launchLine } from "./launcher.js";
import type { Mount, RunSpec } from "./types.js";
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
  kind: "launcher" | "python";
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

/** The unit to pre-start after a run of `spec` (warmInterpreters: false gives the plain launcher). */
export function unitPlan(spec: RunSpec, opts: { interpreters: boolean }): UnitPlan {
  const launcher: UnitPlan = { kind: "launcher", argv: LAUNCHER_ARGV, env: { PATH: "/usr/bin:/bin" }, predicted: spec.env, cwd: spec.cwd, startCwd: spec.cwd };
  const hint = spec.interpreter;
  if (!opts.interpreters || hint?.kind !== "python" || !startupSafe(spec.env)) return launcher;
  const pp = plainEntries(spec.env.PYTHONPATH);
  if (pp === null) return launcher;
  // Only read-only entries at start: site imports sitecustomize from PYTHONPATH, and nothing of a
  // workspace may run before the request. The run's full path is set at hand-over.
  const env = { ...spec.env };
  const ro = pp.filter((p) => readOnlyPath(p, spec.mounts));
  if (ro.length) env.PYTHONPATH = ro.join(":");
  else delete env.PYTHONPATH;
  const argv = ["python3", "-c", PY_BOOT, (hint.preload ?? []).join(","), (hint.triggers ?? []).join(",")];
  const used = argv.reduce((a, s) => a + Buffer.byteLength(s) + 1, 0);
  argv.push(" ".repeat(Math.max(0, CMDLINE_ROOM - used)));
  return { kind: "python", argv, env, predicted: spec.env, cwd: spec.cwd, startCwd: "/" };
}

/** Whether the run can be executed in the unit's pre-started interpreter (else the unit execs it). */
export function inProcess(unit: UnitPlan, spec: RunSpec): boolean {
  if (unit.kind !== "python" || spec.interpreter?.kind !== "python" || spec.cwd !== unit.cwd) return false;
  const a = spec.argv;
  const form = a[0] === "python3" && ((a[1] === "-c" && a.length >= 3) || (a.length >= 2 && a[1] !== "" && !a[1].startsWith("-")));
  if (!form) return false;
  if (plainEntries(spec.env.PYTHONPATH) === null) return false;
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
 * Takes the unit's status line off the front of a run's stdout and passes the rest on. Status:
 * "1" ran in the pre-started interpreter; "0 REASON" went cold. Output that does not begin with
 * the frame is passed on untouched.
 */
export class StatusFrame {
  private pending: Buffer | null = Buffer.alloc(0);
  status: { warm: boolean; reason?: string } | null = null;

  constructor(private readonly pass: (b: Buffer) => void) {}

  push(b: Buffer): void {
    if (this.pending === null) return this.pass(b);
    const all = Buffer.concat([this.pending, b]);
    const prefix = Buffer.from(FRAME, "utf8");
    const n = Math.min(all.length, prefix.length);
    if (!all.subarray(0, n).equals(prefix.subarray(0, n))) return this.flush(all);
    const nl = all.indexOf(0x0a);
    if (nl < 0) { this.pending = all; return; }
    const line = all.subarray(prefix.length, nl).toString("utf8");
    this.status = line.startsWith("1") ? { warm: true } : { warm: false, reason: line.slice(2) };
    this.pending = null;
    if (all.length > nl + 1) this.pass(all.subarray(nl + 1));
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
