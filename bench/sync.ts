/**
 * Sync benchmark (`BENCH_ONLY=sync npm run bench`, or `npm run bench -- sync`): delta sync at
 * project scale (issue 11 item 5) through the real TypeScript SDK (`sdks/typescript`, built with
 * `npm ci && npm run build` there), against a real server in its own process (`petri serve`, as a
 * user runs it), the way a user would call it: `Sandbox.create()`, `sb.sync(dir)`.
 *
 *   1. first sync of BENCH_SYNC_SMALL small files (default 5,000; target ≤ 2 s), a no-change
 *      re-sync, then DELETE of that sandbox: how long the call takes, and how long until its
 *      bytes are gone from the disk (the call may answer 202 and finish in the background);
 *   2. first sync of BENCH_SYNC_LARGE small files (default 50,000), BENCH_SYNC_ROUNDS no-change
 *      re-syncs (default 5; target: p50 ≤ 1 s), the parts of a no-change sync timed one by one
 *      (the SDK's walk, its hash lookups and digest, the quick check's request, and the full
 *      comparison it replaces: the manifest sent and the server's walk), a no-change sync after a
 *      restart of the server (no quick check then: the full comparison, hashes from the store),
 *      one re-sync with one file changed, and DELETE.
 *
 * The files are ~180-byte source-like files spread over 50 × 7 folders, made before the server
 * starts and aged past the SDK's racy-timestamp window. BENCH_SYNC_OUT: JSON output (default
 * bench/results/sync-latest.json).
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../test/helpers.js";
import { fmt, intEnv, loadavg, machine, mdTable, request, sleep, summarize } from "./lib.js";

const SMALL = intEnv("BENCH_SYNC_SMALL", 5_000, 1, 1_000_000);
const LARGE = intEnv("BENCH_SYNC_LARGE", 50_000, 0, 1_000_000);
const ROUNDS = intEnv("BENCH_SYNC_ROUNDS", 5, 1, 1000);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const OUT = process.env.BENCH_SYNC_OUT || path.join(REPO, "bench", "results", "sync-latest.json");
const log = (m: string) => process.stderr.write(`[bench sync ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

/** What this benchmark uses of the SDK (loaded from its build at run time: it is its own package). */
interface SyncResult { uploaded: number; reused: number; unchanged: number; deleted: number; bytesSent: number; durationMs: number }
interface SdkSandbox { id: string; sync(dir: string, opts?: { target?: string }): Promise<SyncResult> }
interface Sdk { Sandbox: { create(opts: { language: string; url: string; apiKey: string }): Promise<SdkSandbox> } }

/** `n` small source-like files over nested folders (as the SDK's own sync benchmark makes them). */
function project(n: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-sync-"));
  const made = new Set<string>();
  for (let i = 0; i < n; i++) {
    const d = path.join(dir, `pkg${i % 50}`, `sub${i % 7}`);
    if (!made.has(d)) { fs.mkdirSync(d, { recursive: true }); made.add(d); }
    fs.writeFileSync(path.join(d, `mod${i}.py`), `# module ${i}\n${crypto.randomBytes(80).toString("hex")}\n`);
  }
  return dir;
}

interface Server { url: string; key: string; dataDir: string; child: ChildProcess; stop(opts?: { keepData?: boolean }): Promise<void> }

