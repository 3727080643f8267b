import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import pino from "pino";
import { AuditLog, verifyAuditLog, type AuditEvent } from "./index.js";
import { INDEX_FILE } from "./log.js";
import { PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from "./keys.js";
import { LOG_FILE, readLines } from "./logfile.js";

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-"));
}

const ev = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  kind: "api", action: "sandbox.create", outcome: "success", tenant_id: "t_1", sandbox_id: `sb_${i}`, detail: { n: i }, ...extra,
});

function lines(dir: string): string[] {
  return fs.readFileSync(path.join(dir, LOG_FILE), "utf8").split("\n").filter(Boolean);
}

describe("readLines", () => {
  it("splits on bytes across chunk boundaries, keeping UTF-8 whole, and reports a partial tail", () => {
    const dir = tmpDir();
    try {
      const file = path.join(dir, "x");
      const text = "aé日\n\nline three 🎉\nno newline";
      fs.writeFileSync(file, text);
      const fd = fs.openSync(file, "r");
      for (const chunk of [1, 2, 3, 7, 1 << 20]) {
        const got = [...readLines(fd, 0, undefined, chunk)];
        assert.deepEqual(got.map((l) => [l.text, l.partial]), [["aé日", false], ["", false], ["line three 🎉", false], ["no newline", true]]);
        assert.deepEqual(got.map((l) => l.offset), [0, 7, 8, 24]);
        assert.equal(got.reduce((n, l) => n + l.length, 0), Buffer.byteLength(text));
      }
      fs.closeSync(fd);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("AuditLog", () => {
  it("appends chained records and creates the signing key with mode 0600", async () => {
    const dir = tmpDir();
    try {
      const log = AuditLog.open({ dir, checkpointIntervalMs: 0, log: pino({ level: "silent" }) });
      const a = log.append(ev(1));
      const b = log.append(ev(2, { exec_id: "ex_1", detail: { env: { SECRET: "x" } } }));
      assert.match(a.id, /^au_[0-9a-f]{24}$/);
      assert.equal(a.seq, 1);
      assert.equal(b.seq, 2);
      assert.equal(b.prev_hash, a.hash);
      assert.equal(a.prev_hash, "0".repeat(64));
      assert.equal(b.key_id, null);
      assert.deepEqual(b.detail.env, ["SECRET"]);
      assert.equal(fs.statSync(path.join(dir, PRIVATE_KEY_FILE)).mode & 0o777, 0o600);
      assert.ok(fs.existsSync(path.join(dir, PUBLIC_KEY_FILE)));
      await log.close();
      // close() signs what was not yet signed
      const all = lines(dir).map((l) => JSON.parse(l));
      assert.equal(all.length, 3);
      assert.equal(all[2].action, "audit.checkpoint");
      assert.equal(verifyAuditLog(dir).ok, true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("continues the chain after a restart and keeps one key", async () => {
    const dir = tmpDir();
    try {
      let log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      log.append(ev(1));
      const fp = log.keyFingerprint;
      await log.close();
      log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      assert.equal(log.keyFingerprint, fp);
      const r = log.append(ev(2));
      assert.equal(r.seq, 3);
      await log.close();
      const v = verifyAuditLog(dir);
      assert.equal(v.ok, true, JSON.stringify(v));
      assert.equal(v.records, 4);
      assert.equal(v.checkpoints, 2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("writes a checkpoint every N records and on a timer", async () => {
    const dir = tmpDir();
    try {
      const log = AuditLog.open({ dir, checkpointEvery: 3, checkpointIntervalMs: 50 });
      for (let i = 1; i <= 7; i++) log.append(ev(i));
      let cps = lines(dir).map((l) => JSON.parse(l)).filter((r) => r.kind === "audit");
      assert.deepEqual(cps.map((c) => c.seq), [4, 8]);
      assert.equal(cps[0].detail.checkpoint.seq, 3);
      await new Promise((r) => setTimeout(r, 150));
      cps = lines(dir).map((l) => JSON.parse(l)).filter((r) => r.kind === "audit");
      assert.equal(cps.length, 3, "the timer signs the 7th record");
      await new Promise((r) => setTimeout(r, 120));
      assert.equal(lines(dir).length, 10, "no checkpoint of nothing");
      await log.close();
      assert.equal(verifyAuditLog(dir).checkpoints, 3);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("queries by tenant, sandbox, exec, action and time, with paging", async () => {
    const dir = tmpDir();
    try {
      const log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      for (let i = 1; i <= 10; i++) {
        log.append(ev(i, { tenant_id: i % 2 ? "t_odd" : "t_even", exec_id: i === 4 ? "ex_4" : null, action: i > 8 ? "exec.finish" : "sandbox.create", kind: i > 8 ? "exec" : "api" }));
      }
      assert.equal(log.query({ tenant_id: "t_odd" }).length, 5);
      assert.deepEqual(log.query({ sandbox_id: "sb_3" }).map((r) => r.seq), [3]);
      assert.deepEqual(log.query({ exec_id: "ex_4" }).map((r) => r.seq), [4]);
      assert.deepEqual(log.query({ action: "exec.finish" }).map((r) => r.seq), [9, 10]);
      assert.deepEqual(log.query({ tenant_id: "t_even", limit: 2 }).map((r) => r.seq), [2, 4]);
      assert.deepEqual(log.query({ tenant_id: "t_even", limit: 2, after_seq: 4 }).map((r) => r.seq), [6, 8]);
      assert.deepEqual(log.query({ order: "desc", limit: 3 }).map((r) => r.seq), [10, 9, 8]);
      const all = log.query({});
      assert.equal(log.query({ since: all[5]!.time }).every((r) => r.time >= all[5]!.time), true);
      assert.equal(log.query({ until: "2000-01-01T00:00:00Z" }).length, 0);
      assert.throws(() => log.query({ since: "yesterday" }), TypeError);
      assert.throws(() => log.query({ limit: 5000 }), TypeError);
      await log.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rebuilds a lost or stale index from the log", async () => {
    const dir = tmpDir();
    try {
      let log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      for (let i = 1; i <= 5; i++) log.append(ev(i));
      await log.close();
      for (const f of fs.readdirSync(dir)) if (f.startsWith(INDEX_FILE)) fs.rmSync(path.join(dir, f));
      log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      assert.equal(log.query({ sandbox_id: "sb_5" }).length, 1);
      assert.equal(log.query({}).length, 6);
      await log.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("moves a torn last record aside and goes on", async () => {
    const dir = tmpDir();
    try {
      let log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      log.append(ev(1));
      await log.close();
      fs.appendFileSync(path.join(dir, LOG_FILE), '{"action":"half a rec');
      log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      assert.equal(log.append(ev(2)).seq, 3);
      await log.close();
      assert.equal(verifyAuditLog(dir).ok, true);
      assert.ok(fs.readdirSync(dir).some((f) => f.startsWith(`${LOG_FILE}.torn-`)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses invalid events and a second writer", async () => {
    const dir = tmpDir();
    try {
      const log = AuditLog.open({ dir, checkpointIntervalMs: 0 });
      assert.throws(() => log.append({ ...ev(1), kind: "audit" as never }), TypeError);
      assert.throws(() => log.append({ ...ev(1), outcome: "ok" as never }), TypeError);
      assert.throws(() => log.append({ ...ev(1), action: "has space" }), TypeError);
      assert.throws(() => log.append({ ...ev(1), sandbox_id: "a\nb" }), TypeError);
      assert.throws(() => AuditLog.open({ dir }), /already open/);
      await log.close();
      assert.throws(() => log.append(ev(1)), /closed/);
      assert.equal(lines(dir).length, 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("appendDurable: a group commit — records placed in order at once, one sync for appends that arrive together, visible only once durable", async () => {
    const dir = tmpDir();
    try {
      const log = AuditLog.open({ dir, checkpointIntervalMs: 0, log: pino({ level: "silent" }) });
      log.append(ev(0));
      const before = log.syncs;
      const waits = Array.from({ length: 10 }, (_, i) => log.appendDurable([ev(i + 1), ev(100 + i)]));
      // Written, not yet durable: neither queries nor sinks see them yet.
      assert.equal(lines(dir).length, 21);
      assert.equal(log.query({}).length, 1);
      assert.equal(log.head().seq, 1);
      const recs = (await Promise.all(waits)).flat();
      assert.deepEqual(recs.map((r) => r.seq), Array.from({ length: 20 }, (_, i) => i + 2), "in the order of the calls");
      // Appended in one turn of the event loop: one sync for all of them.
      assert.equal(log.syncs - before, 1, `${log.syncs - before} syncs for 10 appends`);
      assert.equal(log.query({ limit: 100 }).length, 21);
      assert.equal(log.head().seq, 21);
      // A synchronous append after pending ones syncs them too, in order.
      const pending = log.appendDurable([ev(50)]);
      const sync = log.append(ev(51));
      const [p] = await pending;
      assert.equal(p!.seq, 22);
      assert.equal(sync.seq, 23);
      assert.equal(sync.prev_hash, p!.hash);
      assert.throws(() => log.appendDurable([{ ...ev(1), outcome: "ok" as never }]), TypeError);
      const last = log.appendDurable([ev(52)]);
      await log.close();
      assert.equal((await last)[0]!.seq, 24, "close waits for, or makes, the last group's sync");
      assert.equal(verifyAuditLog(dir).ok, true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
