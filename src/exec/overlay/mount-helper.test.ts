import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MountHelper, MountHelperError, sealedCopy } from "./mount-helper.js";
import { OVERLAY_FIXED_OPTIONS, helperMounter } from "./mounts.js";

/**
 * The long-lived mount helper (real mounts: root needed). What a caller observes: overlays
 * mounted and unmounted where asked and nowhere else, refusals with a reason, a helper that dies
 * or hangs replaced by the next request, mount(8) where it cannot run at all.
 */
const root = process.getuid?.() === 0;
const skip = root ? false : "SKIPPED: needs root (mounts)";

const mountedUnder = (dir: string) =>
  fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) => m === dir || m.startsWith(dir + "/"));

async function withDirs(fn: (d: { base: string; views: string; lower: string; layer: (name: string) => { upper: string; work: string; target: string } }) => Promise<void>): Promise<void> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "petri-mh-"));
  const views = path.join(base, "views");
  const lower = path.join(base, "lower");
  fs.mkdirSync(lower);
  fs.writeFileSync(path.join(lower, "kept.txt"), "lower");
  const layer = (name: string) => {
    const d = { upper: path.join(views, "s", name, "upper"), work: path.join(views, "s", name, "work"), target: path.join(views, "v", name) };
    for (const p of Object.values(d)) fs.mkdirSync(p, { recursive: true });
    return d;
  };
  try {
    await fn({ base, views, lower, layer });
  } finally {
    for (const m of mountedUnder(base).reverse()) spawnSync("umount", ["-l", m]);
    assert.deepEqual(mountedUnder(base), [], "nothing left mounted");
    fs.rmSync(base, { recursive: true, force: true });
  }
}

describe("mount helper", { skip }, () => {
  it("mounts overlays under its root (writes land in the upper layer) and unmounts them, one process for all", async () => {
    await withDirs(async ({ views, lower, layer }) => {
      const h = new MountHelper({ roots: [views], overlayOptions: OVERLAY_FIXED_OPTIONS });
      try {
        const a = layer("a");
        const b = layer("b");
        await h.overlay([{ lower, ...a }, { lower, ...b }]);
        assert.deepEqual(mountedUnder(path.join(views, "v")).sort(), [a.target, b.target]);
        assert.equal(fs.readFileSync(path.join(a.target, "kept.txt"), "utf8"), "lower");
        fs.writeFileSync(path.join(a.target, "new.txt"), "x");
        assert.equal(fs.readFileSync(path.join(a.upper, "new.txt"), "utf8"), "x");
        assert.equal(fs.existsSync(path.join(lower, "new.txt")), false, "the lower layer is untouched");
        const opts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").find((l) => l.split(" ")[4] === a.target)!;
        assert.match(opts, /volatile/, "with the views' fixed options");
        const pid = h.pid;
        assert.deepEqual(await h.unmount([a.target, b.target]), ["unmounted", "unmounted"]);
        assert.deepEqual(await h.unmount([a.target]), ["not-mounted"]);
        assert.equal(h.pid, pid, "the same helper served every request");
        assert.equal(h.started, 1);
        assert.deepEqual(mountedUnder(views), []);
      } finally {
        h.close();
      }
    });
  });

  it("refuses targets outside its roots, through a symlink or with option separators, and leaves none of a failed request mounted", async () => {
    await withDirs(async ({ base, views, lower, layer }) => {
      const h = new MountHelper({ roots: [views], overlayOptions: OVERLAY_FIXED_OPTIONS });
      try {
        const a = layer("a");
        const outside = path.join(base, "outside");
        fs.mkdirSync(outside);
        await assert.rejects(h.overlay([{ lower, ...a, target: outside }]), /not under this helper's roots/);
        await assert.rejects(h.unmount(["/proc"]), /not under this helper's roots/);
        fs.symlinkSync(outside, path.join(views, "v", "link"));
        await assert.rejects(h.overlay([{ lower, ...a, target: path.join(views, "v", "link") }]), /symbolic link/);
        await assert.rejects(h.overlay([{ lower: `${lower},upperdir=/`, ...a }]), /unusable path/);
        await assert.rejects(h.overlay([{ lower, ...a, target: `${views}/v/../../outside` }]), /unusable path/);
        // The first overlay of a request mounts, the second cannot (no such lower): neither stays.
        const b = layer("b");
        const err = await h.overlay([{ lower, ...a }, { lower: path.join(base, "missing"), ...b }]).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof MountHelperError, String(err));
        assert.equal(err.code, "ENOENT");
        assert.deepEqual(mountedUnder(base), []);
        assert.deepEqual(mountedUnder(outside), []);
      } finally {
        h.close();
      }
    });
  });

  it("a helper that died is replaced by the next request; a request it never answers fails after its timeout", async () => {
    await withDirs(async ({ base, views, lower, layer }) => {
      const h = new MountHelper({ roots: [views], overlayOptions: OVERLAY_FIXED_OPTIONS });
      try {
        await h.start();
        const first = h.pid!;
        h.killForTest();
        const a = layer("a");
        await h.overlay([{ lower, ...a }]);
        assert.notEqual(h.pid, first);
        assert.equal(h.started, 2);
        assert.deepEqual(await h.unmount([a.target]), ["unmounted"]);
      } finally {
        h.close();
      }
      // A helper that says it is ready and then never answers (a mount stuck in the kernel).
      const fake = path.join(base, "stuck.sh");
      fs.writeFileSync(fake, `#!/bin/sh\necho '{"ready": true}'\nexec /bin/sleep 60\n`, { mode: 0o755 });
      const stuck = new MountHelper({ roots: [views], python: fake, timeoutMs: 300 });
      try {
        await stuck.start();
        const pid = stuck.pid!;
        await assert.rejects(stuck.unmount([path.join(views, "v", "x")]), /did not answer umount within 300 ms/);
        await new Promise((r) => setTimeout(r, 100));
        assert.throws(() => process.kill(pid, 0), /ESRCH/, "the stuck helper was killed");
      } finally {
        stuck.close();
      }
    });
  });

  it("where it cannot start, views are mounted with mount(8) instead", async () => {
    await withDirs(async ({ views, lower, layer }) => {
      const warnings: unknown[] = [];
      const m = helperMounter(new MountHelper({ roots: [views], python: "/nonexistent/python3" }), { onFallback: (e) => warnings.push(e) });
      try {
        await m.ready();
        assert.equal(m.kind, "mount(8)");
        assert.match(String(warnings[0]), /did not start/);
        const a = layer("a");
        await m.overlay([{ lower, ...a }]);
        assert.deepEqual(mountedUnder(views), [a.target]);
        await m.unmount([a.target]);
        assert.deepEqual(mountedUnder(views), []);
      } finally {
        m.close();
      }
    });
  });

  it("makes a sealed in-memory copy of a binary that runs and cannot be written", async () => {
    const exe = await sealedCopy("/bin/true", { verifyArgs: [] });
    assert.ok(exe, "a copy was made");
    assert.match(exe, new RegExp(`^/proc/${process.pid}/fd/\\d+$`));
    assert.equal(spawnSync(exe, []).status, 0);
    assert.equal(fs.readFileSync(exe).equals(fs.readFileSync("/bin/true")), true);
    const fd = fs.openSync(exe, "r+");
    try {
      assert.throws(() => fs.writeSync(fd, "x"), /EPERM/);
      assert.throws(() => fs.ftruncateSync(fd, 0), /EPERM/);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(await sealedCopy("/nonexistent/binary", { verifyArgs: [] }), null);
  });
});
