import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

/** Every request is recorded, reads too, with the ids, paths and error codes involved. */
describe("API records", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_AUDIT_TRACE: "off" }); });
  after(async () => { await t?.close(); });

  it("reads, file paths, created key ids and refusals with their error codes", async () => {
    const sb = await createSandbox(t);
    await putFile(t, sb, "dir/a.txt", "x");
    await t.api("GET", `/v1/sandboxes/${sb}/files/dir/a.txt`);
    await t.api("GET", "/v1/sandboxes");
    const key = await t.api("POST", "/v1/keys", { body: { name: "other" } });
    assert.equal(key.status, 201, key.text);
    const probe = await t.api("GET", `/v1/sandboxes/${sb}/files/dir/a.txt`, { key: key.json.token });
    assert.equal(probe.status, 404, "another tenant's sandbox is not found");
    const del = await t.api("DELETE", `/v1/sandboxes/${sb}/files/nope.txt`);
    assert.equal(del.status, 404);
    const recs = (await t.api("GET", "/v1/audit?kind=api&limit=1000")).json.items as any[];
    const read = recs.find((r) => r.action === "files.read" && r.key_id !== key.json.key.id);
    assert.ok(read, recs.map((r) => r.action).join(" "));
    assert.equal(read.detail.path, "dir/a.txt");
    assert.equal(read.sandbox_id, sb);
    assert.equal(read.detail.method, "GET");
    const write = recs.find((r) => r.action === "files.write");
    assert.equal(write.detail.path, "dir/a.txt");
    assert.ok(recs.some((r) => r.action === "sandbox.list" && r.detail.method === "GET" && r.outcome === "success"));
    const sbCreate = recs.find((r) => r.action === "sandbox.create");
    assert.equal(sbCreate.sandbox_id, sb);
    const created = recs.find((r) => r.action === "key.create");
    assert.equal(created.detail.created_key_id, key.json.key.id);
    assert.doesNotMatch(JSON.stringify(recs), new RegExp(key.json.token), "never the token");
    const denied = recs.find((r) => r.key_id === key.json.key.id && r.action === "files.read");
    assert.equal(denied.outcome, "denied");
    assert.equal(denied.error_code, "SANDBOX_NOT_FOUND");
    assert.equal(denied.detail.path, "dir/a.txt");
    const missing = recs.find((r) => r.action === "files.delete");
    assert.equal(missing.outcome, "denied");
    assert.equal(missing.error_code, "FILE_NOT_FOUND");
    assert.equal(missing.detail.path, "nope.txt");
    const auditRead = (await t.api("GET", "/v1/audit?action=audit.list&limit=10")).json.items as any[];
    assert.ok(auditRead.length >= 1, "reading the audit log is itself recorded");
  });

  it("a bad request gets its error code; a streamed run (written straight to the socket) is recorded too", async () => {
    const sb = await createSandbox(t);
    const bad = await t.api("POST", `/v1/sandboxes/${sb}/exec`, { body: { filename: "../x.py" } });
    assert.equal(bad.status, 400, bad.text);
    const streamed = await t.api("POST", `/v1/sandboxes/${sb}/exec`, { body: { code: "print(7)", stream: true } });
    assert.equal(streamed.status, 200, streamed.text);
    const execId = streamed.headers.get("x-petri-exec-id");
    const recs = (await t.api("GET", `/v1/audit?sandbox_id=${sb}&kind=api&limit=100`)).json.items as any[];
    const refused = recs.find((r) => r.action === "exec.create" && r.outcome !== "success");
    assert.equal(refused?.error_code, bad.json.error.code, JSON.stringify(recs));
    assert.equal(refused.outcome, "failure");
    const ok = recs.find((r) => r.action === "exec.create" && r.outcome === "success");
    assert.ok(ok, `the streamed run's request: ${recs.map((r) => `${r.action}/${r.outcome}`).join(" ")}`);
    assert.equal(ok.exec_id, execId);
  });

  it("readiness and each run's record say what happens when the log cannot be written", async () => {
    const ready = await t.api("GET", "/readyz", { key: null });
    const check = ready.json.checks.find((c: { name: string }) => c.name === "audit_log");
    assert.equal(check.ok, true);
    assert.match(check.detail, /PETRI_AUDIT_FAIL=closed/);
    const trace = ready.json.checks.find((c: { name: string }) => c.name === "audit_trace");
    assert.match(trace.detail, /NOT traced.*PETRI_AUDIT_TRACE=off/);
    const sb = await createSandbox(t);
    const r = await exec(t, sb, { code: "print(1)" });
    const finish = ((await t.api("GET", `/v1/audit?exec_id=${r.json.id}&action=exec.finish`)).json.items as any[])[0];
    assert.equal(finish.detail.audit_fail_mode, "closed");
    assert.equal(finish.detail.audit_level, "workspace-diff");
    assert.match(finish.detail.audit_level_reason, /PETRI_AUDIT_TRACE=off/);
  });
});

