import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ScratchPool, WorkspaceView } from "../src/exec/overlay/view.js";

/**
 * Run scratches (loop-mounted ext4 images, root needed) are emptied and reused by later runs:
 * mkfs and a loop mount per run cost more CPU than the run's own container did under 8 clients
 * (issue 15's throughput). Observed through the scratch directory each view's upper layers live in.
 */
describe("run scratch reuse", () => {
  const GIB = 1024 * 1024 * 1024;
  const mounted = (dir: string) => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(dir)).length;

  async function withRoot(fn: (root: string, lower: string) => Promise<void>): Promise<void> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-scratch-"));
    const lower = path.join(dir, "lower");
    fs.mkdirSync(lower);
    try {
      await fn(path.join(dir, "views"), lower);
    } finally {
      assert.equal(mounted(dir), 0, fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(dir)).join("\n"));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const open = (root: string, lower: string, pool: ScratchPool, id: string, limitBytes: number) =>
    WorkspaceView.open({ root, id, lowerWorkspace: lower, lowerCache: lower, limitBytes, uid: 65600, gid: 65600 }, pool);

  it("a large allowance's scratch offers the whole allowance, and the next view reuses it", async () => {
    await withRoot(async (root, lower) => {
      const pool = new ScratchPool(root, { keep: 1, idleMs: 60_000 });
      try {
        // The default quota (500 MB) plus its margin, and 1 GiB: the image must hold it all.
        for (const limit of [500 * 1024 * 1024 + 2 * 1024 * 1024 + Math.ceil(500 * 1024 * 1024 / 16), GIB]) {
          const a = await open(root, lower, pool, `vw_a${limit}`, limit);
          const free = a.freeBytes();
          fs.writeFileSync(path.join(a.workspace, "x.txt"), "written");
          const dirA = a.scratch.dir;
          await a.close(pool);
          // The overlays' own work directories take a few blocks of it once mounted.
          assert.ok(free >= limit - 64 * 1024, `free ${free} < allowance ${limit}`);
          const b = await open(root, lower, pool, `vw_b${limit}`, limit);
          const files = fs.readdirSync(b.workspace);
          await b.close(pool);
          assert.equal(b.scratch.dir, dirA, "the emptied scratch is reused");
          assert.deepEqual(files, [], "and it is empty");
        }
      } finally {
        await pool.close();
      }
    });
  });

  it("keeps as many emptied scratches as views are still open, beyond `keep` (their runs come back for one)", async () => {
    await withRoot(async (root, lower) => {
      const pool = new ScratchPool(root, { keep: 0, idleMs: 60_000 });
      const limit = 8 * 1024 * 1024;
      try {
        const views = [];
        for (let i = 0; i < 3; i++) views.push(await open(root, lower, pool, `vw_${i}`, limit));
        const dirs = views.map((v) => v.scratch.dir);
        // The first comes back while two are still open: kept. The second while one is: the one
        // kept already covers it. The last while none is: nothing more is kept (keep 0).
        for (const v of views) await v.close(pool);
        assert.ok(fs.existsSync(dirs[0]!) && !fs.existsSync(dirs[1]!) && !fs.existsSync(dirs[2]!));
        const next = await open(root, lower, pool, "vw_x", limit);
        assert.equal(next.scratch.dir, dirs[0]);
        await next.close(pool);
      } finally {
        await pool.close();
      }
    });
  });
});
