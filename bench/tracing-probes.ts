/**
 * The host tracer's cost per open, apart from the server (`npm run bench -- tracing probes`): a
 * Python loop opening and reading 10,000 distinct files of the host's /usr (as bench/tracing.ts's
 * program does in the image), run in its own cgroup and pid namespace as a run is, with one
 * TracerService following it ("on") or no tracer of this benchmark alive at all ("off"). Blocks
 * alternate off, on, off, on … (the shared machine's load drifts); the loop times itself (wall and
 * CPU of its own process, the list of paths made before the clock starts), so neither the server,
 * the interpreter's start nor the tracer's catching up after the run is in the figure. Between
 * them, hello-world runs (`python3 -c`) are timed from spawn to exit, registration included.
 *
 * Environment: BENCH_PROBES_ROUNDS (off/on pairs, default 4), BENCH_PROBES_N (runs per block,
 * default 6), BENCH_PROBES_OUT (default bench/results/tracing-probes-latest.json).
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TracerService, tracerPrerequisites } from "../src/tracing/tracer.js";
import { fmt, intEnv, loadavg, machine, mdTable, round1, summarize } from "./lib.js";

const ROUNDS = intEnv("BENCH_PROBES_ROUNDS", 4, 1, 100);
const N = intEnv("BENCH_PROBES_N", 6, 1, 1000);
const OUT = process.env.BENCH_PROBES_OUT || "bench/results/tracing-probes-latest.json";
const FILES = 10_000;
/** Hello-world runs after each 10,000-open run. */
const HELLO_PER_RUN = 4;
const log = (m: string) => process.stderr.write(`[bench probes ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

const LOOP = String.raw`
import os, resource, time
paths = []
for root, dirs, files in os.walk('/usr'):
    dirs.sort()
    for f in sorted(files):
        p = os.path.join(root, f)
        if os.path.isfile(p) and os.access(p, os.R_OK):
            paths.append(p)
    if len(paths) >= ${FILES + 2000}:
        break
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter_ns()
n = 0
for p in paths:
    try:
        with open(p, 'rb') as fh:
            fh.read(1)
    except OSError:
        continue
    n += 1
    if n == ${FILES}:
        break
t1 = time.perf_counter_ns()
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9
print(n, t1 - t0, int(cpu))
`;

interface Run { wallNs: number; cpuNs: number }
interface Block { mode: "off" | "on"; runs: Run[]; hello: number[]; helloAlive: number[]; load: number; traced?: { complete: boolean; reason: string | null; libraryOpens: number; fileOpens: number } }

function otherTracers(): number {
  const r = spawnSync("pgrep", ["-c", "-x", "bpftrace"], { encoding: "utf8" });
  return Number(r.stdout.trim()) || 0;
}

export async function main(): Promise<void> {
  const pre = tracerPrerequisites();
  if (!pre.ok) throw new Error(`host cannot trace: ${pre.reason}`);
  const m = machine();
  const root = path.join(pre.v2, `petri-bench-probes-${process.pid}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-probes-"));
  fs.chmodSync(dir, 0o755);
  const script = path.join(dir, "loop.py");
  fs.writeFileSync(script, LOOP);
  const argv = ["/usr/bin/python3", script];
  fs.mkdirSync(root);
  let seq = 0;
  const once = async (tracer: TracerService | null): Promise<{ run: Run; traced?: Block["traced"] }> => {
    const name = `r${seq++}`;
    fs.mkdirSync(path.join(root, name));
    const session = tracer?.begin(argv) ?? null;
    session?.attach(path.relative(pre.v2, path.join(root, name)));
    try {
      const out = await new Promise<string>((resolve, reject) => {
        const p = spawn("/bin/sh", ["-c", `echo $$ > ${path.join(root, name)}/cgroup.procs && exec unshare --pid --fork ${argv.join(" ")}`], { stdio: ["ignore", "pipe", "inherit"] });
        let s = "";
        p.stdout.setEncoding("utf8").on("data", (d: string) => { s += d; });
        p.once("error", reject);
        p.once("exit", (c) => c === 0 ? resolve(s) : reject(new Error(`loop exited ${c}: ${s}`)));
      });
      const [n, wall, cpu] = out.trim().split(" ").map(Number);
      if (n !== FILES) throw new Error(`the loop opened ${n} files, not ${FILES}`);
      let traced: Block["traced"];
      if (session) {
        const r = await session.finish();
        const fileOpens = r.summary.files.reduce((a, f) => a + f.count, 0) + r.summary.dropped;
        traced = { complete: r.complete, reason: r.reason, libraryOpens: r.summary.libraries.count, fileOpens };
      }
      return { run: { wallNs: wall, cpuNs: cpu }, traced };
    } finally {
      fs.rmdirSync(path.join(root, name));
    }
  };
  /**
   * A hello-world run: spawn → exit of the shell, unshare and `python3 -c "print('hello world')"`,
   * with the run's registration before it (as a server does) but not its finish (a server's result
   * does not wait for the trace), in ms.
   */
  const hello = async (tracer: TracerService | null, follow = true): Promise<number> => {
    const name = `h${seq++}`;
    fs.mkdirSync(path.join(root, name));
    const argv = ["/usr/bin/python3", "-c", "print('hello world')"];
    try {
      const t0 = performance.now();
      const session = follow ? tracer?.begin(argv) ?? null : null;
      session?.attach(path.relative(pre.v2, path.join(root, name)));
      await new Promise<void>((resolve, reject) => {
        const p = spawn("/bin/sh", ["-c", `echo $$ > ${path.join(root, name)}/cgroup.procs && exec unshare --pid --fork /usr/bin/python3 -c "print('hello world')"`], { stdio: "ignore" });
        p.once("error", reject);
        p.once("exit", (c) => c === 0 ? resolve() : reject(new Error(`hello exited ${c}`)));
      });
      const ms = performance.now() - t0;
      await session?.finish();
      return ms;
    } finally {
      fs.rmdirSync(path.join(root, name));
    }
  };
  const blocks: Block[] = [];
  try {
    log(`start: ${m.git}, load ${loadavg().join(" ")}, ${ROUNDS} rounds of ${N} runs per block`);
    await once(null); // page cache
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of ["off", "on"] as const) {
        const tracer = mode === "on" ? new TracerService({ log: { info: () => undefined, warn: () => undefined, error: () => undefined } }) : null;
        try {
          if (tracer) {
            const st = await tracer.start();
            if (st.state !== "active") throw new Error(`tracer: ${st.state} ${st.reason}`);
          }
          const b: Block = { mode, runs: [], hello: [], helloAlive: [], load: loadavg()[0] };
          for (let i = 0; i < N; i++) {
            const r = await once(tracer);
            b.runs.push(r.run);
            if (r.traced) b.traced = r.traced;
            // With a tracer alive, runs it follows and runs it does not take turns: what following a
            // run costs, apart from the drift between blocks.
            for (let k = 0; k < HELLO_PER_RUN; k++) {
              b.hello.push(await hello(tracer));
              if (tracer) b.helloAlive.push(await hello(tracer, false));
            }
          }
          blocks.push(b);
          log(`round ${round} ${mode}: wall median ${fmt(summarize(b.runs.map((r) => r.wallNs / 1e6)).median)} ms, cpu ${fmt(summarize(b.runs.map((r) => r.cpuNs / 1e6)).median)} ms, load ${b.load}, other bpftrace ${otherTracers() - (tracer ? 1 : 0)}${b.traced ? `, record: complete ${b.traced.complete}, ${b.traced.libraryOpens} library + ${b.traced.fileOpens} other opens` : ""}`);
        } finally {
          await tracer?.close();
        }
      }
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const pool = (mode: "off" | "on", k: keyof Run) => summarize(blocks.filter((b) => b.mode === mode).flatMap((b) => b.runs.map((r) => r[k] / 1e6)));
  const rows = (["wallNs", "cpuNs"] as const).map((k) => {
    const off = pool("off", k), on = pool("on", k);
    return [k === "wallNs" ? "loop wall time (ms)" : "loop CPU time, user+sys (ms)", fmt(off.median), fmt(on.median),
      `${round1((on.median / off.median - 1) * 100)} %`, `${round1(((on.median - off.median) * 1e6) / FILES)} ns`,
      blocks.map((b) => `${b.mode} ${fmt(summarize(b.runs.map((r) => r[k] / 1e6)).median)}`).join(" / ")];
  });
  const hOff = summarize(blocks.filter((b) => b.mode === "off").flatMap((b) => b.hello));
  const hOn = summarize(blocks.filter((b) => b.mode === "on").flatMap((b) => b.hello));
  rows.push(["hello world, spawn → exit (ms)", fmt(hOff.median), fmt(hOn.median), `${round1(hOn.median - hOff.median)} ms`, "",
    blocks.map((b) => `${b.mode} ${fmt(summarize(b.hello).median)}`).join(" / ")]);
  const hAlive = summarize(blocks.filter((b) => b.mode === "on").flatMap((b) => b.helloAlive));
  rows.push(["hello world, tracer alive: run not followed → followed, in turns (ms)", fmt(hAlive.median), fmt(hOn.median), `${round1(hOn.median - hAlive.median)} ms`, "",
    blocks.filter((b) => b.mode === "on").map((b) => `${fmt(summarize(b.helloAlive).median)} → ${fmt(summarize(b.hello).median)}`).join(" / ")]);
  const t = blocks.find((b) => b.traced)?.traced;
  const md = [
    `## Tracer cost per open (${new Date().toISOString().slice(0, 16)}Z, ${m.git}, ${m.cpu}, ${m.nproc} CPUs)`,
    "",
    `${ROUNDS} rounds of blocks off/on, ${N} runs of ${FILES} opens+reads per block; 1-minute load at each block's start: ${blocks.map((b) => `${b.mode} ${b.load}`).join(", ")}.`,
    "",
    mdTable(["what", "tracing off", "tracing on", "added", "added per open", "per block (median)"], rows),
    "",
    t ? `The last traced run's record: complete ${t.complete}${t.reason ? ` (${t.reason})` : ""}, ${t.libraryOpens} library opens + ${t.fileOpens} other opens counted.` : "",
  ].join("\n");
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ machine: m, rounds: ROUNDS, n: N, rows, blocks, markdown: md, at: new Date().toISOString() }, null, 2) + "\n");
  process.stdout.write(md + "\n");
}
