import fs from "node:fs";
import path from "node:path";
import type Docker from "dockerode";
import type { DB } from "../store/db.js";

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ReadinessDeps {
  db: DB;
  dataDir: string;
  /** The engine the Docker runtimes use; undefined when none is offered. */
  docker?: Docker;
  /** Runtime names this server offers, and its default (null: none works). */
  runtimes: () => string[];
  defaultRuntime: string | null;
  /** Images the Docker runtimes run (one per language, de-duplicated). */
  dockerImages: string[];
  /** Root filesystems bwrap runs from, when bwrap is offered. */
  rootfsDirs: string[];
  /** Audit sinks' delivery state. */
  sinks: () => { name: string; consecutive_failures: number; last_error?: string; lag: number }[];
  /** The audit log's own health: can it be written, and what PETRI_AUDIT_FAIL does when it cannot. */
  auditLog?: () => { writable: boolean; fail_mode: "closed" | "open"; refusing: boolean; failing_since: string | null; last_error: string | null; lost_records: number };
  /** The host tracer (PETRI_AUDIT_TRACE): which level of audit runs get. */
  auditTrace?: () => { state: string; reason: string | null; required: boolean };
  /** Extra checks other parts register (the audit log's own health, …). */
  extra?: (() => Promise<CheckResult> | CheckResult)[];
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms); }),
  ]);
}

/**
 * Readiness: can this server take runs right now? Unlike liveness (/healthz: the process
 * answers), every dependency a run needs is checked: the store takes writes, the data directory
 * is writable, the Docker engine answers, the images exist, audit sinks deliver. Results are
 * cached for a second so a busy load balancer cannot turn probes into load.
 */
export class Readiness {
  private cached: { at: number; value: Promise<{ ready: boolean; checks: CheckResult[] }> } | null = null;

  constructor(private readonly d: ReadinessDeps) {}

  check(): Promise<{ ready: boolean; checks: CheckResult[] }> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < 1000) return this.cached.value;
    const value = this.run();
    this.cached = { at: now, value };
    return value;
  }

  private async run(): Promise<{ ready: boolean; checks: CheckResult[] }> {
    const checks = await Promise.all([
      this.database(), this.dataDir(), this.runtimes(), this.engine(), this.images(), this.audit(), this.auditLog(), this.auditTrace(),
      ...(this.d.extra ?? []).map(async (f) => {
        try { return await f(); } catch (e) { return { name: "extra", ok: false, detail: (e as Error).message }; }
      }),
    ]);
    const all = checks.filter((c): c is CheckResult => c !== null);
    return { ready: all.every((c) => c.ok), checks: all };
  }

  private async database(): Promise<CheckResult> {
    try {
      this.d.db.prepare("INSERT INTO meta(key, value) VALUES ('readyz_at', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(String(Date.now()));
      return { name: "database", ok: true, detail: "writable" };
    } catch (e) {
      return { name: "database", ok: false, detail: `the store does not take writes: ${(e as Error).message}` };
    }
  }

  private async dataDir(): Promise<CheckResult> {
    const probe = path.join(this.d.dataDir, `.readyz-${process.pid}`);
    try {
      fs.writeFileSync(probe, "ok", { mode: 0o600 });
      fs.rmSync(probe, { force: true });
      return { name: "data_dir", ok: true, detail: `${this.d.dataDir} is writable` };
    } catch (e) {
      return { name: "data_dir", ok: false, detail: `${this.d.dataDir} is not writable: ${(e as Error).message}` };
    }
  }

  private async runtimes(): Promise<CheckResult> {
    const names = this.d.runtimes();
    if (!this.d.defaultRuntime || names.length === 0) {
      return { name: "runtimes", ok: false, detail: "no sandbox runtime works on this host; runs are refused (see `petri doctor`)" };
    }
    return { name: "runtimes", ok: true, detail: `offered: ${names.join(", ")}; default ${this.d.defaultRuntime}` };
  }

  private async engine(): Promise<CheckResult | null> {
    if (!this.d.docker) return null;
    try {
      await withTimeout(this.d.docker.ping(), 2000, "the Docker engine");
      return { name: "docker_engine", ok: true, detail: "answers" };
    } catch (e) {
      return { name: "docker_engine", ok: false, detail: `the Docker engine is unreachable: ${(e as Error).message}` };
    }
  }

  private async images(): Promise<CheckResult | null> {
    const missing: string[] = [];
    if (this.d.docker) {
      for (const img of this.d.dockerImages) {
        try {
          await withTimeout(this.d.docker.getImage(img).inspect(), 2000, "the Docker engine");
        } catch (e) {
          const code = (e as { statusCode?: number }).statusCode;
          // An engine that does not answer is the engine check's finding, not a missing image.
          if (code === 404) missing.push(img);
          else if (code === undefined) return { name: "images", ok: false, detail: `cannot check images: ${(e as Error).message}` };
        }
      }
    }
    for (const dir of this.d.rootfsDirs) if (!fs.existsSync(dir)) missing.push(dir);
    if (!this.d.docker && this.d.rootfsDirs.length === 0) return null;
    return missing.length
      ? { name: "images", ok: false, detail: `missing: ${missing.join(", ")}; build with \`petri images build\`` }
      : { name: "images", ok: true, detail: "present" };
  }

  /**
   * Not writable with PETRI_AUDIT_FAIL=closed: not ready (requests are refused). With `open` the
   * server still takes work, so it stays ready, and the detail says that work goes unrecorded.
   */
  private async auditLog(): Promise<CheckResult | null> {
    const h = this.d.auditLog?.();
    if (!h) return null;
    if (h.writable) return { name: "audit_log", ok: true, detail: `writable; PETRI_AUDIT_FAIL=${h.fail_mode}` };
    const why = `the audit log cannot be written since ${h.failing_since ?? "start"} (${h.last_error ?? "unknown error"}), ${h.lost_records} record(s) lost`;
    return h.fail_mode === "closed"
      ? { name: "audit_log", ok: false, detail: `${why}; PETRI_AUDIT_FAIL=closed: runs and API calls are refused` }
      : { name: "audit_log", ok: true, detail: `${why}; PETRI_AUDIT_FAIL=open: runs and API calls go on UNRECORDED` };
  }

  /** Which level of audit runc, crun and bwrap runs get; only PETRI_AUDIT_TRACE=required makes a lost tracer fatal. */
  private async auditTrace(): Promise<CheckResult | null> {
    const t = this.d.auditTrace?.();
    if (!t) return null;
    if (t.state === "active") return { name: "audit_trace", ok: true, detail: "runs of runc, crun and bwrap are traced with eBPF (programs, files, network attempts, DNS names)" };
    if (t.state === "starting") return { name: "audit_trace", ok: !t.required, detail: "the tracer is still compiling its probes; runs started now are recorded as not traced" };
    const detail = `runs of runc, crun and bwrap are NOT traced (${t.state}${t.reason ? `: ${t.reason}` : ""}); their records hold workspace changes only`;
    return { name: "audit_trace", ok: !t.required, detail };
  }

  private async audit(): Promise<CheckResult> {
    const failing = this.d.sinks().filter((s) => s.consecutive_failures > 0);
    if (failing.length) {
      return { name: "audit_sinks", ok: false, detail: failing.map((s) => `${s.name}: ${s.consecutive_failures} failed deliveries, ${s.lag} records behind${s.last_error ? ` (${s.last_error})` : ""}`).join("; ") };
    }
    return { name: "audit_sinks", ok: true, detail: `${this.d.sinks().length} sink(s) delivering` };
  }
}
