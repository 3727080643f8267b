import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { AuditLog, parseSinkConfig, runAuditVerifyCli, verifyAuditLog } from "./index.js";
import { LOG_FILE } from "./logfile.js";
import type { AuditRecord } from "./types.js";

/**
 * A cut tail: the local chain alone cannot see records removed after its last checkpoint, so
 * verify compares the log with what left the machine — every sink's cursor, the checkpoints a
 * SIEM received, and --expect-seq. Each cut below (the last record, the last 100, back to the
 * previous checkpoint) must be caught by each of them.
 */
describe("truncation is detected", () => {
  let src: string;
  let siemFile: string;
  let total: number;
  let checkpointSeqs: number[];
  before(async () => {
    src = fs.mkdtempSync(path.join(os.tmpdir(), "petri-trunc-"));
    siemFile = path.join(src, "siem.jsonl");
    const log = AuditLog.open({ dir: path.join(src, "audit"), sinks: parseSinkConfig(`file://${siemFile}`), checkpointEvery: 150, checkpointIntervalMs: 0 });
    for (let i = 0; i < 400; i++) log.append({ kind: "api", action: "sandbox.create", outcome: "success", tenant_id: "tn_1", detail: { i } });
    assert.equal(await log.waitForSinks(10_000), true);
    await log.close();
    const recs = fs.readFileSync(path.join(src, "audit", LOG_FILE), "utf8").trim().split("\n").map((l) => JSON.parse(l) as AuditRecord);
    total = recs.length;
    checkpointSeqs = recs.filter((r) => r.kind === "audit").map((r) => r.seq);
    assert.ok(checkpointSeqs.length >= 3, "several checkpoints");
    assert.equal(checkpointSeqs[checkpointSeqs.length - 1], total, "close() signed the end");
  });
  after(() => fs.rmSync(src, { recursive: true, force: true }));

  /** A copy of the audit directory with the log cut to its first `keep` records. */
  function cut(keep: number, opts: { dropCursors?: boolean } = {}): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-trunc-case-"));
    fs.cpSync(path.join(src, "audit"), dir, { recursive: true });
    const lines = fs.readFileSync(path.join(dir, LOG_FILE), "utf8").split("\n").slice(0, keep);
    fs.writeFileSync(path.join(dir, LOG_FILE), lines.join("\n") + "\n");
    fs.rmSync(path.join(dir, "audit-index.sqlite"), { force: true });
    if (opts.dropCursors) fs.rmSync(path.join(dir, "sinks"), { recursive: true, force: true });
    return dir;
  }
  const siemCheckpoints = () => fs.readFileSync(siemFile, "utf8").trim().split("\n").map((l) => JSON.parse(l) as AuditRecord).filter((r) => r.kind === "audit");

  const cases = (): [string, number][] => [
    ["the last record", total - 1],
    ["the last 100 records", total - 100],
    ["everything back to the previous checkpoint", checkpointSeqs[checkpointSeqs.length - 2]!],
  ];

  it("the intact log passes against every witness", () => {
    const res = verifyAuditLog(path.join(src, "audit"), { expectSeq: total, checkpoints: siemCheckpoints() });
    assert.equal(res.ok, true, JSON.stringify(res.firstBad));
    assert.ok(res.witnesses.some((w) => w.includes("cursor")), res.witnesses.join());
  });

  it("each cut is a valid chain on its own: the local check alone cannot see it (the documented limit)", () => {
    for (const [what, keep] of cases()) {
      const dir = cut(keep, { dropCursors: true });
      try {
        assert.equal(verifyAuditLog(dir).ok, true, what);
      } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    }
  });

  it("each cut is caught by the sink cursor beside the log", () => {
    for (const [what, keep] of cases()) {
      const dir = cut(keep);
      try {
        const res = verifyAuditLog(dir);
        assert.equal(res.ok, false, what);
        assert.equal(res.firstBad?.seq, keep + 1, what);
        assert.match(res.firstBad!.reason, new RegExp(`ends at seq ${keep} but sink .* has seq ${total}: records ${keep + 1}–${total} were cut off`), what);
      } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    }
  });

  it("each cut is caught by the last checkpoint the SIEM received, with the cursors gone too", () => {
    for (const [what, keep] of cases()) {
      const dir = cut(keep, { dropCursors: true });
      try {
        const res = verifyAuditLog(dir, { checkpoints: siemCheckpoints() });
        assert.equal(res.ok, false, what);
        assert.match(res.firstBad!.reason, /the SIEM's checkpoint/, what);
      } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    }
  });

  it("each cut is caught by --expect-seq, and the CLI says so with exit code 1", () => {
    for (const [what, keep] of cases()) {
      const dir = cut(keep, { dropCursors: true });
      try {
        let out = "";
        assert.equal(runAuditVerifyCli(dir, { expectSeq: total, write: (t) => { out += t; } }), 1, what);
        assert.match(out, /TAMPERED/);
        assert.match(out, new RegExp(`--expect-seq has seq ${total}`));
      } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    }
  });

  it("a checkpoint not signed by the trusted key is refused as a witness", () => {
    const forged = siemCheckpoints().at(-1)!;
    (forged.detail.checkpoint as { seq: number }).seq += 1000;
    const res = verifyAuditLog(path.join(src, "audit"), { checkpoints: [forged] });
    assert.equal(res.ok, false);
    assert.match(res.firstBad!.reason, /not validly signed/);
  });

  it("a server restarted on a cut log keeps the sink's cursor as evidence", async () => {
    const dir = cut(total - 100);
    const other = path.join(dir, "..", `siem-${path.basename(dir)}.jsonl`);
    try {
      // Same sink name as before (the cursor file's), delivering elsewhere.
      const name = fs.readdirSync(path.join(dir, "sinks")).find((n) => n.endsWith(".cursor.json"))!.replace(/\.cursor\.json$/, "");
      const log = AuditLog.open({ dir, sinks: parseSinkConfig(`[{"type":"file","path":${JSON.stringify(other)},"name":${JSON.stringify(name)}}]`), checkpointIntervalMs: 0 });
      await log.waitForSinks(10_000);
      await log.close();
      const res = verifyAuditLog(dir);
      assert.equal(res.ok, false);
      assert.match(res.firstBad!.reason, /a cursor kept when the log was found shorter/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(other, { force: true });
    }
  });
});
