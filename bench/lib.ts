/**
 * Helpers of the benchmark: statistics, a small keep-alive HTTP client, child processes with a
 * deadline, and what the machine is. Nothing here knows about Petri's internals.
 */
import http from "node:http";
import os from "node:os";
import fs from "node:fs";
import { spawn, spawnSync } from "node:child_process";

export interface Summary {
  n: number;
  median: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array (p in 0..1). */
function rank(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(xs: readonly number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return {
    n: s.length,
    median: round1(rank(s, 0.5)),
    p90: round1(rank(s, 0.9)),
    p99: round1(rank(s, 0.99)),
    min: round1(s[0] ?? NaN),
    max: round1(s[s.length - 1] ?? NaN),
    mean: round1(mean),
  };
}

export function round1(x: number): number {
  return Number.isFinite(x) ? Math.round(x * 10) / 10 : NaN;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// One keep-alive agent for every request: a client of the service would reuse its connections.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

export interface HttpResult {
  status: number;
  body: string;
  /** Request written to the whole response body read, milliseconds. */
  ms: number;
}

/** One HTTP request to 127.0.0.1, bounded by `timeoutMs`; network errors reject. */
export function request(baseUrl: string, method: string, path: string,
  opts: { key: string; json?: unknown; raw?: string | Buffer; contentType?: string; timeoutMs?: number }): Promise<HttpResult> {
  const url = new URL(path, baseUrl);
  const body = opts.json !== undefined ? Buffer.from(JSON.stringify(opts.json)) : opts.raw !== undefined ? Buffer.from(opts.raw) : undefined;
  const headers: Record<string, string> = { authorization: `Bearer ${opts.key}` };
  if (body) {
    headers["content-type"] = opts.contentType ?? (opts.json !== undefined ? "application/json" : "application/octet-stream");
    headers["content-length"] = String(body.length);
  }
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8"), ms: performance.now() - t0 }));
      res.on("error", reject);
    });
    req.setTimeout(opts.timeoutMs ?? 120_000, () => req.destroy(new Error(`${method} ${path}: no answer within ${opts.timeoutMs ?? 120_000} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

export function closeHttp(): void {
  agent.destroy();
}

export interface ProcResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command (no shell), killed after `timeoutMs`. */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<ProcResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => { clearTimeout(timer); resolve({ code: -1, stdout, stderr: stderr + e.message, ms: performance.now() - t0 }); });
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr, ms: performance.now() - t0 }); });
  });
}

function firstLine(cmd: string, args: string[]): string {
  try {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
    return (r.stdout || r.stderr || "").trim().split("\n")[0] ?? "";
  } catch {
    return "";
  }
}

export interface Machine {
  date: string;
  hostname: string;
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  loadavg: number[];
  node: string;
  docker: string;
  bwrap: string;
  cgroups: string;
  git: string;
}

export function machine(): Machine {
  let cpu = "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"));
    if (m) cpu = m[1]!.trim();
  } catch { /* not Linux */ }
  let cgroups = "unknown";
  try {
    const mi = fs.readFileSync("/proc/self/mountinfo", "utf8");
    const v1 = / - cgroup /.test(mi);
    const v2 = / - cgroup2 /.test(mi);
    cgroups = v1 && v2 ? "hybrid v1/v2" : v2 ? "v2" : v1 ? "v1" : "none";
  } catch { /* not Linux */ }
  const rev = firstLine("git", ["rev-parse", "--short", "HEAD"]);
  const dirty = firstLine("git", ["status", "--porcelain", "--untracked-files=no", "src"]) ? " (src has uncommitted changes)" : "";
  return {
    date: new Date().toISOString(),
    hostname: os.hostname(),
    nproc: os.availableParallelism(),
    cpu,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    docker: firstLine("docker", ["version", "--format", "{{.Server.Version}}"]) || "not available",
    bwrap: firstLine("bwrap", ["--version"]) || "not available",
    cgroups,
    git: rev ? rev + dirty : "unknown",
  };
}

/** Busy and total CPU time of the whole host so far (/proc/stat, all CPUs). */
export function cpuTimes(): { busy: number; total: number } {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** Share (0..1) of the host's CPU time that was busy since `since`. */
export function cpuBusySince(since: { busy: number; total: number }): number | undefined {
  const now = cpuTimes();
  const dt = now.total - since.total;
  return dt > 0 ? (now.busy - since.busy) / dt : undefined;
}

export function loadavg(): number[] {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

/** Reads a whole-number BENCH_* setting. */
export function intEnv(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === "") return def;
  if (!/^\d+$/.test(raw.trim())) throw new Error(`${name} must be a whole number, got "${raw}"`);
  const v = Number(raw.trim());
  if (v < min || v > max) throw new Error(`${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

/** Markdown table with right-aligned numeric columns. */
export function mdTable(head: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === "number" ? fmt(c) : c)));
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? "").length)));
  const numeric = head.map((_, i) => cells.length > 0 && cells.every((r) => /^[-+]?[\d.,]+( ?[×%a-zA-Z/]*)?$|^–$|^n\/a$/.test(r[i] ?? "")));
  const line = (r: string[]) => "| " + r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ") + " |";
  const sep = "|" + widths.map((w, i) => (numeric[i] ? "-".repeat(w + 1) + ":" : "-".repeat(w + 2))).join("|") + "|";
  return [line(head), sep, ...cells.map(line)].join("\n");
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return "–";
  if (Math.abs(x) >= 100) return String(Math.round(x));
  return String(Math.round(x * 10) / 10);
}
