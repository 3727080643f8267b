/**
 * Petri benchmark (`npm run build && npm run bench`). See docs/benchmark.md for what each number
 * means. The server runs in this process (one fresh server, data directory and instance per
 * row), the client talks to it over HTTP on 127.0.0.1 with keep-alive connections.
 *
 * Settings (environment):
 *   BENCH_RUNTIMES             comma list of runc,crun,runsc,bwrap,runc-direct,crun-direct,runsc-direct (default: all; unavailable ones are reported and skipped)
 *   BENCH_N                    sequential execs per row (default 100, after BENCH_WARMUP=5 warm-up runs)
 *   BENCH_B2B_N                back-to-back execs per row, no pause (default 20)
 *   BENCH_BARE_N               bare-interpreter runs, at the start and again at the end (default BENCH_N)
 *   BENCH_DOCKER_RUN_N         `docker run --rm` runs per OCI runtime (default 20)
 *   BENCH_CONCURRENCY_SECONDS  duration of the concurrency phase per row (default 20; 0 skips it)
 *   BENCH_CLIENTS              parallel clients in that phase (default 8, as peers are compared)
 *   BENCH_PEER_N               runs of each peer-comparable script per row (warm on and off): node hello, CPU-bound, pandas (default 10; 0 skips)
 *   BENCH_PEERS                comma list of substrings: only the peer scripts whose name has one (default: all), e.g. "node,typescript"
 *   BENCH_INTERLEAVED_N        rounds of the interleaved phase: one server with every runtime, one hello exec per runtime per round (default 20; 0 skips)
 *   BENCH_CREATE_N             timed sandbox creations (default 200)
 *   BENCH_IDLE_SANDBOXES       idle sandboxes to create (default 10000; 0 skips the phase)
 *   BENCH_LOOKUP_N             GET/list requests per measurement (default 200)
 *   BENCH_PAUSE_MS             untimed pause before each sequential exec, after background work settled (default 50)
 *   BENCH_WS_N                 paced execs per workspace size and runtime in the workspace-size phase (default 20; 0 skips it)
 *   BENCH_WS_SIZES             the sizes: comma list of file counts, or NNNmb for one workspace of that many MB (default 0,1000,20000,50000,500mb)
 *   BENCH_ONLY                 "workspace": run only the workspace-size phase; "sync": only the sync benchmark (bench/sync.ts, its settings there)
 *   BENCH_OUT                  JSON output (default bench/results/latest.json)
 * PETRI_* variables are passed to the servers, except the ones the benchmark sets per row
 * (data dir, admin token, port, log level, runtimes, default runtime, warm containers).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { fileURLToPath } from "node:url";
import pino from "pino";
import Docker from "dockerode";
import { loadConfig, RUNTIME_NAMES } from "../src/config.js";
import { createServer, LABEL_INSTANCE, type PetriServer } from "../src/server.js";
import type { Runtime, RunSpec, RunResult } from "../src/runtimes/types.js";
import { DEFAULT_IMAGE } from "../src/images/recipe.js";
import { rootfsDirFor } from "../src/images/build.js";
import { closeHttp, cpuBusySince, cpuTimes, fmt, intEnv, loadavg, machine, mdTable, request, round1, run, sleep, summarize, type Summary } from "./lib.js";

const HELLO_PY = "print('hello world')\n";
const EXPECTED = "hello world\n";
const DOCKER_RUNTIMES = new Set(["runc", "crun", "runsc"]);

/**
 * Scripts peers are compared on (issue 15), each run in an existing sandbox like main.py: the
 * same program a user of Piston or E2B would send. The answer is checked, so a fast wrong run
 * never counts.
 */
const PEER_SCRIPTS = [
  { name: "node hello", language: "node", file: "main.js", content: "console.log('hello world')\n", expected: "hello world\n" },
  { name: "typescript hello", language: "typescript", file: "main.ts", content: "const m: string = 'hello world';\nconsole.log(m);\n", expected: "hello world\n" },
  {
    name: "CPU-bound (python, 2M-step loop)", language: "python", file: "cpu.py",
    content: "s = 0\nfor i in range(2_000_000):\n    s += i * i % 7\nprint(s)\n", expected: `${Array.from({ length: 2_000_000 }, (_, i) => (i * i) % 7).reduce((a, b) => a + b, 0)}\n`,
  },
  // The first (unmeasured) run builds; the others exec the binary kept in the sandbox's cache (issue 15 item 5).
  { name: "go hello, unchanged program", language: "go", file: "main.go", content: 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello world") }\n', expected: "hello world\n" },
  {
    // Issue 15's target row: pandas and matplotlib. The untimed pause before each run is long
    // enough for a pre-started interpreter to finish importing them (a user coming back after a
    // moment); back-to-back runs would wait for that import instead (docs/warm.md).
    name: "pandas + matplotlib script (datascience image)", language: "python", image: "datascience", file: "frame.py", pauseMs: 3000,
    content: "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.DataFrame({'x': range(100), 'y': [i % 3 for i in range(100)]})\n" +
      "df.plot(x='x', y='y')\nplt.savefig('/tmp/plot.png')\nprint(int(df.groupby('y').x.sum().sum()))\n",
    expected: "4950\n",
  },
] as const;

const settings = {
  runtimes: (process.env.BENCH_RUNTIMES ?? "").split(",").map((s) => s.trim()).filter(Boolean),
  peers: (process.env.BENCH_PEERS ?? "").split(",").map((s) => s.trim()).filter(Boolean),
  n: intEnv("BENCH_N", 100, 1, 100_000),
  warmup: intEnv("BENCH_WARMUP", 5, 0, 1000),
  b2bN: intEnv("BENCH_B2B_N", 20, 0, 100_000),
  oneShotN: intEnv("BENCH_ONESHOT_N", 20, 0, 100_000),
  bareN: intEnv("BENCH_BARE_N", intEnv("BENCH_N", 100, 1, 100_000), 0, 100_000),
  dockerRunN: intEnv("BENCH_DOCKER_RUN_N", 20, 0, 10_000),
  concurrencySeconds: intEnv("BENCH_CONCURRENCY_SECONDS", 20, 0, 3600),
  clients: intEnv("BENCH_CLIENTS", 8, 1, 1024),
  peerN: intEnv("BENCH_PEER_N", 10, 0, 10_000),
  interleavedN: intEnv("BENCH_INTERLEAVED_N", 20, 0, 10_000),
  createN: intEnv("BENCH_CREATE_N", 200, 1, 100_000),
  idleSandboxes: intEnv("BENCH_IDLE_SANDBOXES", 10_000, 0, 1_000_000),
  lookupN: intEnv("BENCH_LOOKUP_N", 200, 1, 100_000),
  pauseMs: intEnv("BENCH_PAUSE_MS", 50, 0, 60_000),
  wsN: intEnv("BENCH_WS_N", 20, 0, 100_000),
  wsSizes: (process.env.BENCH_WS_SIZES ?? "0,1000,20000,50000,500mb").split(",").map((x) => x.trim()).filter(Boolean),
  only: process.env.BENCH_ONLY ?? "",
  out: process.env.BENCH_OUT || path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bench", "results", "latest.json"),
};
if (settings.runtimes.length === 0) settings.runtimes = [...RUNTIME_NAMES];
for (const r of settings.runtimes) {
  if (!(RUNTIME_NAMES as readonly string[]).includes(r)) throw new Error(`BENCH_RUNTIMES: unknown runtime "${r}"; known: ${RUNTIME_NAMES.join(", ")}`);
}

/** Upper bounds on wall time, so a wedged engine cannot hold the benchmark forever. */
const PHASE_MAX_MS = 300_000;
/** Runs time out after 30 s (PETRI_DEFAULT_TIMEOUT_MS): an exec without an answer by then is stuck. */
const REQUEST_TIMEOUT_MS = 45_000;

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const docker = new Docker({ socketPath: process.env.PETRI_DOCKER_SOCKET || "/var/run/docker.sock" });

// A forced collection before reading RSS, so the number is what is live, not what is pending.
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

// ---------------------------------------------------------------------------------------------
// Servers

/** What the instrumented Runtime.run() saw for one run. */
interface RunRecord {
  /** performance.now() when run() was called and when it returned. */
  start: number;
  end: number;
  ms: number;
  warm: boolean;
  timings: Record<string, number>;
  error?: string;
}


interface BenchServer {
  server: PetriServer;
  url: string;
  key: string;
  dataDir: string;
  /** Records of the instrumented runtime, appended as runs finish. */
  runs: RunRecord[];
  runtime?: Runtime;
  /** Closes the server (which waits for its container removals) and counts what it left behind. */
  close(): Promise<Leftovers>;
}

interface Leftovers {
  /** Runs the server still had in flight when it was asked to close (all clients had their answer or gave up). */
  activeRuns: number;
  /** server.close() did not finish within CLOSE_TIMEOUT_MS. */
  closeTimedOut: boolean;
  /** Containers with the instance's label after close (then removed by the benchmark). */
  containers: number;
  /** What those containers were doing, for the report. */
  containerStates: string[];
  /** Per-run cgroups left under the instance's parent cgroups (then removed by the benchmark). */
  cgroups: number;
}

const CLOSE_TIMEOUT_MS = 30_000;

const open = new Set<BenchServer>();

function petriEnvFromProcess(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith("PETRI_") && v !== undefined) env[k] = v;
  return env;
}

