/**
 * Tracing benchmark (`npm run bench -- tracing`): what the host eBPF tracer (src/tracing/) adds to
 * a run. Per runtime, servers with PETRI_AUDIT_TRACE=off and =required take turns (off, on, off,
 * on: the machine's load drifts, so each mode is measured twice, interleaved). A tracer attaches
 * to the whole host, so the "off" blocks run with no tracer of this benchmark alive at all.
 *
 * - hello world: `print('hello world')` from a workspace file, through HTTP, pre-start on;
 * - 10,000 files: a program that opens and reads 10,000 files of the image (walking /usr),
 *   whose every open the tracer sees (its record's trace_counts say so).
 *
 * Environment: BENCH_TRACING_N (hello runs per block, default 30), BENCH_TRACING_FILES_N (10k-file
 * runs per block, default 4), BENCH_TRACING_RUNTIMES (default "runc,bwrap"),
 * BENCH_TRACING_OUT (default bench/results/tracing-latest.json).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { createServer } from "../src/server.js";
import { closeHttp, fmt, intEnv, loadavg, machine, mdTable, request, round1, sleep, summarize } from "./lib.js";

const N = intEnv("BENCH_TRACING_N", 30, 1, 10_000);
const FILES_N = intEnv("BENCH_TRACING_FILES_N", 4, 1, 1000);
const RUNTIMES = (process.env.BENCH_TRACING_RUNTIMES || "runc,bwrap").split(",").map((s) => s.trim()).filter(Boolean);
const OUT = process.env.BENCH_TRACING_OUT || "bench/results/tracing-latest.json";
const log = (m: string) => process.stderr.write(`[bench tracing ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

const HELLO = "print('hello world')\n";
const FILES = String.raw`
import os
n = 0
for root, dirs, files in os.walk('/usr'):
    dirs.sort()
    for f in sorted(files):
        try:
            with open(os.path.join(root, f), 'rb') as fh:
                fh.read(1)
        except OSError:
            continue
        n += 1
        if n == 10000:
            break
    if n == 10000:
        break
print(n)
`;

interface Block {
  mode: "off" | "on";
  hello: number[];
  files: number[];
  /** The program's own duration (duration_ms of the result) for the 10k-file runs. */
  filesInRun: number[];
  load: [number[], number[]];
  traced?: { complete: boolean; library_opens: number; files: number; lost: number };
  errors: string[];
}

