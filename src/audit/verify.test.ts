import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { canonicalJson, GENESIS_HASH, recordHash } from "./canonical.js";
import { AuditLog, runAuditVerifyCli, verifyAuditLog } from "./index.js";
import { describePublicKey, PUBLIC_KEY_FILE, signStatement, type SigningKey } from "./keys.js";
import { LOG_FILE } from "./logfile.js";
import type { AuditRecord } from "./types.js";

/** A pristine log: records 1–4, checkpoint 5, records 6–9, checkpoint 10, records 11–12, checkpoint 13. */
let pristine: string;

before(async () => {
  pristine = fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-verify-"));
  const log = AuditLog.open({ dir: pristine, checkpointEvery: 4, checkpointIntervalMs: 0 });
  for (let i = 1; i <= 10; i++) {
    log.append({ kind: i % 2 ? "exec" : "file", action: i % 2 ? "exec.finish" : "file.create", outcome: "success", sandbox_id: "sb_1", exec_id: `ex_${i}`, detail: { path: `/w/f${i}.txt`, note: "ünïcode ✓" } });
  }
  await log.close();
});

after(() => fs.rmSync(pristine, { recursive: true, force: true }));

function copy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-tamper-"));
  fs.cpSync(pristine, dir, { recursive: true });
  fs.rmSync(path.join(dir, "audit.lock"), { force: true });
  return dir;
}

function readLog(dir: string): string[] {
  return fs.readFileSync(path.join(dir, LOG_FILE), "utf8").split("\n").filter(Boolean);
}

function writeLog(dir: string, lines: string[]): void {
  fs.writeFileSync(path.join(dir, LOG_FILE), lines.map((l) => l + "\n").join(""));
}

/** What an attacker without the private key can do: recompute every hash after a change. */
function rechain(records: AuditRecord[]): string[] {
  let prev = GENESIS_HASH;
  return records.map((r, i) => {
    const { hash: _h, ...rest } = { ...r, seq: i + 1, prev_hash: prev };
    const rec = { ...rest, hash: recordHash(rest) };
    prev = rec.hash;
    return canonicalJson(rec);
  });
}

