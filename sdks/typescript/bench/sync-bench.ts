/**
 * Delta-sync benchmark: a 1,000-file, 50 MB project; prints bytes sent and wall time of the
 * first sync, a no-change sync and a one-file-changed sync. Target (issue 4): the one-file
 * re-sync sends under 1% of a full upload's bytes and takes under 300 ms.
 *   npm run bench            (starts its own server, like the tests)
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Sandbox, type SyncResult } from "jhansi";
import { startServer, tmpDir } from "../test/helpers.js";

const FILES = Number(process.env.BENCH_FILES ?? 1_000);
const TOTAL_BYTES = Number(process.env.BENCH_BYTES ?? 50 * 1024 * 1024);

function line(name: string, r: SyncResult, full: number): string {
  const pct = full ? ((100 * r.bytesSent) / full).toFixed(3) : "0";
  return `${name.padEnd(22)} ${String(r.bytesSent).padStart(10)} bytes sent (${pct.padStart(7)}% of full)  ${r.durationMs.toFixed(1).padStart(8)} ms  uploaded=${r.uploaded} reused=${r.reused} deleted=${r.deleted} unchanged=${r.unchanged}`;
}

const server = await startServer();
const dir = tmpDir("jhansi-bench-");
try {
  const per = Math.floor(TOTAL_BYTES / FILES);
  for (let i = 0; i < FILES; i++) {
    const p = path.join(dir, `pkg${i % 20}`, `mod${i}.dat`);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, crypto.randomBytes(per));
  }
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
    console.log(`target (< 1% of bytes and < 300 ms for the one-file re-sync): ${ok ? "met" : "NOT met"}`);
  } finally {
    await sb.kill();
  }
} finally {
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