async function block(runtime: string, mode: "off" | "on"): Promise<Block> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-trace-"));
  const key = `pk_bench_${Math.random().toString(36).slice(2)}`;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith("PETRI_") && v !== undefined) env[k] = v;
  const config = loadConfig({
    ...env, PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: key, PETRI_PORT: "0", PETRI_LOG_LEVEL: "error",
    PETRI_RUNTIMES: runtime, PETRI_RUNTIME: runtime, PETRI_AUDIT_TRACE: mode === "on" ? "required" : "off",
  });
  const b: Block = { mode, hello: [], files: [], filesInRun: [], load: [loadavg(), []], errors: [] };
  const server = await createServer(config, { logger: pino({ level: "error" }, pino.destination(2)) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const addr = server.app.server.address();
  const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  const call = (method: string, p: string, body?: unknown, raw?: string) =>
    request(url, method, p, { key, json: body, raw, timeoutMs: 180_000 });
  try {
    const sb = JSON.parse((await call("POST", "/v1/sandboxes", { language: "python" })).body) as { id: string };
    await call("PUT", `/v1/sandboxes/${sb.id}/files/main.py`, undefined, HELLO);
    await call("PUT", `/v1/sandboxes/${sb.id}/files/files.py`, undefined, FILES);
    const one = async (filename: string, expect: string) => {
      const t0 = performance.now();
      const r = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { filename, timeout_ms: 120_000 });
      const ms = performance.now() - t0;
      const j = JSON.parse(r.body) as { id?: string; exit_code?: number; stdout?: string; duration_ms?: number };
      if (r.status !== 200 || j.exit_code !== 0 || j.stdout !== expect) {
        b.errors.push(`${runtime} ${mode} ${filename}: ${r.status} ${r.body.slice(0, 200)}`);
        return null;
      }
      // A user's pause: the next run's pre-started unit is made meanwhile, in both modes.
      await sleep(150);
      return { ms, id: j.id!, inRun: j.duration_ms ?? NaN };
    };
    for (let i = 0; i < 3; i++) await one("main.py", "hello world\n");
    for (let i = 0; i < N; i++) {
      const r = await one("main.py", "hello world\n");
      if (r) b.hello.push(r.ms);
    }
    let last: string | null = null;
    for (let i = 0; i < FILES_N + 1; i++) {
      const r = await one("files.py", "10000\n");
      if (r && i > 0) { b.files.push(r.ms); b.filesInRun.push(r.inRun); last = r.id; }
    }
    if (mode === "on" && last) {
      const recs = JSON.parse((await call("GET", `/v1/audit?exec_id=${last}&action=exec.finish`)).body).items as { detail: Record<string, any> }[];
      const d = recs[0]?.detail;
      if (d) b.traced = { complete: d.trace_complete, library_opens: d.trace_counts?.library_opens, files: d.trace_counts?.files, lost: d.trace_counts?.lost_events };
    }
  } finally {
    b.load[1] = loadavg();
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return b;
}

export async function main(): Promise<void> {
  const m = machine();
  log(`start: ${m.git}, load ${loadavg().join(" ")}, N=${N}, FILES_N=${FILES_N}, runtimes ${RUNTIMES.join(",")}`);
  const rows: (string | number)[][] = [];
  const blocks: Record<string, Block[]> = {};
  const errors: string[] = [];
  for (const rt of RUNTIMES) {
    blocks[rt] = [];
    for (const mode of ["off", "on", "off", "on"] as const) {
      log(`${rt}: tracing ${mode}`);
      const b = await block(rt, mode);
      blocks[rt].push(b);
      errors.push(...b.errors);
      log(`${rt} ${mode}: hello median ${summarize(b.hello).median} ms, 10k files median ${summarize(b.files).median} ms, load ${b.load[1].join(" ")}`);
    }
    const pool = (mode: "off" | "on", k: "hello" | "files" | "filesInRun") => blocks[rt]!.filter((b) => b.mode === mode).flatMap((b) => b[k]);
    const hOff = summarize(pool("off", "hello"));
    const hOn = summarize(pool("on", "hello"));
    const fOff = summarize(pool("off", "files"));
    const fOn = summarize(pool("on", "files"));
    const iOff = summarize(pool("off", "filesInRun"));
    const iOn = summarize(pool("on", "filesInRun"));
    const perBlock = blocks[rt]!.map((b) => `${b.mode} ${fmt(summarize(b.hello).median)}`).join(" / ");
    rows.push([rt, "hello world p50 (ms)", fmt(hOff.median), fmt(hOn.median), `${round1(hOn.median - hOff.median)} ms`, perBlock]);
    rows.push([rt, "10,000 files p50 (ms, HTTP)", fmt(fOff.median), fmt(fOn.median), `${round1((fOn.median / fOff.median - 1) * 100)} %`,
      blocks[rt]!.map((b) => `${b.mode} ${fmt(summarize(b.files).median)}`).join(" / ")]);
    rows.push([rt, "10,000 files p50 (ms, in the run)", fmt(iOff.median), fmt(iOn.median), `${round1((iOn.median / iOff.median - 1) * 100)} %`, ""]);
    const t = blocks[rt]!.find((b) => b.traced)?.traced;
    if (t) log(`${rt}: the traced 10k-file run's record: complete ${t.complete}, library opens ${t.library_opens}, files ${t.files}, lost ${t.lost}`);
  }
  const traced = Object.entries(blocks).map(([rt, bs]) => {
    const t = bs.find((b) => b.traced)?.traced;
    return t ? `${rt}: trace_complete ${t.complete}, ${t.library_opens} library opens + ${t.files} other files counted, ${t.lost} events lost` : `${rt}: no traced record`;
  });
  const loads = Object.entries(blocks).map(([rt, bs]) => `${rt} ${bs.map((b) => `${b.mode} ${b.load[0][0]}→${b.load[1][0]}`).join(", ")}`);
  const md = [
    `## Tracing overhead (${new Date().toISOString().slice(0, 16)}Z, ${m.git}, ${m.cpu}, ${m.nproc} CPUs)`,
    "",
    `Blocks off, on, off, on per runtime; ${N} hello runs and ${FILES_N} 10,000-file runs per block; 1-minute load average at each block's start→end: ${loads.join("; ")}.`,
    "",
    mdTable(["runtime", "what", "tracing off", "tracing on", "added", "per block (median)"], rows),
    "",
    `What the tracer recorded of the last 10,000-file run: ${traced.join("; ")}.`,
    ...(errors.length ? ["", `errors (${errors.length}): ${errors.slice(0, 5).join("; ")}`] : []),
  ].join("\n");
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ machine: m, n: N, filesN: FILES_N, rows, blocks, errors, markdown: md, at: new Date().toISOString() }, null, 2) + "\n");
  process.stdout.write(md + "\n");
  log(`wrote ${OUT}`);
  closeHttp();
}
