import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { entryPath, walkTree } from "./walk.js";
import { displayPath } from "./names.js";
import { deepChain } from "./deep-chain.js";

describe("walkTree", () => {
  it("walks any depth and counts a file at depth 70 in full (was: 1 byte past depth 64)", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "walk-"));
    try {
      deepChain(root, 70, { name: "big", bytes: 5 * 1024 * 1024 });
      let bytes = 0;
      let deepest = 0;
      const r = await walkTree(root, [], (e) => {
        if (e.st.isFile()) bytes += Number(e.st.size);
        deepest = Math.max(deepest, e.depth);
      });
      assert.equal(r.complete, true);
      assert.equal(bytes, 5 * 1024 * 1024);
      assert.equal(deepest, 71);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("reads names that are not UTF-8 as bytes", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "walk-"));
    try {
      const bad = Buffer.from([0x78, 0xff, 0x80]);
      fs.mkdirSync(Buffer.concat([Buffer.from(root + "/"), bad]));
      fs.writeFileSync(Buffer.concat([Buffer.from(root + "/"), bad, Buffer.from("/f")]), "abc");
      const seen: { p: string; size: number }[] = [];
      const r = await walkTree(root, [], (e) => { seen.push({ p: displayPath(entryPath(e)), size: Number(e.st.size) }); });
      assert.equal(r.complete, true);
      const file = seen.find((s) => s.p.endsWith("/f"));
      assert.equal(file?.size, 3);
      assert.equal(file?.p, "x\uFFFD\uFFFD/f");
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("says it is incomplete when it stops early, never silently", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "walk-"));
    try {
      for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(root, `f${i}`), "");
      const r = await walkTree(root, [], () => undefined, { maxEntries: 5 });
      assert.equal(r.complete, false);
      assert.match(r.reason ?? "", /more than 5 entries/);
      const full = await walkTree(root, [], () => undefined, { maxEntries: 10 });
      assert.equal(full.complete, true);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("keeps the event loop responsive during a walk of 20,000 entries", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "walk-"));
    try {
      for (let d = 0; d < 20; d++) {
        fs.mkdirSync(path.join(root, `d${d}`));
        for (let i = 0; i < 1000; i++) fs.writeFileSync(path.join(root, `d${d}`, `f${i}`), "");
      }
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      let n = 0;
      const r = await walkTree(root, [], () => { n++; });
      clearInterval(timer);
      assert.equal(r.complete, true);
      assert.equal(n, 20_020);
      // Not a timing assertion: a walk that never yields lets no timer fire at all.
      assert.ok(ticks > 0, "timers ran during the walk");
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
