import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AuditLog } from "../audit/index.js";
import { openDatabase } from "../store/db.js";
import type { RunAuditContext, RunTrace } from "./audit-events.js";
import { NO_CHANGES } from "./capture.js";
import { RunRecorder, buildResult } from "./recorder.js";

const log = { error: () => undefined };

function ctx(execId: string): RunAuditContext {
  return {
    tenant_id: "tn_1", key_id: "k_1", sandbox_id: "sb_1", exec_id: execId, language: "python", runtime: "bwrap", image: "petri/standard",
    argv: ["python3", "main.py"], entry: "main.py", envNames: [], auditLevel: { level: "ebpf", reason: null },
    limits: { timeout_ms: 1000, memory_mb: 64, cpus: 1, pids: 64, open_files: 64, file_size_mb: 1, workspace_mb: 10 } as RunAuditContext["limits"],
  };
}

function result(execId: string) {
  return buildResult({
    execId, sandboxId: "sb_1", language: "python", runtime: "bwrap", entry: "main.py",
    raw: { exitCode: 0, signal: null, stdout: Buffer.from("hi\n"), stderr: Buffer.alloc(0), stdoutTruncated: false, stderrTruncated: false, durationMs: 5, timedOut: false, killed: false, oomKilled: false } as never,
    cancelled: false, stdout: Buffer.from("hi\n"), stderr: Buffer.alloc(0), redactions: [], dependencies: null as never, changes: NO_CHANGES, commit: "always",
    quotaBytes: 1 << 20, error: null, createdAt: Date.now(), finishedAt: Date.now(),
  });
}

const trace: RunTrace = {
  complete: true, reason: null,
  summary: {
    source: "ebpf", execs: [], net: [], dns: [], dropped: 0, lost_events: 0, libraries: { count: 0, distinct: 0, paths: [] },
    files: [{ path: "/workspace/data.csv", access: "read", flags: ["O_RDONLY"], count: 3, errno: null, pid: 7 }],
  },
};

describe("RunRecorder: a run's records follow its result", () => {
  it("stores the result at once and appends exec.finish with its trace, all together, when the trace arrives", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-recorder-"));
    const audit = AuditLog.open({ dir: path.join(dir, "audit") });
    const db = openDatabase(dir);
    try {
      const rec = new RunRecorder({ db, audit, log });
      rec.insert({ execId: "ex_1", sandboxId: "sb_1", tenantId: "tn_1", request: {}, createdAt: Date.now() });
      let arrive!: (t: RunTrace) => void;
      const pending = new Promise<RunTrace>((r) => { arrive = r; });
      const done = rec.finished(result("ex_1"), [], { ctx: ctx("ex_1"), stdout: Buffer.from("hi\n"), stderr: Buffer.alloc(0), trace: pending });
      const row = db.prepare("SELECT status FROM execs WHERE id = ?").get("ex_1") as { status: string };
      assert.equal(row.status, "completed", "the result does not wait for the trace");
      assert.equal(audit.query({ exec_id: "ex_1" }).length, 0, "no partial record before the trace");
      let settled = false;
      let next = false;
      const waiting = rec.recordsSettled().then(() => { settled = true; });
      const nextRun = rec.recordedFor("sb_1").then(() => { next = true; });
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(settled, false, "a reader waits for the pending run");
      assert.equal(next, false, "the sandbox's next run waits before its exec.start");
      await rec.recordedFor("sb_other");
      arrive(trace);
      await done;
      await waiting;
      await nextRun;
      const recs = audit.query({ exec_id: "ex_1" });
      assert.deepEqual(recs.map((r) => r.action), ["exec.finish", "file.open"]);
      assert.equal(recs[0]!.detail.trace_complete, true);
      assert.equal(recs[1]!.detail.count, 3);
      // One write: consecutive sequence numbers.
      assert.equal(recs[1]!.seq, recs[0]!.seq + 1);
    } finally {
      db.close();
      await audit.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a trace that fails still gets its run recorded, marked incomplete with the reason", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-recorder-"));
    const audit = AuditLog.open({ dir: path.join(dir, "audit") });
    const db = openDatabase(dir);
    try {
      const rec = new RunRecorder({ db, audit, log });
      rec.insert({ execId: "ex_2", sandboxId: "sb_1", tenantId: "tn_1", request: {}, createdAt: Date.now() });
      await rec.finished(result("ex_2"), [], { ctx: ctx("ex_2"), stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), trace: Promise.reject(new Error("bpftrace went away")) });
      await rec.recordsSettled();
      const [finish] = audit.query({ exec_id: "ex_2", action: "exec.finish" });
      assert.equal(finish!.detail.trace_complete, false);
      assert.match(String(finish!.detail.audit_level_reason), /bpftrace went away/);
    } finally {
      db.close();
      await audit.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
