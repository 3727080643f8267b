import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { DnsCoverage } from "./dns-coverage.js";

describe("which images' libc the DNS probes cover", () => {
  test("an image known at start is covered; one built later, one without libc and one rebuilt since say why not", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-dns-cov-"));
    try {
      const libc = path.join(dir, "libc.so.6");
      fs.writeFileSync(libc, "one");
      const cov = new DnsCoverage();
      cov.record("petri/standard:1", "rootfs", [libc]);
      cov.record("petri/standard:1", "layers", []);
      assert.equal(cov.gap("petri/standard:1", "rootfs"), null);
      assert.match(cov.gap("petri/standard:1", "layers")!, /no glibc libc\.so\.6 was found in image petri\/standard:1's Docker layers/);
      assert.match(cov.gap("petri/new:2", "rootfs")!, /was not there when the tracer started.*restart the server/);
      // Rebuilt: the same path is another file now (an uprobe stays on the old one).
      fs.writeFileSync(`${libc}.new`, "two");
      fs.renameSync(`${libc}.new`, libc);
      assert.match(cov.gap("petri/standard:1", "rootfs")!, /was rebuilt after the tracer started/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
