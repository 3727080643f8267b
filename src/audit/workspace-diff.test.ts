import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AuditLog, toOcsf } from "./index.js";
import { diffSnapshots, fileEvents, snapshotWorkspace } from "./workspace-diff.js";

describe("workspace diff", () => {
  it("records what a run created, modified, renamed and deleted, as OCSF file activity", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-ws-"));
    const auditDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-ws-audit-"));
    try {
      const ws = path.join(root, "ws");
      fs.mkdirSync(path.join(ws, "src"), { recursive: true });
      fs.writeFileSync(path.join(ws, "src", "main.py"), "print(1)\n");
      fs.writeFileSync(path.join(ws, "data.csv"), "a,b\n");
      fs.writeFileSync(path.join(ws, "old.txt"), "keep me\n");
      fs.writeFileSync(path.join(ws, "tmp.txt"), "bye\n");
      fs.writeFileSync(path.join(root, "outside.txt"), "host secret\n");
      const before = await snapshotWorkspace(ws);

      // What the "run" does:
      fs.writeFileSync(path.join(ws, "out.txt"), "result\n");
      fs.appendFileSync(path.join(ws, "data.csv"), "1,2\n");
      fs.renameSync(path.join(ws, "old.txt"), path.join(ws, "new.txt"));
      fs.rmSync(path.join(ws, "tmp.txt"));
      fs.symlinkSync(path.join(root, "outside.txt"), path.join(ws, "link"));
      const after = await snapshotWorkspace(ws);

      assert.notEqual(before.sha256, after.sha256);
      assert.equal(after.files.get("link")?.type, "symlink");
      assert.equal(after.files.get("link")?.sha256, undefined, "a symlink is never followed");
      const changes = diffSnapshots(before, after);
      assert.deepEqual(
        changes.map((c) => [c.action, c.path, c.new_path]),
        [
          ["file.modify", "data.csv", undefined],
          ["file.create", "link", undefined],
          ["file.rename", "old.txt", "new.txt"],
          ["file.create", "out.txt", undefined],
          ["file.delete", "tmp.txt", undefined],
        ],
      );

      const log = AuditLog.open({ dir: auditDir, checkpointIntervalMs: 0 });
      const recs = fileEvents(changes, { tenant_id: "t_1", sandbox_id: "sb_1", exec_id: "ex_1" }).map((e) => log.append(e));
      await log.close();
      const ocsf = recs.map((r) => toOcsf(r) as { class_uid: number; activity_id: number; file: { path: string }; file_result?: { path: string } });
      assert.deepEqual(ocsf.map((e) => [e.class_uid, e.activity_id]), [[1001, 3], [1001, 1], [1001, 5], [1001, 1], [1001, 4]]);
      assert.equal(ocsf[2]!.file_result?.path, "new.txt");
      assert.equal((await snapshotWorkspace(ws)).sha256, after.sha256, "the workspace hash is stable");
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(auditDir, { recursive: true, force: true });
    }
  });
});
