import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AuditLog, verifyAuditLog } from "./index.js";

/**
 * PETRI_AUDIT_FAIL on a real full disk: a small tmpfs holds the audit directory and a filler
 * file takes the rest of it.
 */
const root = process.getuid?.() === 0;

async function onFullDisk(fn: (dir: string, fill: () => void, free: () => void) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-full-"));
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", dir]);
  assert.equal(m.status, 0, String(m.stderr));
  const filler = path.join(dir, "filler");
  try {
    await fn(dir, () => {
      const fd = fs.openSync(filler, "w");
      try {
        for (const size of [65536, 4096, 1]) {
          try { for (;;) fs.writeSync(fd, Buffer.alloc(size, 1)); } catch (e) { if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e; }
        }
      } finally { fs.closeSync(fd); }
    }, () => fs.rmSync(filler, { force: true }));
  } finally {
    spawnSync("umount", ["-l", dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function gapsIn(dir: string): { detail: Record<string, unknown>; outcome: string; error_code: string | null }[] {
  return fs.readFileSync(path.join(dir, "audit.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.action === "audit.gap");
}

const event = { kind: "api" as const, action: "sandbox.create", outcome: "success" as const, tenant_id: "tn_1", detail: { note: "x".repeat(2000) } };

describe("fail mode when the audit log cannot be appended", { skip: root ? false : "needs root to mount a small tmpfs" }, () => {
  it("closed: work is refused while the disk is full, and the outage is recorded once it is not", async () => {
    await onFullDisk(async (dir, fill, free) => {
      const log = AuditLog.open({ dir, failMode: "closed", checkpointIntervalMs: 0 });
      try {
        log.append(event);
        assert.equal(log.refusesWork(), false);
        fill();
        assert.throws(() => log.append(event), /ENOSPC/);
        assert.throws(() => log.append(event), /ENOSPC/);
        const h = log.health();
        assert.equal(h.writable, false);
        assert.equal(h.refusing, true);
        assert.ok(h.lost_records >= 1);
        assert.match(h.last_error ?? "", /ENOSPC/);
        assert.equal(log.refusesWork(), true);
        free();
        await new Promise((r) => setTimeout(r, 1100));
        assert.equal(log.refusesWork(), false, "the probe wrote the gap record: writable again");
        // Truncating a failed write can free room for a gap record in between: together the gap
        // records account for every append that failed.
        // Read from the log itself: the query index shares the full disk and may have missed one.
        const gaps = gapsIn(dir);
        assert.equal(gaps.reduce((n, g) => n + Number(g.detail.lost_records), 0), 2, JSON.stringify(gaps.map((g) => g.detail)));
        assert.ok(gaps.every((g) => g.detail.fail_mode === "closed" && g.outcome === "failure" && g.error_code === "AUDIT_UNAVAILABLE"));
        log.append(event);
        assert.equal(log.health().writable, true);
      } finally {
        await log.close();
      }
      assert.equal(verifyAuditLog(dir).ok, true, "failed appends left no torn record behind");
    });
  });

  it("closed, group commit (appendDurable): a failed group is rejected, counted and recorded in the gap; the chain stays whole", async () => {
    await onFullDisk(async (dir, fill, free) => {
      const log = AuditLog.open({ dir, failMode: "closed", checkpointIntervalMs: 0 });
      try {
        await log.appendDurable([event]);
        fill();
        const results = await Promise.allSettled([log.appendDurable([event, event]), log.appendDurable([event])]);
        assert.ok(results.every((r) => r.status === "rejected" && /ENOSPC/.test(String(r.reason))), JSON.stringify(results));
        assert.equal(log.refusesWork(), true);
        assert.ok(log.health().lost_records >= 1);
        free();
        await new Promise((r) => setTimeout(r, 1100));
        assert.equal(log.refusesWork(), false);
        // As with append(): a cut-off write can free room for a gap record in between; together
        // they count every record of the failed groups.
        assert.equal(gapsIn(dir).reduce((n, g) => n + Number(g.detail.lost_records), 0), 3);
        const [after] = await log.appendDurable([event]);
        assert.equal(after!.seq, 2 + gapsIn(dir).length, "nothing of the failed groups is in the chain: the first record, the gap records, this one");
      } finally {
        await log.close();
      }
      assert.equal(verifyAuditLog(dir).ok, true, "failed groups left no torn or unchained record behind");
    });
  });

  it("open: work goes on, health says the log is not being written, the gap is recorded afterwards", async () => {
    await onFullDisk(async (dir, fill, free) => {
      const log = AuditLog.open({ dir, failMode: "open", checkpointIntervalMs: 0 });
      try {
        fill();
        assert.throws(() => log.append(event), /ENOSPC/);
        assert.equal(log.refusesWork(), false);
        assert.deepEqual({ ...log.health(), failing_since: null, last_error: null }, { writable: false, fail_mode: "open", refusing: false, failing_since: null, last_error: null, lost_records: 1 });
        free();
        log.append(event);
        assert.equal(gapsIn(dir)[0]?.detail.fail_mode, "open");
      } finally {
        await log.close();
      }
    });
  });
});