const warmOnMs = (() => {
  const v = Number(process.env.PETRI_WARM_IDLE_MS);
  return Number.isInteger(v) && v > 0 ? v : 60_000;
})();

async function startServer(runtimes: string[], warmIdleMs: number): Promise<BenchServer> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-"));
  const key = `pk_bench_${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const config = loadConfig({
    ...petriEnvFromProcess(),
    PETRI_DATA_DIR: dataDir,
    PETRI_ADMIN_TOKEN: key,
    PETRI_PORT: "0",
    PETRI_HOST: "127.0.0.1",
    PETRI_LOG_LEVEL: "error",
    PETRI_RUNTIMES: runtimes.join(","),
    PETRI_RUNTIME: runtimes.length === 1 ? runtimes[0]! : "auto",
    PETRI_WARM_IDLE_MS: String(warmIdleMs),
    // Tenant quotas (where the server has them) must not be what the benchmark measures.
    PETRI_TENANT_MAX_SANDBOXES: String(Math.max(Number(process.env.PETRI_TENANT_MAX_SANDBOXES) || 20_000, settings.idleSandboxes + 2 * settings.createN + 100)),
    PETRI_TENANT_MAX_CONCURRENT_RUNS: String(Math.max(Number(process.env.PETRI_TENANT_MAX_CONCURRENT_RUNS) || 64, settings.clients)),
  });
  const server = await createServer(config, { logger: pino({ level: "error" }, pino.destination(2)) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const addr = server.app.server.address();
  const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  const runs: RunRecord[] = [];
  let runtime: Runtime | undefined;
  if (runtimes.length === 1 && server.runtimes.has(runtimes[0]!)) {
    runtime = server.runtimes.get(runtimes[0]!)!;
    instrument(runtime, runs);
  }
  let closed: Promise<Leftovers> | null = null;
  const b: BenchServer = {
    server, url, key, dataDir, runs, runtime,
    close() {
      closed ??= (async () => {
        const activeRuns = server.exec.activeCount();
        // close() waits for every run to end; a run that never ends would hold it forever.
        let timer: NodeJS.Timeout | undefined;
        const closeTimedOut = await Promise.race([
          server.close().then(() => false, (e) => { log(`server.close() failed: ${(e as Error).message}`); return false; }),
          new Promise<boolean>((r) => { timer = setTimeout(() => r(true), CLOSE_TIMEOUT_MS); }),
        ]);
        clearTimeout(timer);
        if (closeTimedOut) log(`server.close() did not finish within ${CLOSE_TIMEOUT_MS} ms (${activeRuns} runs were in flight)`);
        const filters = { label: [`${LABEL_INSTANCE}=${server.instanceId}`] };
        const left = await docker.listContainers({ all: true, filters }).catch(() => null);
        const containerStates: string[] = [];
        for (const c of left ?? []) {
          const st = await docker.getContainer(c.Id).inspect().then((i) => i.State).catch(() => undefined);
          containerStates.push(`${c.Id.slice(0, 12)} ${c.Labels?.["io.jhansi.petri.warm"] ? "pre-started" : "single-run"}: ${c.Status}` +
            (st ? ` (status ${st.Status}, exit ${st.ExitCode}, started ${st.StartedAt}, finished ${st.FinishedAt})` : ""));
        }
        if (containerStates.length) log(`left behind: ${containerStates.join("; ")}`);
        // Leave the host as it was, whatever the server left behind.
        for (const c of left ?? []) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
        const cgroups = removeInstanceCgroups(server.instanceId);
        fs.rmSync(dataDir, { recursive: true, force: true });
        open.delete(b);
        return { activeRuns, closeTimedOut, containers: left ? left.length : -1, containerStates, cgroups };
      })();
      return closed;
    },
  };
  open.add(b);
  return b;
}

/** Wraps Runtime.run() to learn, per run, how long the runtime took and whether a warm container served it. */
function instrument(rt: Runtime, sink: RunRecord[]): void {
  const orig = rt.run.bind(rt);
  rt.run = async (spec: RunSpec): Promise<RunResult> => {
    const t0 = performance.now();
    try {
      const r = await orig(spec);
      const end = performance.now();
      sink.push({ start: t0, end, ms: end - t0, warm: Boolean(r.timings?.warm), timings: r.timings ?? {} });
      return r;
    } catch (e) {
      sink.push({ start: t0, end: performance.now(), ms: performance.now() - t0, warm: false, timings: {}, error: (e as Error).message });
      throw e;
    }
  };
}

/**
 * Waits (bounded, not timed) until the runtime's background work from earlier runs is done:
 * removing used containers and starting the next warm one. This is the state an existing
 * sandbox is in when its user comes back after a moment. DockerRuntime keeps that work in two
 * private collections; if they are not there (another runtime, or they were renamed), this
 * does not wait.
 */
async function settle(rt: Runtime | undefined, maxMs = 5000, b?: BenchServer): Promise<void> {
  // The next run's workspace view is mounted, and its unit asked for, after a result is sent.
  if (b) await Promise.race([b.server.exec.settled(), sleep(maxMs)]);
  if (!rt) return;
  const inner = rt as unknown as { preparing?: unknown; removing?: unknown };
  const size = (x: unknown) => (x instanceof Map || x instanceof Set ? x.size : 0);
  const deadline = performance.now() + maxMs;
  while (size(inner.preparing) + size(inner.removing) > 0 && performance.now() < deadline) await sleep(3);
  if (rt.prestartSettled) await Promise.race([rt.prestartSettled(), sleep(Math.max(0, deadline - performance.now()))]);
  // A pre-started interpreter is up once it says `ready` (under gVisor that takes ~150 ms after its
  // unit was spawned): the best case is a user coming back after it did.
  while ((rt.prestartStats?.().starting ?? 0) > 0 && performance.now() < deadline) await sleep(3);
}

/**
 * Counts the per-run cgroups left under this instance's parent cgroups (`petri-<id>` for Docker,
 * `petri-bwrap-<id>` for bwrap, in every hierarchy), then removes the empty ones and the parents:
 * each benchmark server is a new instance, so nothing else will ever clean them up.
 */
function removeInstanceCgroups(instanceId: string): number {
  const names = new Set<string>();
  let roots: string[] = [];
  try {
    roots = fs.readdirSync("/sys/fs/cgroup").map((d) => path.join("/sys/fs/cgroup", d));
    roots.push("/sys/fs/cgroup");
  } catch {
    return 0;
  }
  for (const r of roots) {
    for (const parent of [`petri-${instanceId}`, `petri-bwrap-${instanceId}`, ...["runc", "crun", "runsc"].map((k) => `petri-${k}-direct-${instanceId}`)]) {
      const dir = path.join(r, parent);
      let subs: fs.Dirent[];
      try {
        subs = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory());
      } catch {
        continue;
      }
      for (const s of subs) names.add(`${parent}/${s.name}`);
      for (const s of subs) try { fs.rmdirSync(path.join(dir, s.name)); } catch { /* still has processes */ }
      try { fs.rmdirSync(dir); } catch { /* not empty */ }
    }
  }
  return names.size;
}

// ---------------------------------------------------------------------------------------------
// Client operations

async function api(b: BenchServer, method: string, p: string, json?: unknown) {
  const r = await request(b.url, method, p, { key: b.key, json, timeoutMs: REQUEST_TIMEOUT_MS });
  let body: any;
  try { body = JSON.parse(r.body); } catch { body = undefined; }
  return { ...r, json: body };
}

async function createSandbox(b: BenchServer, runtime?: string): Promise<{ id: string; ms: number }> {
  const r = await api(b, "POST", "/v1/sandboxes", runtime ? { language: "python", runtime } : { language: "python" });
  if (r.status !== 201) throw new Error(`create sandbox: ${r.status} ${r.body.slice(0, 300)}`);
  return { id: r.json.id as string, ms: r.ms };
}

async function pythonSandbox(b: BenchServer, runtime: string): Promise<string> {
  const { id } = await createSandbox(b, runtime);
  const r = await request(b.url, "PUT", `/v1/sandboxes/${id}/files/main.py`, { key: b.key, raw: HELLO_PY, timeoutMs: REQUEST_TIMEOUT_MS });
  if (r.status !== 201) throw new Error(`upload main.py: ${r.status} ${r.body.slice(0, 300)}`);
  return id;
}

/** One exec of main.py; returns its latency or why it was not a correct run. */
async function execHello(b: BenchServer, sb: string): Promise<{ ms: number; start: number; error?: string }> {
  const start = performance.now();
  try {
    const r = await api(b, "POST", `/v1/sandboxes/${sb}/exec`, { filename: "main.py" });
    if (r.status !== 200) return { ms: r.ms, start, error: `HTTP ${r.status}: ${r.body.slice(0, 200)}` };
    if (r.json?.exit_code !== 0 || r.json?.stdout !== EXPECTED) {
      return { ms: r.ms, start, error: `exit ${r.json?.exit_code} signal ${r.json?.signal} stdout ${JSON.stringify(r.json?.stdout)} stderr ${JSON.stringify(String(r.json?.stderr).slice(0, 200))} error ${JSON.stringify(r.json?.error)}` };
    }
    return { ms: r.ms, start };
  } catch (e) {
    return { ms: NaN, start, error: (e as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------
// Phases

interface SeqResult {
  latency: Summary;
  /** Time inside Runtime.run() (the run itself). */
  inRuntime: Summary;
  /** From sending the request to Runtime.run() being called: HTTP, auth, checks, DB, workspace snapshot. */
  beforeRuntime: Summary;
  /** From Runtime.run() returning to the whole response read: workspace diff, DB, JSON, HTTP. */
  afterRuntime: Summary;
  warmHits: number;
  /** Runs executed in a pre-started interpreter (docs/warm.md). */
  interpHits: number;
  errors: string[];
  /** Median of the runtime's own phase marks (cumulative ms from the start of run()). */
  timings: Record<string, number>;
}

async function sequential(b: BenchServer, sb: string, n: number, paced: boolean): Promise<SeqResult> {
  const lat: number[] = [];
  const inside: number[] = [];
  const beforeRt: number[] = [];
  const afterRt: number[] = [];
  const marks: Record<string, number[]> = {};
  let warmHits = 0;
  let interpHits = 0;
  const errors: string[] = [];
  const deadline = performance.now() + PHASE_MAX_MS;
  for (let i = 0; i < n && performance.now() < deadline; i++) {
    if (paced) {
      await settle(b.runtime, 5000, b);
      await sleep(settings.pauseMs);
    }
    const before = b.runs.length;
    const r = await execHello(b, sb);
    if (r.error) { errors.push(r.error); continue; }
    lat.push(r.ms);
    const rec = b.runs.length > before ? b.runs[b.runs.length - 1]! : undefined;
    if (rec) {
      inside.push(rec.ms);
      beforeRt.push(rec.start - r.start);
      afterRt.push(r.start + r.ms - rec.end);
      if (rec.warm) warmHits++;
      if (rec.timings.interp === 1) interpHits++;
      for (const [k, v] of Object.entries(rec.timings)) {
        if (k === "warm" || k === "interp") continue;
        // A pre-started container or sandbox was made before the request, in the background.
        (marks[rec.warm && (k === "create" || k === "attach" || k === "spawn") ? `${k} (earlier, background)` : k] ??= []).push(v);
      }
    }
  }
  const timings: Record<string, number> = {};
  for (const [k, v] of Object.entries(marks)) timings[k] = summarize(v).median;
  return { latency: summarize(lat), inRuntime: summarize(inside), beforeRuntime: summarize(beforeRt), afterRuntime: summarize(afterRt), warmHits, interpHits, errors, timings };
}

interface ConcurrencyResult {
  clients: number;
  seconds: number;
  runs: number;
  throughput: number;
  errors: number;
  errorSamples: string[];
  latency: Summary;
  warmHits: number;
  /**
   * CPU of this process (server and clients) and of everything it spawned, per correct run, ms:
   * with 8 clients on 2 cores the runs are CPU-bound, and this, unlike runs/s, hardly depends on
   * what else the machine runs. Absent where /proc cannot tell.
   */
  cpuMsPerRun?: number;
  leakedContainers: number;
  leakedCgroups: number;
  /** Runs still in flight after every client had its answer or gave up (a run that never ends). */
  stuckRuns: number;
  closeTimedOut: boolean;
  leftContainers: string[];
  /** Load average when the phase started. */
  loadavg?: number[];
}

type ConcurrencyLoad = Omit<ConcurrencyResult, "leakedContainers" | "leakedCgroups" | "stuckRuns" | "closeTimedOut" | "leftContainers">;

async function concurrency(b: BenchServer, runtime: string): Promise<ConcurrencyLoad> {
  const clients = settings.clients;
  const sandboxes: string[] = [];
  for (let i = 0; i < clients; i++) sandboxes.push(await pythonSandbox(b, runtime));
  // One unmeasured run each, so every client starts from an existing sandbox that has run code.
  await Promise.all(sandboxes.map((sb) => execHello(b, sb)));
  await settle(b.runtime, 30_000);
  const lat: number[] = [];
  const errors: string[] = [];
  const runsBefore = b.runs.length;
  const cpu0 = treeCpuMs();
  const t0 = performance.now();
  const deadline = t0 + settings.concurrencySeconds * 1000;
  let lastOk = t0;
  await Promise.all(sandboxes.map(async (sb) => {
    for (let i = 0; i < 1_000_000 && performance.now() < deadline; i++) {
      const r = await execHello(b, sb);
      if (r.error) errors.push(r.error);
      else { lat.push(r.ms); lastOk = Math.max(lastOk, performance.now()); }
    }
  }));
  // Up to the last good answer (a request that never gets one is an error, not a longer phase).
  const elapsed = (Math.max(deadline, lastOk) - t0) / 1000;
  const cpu1 = treeCpuMs();
  const recs = b.runs.slice(runsBefore);
  return {
    clients,
    seconds: round1(elapsed),
    runs: lat.length,
    throughput: round1(lat.length / elapsed),
    errors: errors.length,
    errorSamples: [...new Set(errors)].slice(0, 5),
    latency: summarize(lat),
    warmHits: recs.filter((r) => r.warm).length,
    ...(cpu0 !== null && cpu1 !== null && lat.length ? { cpuMsPerRun: round1((cpu1 - cpu0) / lat.length) } : {}),
  };
}

/**
 * CPU time, ms, of this process (all threads), of its children already reaped (each with its own
 * reaped descendants: the OCI runtime, the container's processes, mount tools …) and of its live
 * children (helpers such as the mount helper or the tracer) — or null without /proc.
 */
function treeCpuMs(): number | null {
  // utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat, in clock ticks (100 per second on Linux).
  const ticks = (pid: number | "self"): number => {
    const st = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  };
  try {
    // The process's own share from cpuUsage (finer than ticks), its reaped children's from stat.
    const own = process.cpuUsage();
    const st = fs.readFileSync("/proc/self/stat", "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    let total = (own.user + own.system) / 1000 + (Number(f[13]) + Number(f[14])) * 10;
    for (const task of fs.readdirSync("/proc/self/task")) {
      let kids = "";
      try { kids = fs.readFileSync(`/proc/self/task/${task}/children`, "utf8"); } catch { continue; }
      for (const pid of kids.split(" ").filter(Boolean)) {
        try { total += ticks(Number(pid)) * 10; } catch { /* gone meanwhile */ }
      }
    }
    return total;
  } catch {
    return null;
  }
}

async function bareBaseline(rootfs: string, n: number): Promise<{ samples: number[]; errors: string[] }> {
  const samples: number[] = [];
  const errors: string[] = [];
  const deadline = performance.now() + PHASE_MAX_MS;
  // Our own trusted snippet, the same interpreter and root filesystem, no isolation at all.
  const argv = ["--userspec=1000:1000", rootfs, "/usr/bin/python3", "-c", "print('hello world')"];
  for (let i = 0; i < n + 3 && performance.now() < deadline; i++) {
    const r = await run("chroot", argv, 30_000);
    if (r.code !== 0 || r.stdout !== EXPECTED) { errors.push(`exit ${r.code}: ${r.stderr.slice(0, 200)}`); continue; }
    if (i >= 3) samples.push(r.ms);
  }
  return { samples, errors };
}

async function dockerRunBaseline(runtime: string, n: number): Promise<{ latency: Summary; errors: string[] }> {
  const samples: number[] = [];
  const errors: string[] = [];
  const deadline = performance.now() + PHASE_MAX_MS;
  // What a user would otherwise script: a plain `docker run --rm` of the same image.
  // --network none: as isolated as Petri's runs, and independent of the engine's bridge set-up.
  const argv = ["run", "--rm", "--network", "none", `--runtime=${runtime}`, DEFAULT_IMAGE, "python3", "-c", "print('hello world')"];
  for (let i = 0; i < n + 2 && performance.now() < deadline; i++) {
    const r = await run("docker", argv, 60_000);
    if (r.code !== 0 || r.stdout !== EXPECTED) { errors.push(`exit ${r.code}: ${r.stderr.trim().slice(0, 300)}`); continue; }
    if (i >= 2) samples.push(r.ms);
  }
  return { latency: summarize(samples), errors };
}

interface IdleResult {
  sandboxes: number;
  createSeconds: number;
  createPerSecond: number;
  createAt10: Summary;
  createAtFull: Summary;
  getAt10: Summary;
  listAt10: Summary;
  list10At10: Summary;
  list10AtFull: Summary;
  getAtFull: Summary;
  listAtFull: Summary;
  listMiddleAtFull: Summary | null;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  containersRunning: number;
  containersTotal: number;
  leakedContainers: number;
}

async function idlePhase(runtimes: string[]): Promise<IdleResult> {
  const total = settings.idleSandboxes;
  const b = await startServer(runtimes, warmOnMs);
  try {
    const ids: string[] = [];
    const mem = () => { gc(); const m = process.memoryUsage(); return { rss: m.rss / 2 ** 20, heap: m.heapUsed / 2 ** 20 }; };
    const lookups = async (label: string): Promise<{ get: Summary; list: Summary; list10: Summary }> => {
      const get: number[] = [];
      const list: number[] = [];
      const list10: number[] = [];
      for (let i = 0; i < settings.lookupN; i++) {
        const id = ids[Math.floor(Math.random() * ids.length)]!;
        const g = await api(b, "GET", `/v1/sandboxes/${id}`);
        if (g.status !== 200) throw new Error(`${label}: GET sandbox ${g.status} ${g.body.slice(0, 200)}`);
        get.push(g.ms);
        const l = await api(b, "GET", "/v1/sandboxes?limit=100");
        if (l.status !== 200 || !Array.isArray(l.json?.items)) throw new Error(`${label}: list ${l.status} ${l.body.slice(0, 200)}`);
        list.push(l.ms);
        // The same page size at both scales: 10 items.
        const l10 = await api(b, "GET", "/v1/sandboxes?limit=10");
        if (l10.status !== 200) throw new Error(`${label}: list ${l10.status} ${l10.body.slice(0, 200)}`);
        list10.push(l10.ms);
      }
      return { get: summarize(get), list: summarize(list), list10: summarize(list10) };
    };
    const timedCreates = async (n: number): Promise<Summary> => {
      const xs: number[] = [];
      for (let i = 0; i < n && ids.length < total; i++) {
        const s = await createSandbox(b);
        ids.push(s.id);
        xs.push(s.ms);
      }
      return summarize(xs);
    };

    const before = mem();
    for (let i = 0; i < Math.min(10, total); i++) ids.push((await createSandbox(b)).id);
    log(`idle: ${ids.length} sandboxes, measuring get/list`);
    const at10 = await lookups("at 10");
    log(`idle: ${settings.createN} timed creations`);
    const createAt10 = await timedCreates(settings.createN);
    const bulk = Math.max(0, total - ids.length - settings.createN);
    log(`idle: creating ${bulk} more sandboxes (8 at a time)`);
    const tBulk = performance.now();
    const deadline = tBulk + PHASE_MAX_MS;
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < bulk && performance.now() < deadline) {
        next++;
        ids.push((await createSandbox(b)).id);
      }
    }));
    const bulkSeconds = (performance.now() - tBulk) / 1000;
    const createAtFull = await timedCreates(settings.createN);
    const after = mem();
    const list = await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${b.server.instanceId}`] } });
    log(`idle: ${ids.length} sandboxes, measuring get/list`);
    const atFull = await lookups(`at ${ids.length}`);
    // A page from the middle, reached through the cursor as a client would.
    let listMiddleAtFull: Summary | null = null;
    if (ids.length >= 2000) {
      let cursor: string | null = null;
      for (let skipped = 0; skipped < Math.floor(ids.length / 2000) * 1000; skipped += 1000) {
        const pq: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
        const page = await api(b, "GET", `/v1/sandboxes?limit=1000${pq}`);
        cursor = page.json?.next_cursor ?? null;
        if (!cursor) break;
      }
      if (cursor) {
        const xs: number[] = [];
        for (let i = 0; i < settings.lookupN; i++) {
          const l = await api(b, "GET", `/v1/sandboxes?limit=100&cursor=${encodeURIComponent(cursor)}`);
          if (l.status !== 200) throw new Error(`list middle page: ${l.status} ${l.body.slice(0, 200)}`);
          xs.push(l.ms);
        }
        listMiddleAtFull = summarize(xs);
      }
    }
    const leaked = await b.close();
    return {
      sandboxes: ids.length,
      createSeconds: round1(bulkSeconds),
      createPerSecond: round1(bulk / bulkSeconds),
      createAt10,
      createAtFull,
      getAt10: at10.get,
      listAt10: at10.list,
      list10At10: at10.list10,
      list10AtFull: atFull.list10,
      getAtFull: atFull.get,
      listAtFull: atFull.list,
      listMiddleAtFull,
      rssBeforeMiB: round1(before.rss),
      rssAfterMiB: round1(after.rss),
      heapBeforeMiB: round1(before.heap),
      heapAfterMiB: round1(after.heap),
      containersRunning: list.filter((c) => c.State === "running").length,
      containersTotal: list.length,
      leakedContainers: leaked.containers,
    };
  } finally {
    await b.close();
  }
}

