import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Scratch, ScratchPool } from "./view.js";
import { writeMargin } from "../capture.js";

const owner = { uid: 65600, gid: 65600 };

describe("run scratch filesystems", () => {
  // The default quota (512 MiB) and a large one: a scratch short of its allowance is never reused.
  for (const mb of [1, 512, 4096]) {
    it(`a ${mb} MB quota's loop scratch has exactly its allowance free, and comes back to the pool emptied`, async (ctx) => {
      if (process.getuid?.() !== 0) {
        ctx.skip("needs root (loop devices and mounts)");
        return;
      }
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-scratch-"));
      const quota = mb * 1024 * 1024;
      const limit = quota + writeMargin(quota);
      const pool = new ScratchPool(path.join(root, "views"), { keep: 1, idleMs: 60_000 });
      try {
        const s = await pool.take(limit, owner);
        assert.equal(s.freeBytes(), s.limit, "free space is exactly the allowance (the .reserve file takes the rest)");
        fs.writeFileSync(path.join(s.fs, "ws", "upper", "left.bin"), Buffer.alloc(256 * 1024));
        await pool.give(s, owner);
        const again = await pool.take(limit, owner);
        assert.equal(again, s, "the emptied scratch is taken again, not a new one formatted");
        assert.deepEqual(fs.readdirSync(path.join(again.fs, "ws", "upper")), []);
        await again.destroy();
      } finally {
        await pool.close();
        fs.rmSync(root, { recursive: true, force: true });
      }
    });
  }

  it("keeps one scratch of the ready allowance made ahead, made again a moment after a view takes it, and none after close", async (ctx) => {
    if (process.getuid?.() !== 0) {
      ctx.skip("needs root (loop devices and mounts)");
      return;
    }
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-scratch-"));
    const views = path.join(root, "views");
    const made = () => (fs.existsSync(path.join(views, "scratch")) ? fs.readdirSync(path.join(views, "scratch")).sort() : []);
    const mounted = () => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(root)).length;
    const limit = 2 * 1024 * 1024;
    const pool = new ScratchPool(views, { keep: 2, idleMs: 50 });
    try {
      pool.keepReady(limit, owner);
      await pool.settled();
      const ahead = made();
      assert.equal(ahead.length, 1, "one scratch is made ahead");
      const s = await pool.take(limit, owner);
      assert.equal(path.basename(s.dir), ahead[0], "a view takes the one made ahead");
      await pool.settled();
      assert.equal(made().length, 1, "none is made while a run may still give its own back");
      for (let i = 0; i < 100 && made().length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      await pool.settled();
      assert.equal(made().length, 2, "another one is made ahead when none came back");
      await pool.give(s, owner);
      // Past the idle period the extra one goes; the ready one stays.
      for (let i = 0; i < 100 && made().length > 1; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(made().length, 1);
      assert.equal(mounted(), 1);
    } finally {
      await pool.close();
      assert.equal(mounted(), 0, "nothing is left mounted after close");
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
