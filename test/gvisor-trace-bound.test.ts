import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startTestServer, createSandbox, exec, docker, type TestServer } from "./helpers.js";
import { GVISOR_TRACE_DIR } from "../src/runtimes/gvisor-trace.js";

/**
 * A hostile program against the gVisor strace's room on the host disk: it opens files as fast as
 * it can, so gVisor writes tens of MB of strace while it runs. The log is read while it grows and,
 * past PETRI_GVISOR_TRACE_MAX_MB (1 MiB here), emptied as gVisor writes it: the disk never holds
 * much more than the cap, and the run's record says its trace is incomplete and why.
 * Before, the whole log stayed on the disk until the run ended (a run of the longest timeout
 * could fill it) and only the read afterwards was capped.
 */
const CAP = 1024 * 1024;
// ~250-byte names that do not exist: each open is two strace lines (entry and exit; gVisor prints
// misses too) of ~400 bytes, ~95 MB for 120,000 opens.
const PROGRAM = String.raw`
import os
name = "/tmp/" + "x" * 240
n = 0
for i in range(120000):
    try:
        os.open(name + str(i % 10), os.O_RDONLY)
    except OSError:
        n += 1
print(n)
`;

/** Allocated bytes of the regular files under `dir` whose path passes `mine`. */
function diskUse(dir: string, mine: (p: string) => boolean): number {
  let sum = 0;
  let entries: fs.Dirent[];
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return 0; }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sum += diskUse(p, mine);
    else if (e.isFile() && mine(p)) {
      try { sum += fs.statSync(p).blocks * 512; } catch { /* removed meanwhile */ }
    }
  }
  return sum;
}

describe("gVisor strace: its size on the disk stays bounded while a run floods it", () => {
  let t: TestServer;
  let runscTraced = false;
  before(async () => {
    // Whether Docker's runsc is traced is asked of Docker's own runtime list, never of the feature.
    const info = (await docker.info().catch(() => ({}))) as { Runtimes?: Record<string, unknown> };
    runscTraced = Boolean(info.Runtimes?.["runsc-trace"]);
    t = await startTestServer({ PETRI_RUNTIMES: "runsc,runsc-direct", PETRI_GVISOR_TRACE_MAX_MB: "1" });
  });
  after(async () => { await t?.close(); });

  for (const runtime of ["runsc-direct", "runsc"]) {
    it(`${runtime}: 120,000 opens; the log on the disk stays near the cap, the record says the trace was cut`, { timeout: 300_000 }, async (ctx) => {
      if (!t.server.runtimes.has(runtime)) return ctx.skip(`${runtime} is not available on this host`);
      if (runtime === "runsc" && !runscTraced) return ctx.skip("runsc-trace is not registered with Docker (run scripts/setup.sh)");
      // runsc-direct: each run's log is in its own directory named after the run (r-<server pid>-…);
      // Docker's runsc-trace writes every container's log into one directory: all of it counts.
      const where = runtime === "runsc-direct" ? path.join(GVISOR_TRACE_DIR, "direct") : GVISOR_TRACE_DIR;
      const mine = runtime === "runsc-direct" ? (p: string) => path.relative(where, p).startsWith(`r-${process.pid}-`) : (p: string) => path.dirname(p) === where;
      const before = diskUse(where, mine);
      const sb = await createSandbox(t, { language: "python", runtime });
      let most = 0;
      let looking = true;
      const watch = (async () => {
        while (looking) {
          most = Math.max(most, diskUse(where, mine) - before);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      let r;
      try {
        r = await exec(t, sb, { code: PROGRAM, timeout_ms: 240_000 });
      } finally {
        looking = false;
        await watch;
      }
      assert.equal(r.json.exit_code, 0, r.text);
      assert.equal(r.json.stdout.trim(), "120000");
      const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
      const finish = recs.find((x) => x.action === "exec.finish");
      assert.equal(finish.detail.audit_level, "gvisor-strace", JSON.stringify(finish.detail));
      assert.equal(finish.detail.trace_complete, false, JSON.stringify(finish.detail));
      const m = /was (\d+) bytes; only the first (\d+) were read/.exec(finish.detail.audit_level_reason ?? "");
      assert.ok(m, `the reason says how much was written and read: ${finish.detail.audit_level_reason}`);
      const written = Number(m[1]);
      assert.equal(Number(m[2]), CAP);
      ctx.diagnostic(`${runtime}: gVisor wrote ${(written / 1e6).toFixed(1)} MB of strace; the most on the disk at once was ${(most / 1e6).toFixed(2)} MB (cap ${CAP / 1e6} MB)`);
      assert.ok(written > 20 * CAP, `the program made gVisor write far past the cap: ${written} bytes`);
      // The cap plus what gVisor writes between two looks (every 250 ms): generous for a loaded
      // machine, and still a small part of what was written.
      assert.ok(most < Math.min(written / 3, CAP + 12 * 1024 * 1024), `at most ${most} bytes of strace on the disk at once, of ${written} written`);
      // What it parsed before the cut is still recorded: the program's own start.
      assert.ok(recs.some((x) => x.action === "process.exec" && x.detail.argv?.[0] === "python3"), "the program's exec, before the cut, is recorded");
      assert.ok(diskUse(where, mine) - before <= 0 || runtime === "runsc", "the run's log is gone");
    });
  }
});