/** `petri serve` on a new data directory, or on `again`'s (a restart: same port, key and data). */
async function startServer(again?: Server): Promise<Server> {
  const dataDir = again?.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-sync-data-"));
  const port = again ? Number(new URL(again.url).port) : await freePort();
  const key = again?.key ?? `pk_bench_${crypto.randomBytes(8).toString("hex")}`;
  // PETRI_* variables pass through (e.g. PETRI_RUNTIMES), except what the benchmark sets.
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  Object.assign(env, { PETRI_DATA_DIR: dataDir, PETRI_PORT: String(port), PETRI_HOST: "127.0.0.1", PETRI_ADMIN_TOKEN: key, PETRI_LOG_LEVEL: "warn", PETRI_RUNTIMES: process.env.PETRI_RUNTIMES || "bwrap" });
  const child = spawn(process.execPath, [path.join(REPO, "bin", "petri.js"), "serve"], { env, stdio: ["ignore", "ignore", "pipe"] });
  let errText = "";
  child.stderr!.on("data", (b: Buffer) => { errText = (errText + b.toString()).slice(-4000); });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async (opts: { keepData?: boolean } = {}) => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 60_000);
      await exited;
      clearTimeout(t);
    }
    if (!opts.keepData) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  for (const deadline = Date.now() + 120_000; ;) {
    if (child.exitCode !== null) throw new Error(`petri serve exited: ${errText}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch { /* not yet listening */ }
    if (Date.now() > deadline) { await stop(); throw new Error(`petri serve did not start: ${errText}`); }
    await sleep(200);
  }
  return { url, key, dataDir, child, stop };
}

/** Files (any kind) left below a directory, 0 if it is gone. */
function entriesBelow(dir: string): number {
  let n = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let ents: fs.Dirent[];
    try { ents = fs.readdirSync(d, { withFileTypes: true }); } catch { continue; }
    for (const e of ents) {
      n++;
      if (e.isDirectory()) stack.push(path.join(d, e.name));
    }
  }
  return n;
}

interface DeleteFigures { status: number; callMs: number; goneMs: number }

interface Parts { walk: number[]; hash: number[]; digest: number[]; quick: number[]; full: number[] }

/**
 * The parts of a no-change sync, one by one, with the SDK's own functions (from its build): the
 * local walk (a stat per file, ignore rules), the hash lookups (nothing is read: all remembered),
 * the manifest's digest, the quick check's request, and the full comparison the quick check
 * replaces (the whole manifest sent, the server's walk of the workspace, the plan's answer).
 */
async function timeParts(s: Server, sandboxId: string, dir: string, rounds: number): Promise<Parts> {
  const dist = path.join(REPO, "sdks", "typescript", "dist");
  const { walkLocal } = (await import(path.join(dist, "internal", "walk.js"))) as { walkLocal(d: string): { path: string; size: number; mode: number }[] };
  const { hashAll } = (await import(path.join(dist, "internal", "hash.js"))) as { hashAll(f: unknown[]): Promise<string[]> };
  const { manifestDigest } = (await import(path.join(dist, "sync.js"))) as { manifestDigest(m: unknown[]): string };
  const out: Parts = { walk: [], hash: [], digest: [], quick: [], full: [] };
  const plan = `/v1/sandboxes/${sandboxId}/sync/plan`;
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    const local = walkLocal(dir);
    out.walk.push(performance.now() - t);
    t = performance.now();
    const hashes = await hashAll(local);
    out.hash.push(performance.now() - t);
    const manifest = local.map((f, j) => ({ path: f.path, sha256: hashes[j], size: f.size, mode: f.mode }));
    t = performance.now();
    const digest = manifestDigest(manifest);
    out.digest.push(performance.now() - t);
    t = performance.now();
    const q = await request(s.url, "POST", plan, { key: s.key, json: { manifest_sha256: digest, delete_extraneous: false } });
    out.quick.push(performance.now() - t);
    if (q.status !== 200 || JSON.parse(q.body).up_to_date !== true) throw new Error(`the quick check did not find the workspace up to date: ${q.status} ${q.body.slice(0, 300)}`);
    t = performance.now();
    const f = await request(s.url, "POST", plan, { key: s.key, json: { files: manifest, delete_extraneous: false }, timeoutMs: 600_000 });
    out.full.push(performance.now() - t);
    if (f.status !== 200 || JSON.parse(f.body).up_to_date !== true) throw new Error(`the full plan did not find the workspace up to date: ${f.status} ${f.body.slice(0, 300)}`);
  }
  return out;
}

/** DELETE through HTTP (for its status), then waits until the workspace's bytes are gone from the trash. */
async function timeDelete(s: Server, id: string): Promise<DeleteFigures> {
  const t0 = performance.now();
  const r = await request(s.url, "DELETE", `/v1/sandboxes/${id}`, { key: s.key, timeoutMs: 600_000 });
  const callMs = performance.now() - t0;
  const trash = path.join(s.dataDir, "workspaces", ".trash");
  for (const deadline = Date.now() + 600_000; entriesBelow(trash) > 0 && Date.now() < deadline;) await sleep(20);
  return { status: r.status, callMs, goneMs: performance.now() - t0 };
}

export async function main(): Promise<void> {
  const sdkEntry = path.join(REPO, "sdks", "typescript", "dist", "index.js");
  if (!fs.existsSync(sdkEntry)) throw new Error(`the TypeScript SDK is not built (${sdkEntry}): cd sdks/typescript && npm ci && npm run build`);
  const sdk = (await import(sdkEntry)) as Sdk;
  const m = machine();
  log(`making projects of ${SMALL} and ${LARGE} files`);
  const small = project(SMALL);
  const large = LARGE ? project(LARGE) : null;
  // Past the SDK's racy-timestamp window (50 ms), as a real project's files would be.
  await sleep(200);
  let s = await startServer();
  const loadStart = loadavg();
  log(`server up; load ${loadStart.join(" ")}`);
  const rows: (string | number)[][] = [];
  const figures: Record<string, unknown> = {};
  const row = (what: string, r: SyncResult) => {
    rows.push([what, fmt(r.durationMs), r.uploaded, r.reused, r.unchanged, r.bytesSent]);
    log(`${what}: ${fmt(r.durationMs)} ms`);
  };
  const conn = { language: "python", url: s.url, apiKey: s.key };
  try {
    const a = await sdk.Sandbox.create(conn);
    const first = await a.sync(small);
    row(`first sync, ${SMALL} files`, first);
    const again = await a.sync(small);
    row(`no-change sync, ${SMALL} files`, again);
    const delSmall = await timeDelete(s, a.id);
    log(`delete (${SMALL} files): ${delSmall.status} in ${fmt(delSmall.callMs)} ms, bytes gone after ${fmt(delSmall.goneMs)} ms`);
    Object.assign(figures, { firstSmallMs: first.durationMs, noChangeSmallMs: again.durationMs, deleteSmall: delSmall });

    if (large) {
      const b = await sdk.Sandbox.create(conn);
      const firstL = await b.sync(large);
      row(`first sync, ${LARGE} files`, firstL);
      const noChange: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const r = await b.sync(large);
        if (r.uploaded || r.unchanged !== LARGE) throw new Error(`a no-change sync sent ${r.uploaded} files and found ${r.unchanged} unchanged`);
        noChange.push(r.durationMs);
        row(`no-change sync, ${LARGE} files (${i + 1}/${ROUNDS})`, r);
      }
      const parts = await timeParts(s, b.id, large, ROUNDS);
      const partRows = (["walk", "hash", "digest", "quick", "full"] as const).map((k) => [k, fmt(summarize(parts[k]).median), fmt(summarize(parts[k]).min), fmt(summarize(parts[k]).max)]);
      log(`parts of a no-change sync of ${LARGE} files (p50 ms): ${partRows.map((r) => `${r[0]} ${r[1]}`).join(", ")}`);
      // A restart: the quick check knows nothing yet, so the full comparison runs, with the hashes
      // the server kept in its store (no file read).
      await s.stop({ keepData: true });
      s = await startServer(s);
      const afterRestart = await b.sync(large);
      if (afterRestart.uploaded || afterRestart.unchanged !== LARGE) throw new Error(`the sync after a restart sent ${afterRestart.uploaded} files`);
      row(`no-change sync after a server restart, ${LARGE} files`, afterRestart);
      const hashedAfterRestart = Number(/^petri_workspace_files_hashed_total (\d+)/m.exec((await request(s.url, "GET", "/metrics", { key: s.key })).body)?.[1]);
      log(`files the restarted server read to hash them: ${hashedAfterRestart}`);
      const victim = path.join(large, "pkg3", "sub3", "mod3.py");
      fs.writeFileSync(victim, `# changed ${Date.now()}\n`);
      await sleep(200);
      const one = await b.sync(large);
      row(`one file changed, ${LARGE} files`, one);
      const delLarge = await timeDelete(s, b.id);
      log(`delete (${LARGE} files): ${delLarge.status} in ${fmt(delLarge.callMs)} ms, bytes gone after ${fmt(delLarge.goneMs)} ms`);
      Object.assign(figures, {
        firstLargeMs: firstL.durationMs, noChangeLarge: summarize(noChange), oneChangedLargeMs: one.durationMs, deleteLarge: delLarge,
        parts: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, summarize(v)])), partRows,
        afterRestartMs: afterRestart.durationMs, hashedAfterRestart,
      });
    }
  } finally {
    await s.stop();
    fs.rmSync(small, { recursive: true, force: true });
    if (large) fs.rmSync(large, { recursive: true, force: true });
  }
  const loadEnd = loadavg();
  const f = figures as { firstSmallMs: number; deleteSmall: DeleteFigures; noChangeLarge?: { median: number }; deleteLarge?: DeleteFigures; partRows?: string[][] };
  const verdicts = [
    `- first sync of ${SMALL} small files ≤ 2 s: ${f.firstSmallMs <= 2000 ? "met" : "NOT met"} (${fmt(f.firstSmallMs)} ms)`,
    ...(f.noChangeLarge ? [`- no-change sync of ${LARGE} files ≤ 1 s (p50 of ${ROUNDS}): ${f.noChangeLarge.median <= 1000 ? "met" : "NOT met"} (${fmt(f.noChangeLarge.median)} ms)`] : []),
    `- DELETE of the ${SMALL}-file sandbox: HTTP ${f.deleteSmall.status} in ${fmt(f.deleteSmall.callMs)} ms, its bytes gone after ${fmt(f.deleteSmall.goneMs)} ms`,
    ...(f.deleteLarge ? [`- DELETE of the ${LARGE}-file sandbox: HTTP ${f.deleteLarge.status} in ${fmt(f.deleteLarge.callMs)} ms, its bytes gone after ${fmt(f.deleteLarge.goneMs)} ms`] : []),
  ];
  const md = [
    `Sync through the TypeScript SDK, ${m.date} at ${m.git}; ${m.nproc} CPUs, load ${loadStart.join(" ")} at the start, ${loadEnd.join(" ")} at the end.`,
    "",
    mdTable(["sync", "ms", "uploaded", "reused", "unchanged", "bytes sent"], rows),
    "",
    ...(f.partRows ? [
      `Parts of a no-change sync of ${LARGE} files, ${ROUNDS} rounds (ms): the SDK's walk, hash lookups and digest; the quick check's request; the full comparison it replaces (manifest sent, server's walk).`,
      "",
      mdTable(["part", "p50", "min", "max"], f.partRows),
      "",
    ] : []),
    ...verdicts,
  ].join("\n");
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ machine: m, settings: { SMALL, LARGE, ROUNDS }, loadStart, loadEnd, figures, markdown: md }, null, 2) + "\n");
  process.stdout.write(md + "\n");
  log(`wrote ${OUT}`);
}