/**
 * The runtimes side by side under the same load: one server offering all of them (warm on), one
 * sandbox each, and in every round one paced hello exec per runtime in a shuffled order. On a
 * shared machine whose load moves by the minute, this is the like-for-like comparison; the rows
 * above are each measured in their own minutes.
 */
async function interleavedPhase(runtimes: string[], n: number): Promise<{ loadStart: number[]; loadEnd: number[]; rows: { runtime: string; latency: Summary; errors: string[] }[] }> {
  const loadStart = loadavg();
  const b = await startServer(runtimes, warmOnMs);
  try {
    const offered = runtimes.filter((r) => b.server.runtimes.has(r));
    const sbs = new Map<string, string>();
    for (const rt of offered) sbs.set(rt, await pythonSandbox(b, rt));
    const lat = new Map<string, number[]>(offered.map((r) => [r, []]));
    const errors = new Map<string, string[]>(offered.map((r) => [r, []]));
    const settleAll = async () => { for (const rt of offered) await settle(b.server.runtimes.get(rt), 5000, b); };
    // Two unmeasured rounds: every sandbox has run code and has its pre-started unit.
    for (let round = -2; round < n; round++) {
      const order = [...offered].sort(() => Math.random() - 0.5);
      for (const rt of order) {
        await settleAll();
        await sleep(settings.pauseMs);
        const r = await execHello(b, sbs.get(rt)!);
        if (round < 0) continue;
        if (r.error) errors.get(rt)!.push(r.error);
        else lat.get(rt)!.push(r.ms);
      }
    }
    return { loadStart, loadEnd: loadavg(), rows: offered.map((rt) => ({ runtime: rt, latency: summarize(lat.get(rt)!), errors: errors.get(rt)!.slice(0, 3) })) };
  } finally {
    await b.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Rows

interface Row {
  label: string;
  runtime: string;
  warm: boolean;
  /** The OCI runtime Docker was given, when not the row's name. */
  variant?: string;
  available: boolean;
  reason?: string;
  serverStartMs?: number;
  loadavgStart?: number[];
  /** Share of all CPUs' time the host spent busy during the sequential phase (all processes, ours included). */
  hostCpuBusy?: number;
  paced?: SeqResult;
  backToBack?: SeqResult;
  /** Cold one-request runs: POST /v1/run with main.py inline (sandbox created, run, deleted). */
  oneShot?: { latency: Summary; errors: string[] };
  /** Peer-comparable scripts (warm on and off rows), each with the 1-minute load average when it started. */
  peers?: { name: string; latency: Summary; inRun: Summary; errors: string[]; loadavg: number[]; interpHits: number }[];
  concurrency?: ConcurrencyResult;
}

/** One peer-comparable script in a sandbox of its own, paced like the main.py row. */
async function peerScript(b: BenchServer, runtime: string, script: (typeof PEER_SCRIPTS)[number], n: number): Promise<{ latency: Summary; inRun: Summary; errors: string[]; interpHits: number }> {
  const r0 = await api(b, "POST", "/v1/sandboxes", { language: script.language, runtime, ...("image" in script ? { image: script.image } : {}) });
  if (r0.status !== 201) return { latency: summarize([]), inRun: summarize([]), interpHits: 0, errors: [`create sandbox: ${r0.status} ${r0.body.slice(0, 200)}`] };
  const sb = r0.json.id as string;
  const up = await request(b.url, "PUT", `/v1/sandboxes/${sb}/files/${script.file}`, { key: b.key, raw: script.content, timeoutMs: REQUEST_TIMEOUT_MS });
  if (up.status !== 201) return { latency: summarize([]), inRun: summarize([]), interpHits: 0, errors: [`upload: ${up.status}`] };
  const lat: number[] = [];
  // The runtime's run() of each measured request (the rest is HTTP, checks, DB, workspace diff).
  const inRun: number[] = [];
  const errors: string[] = [];
  let interpHits = 0;
  // Two unmeasured runs: the sandbox has run code before, as in the main.py row (and from its
  // second run on, a sandbox gets pre-started units: the pre-start policy).
  for (let i = -1; i <= n; i++) {
    await settle(b.runtime, 5000, b);
    await sleep("pauseMs" in script ? script.pauseMs : settings.pauseMs);
    const before = b.runs.length;
    // The unmeasured first runs may compile (Go): they get more time than the default.
    const r = await api(b, "POST", `/v1/sandboxes/${sb}/exec`, { filename: script.file, ...(i <= 0 ? { timeout_ms: 120_000 } : {}) });
    if (r.status !== 200 || r.json?.exit_code !== 0 || r.json?.stdout !== script.expected) {
      errors.push(`HTTP ${r.status} exit ${r.json?.exit_code}: ${JSON.stringify(r.json?.stdout ?? "").slice(0, 80)} ${JSON.stringify(r.json?.stderr ?? r.body).slice(0, 160)}`);
    } else if (i > 0) {
      lat.push(r.ms);
      if (b.runs.length > before) inRun.push(b.runs[b.runs.length - 1]!.ms);
      if (b.runs.length > before && b.runs[b.runs.length - 1]!.timings.interp === 1) interpHits++;
    }
  }
  await api(b, "DELETE", `/v1/sandboxes/${sb}`);
  return { latency: summarize(lat), inRun: summarize(inRun), errors: errors.slice(0, 5), interpHits };
}

/** One-request runs back to back, each in a throw-away sandbox (nothing to reuse: always cold). */
async function oneShots(b: BenchServer, runtime: string, n: number): Promise<{ latency: Summary; errors: string[] }> {
  const lat: number[] = [];
  const errors: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await api(b, "POST", "/v1/run", { language: "python", runtime, files: [{ path: "main.py", content: HELLO_PY }] });
    if (r.status !== 200 || r.json?.exit_code !== 0 || r.json?.stdout !== EXPECTED) errors.push(`HTTP ${r.status}: ${r.body.slice(0, 200)}`);
    else lat.push(r.ms);
  }
  return { latency: summarize(lat), errors: errors.slice(0, 5) };
}

async function runtimeRow(runtime: string, warm: boolean): Promise<Row> {
  const label = `${runtime}, warm ${warm ? "on" : "off"}`;
  const row: Row = { label, runtime, warm, available: false, loadavgStart: loadavg() };
  const t0 = performance.now();
  const b = await startServer([runtime], warm ? warmOnMs : 0);
  try {
    row.serverStartMs = Math.round(performance.now() - t0);
    if (!b.runtime) {
      const probe = b.server.probes.find((p) => p.id === runtime || p.id.endsWith(`/${runtime}`));
      row.reason = probe?.reason ?? "not offered by the server";
      return row;
    }
    row.available = true;
    // What the server really runs under that name (e.g. runsc is runsc-trace when that is registered).
    const variant = (b.runtime as unknown as { variant?: unknown }).variant;
    if (typeof variant === "string" && variant !== runtime && DOCKER_RUNTIMES.has(runtime)) {
      row.variant = variant;
      row.label = `${runtime} (as ${variant}), warm ${warm ? "on" : "off"}`;
    }
    const sb = await pythonSandbox(b, runtime);
    for (let i = 0; i < settings.warmup; i++) { await settle(b.runtime, 5000, b); await sleep(settings.pauseMs); await execHello(b, sb); }
    log(`${label}: ${settings.n} sequential execs`);
    const cpu = cpuTimes();
    row.paced = await sequential(b, sb, settings.n, true);
    row.hostCpuBusy = cpuBusySince(cpu);
    if (settings.b2bN > 0) {
      log(`${label}: ${settings.b2bN} back-to-back execs`);
      await settle(b.runtime, 5000, b);
      row.backToBack = await sequential(b, sb, settings.b2bN, false);
    }
    if (settings.oneShotN > 0) {
      log(`${label}: ${settings.oneShotN} cold one-request runs`);
      await settle(b.runtime, 5000, b);
      row.oneShot = await oneShots(b, runtime, settings.oneShotN);
    }
    // Warm off too: the cold reference of each script (a warm interpreter's saving is the difference).
    if (settings.peerN > 0) {
      row.peers = [];
      for (const script of PEER_SCRIPTS.filter((p) => settings.peers.length === 0 || settings.peers.some((f) => p.name.includes(f)))) {
        log(`${label}: ${settings.peerN} × ${script.name}`);
        const loadStart = loadavg();
        row.peers.push({ name: script.name, ...await peerScript(b, runtime, script, settings.peerN), loadavg: loadStart });
      }
    }
    return row;
  } finally {
    await b.close();
  }
}

/** The concurrency phase of a row, in a server of its own (so its load never overlaps a sequential phase). */
async function concurrencyRow(row: Row): Promise<void> {
  const b = await startServer([row.runtime], row.warm ? warmOnMs : 0);
  try {
    if (!b.runtime) return;
    log(`${row.label}: ${settings.clients} clients for ${settings.concurrencySeconds} s`);
    const loadStart = loadavg();
    const conc = await concurrency(b, row.runtime);
    // Runs end shortly after their answer (container removal is in the background): give them a moment.
    for (let i = 0; i < 100 && b.server.exec.activeCount() > 0; i++) await sleep(100);
    const left = await b.close();
    row.concurrency = { ...conc, leakedContainers: left.containers, leakedCgroups: left.cgroups, stuckRuns: left.activeRuns,
      closeTimedOut: left.closeTimedOut, leftContainers: left.containerStates, loadavg: loadStart };
  } finally {
    await b.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Workspace size: does a run cost more in a big project than in an empty one?

interface WorkspaceRow {
  runtime: string;
  size: string;
  files: number;
  bytes: number;
  /** Time to put the files in place (not measured by the exec numbers). */
  populateMs: number;
  latency: Summary;
  /** Petri's own share: request to Runtime.run(), and Runtime.run() returning to the answer read. */
  beforeRuntime: Summary;
  afterRuntime: Summary;
  warmHits: number;
  errors: string[];
}

/**
 * Fills a workspace like a project whose dependencies are in: `files` small files under
 * node_modules/pkgN/ (100 per package, a few hundred bytes each), or `mb` MB in 1 MiB files.
 * Written straight into the workspace directory, owned by the sandbox user, before the first run.
 */
function populate(dir: string, spec: string, uid: number, gid: number): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const mk = (p: string) => { fs.mkdirSync(p, { recursive: true }); fs.chownSync(p, uid, gid); };
  const put = (p: string, data: Buffer | string) => { fs.writeFileSync(p, data); fs.chownSync(p, uid, gid); files++; bytes += Buffer.byteLength(data); };
  const mb = /^(\d+)mb$/i.exec(spec);
  if (mb) {
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    mk(path.join(dir, "data"));
    for (let i = 0; i < Number(mb[1]); i++) put(path.join(dir, "data", `blob${i}.bin`), chunk);
    return { files, bytes };
  }
  const n = Number(spec);
  for (let i = 0; i < n; i++) {
    const pkg = path.join(dir, "node_modules", `pkg${Math.floor(i / 100)}`);
    if (i % 100 === 0) mk(path.join(pkg, "lib"));
    put(path.join(pkg, i % 2 ? "lib" : "", `f${i}.js`), `module.exports = ${JSON.stringify("x".repeat(200 + (i % 300)))};\n`);
  }
  return { files, bytes };
}

/**
 * The workspace-size axis, interleaved: one sandbox per size on one server, then round after
 * round one paced exec in each, so a shared machine's load drifts into every size alike.
 */
async function workspaceRows(runtime: string): Promise<WorkspaceRow[]> {
  const out: WorkspaceRow[] = [];
  const b = await startServer([runtime], warmOnMs);
  try {
    if (!b.runtime) return out;
    const cfg = loadConfig({ ...petriEnvFromProcess(), PETRI_DATA_DIR: b.dataDir });
    const boxes: { size: string; id: string; files: number; bytes: number; populateMs: number; lat: number[]; before: number[]; after: number[]; warm: number; errors: string[] }[] = [];
    for (const size of settings.wsSizes) {
      const { id } = await createSandbox(b, runtime);
      const up = await request(b.url, "PUT", `/v1/sandboxes/${id}/files/main.py`, { key: b.key, raw: HELLO_PY, timeoutMs: REQUEST_TIMEOUT_MS });
      if (up.status !== 201) throw new Error(`upload main.py: ${up.status}`);
      const t0 = performance.now();
      const { files, bytes } = populate(path.join(cfg.workspaceRoot, id), size, cfg.sandboxUid, cfg.sandboxGid);
      boxes.push({ size, id, files, bytes, populateMs: Math.round(performance.now() - t0), lat: [], before: [], after: [], warm: 0, errors: [] });
      log(`${runtime}: workspace of ${size} (${files} files, ${Math.round(bytes / 1e6)} MB) made`);
    }
    for (const x of boxes) for (let i = 0; i < settings.warmup; i++) { await settle(b.runtime, 5000, b); await sleep(settings.pauseMs); await execHello(b, x.id); }
    log(`${runtime}: ${settings.wsN} rounds, one paced exec per workspace size each`);
    const deadline = performance.now() + PHASE_MAX_MS;
    for (let i = 0; i < settings.wsN && performance.now() < deadline; i++) {
      for (const x of boxes) {
        await settle(b.runtime, 5000, b);
        await sleep(settings.pauseMs);
        const n0 = b.runs.length;
        const r = await execHello(b, x.id);
        if (r.error) { x.errors.push(r.error); continue; }
        x.lat.push(r.ms);
        const rec = b.runs.length > n0 ? b.runs[b.runs.length - 1]! : undefined;
        if (rec) {
          x.before.push(rec.start - r.start);
          x.after.push(r.start + r.ms - rec.end);
          if (rec.warm) x.warm++;
        }
      }
    }
    for (const x of boxes) {
      const latency = summarize(x.lat);
      out.push({ runtime, size: x.size, files: x.files, bytes: x.bytes, populateMs: x.populateMs, latency, beforeRuntime: summarize(x.before), afterRuntime: summarize(x.after), warmHits: x.warm, errors: x.errors.slice(0, 3) });
      log(`${runtime}, ${x.size}: p50 ${fmt(latency.median)} ms, p90 ${fmt(latency.p90)} ms, warm ${x.warm}/${latency.n}${x.errors.length ? `, errors: ${x.errors[0]}` : ""}`);
    }
  } finally {
    await b.close();
  }
  return out;
}

function workspaceReport(rows: WorkspaceRow[]): string {
  if (rows.length === 0) return "";
  const lines = ["## Exec latency by workspace size (python hello world, warm on; sizes interleaved round by round on one server)", ""];
  const body = rows.map((r) => {
    const empty = rows.find((x) => x.runtime === r.runtime && x.files === 0);
    const d = empty ? r.latency.median - empty.latency.median : NaN;
    return [r.runtime, r.size, String(r.files), `${(r.bytes / 1e6).toFixed(1)} MB`, String(r.latency.n), fmt(r.latency.median), fmt(r.latency.p90),
      `${fmt(r.beforeRuntime.median)} / ${fmt(r.afterRuntime.median)}`,
      Number.isFinite(d) ? `${d >= 0 ? "+" : ""}${d.toFixed(1)}` : "–", `${Math.round((r.warmHits / Math.max(1, r.latency.n)) * 100)}%`, r.errors.length ? r.errors.join("; ").slice(0, 120) : ""];
  });
  lines.push(mdTable(["runtime", "workspace", "files", "bytes", "n", "p50 ms", "p90 ms", "Petri before / after the runtime, p50 ms", "p50 vs empty, ms", "warm", "errors"], body));
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Report

function warmPct(row: Row, hits: number, n: number): string {
  return row.warm ? `${Math.round((hits / Math.max(1, n)) * 100)}%` : "–";
}

function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(a / b >= 10 ? 0 : 1)}×` : "–";
}

function report(r: { interleaved?: Awaited<ReturnType<typeof interleavedPhase>> | null; machine: ReturnType<typeof machine>; otherCpuStart?: number; otherCpuEnd?: number; bare: Summary; bareStart: Summary; bareEnd: Summary; bareErrors: string[]; dockerRun: Record<string, { latency: Summary; errors: string[] }>;
  rows: Row[]; idle: IdleResult | null; durationSeconds: number; loadavgEnd: number[] }): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# Petri benchmark`);
  out.push("");
  out.push(`- date: ${m.date}, ${m.hostname}, git ${m.git}`);
  out.push(`- machine: ${m.nproc} CPUs (nproc), ${m.cpu}, ${m.memoryGiB} GiB, ${m.kernel}, cgroups ${m.cgroups}`);
  out.push(`- software: Node ${m.node}, Docker ${m.docker}, ${m.bwrap}, image ${DEFAULT_IMAGE}`);
  const pct = (x?: number) => (x === undefined ? "?" : `${Math.round(x * 100)}%`);
  out.push(`- load average at start: ${m.loadavg.join(" / ")} (1/5/15 min); at end: ${r.loadavgEnd.join(" / ")}; took ${Math.round(r.durationSeconds)} s`);
  out.push(`- other work on the host: CPUs ${pct(r.otherCpuStart)} busy at the start and ${pct(r.otherCpuEnd)} at the end (3 s each, nothing of the benchmark running)`);
  out.push(`- settings: N=${settings.n} sequential (+${settings.warmup} warm-up), ${settings.b2bN} back-to-back, bare ${settings.bareN}×2, docker run ${settings.dockerRunN}, ` +
    `${settings.clients} clients × ${settings.concurrencySeconds} s, ${settings.idleSandboxes} idle sandboxes; server in-process, client over HTTP on 127.0.0.1`);
  out.push("");

  out.push(`## Exec latency: python main.py printing hello world, existing sandbox, through HTTP (ms)`);
  out.push("");
  const bare = r.bare.median;
  const seqRows: (string | number)[][] = [];
  for (const row of r.rows) {
    if (!row.available || !row.paced) {
      seqRows.push([row.label, "–", "–", "unavailable: " + (row.reason ?? "").slice(0, 80), "", "", "", "", "", "", "", "", "", "", ""]);
      continue;
    }
    const p = row.paced;
    const dr = r.dockerRun[DOCKER_RUNTIMES.has(row.runtime) ? row.runtime : "runc"];
    const b2b = row.backToBack;
    seqRows.push([
      row.label, row.hostCpuBusy === undefined ? "–" : `${Math.round(row.hostCpuBusy * 100)}%`, row.loadavgStart ? fmt(row.loadavgStart[0]!) : "–", String(p.latency.n), p.latency.median, p.latency.p90, p.latency.p99,
      `${warmPct(row, p.warmHits, p.latency.n)} / ${warmPct(row, p.interpHits, p.latency.n)}`,
      p.beforeRuntime.median, p.inRuntime.median, p.afterRuntime.median,
      ratio(p.latency.median, bare), `+${fmt(p.latency.median - bare)}`,
      dr && dr.latency.n ? `${ratio(dr.latency.median, p.latency.median)}${DOCKER_RUNTIMES.has(row.runtime) ? "" : " (runc)"}` : "–",
      b2b ? `${fmt(b2b.latency.median)} / ${fmt(b2b.latency.p90)}${row.warm ? ` (${warmPct(row, b2b.warmHits, b2b.latency.n)} warm)` : ""}` : "–",
    ]);
  }
  out.push(mdTable(["runtime", "host CPU", "load", "n", "median", "p90", "p99", "warm (unit / interpreter)", "before run()", "in run()", "after run()", "÷ bare", "− bare", "docker run ÷ this", "back-to-back median / p90"], seqRows));
  out.push("");
  out.push("Columns: *host CPU* = how busy the machine's CPUs were during the row (all processes: this benchmark's own runs use a part, the rest is other work); *warm* = share of runs served by a pre-started container; *before/in/after run()* = medians of where each request's time went " +
    "(HTTP + checks + DB + workspace snapshot before the runtime is called; the runtime's run(); result, workspace diff, DB and response after it); " +
    "*÷ bare* and *− bare* compare the median with the bare interpreter below; *docker run ÷ this* = how many times slower a plain `docker run --rm` is.");
  out.push("");
  const marks = r.rows.filter((x) => x.paced && Object.keys(x.paced.timings).length);
  if (marks.length) {
    out.push("Inside run(), medians of the runtime's own marks (ms since run() was called, or since the pre-start began for the background ones; " +
      "docker: create → attach → start (pre-started: argv handed over) → wait = exited; bwrap: spawn → handover (pre-started) → wait = exited → cleanup):");
    out.push("");
    out.push(mdTable(["runtime", "marks"], marks.map((x) => [x.label,
      Object.entries(x.paced!.timings).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")])));
    out.push("");
  }
  const shots = r.rows.filter((x) => x.oneShot && x.oneShot.latency.n);
  if (shots.length) {
    out.push("## Cold one-request run: POST /v1/run with main.py inline (create + write + run + delete), back to back, through HTTP (ms)");
    out.push("");
    out.push(mdTable(["runtime", "load", "n", "median", "p90", "p99", "errors"], shots.map((x) => [x.label, x.loadavgStart ? fmt(x.loadavgStart[0]!) : "–", String(x.oneShot!.latency.n),
      x.oneShot!.latency.median, x.oneShot!.latency.p90, x.oneShot!.latency.p99, x.oneShot!.errors.length ? x.oneShot!.errors[0]!.slice(0, 80) : "0"])));
    out.push("");
  }
  if (r.interleaved && r.interleaved.rows.length) {
    const il = r.interleaved;
    out.push(`## Interleaved: the runtimes side by side under the same load, warm on, python hello through HTTP (ms)`);
    out.push("");
    out.push(`One server offering every runtime, one sandbox each, ${settings.interleavedN} rounds of one paced exec per runtime in a shuffled order; load ${il.loadStart.join(" / ")} at the start, ${il.loadEnd.join(" / ")} at the end.`);
    out.push("");
    out.push(mdTable(["runtime", "n", "median", "p90", "p99", "÷ bare", "errors"], il.rows.map((x) => [x.runtime, String(x.latency.n), x.latency.median, x.latency.p90, x.latency.p99,
      ratio(x.latency.median, r.bare.median), x.errors.length ? x.errors[0]!.slice(0, 80) : "0"])));
    out.push("");
  }
  const peerRows = r.rows.filter((x) => x.peers?.length);
  if (peerRows.length) {
    out.push("## Peer-comparable scripts: existing sandbox, through HTTP (ms)");
    out.push("");
    out.push(mdTable(["runtime", "script", "load", "n", "median", "p90", "p99", "in run()", "warm interpreter", "errors"], peerRows.flatMap((x) => x.peers!.map((p) => [x.label, p.name,
      fmt(p.loadavg[0]!), String(p.latency.n), p.latency.median, p.latency.p90, p.latency.p99, p.inRun?.median ?? "–", warmPct(x, p.interpHits, p.latency.n),
      p.errors.length ? `${p.errors.length}: ${p.errors[0]!.slice(0, 80)}` : "0"]))));
    out.push("");
    out.push("*load* = the 1-minute load average when the script's runs started (the machine is shared; read every figure beside it); *in run()* = median of the runtime's run() (the program's start, run and exit in its unit).");
    out.push("");
  }
  out.push(`## Baselines, same run (ms)`);
  out.push("");
  const baseRows: (string | number)[][] = [
    ["bare: chroot <rootfs> python3 -c (no isolation, no HTTP)", String(r.bare.n), r.bare.median, r.bare.p90, r.bare.p99],
    ["  at start", String(r.bareStart.n), r.bareStart.median, r.bareStart.p90, r.bareStart.p99],
    ["  at end", String(r.bareEnd.n), r.bareEnd.median, r.bareEnd.p90, r.bareEnd.p99],
  ];
  for (const [rt, d] of Object.entries(r.dockerRun)) {
    baseRows.push([`docker run --rm --network none --runtime=${rt} <image> python3 -c`, String(d.latency.n), d.latency.median, d.latency.p90, d.latency.p99]);
  }
  out.push(mdTable(["baseline", "n", "median", "p90", "p99"], baseRows));
  if (r.bareErrors.length) out.push(`\nbare interpreter: ${r.bareErrors.length} failed, e.g. ${r.bareErrors[0]}`);
  const drErr = Object.entries(r.dockerRun).filter(([, d]) => d.errors.length);
  for (const [rt, d] of drErr) out.push(`\ndocker run --runtime=${rt}: ${d.errors.length} failed, e.g. ${d.errors[0]}`);
  out.push("");

  const concRows = r.rows.filter((x) => x.concurrency);
  if (concRows.length) {
    out.push(`## Concurrency: ${settings.clients} clients, each with its own sandbox, looping exec`);
    out.push("");
    out.push(mdTable(["runtime", "load", "seconds", "runs", "runs/s", "CPU ms/run", "errors", "median ms", "p90 ms", "p99 ms", "warm", "stuck runs", "leaked containers / cgroups"],
      concRows.map((x) => {
        const c = x.concurrency!;
        return [x.label, c.loadavg ? fmt(c.loadavg[0]!) : "–", c.seconds, String(c.runs), c.throughput, c.cpuMsPerRun ?? "–", String(c.errors), c.latency.median, c.latency.p90, c.latency.p99,
          warmPct(x, c.warmHits, c.runs + c.errors),
          String(c.stuckRuns) + (c.closeTimedOut ? " (close hung)" : ""),
          `${c.leakedContainers} / ${c.leakedCgroups}`];
      })));
    out.push("");
    for (const x of concRows) {
      const c = x.concurrency!;
      out.push(`- ${x.label}: leaked containers: ${c.leakedContainers}, leaked run cgroups: ${c.leakedCgroups}` +
        (c.stuckRuns ? `; ${c.stuckRuns} runs never finished${c.closeTimedOut ? " and server.close() hung" : ""}` : "") +
        (c.leftContainers.length ? `; left: ${c.leftContainers.join("; ")}` : "") +
        (c.errors ? `; errors e.g. ${c.errorSamples[0]}` : ""));
    }
    out.push("");
  }

  if (r.idle) {
    const i = r.idle;
    out.push(`## Sandboxes: creation and ${i.sandboxes} idle ones (fresh server, no runs)`);
    out.push("");
    const s = (x: Summary | null) => (x ? `${fmt(x.median)} / ${fmt(x.p90)} / ${fmt(x.p99)}` : "–");
    out.push(mdTable(["measure (ms: median / p90 / p99)", "with 10", `with ${i.sandboxes}`], [
      [`POST /v1/sandboxes (${settings.createN} sequential)`, s(i.createAt10), s(i.createAtFull)],
      ["GET /v1/sandboxes/{id}", s(i.getAt10), s(i.getAtFull)],
      ["GET /v1/sandboxes?limit=100 (first page: 10 items, then 100)", s(i.listAt10), s(i.listAtFull)],
      ["GET /v1/sandboxes?limit=10 (first page, 10 items both times)", s(i.list10At10), s(i.list10AtFull)],
      ["GET /v1/sandboxes?limit=100 (middle page, by cursor)", "–", s(i.listMiddleAtFull)],
      ["server process RSS, MiB (in-process, after a GC)", fmt(i.rssBeforeMiB) + " (0 sandboxes)", fmt(i.rssAfterMiB)],
      ["JS heap used, MiB", fmt(i.heapBeforeMiB) + " (0 sandboxes)", fmt(i.heapAfterMiB)],
      ["containers of the instance (running / any state)", "–", `${i.containersRunning} / ${i.containersTotal}`],
    ]));
    out.push("");
    out.push(`Bulk creation: ${i.sandboxes - 10 - 2 * settings.createN} sandboxes in ${fmt(i.createSeconds)} s (${fmt(i.createPerSecond)}/s, 8 in flight). ` +
      `leaked containers: ${i.leakedContainers}`);
    out.push("");
  }
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------

async function workspaceOnly(): Promise<void> {
  const m = machine();
  log(`workspace-size phase only: ${m.nproc} CPUs, load ${m.loadavg.join(" ")}, runtimes ${settings.runtimes.join(",")}`);
  const rows: WorkspaceRow[] = [];
  for (const rt of settings.runtimes) rows.push(...await workspaceRows(rt));
  const md = [`Load average at start ${m.loadavg.join(" ")}, at end ${loadavg().join(" ")}; ${m.nproc} CPUs.`, "", workspaceReport(rows)].join("\n");
  fs.mkdirSync(path.dirname(settings.out), { recursive: true });
  fs.writeFileSync(settings.out, JSON.stringify({ machine: m, settings, workspace: rows, loadavgEnd: loadavg(), markdown: md }, null, 2) + "\n");
  process.stdout.write(md + "\n");
  log(`wrote ${settings.out}`);
}

async function main(): Promise<void> {
  if (settings.only === "workspace") return workspaceOnly();
  const started = performance.now();
  const m = machine();
  log(`start: ${m.nproc} CPUs, load ${m.loadavg.join(" ")}, runtimes ${settings.runtimes.join(",")}`);
  const imageDir = process.env.PETRI_IMAGE_DIR || "/var/lib/petri/images";
  const rootfs = rootfsDirFor(imageDir, DEFAULT_IMAGE);
  if (!fs.existsSync(path.join(rootfs, "usr/bin/python3"))) throw new Error(`no runtime root filesystem at ${rootfs}: run \`npx petri images build\``);

  // How busy the host is with other work: 3 s with nothing of ours running.
  const quiet = async () => { const c = cpuTimes(); await sleep(3000); return cpuBusySince(c); };
  const otherCpuStart = await quiet();
  log(`bare interpreter: ${settings.bareN} runs`);
  const bareStart = await bareBaseline(rootfs, settings.bareN);

  let idle: IdleResult | null = null;
  if (settings.idleSandboxes > 0) idle = await idlePhase(settings.runtimes);

  const rows: Row[] = [];
  const dockerRun: Record<string, { latency: Summary; errors: string[] }> = {};
  for (const rt of settings.runtimes) {
    const on = await runtimeRow(rt, true);
    rows.push(on);
    if (!on.available) continue;
    rows.push(await runtimeRow(rt, false));
    if (DOCKER_RUNTIMES.has(rt) && settings.dockerRunN > 0) {
      log(`docker run --rm --runtime=${rt}: ${settings.dockerRunN} runs`);
      dockerRun[rt] = await dockerRunBaseline(rt, settings.dockerRunN);
    }
  }
  // bwrap's ratio is against a plain `docker run` with Docker's default runtime.
  if (rows.some((r) => r.runtime === "bwrap" && r.available) && !dockerRun.runc && settings.dockerRunN > 0 && m.docker !== "not available") {
    log(`docker run --rm --runtime=runc: ${settings.dockerRunN} runs`);
    dockerRun.runc = await dockerRunBaseline("runc", settings.dockerRunN);
  }
  let interleaved: Awaited<ReturnType<typeof interleavedPhase>> | null = null;
  const available = rows.filter((r) => r.available && r.warm).map((r) => r.runtime);
  if (settings.interleavedN > 0 && available.length > 1) {
    log(`interleaved: ${settings.interleavedN} rounds over ${available.join(",")}`);
    interleaved = await interleavedPhase(available, settings.interleavedN);
  }
  // Saturating phases last: their after-effects (teardown, the load average) stay out of the latency rows.
  if (settings.concurrencySeconds > 0) for (const row of rows.filter((r) => r.available)) await concurrencyRow(row);

  const workspace: WorkspaceRow[] = [];
  if (settings.wsN > 0) for (const rt of settings.runtimes) if (rows.some((r) => r.runtime === rt && r.available)) workspace.push(...await workspaceRows(rt));

  log(`bare interpreter again: ${settings.bareN} runs`);
  const bareEnd = await bareBaseline(rootfs, settings.bareN);
  const bare = summarize([...bareStart.samples, ...bareEnd.samples]);
  const otherCpuEnd = await quiet();
  const result = {
    machine: m,
    otherCpuStart,
    otherCpuEnd,
    settings,
    durationSeconds: round1((performance.now() - started) / 1000),
    loadavgEnd: loadavg(),
    bare,
    bareStart: summarize(bareStart.samples),
    bareEnd: summarize(bareEnd.samples),
    bareErrors: [...bareStart.errors, ...bareEnd.errors].slice(0, 5),
    dockerRun,
    rows,
    interleaved,
    idle,
    workspace,
  };
  const md = report(result) + "\n\n" + workspaceReport(workspace);
  fs.mkdirSync(path.dirname(settings.out), { recursive: true });
  fs.writeFileSync(settings.out, JSON.stringify({ ...result, markdown: md }, null, 2) + "\n");
  process.stdout.write(md + "\n");
  log(`wrote ${settings.out}`);
}

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log(`${signal}: closing ${open.size} server(s), removing their containers`);
  await Promise.race([Promise.all([...open].map((b) => b.close().catch(() => undefined))), sleep(30_000)]);
  process.exit(130);
};
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));

try {
  // `npm run bench -- images`: the images' toolchains (bench/images.ts) instead of the runtime benchmark.
  if (process.argv.includes("images")) await (await import("./images.js")).main();
  // `npm run bench -- tracing probes`: the host tracer's cost per open, apart from the server.
  else if (process.argv.includes("tracing") && process.argv.includes("probes")) await (await import("./tracing-probes.js")).main();
  // `npm run bench -- tracing`: what the host eBPF tracer adds to a run (bench/tracing.ts).
  else if (process.argv.includes("tracing")) await (await import("./tracing.js")).main();
  // `BENCH_ONLY=sync npm run bench` (or `-- sync`): delta sync at project scale through the SDK (bench/sync.ts).
  else if (settings.only === "sync" || process.argv.includes("sync")) await (await import("./sync.js")).main();
  else await main();
} catch (e) {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
} finally {
  await Promise.all([...open].map((b) => b.close().catch(() => undefined)));
  closeHttp();
}
// A run that never ended keeps a Docker request open forever; don't let it keep us alive.
process.exit();