function withCopy(fn: (dir: string) => void): void {
  const dir = copy();
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe("verifyAuditLog", () => {
  it("accepts an untouched log", () => {
    const v = verifyAuditLog(pristine);
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.equal(v.records, 13);
    assert.equal(v.checkpoints, 3);
    assert.equal(v.lastCheckpointSeq, 13);
    assert.equal(v.unsignedTail, 0);
  });

  it("names the record when any single byte of it is changed", () => {
    withCopy((dir) => {
      const lines = readLog(dir).map((l) => Buffer.from(l + "\n"));
      const target = lines[6]!; // seq 7
      for (let i = 0; i < target.length - 1; i++) {
        if (target[i]! >= 0x80) continue; // inside a multi-byte character: covered by its first byte
        const bytes = Buffer.from(target);
        bytes[i] = bytes[i]! ^ 0x01;
        if (bytes[i] === 0x0a) continue;
        fs.writeFileSync(path.join(dir, LOG_FILE), Buffer.concat(lines.map((l, j) => (j === 6 ? bytes : l))));
        const v = verifyAuditLog(dir);
        assert.equal(v.ok, false, `byte ${i} (${String.fromCharCode(target[i]!)}) changed but verify passed`);
        assert.equal(v.firstBad?.seq, 7, `byte ${i}: ${JSON.stringify(v.firstBad)}`);
      }
    });
  });

  it("names a changed byte inside a checkpoint", () => {
    withCopy((dir) => {
      const lines = readLog(dir);
      lines[9] = lines[9]!.replace(/"signature":"(.)/, (_m, c: string) => `"signature":"${c === "A" ? "B" : "A"}`);
      writeLog(dir, lines);
      assert.equal(verifyAuditLog(dir).firstBad?.seq, 10);
    });
  });

  it("names a deleted record", () => {
    withCopy((dir) => {
      const lines = readLog(dir);
      lines.splice(5, 1); // seq 6
      writeLog(dir, lines);
      const v = verifyAuditLog(dir);
      assert.equal(v.ok, false);
      assert.equal(v.firstBad?.seq, 6);
      assert.match(v.firstBad!.reason, /deleted/);
    });
  });

  it("names the first of reordered records", () => {
    withCopy((dir) => {
      const lines = readLog(dir);
      [lines[7], lines[8]] = [lines[8]!, lines[7]!]; // seq 8 and 9
      writeLog(dir, lines);
      const v = verifyAuditLog(dir);
      assert.equal(v.firstBad?.seq, 8);
      assert.match(v.firstBad!.reason, /reordered/);
    });
  });

  it("catches a record changed and re-hashed on its own", () => {
    withCopy((dir) => {
      const lines = readLog(dir);
      const r = JSON.parse(lines[2]!) as AuditRecord;
      r.detail = { ...r.detail, path: "/w/innocent.txt" };
      const { hash: _h, ...rest } = r;
      lines[2] = canonicalJson({ ...rest, hash: recordHash(rest) });
      writeLog(dir, lines);
      assert.equal(verifyAuditLog(dir).firstBad?.seq, 3);
    });
  });

  it("catches a deletion hidden by renumbering and re-chaining: the checkpoint no longer matches", () => {
    withCopy((dir) => {
      const recs = readLog(dir).map((l) => JSON.parse(l) as AuditRecord);
      recs.splice(1, 1); // drop seq 2, renumber the rest
      writeLog(dir, rechain(recs));
      const v = verifyAuditLog(dir);
      assert.equal(v.ok, false);
      assert.equal(v.firstBad?.seq, 4, "the first checkpoint, now at seq 4");
      assert.match(v.firstBad!.reason, /does not match the chain/);
    });
  });

  it("detects a forged checkpoint signed with another key", () => {
    withCopy((dir) => {
      const recs = readLog(dir).map((l) => JSON.parse(l) as AuditRecord);
      recs[2]!.detail = { ...recs[2]!.detail, path: "/w/forged.txt" };
      const pair = generateKeyPairSync("ed25519");
      const evil: SigningKey = { ...describePublicKey(pair.publicKey), privateKey: pair.privateKey };
      // Re-chain and re-sign every checkpoint, one record at a time, like a careful forger would.
      let prev = GENESIS_HASH;
      const out: string[] = [];
      for (const r of recs) {
        r.prev_hash = prev;
        if (r.kind === "audit") {
          const st = { v: 1 as const, seq: r.seq - 1, hash: prev, time: r.time };
          r.detail = { ...r.detail, checkpoint: st, signature: signStatement(evil, st), key_fingerprint: evil.fingerprint, public_key: evil.spkiBase64 };
        }
        const { hash: _h, ...rest } = r;
        r.hash = recordHash(rest);
        prev = r.hash;
        out.push(canonicalJson(r));
      }
      writeLog(dir, out);
      const v = verifyAuditLog(dir);
      assert.equal(v.ok, false);
      assert.equal(v.firstBad?.seq, 5);
      assert.match(v.firstBad!.reason, /another key/);

      // Same, but claiming the real key's fingerprint: the signature itself fails.
      const real = JSON.parse(readLog(pristine)[4]!) as AuditRecord;
      const lines = readLog(dir).map((l) => JSON.parse(l) as AuditRecord);
      prev = GENESIS_HASH;
      writeLog(
        dir,
        lines.map((r) => {
          r.prev_hash = prev;
          if (r.kind === "audit") r.detail = { ...r.detail, key_fingerprint: real.detail.key_fingerprint, public_key: real.detail.public_key };
          const { hash: _h, ...rest } = r;
          r.hash = recordHash(rest);
          prev = r.hash;
          return canonicalJson(r);
        }),
      );
      const v2 = verifyAuditLog(dir);
      assert.equal(v2.firstBad?.seq, 5);
      assert.match(v2.firstBad!.reason, /invalid signature/);
    });
  });

  it("with a pinned key, catches a log re-signed after the key files were replaced", () => {
    withCopy((dir) => {
      const originalPub = fs.readFileSync(path.join(pristine, PUBLIC_KEY_FILE), "utf8");
      const pair = generateKeyPairSync("ed25519");
      const evil: SigningKey = { ...describePublicKey(pair.publicKey), privateKey: pair.privateKey };
      const recs = readLog(dir).map((l) => JSON.parse(l) as AuditRecord);
      let prev = GENESIS_HASH;
      const out = recs.map((r) => {
        r.prev_hash = prev;
        if (r.kind === "audit") {
          const st = { v: 1 as const, seq: r.seq - 1, hash: prev, time: r.time };
          r.detail = { ...r.detail, checkpoint: st, signature: signStatement(evil, st), key_fingerprint: evil.fingerprint, public_key: evil.spkiBase64 };
        }
        const { hash: _h, ...rest } = r;
        r.hash = recordHash(rest);
        prev = r.hash;
        return canonicalJson(r);
      });
      writeLog(dir, out);
      fs.writeFileSync(path.join(dir, PUBLIC_KEY_FILE), pair.publicKey.export({ type: "spki", format: "pem" }));
      assert.equal(verifyAuditLog(dir).ok, true, "undetectable with the directory's own key");
      const pinned = verifyAuditLog(dir, { publicKey: originalPub });
      assert.equal(pinned.ok, false);
      assert.equal(pinned.firstBad?.seq, 5);
    });
  });

  it("reports a torn or cut last record, and a deleted log", () => {
    withCopy((dir) => {
      const file = path.join(dir, LOG_FILE);
      const data = fs.readFileSync(file);
      fs.writeFileSync(file, data.subarray(0, data.length - 20));
      const v = verifyAuditLog(dir);
      assert.equal(v.firstBad?.seq, 13);
      assert.match(v.firstBad!.reason, /incomplete/);
      fs.rmSync(file);
      assert.equal(verifyAuditLog(dir).ok, false);
    });
  });

  it("the CLI prints a summary and exits 0 or 1", () => {
    let out = "";
    assert.equal(runAuditVerifyCli(pristine, { write: (t) => (out += t) }), 0);
    assert.match(out, /: OK\n/);
    assert.match(out, /13 \(3 valid signed checkpoints\)/);
    withCopy((dir) => {
      const lines = readLog(dir);
      lines[3] = lines[3]!.replace("f4.txt", "f5.txt");
      writeLog(dir, lines);
      out = "";
      assert.equal(runAuditVerifyCli(dir, { write: (t) => (out += t) }), 1);
      assert.match(out, /TAMPERED/);
      assert.match(out, /first bad record: seq 4/);
    });
  });
});
