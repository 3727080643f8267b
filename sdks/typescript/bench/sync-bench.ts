/**
 * Delta-sync benchmark, through the SDK against a real server (`npm run bench`):
 *   1. a 1,000-file, 50 MB project: first sync, no-change sync, one-file-changed sync
 *      (target, issue 4: the one-file re-sync sends under 1% of the bytes, under 300 ms);
 *   2. project scale (issue 11): first sync of 5,000 small files (target ≤ 2 s) and a no-change
 *      sync of 50,000 files (target ≤ 1 s).
 * Settings: BENCH_FILES, BENCH_BYTES (case 1), BENCH_SMALL_FILES (5,000), BENCH_LARGE_FILES (50,000).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Sandbox, type SyncResult } from "jhansi";
import { startServer, tmpDir } from "../test/helpers.js";

const FILES = Number(process.env.BENCH_FILES ?? 1_000);
const TOTAL_BYTES = Number(process.env.BENCH_BYTES ?? 50 * 1024 * 1024);
const SMALL_FILES = Number(process.env.BENCH_SMALL_FILES ?? 5_000);
const LARGE_FILES = Number(process.env.BENCH_LARGE_FILES ?? 50_000);

function line(name: string, r: SyncResult, full: number): string {
  const pct = full ? ((100 * r.bytesSent) / full).toFixed(3) : "0";
  return `${name.padEnd(26)} ${String(r.bytesSent).padStart(10)} bytes sent (${pct.padStart(7)}% of full)  ${r.durationMs.toFixed(1).padStart(8)} ms  uploaded=${r.uploaded} reused=${r.reused} deleted=${r.deleted} unchanged=${r.unchanged}`;
}

/** A project of `n` small source-like files (~200 bytes) spread over nested folders. */
function smallProject(n: number): string {
  const dir = tmpDir("jhansi-bench-small-");
  for (let i = 0; i < n; i++) {
    const p = path.join(dir, `pkg${i % 50}`, `sub${i % 7}`, `mod${i}.py`);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, `# module ${i}\n${crypto.randomBytes(80).toString("hex")}\n`);
  }
  return dir;
}

const server = await startServer();
const dirs: string[] = [];
const verdicts: string[] = [];
try {
  const dir = tmpDir("jhansi-bench-");
  dirs.push(dir);
  const per = Math.floor(TOTAL_BYTES / FILES);
  for (let i = 0; i < FILES; i++) {
    const p = path.join(dir, `pkg${i % 20}`, `mod${i}.dat`);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, crypto.randomBytes(per));
  }
  const small = smallProject(SMALL_FILES);
  const large = smallProject(LARGE_FILES);
  dirs.push(small, large);
  // Let the files age past the racy-timestamp window, as a real project's files would be.
  await new Promise((r) => setTimeout(r, 100));

  const sb = await Sandbox.create({ language: "python", ...server.conn });
  try {
    const first = await sb.sync(dir);
    const full = first.bytesSent;
    console.log(`project: ${FILES} files, ${(FILES * per / 1024 / 1024).toFixed(1)} MiB`);
    console.log(line("first sync", first, full));
    console.log(line("no-change sync", await sb.sync(dir), full));
    fs.writeFileSync(path.join(dir, "pkg3", "mod3.dat"), crypto.randomBytes(per));
    const one = await sb.sync(dir);
    console.log(line("one-file-changed sync", one, full));
    const ok = one.bytesSent < full / 100 && one.durationMs < 300;
    verdicts.push(`one-file re-sync < 1% of bytes and < 300 ms: ${ok ? "met" : "NOT met"} (${one.durationMs.toFixed(0)} ms)`);
  } finally {
    await sb.kill();
  }

  const s2 = await Sandbox.create({ language: "python", ...server.conn });
  try {
    const first = await s2.sync(small, { target: "app" });
    console.log(`\nproject: ${SMALL_FILES} small files`);
    console.log(line("first sync", first, first.bytesSent));
    console.log(line("no-change sync", await s2.sync(small, { target: "app" }), first.bytesSent));
    verdicts.push(`first sync of ${SMALL_FILES} small files ≤ 2 s: ${first.durationMs <= 2000 ? "met" : "NOT met"} (${first.durationMs.toFixed(0)} ms)`);
  } finally {
    await s2.kill();
  }

  const s3 = await Sandbox.create({ language: "python", ...server.conn });
  try {
    const first = await s3.sync(large);
    console.log(`\nproject: ${LARGE_FILES} small files`);
    console.log(line("first sync", first, first.bytesSent));
    const again = await s3.sync(large);
    console.log(line("no-change sync", again, first.bytesSent));
    const again2 = await s3.sync(large);
    console.log(line("no-change sync (again)", again2, first.bytesSent));
    verdicts.push(`no-change sync of ${LARGE_FILES} files ≤ 1 s: ${again2.durationMs <= 1000 ? "met" : "NOT met"} (${again.durationMs.toFixed(0)} / ${again2.durationMs.toFixed(0)} ms)`);
  } finally {
    await s3.kill();
  }
  console.log(`\n${verdicts.join("\n")}`);
} finally {
  await server.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}