/** A small tmpfs holds the audit directory; a filler file takes the rest of it. */
async function onFullDisk(fn: (auditDir: string, fill: () => void, free: () => void) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-full-"));
  assert.equal(spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]).status, 0);
  const filler = path.join(dir, "filler");
  try {
    await fn(path.join(dir, "audit"), () => {
      const fd = fs.openSync(filler, "w");
      for (const size of [65536, 4096, 1]) {
        try { for (;;) fs.writeSync(fd, Buffer.alloc(size, 1)); } catch (e) { if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e; }
      }
      fs.closeSync(fd);
    }, () => fs.rmSync(filler));
  } finally {
    spawnSync("umount", ["-l", dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Requests until one is refused (the last page of the log file may still take a record or two). */
async function untilRefused(t: TestServer): Promise<{ status: number; json: any; text: string }[]> {
  const seen = [];
  for (let i = 0; i < 50; i++) {
    const r = await t.api("GET", "/v1/sandboxes");
    seen.push(r);
    if (r.status !== 200) break;
  }
  return seen;
}

describe("PETRI_AUDIT_FAIL on a full disk", { skip: process.getuid?.() === 0 ? false : "needs root to mount a small tmpfs" }, () => {
  it("closed: reads are refused with 503 AUDIT_UNAVAILABLE rather than answered unrecorded, runs too; /readyz says so; the gap is recorded", async () => {
    await onFullDisk(async (auditDir, fill, free) => {
      const t = await startTestServer({ PETRI_AUDIT_DIR: auditDir, PETRI_AUDIT_FAIL: "closed", PETRI_AUDIT_TRACE: "off" });
      try {
        const sb = await createSandbox(t);
        fill();
        const seen = untilRefusedResult(await untilRefused(t));
        assert.equal(seen.status, 503, seen.text);
        assert.equal(seen.json.error.code, "AUDIT_UNAVAILABLE");
        const again = await t.api("GET", "/v1/sandboxes");
        assert.equal(again.json.error.code, "AUDIT_UNAVAILABLE");
        const run = await exec(t, sb, { code: "print(1)" });
        assert.equal(run.status, 503, run.text);
        const ready = await t.api("GET", "/readyz", { key: null });
        assert.equal(ready.status, 503);
        const check = ready.json.checks.find((c: { name: string }) => c.name === "audit_log");
        assert.equal(check.ok, false);
        assert.match(check.detail, /ENOSPC.*PETRI_AUDIT_FAIL=closed: runs and API calls are refused/);
        free();
        await new Promise((res) => setTimeout(res, 1100));
        const ok = await t.api("GET", "/v1/sandboxes");
        assert.equal(ok.status, 200, ok.text);
        const gap = fs.readFileSync(path.join(auditDir, "audit.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.action === "audit.gap");
        assert.ok(gap.length >= 1 && gap.every((g) => g.detail.fail_mode === "closed" && g.error_code === "AUDIT_UNAVAILABLE"), JSON.stringify(gap));
        assert.ok(gap.reduce((n, g) => n + g.detail.lost_records, 0) >= 1);
      } finally {
        await t.close().catch(() => undefined);
      }
    });
  });

  it("open: work goes on, /readyz stays ready and says it is unrecorded, runs record the fail mode", async () => {
    await onFullDisk(async (auditDir, fill, free) => {
      const t = await startTestServer({ PETRI_AUDIT_DIR: auditDir, PETRI_AUDIT_FAIL: "open", PETRI_AUDIT_TRACE: "off" });
      try {
        const sb = await createSandbox(t);
        fill();
        const seen = await untilRefused(t);
        assert.ok(seen.every((r) => r.status === 200), "open: nothing is refused");
        assert.equal(t.server.audit.health().writable, false, "50 requests later the log must have failed");
        const run = await exec(t, sb, { code: "print(1)" });
        assert.equal(run.status, 200, run.text);
        const ready = await t.api("GET", "/readyz", { key: null });
        const check = ready.json.checks.find((c: { name: string }) => c.name === "audit_log");
        assert.equal(check.ok, true);
        assert.match(check.detail, /PETRI_AUDIT_FAIL=open: runs and API calls go on UNRECORDED/);
        free();
        const after = await exec(t, sb, { code: "print(2)" });
        const finish = ((await t.api("GET", `/v1/audit?exec_id=${after.json.id}&action=exec.finish`)).json.items as any[])[0];
        assert.equal(finish.detail.audit_fail_mode, "open");
        const gap = ((await t.api("GET", "/v1/audit?action=audit.gap")).json.items as any[]);
        assert.ok(gap.length >= 1 && gap[0].detail.fail_mode === "open", JSON.stringify(gap));
      } finally {
        await t.close().catch(() => undefined);
      }
    });
  });
});

function untilRefusedResult(seen: { status: number; json: any; text: string }[]) {
  return seen[seen.length - 1];
}
