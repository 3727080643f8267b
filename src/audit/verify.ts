import fs from "node:fs";
import path from "node:path";
import { canonicalJson, GENESIS_HASH, recordHash } from "./canonical.js";
import { parsePublicKey, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, readPublicKeyFile, verifyStatement, type PublicKeyInfo } from "./keys.js";
import { isLockHeldByLiveProcess, LOCK_FILE, LOG_FILE, readLines } from "./logfile.js";
import { CHECKPOINT_ACTION, type AuditRecord } from "./types.js";

export interface VerifyOptions {
  /**
   * The public key to trust (PEM, or base64 SPKI as carried in checkpoints). Default: the one in
   * the directory. Pin one kept elsewhere (e.g. from your SIEM) to catch a log re-signed with a
   * replaced key.
   */
  publicKey?: string;
}

export interface VerifyResult {
  ok: boolean;
  /** Lines in the log (records, checkpoints included). */
  records: number;
  /** Valid checkpoints before the first bad record. */
  checkpoints: number;
  firstBad?: { seq: number; reason: string };
  /** Seq of the last valid checkpoint (0: none). */
  lastCheckpointSeq: number;
  /** Records after the last valid checkpoint: chained, but not yet covered by a signature. */
  unsignedTail: number;
  keyFingerprint?: string;
  warnings: string[];
}

function isCheckpoint(r: AuditRecord): boolean {
  return r.kind === "audit" && r.action === CHECKPOINT_ACTION;
}

/**
 * Checks an audit directory: every line is a canonical record, seqs run 1, 2, 3… without gaps,
 * each hash matches its record and links to the previous one, and every checkpoint matches the
 * chain and carries a valid Ed25519 signature of the trusted key. Reports the first bad record.
 *
 * What a local check cannot see: records cut off after the last checkpoint (compare with a
 * sink's copy), or a log rewritten and re-signed by someone holding the private key (pin the
 * public key, and keep checkpoints in a SIEM: they are streamed to every sink).
 */
export function verifyAuditLog(dir: string, opts: VerifyOptions = {}): VerifyResult {
  const result: VerifyResult = { ok: true, records: 0, checkpoints: 0, lastCheckpointSeq: 0, unsignedTail: 0, warnings: [] };
  const bad = (seq: number, reason: string) => {
    if (!result.firstBad) {
      result.ok = false;
      result.firstBad = { seq, reason };
    }
  };

  let trusted: PublicKeyInfo | undefined;
  try {
    trusted = opts.publicKey ? parsePublicKey(opts.publicKey) : readPublicKeyFile(dir);
  } catch (e) {
    result.warnings.push(`public key unusable: ${(e as Error).message}`);
  }
  result.keyFingerprint = trusted?.fingerprint;

  const logPath = path.join(dir, LOG_FILE);
  if (!fs.existsSync(logPath)) {
    // The key and the log are created together: a key without a log means the log was removed.
    if (fs.existsSync(path.join(dir, PRIVATE_KEY_FILE)) || fs.existsSync(path.join(dir, PUBLIC_KEY_FILE))) {
      bad(1, `the log file ${LOG_FILE} is missing but the directory has a signing key: the log was deleted`);
    } else {
      result.warnings.push(`no audit log in ${dir}`);
    }
    return result;
  }

  const fd = fs.openSync(logPath, "r");
  let expected = 1;
  let prevHash = GENESIS_HASH;
  try {
    for (const line of readLines(fd)) {
      if (line.partial) {
        if (isLockHeldByLiveProcess(path.join(dir, LOCK_FILE))) break; // being written right now
        result.records++;
        bad(expected, `the last ${line.length} bytes are an incomplete record (torn write, or the log was cut)`);
        break;
      }
      result.records++;
      if (result.firstBad) continue;
      let rec: AuditRecord;
      try {
        rec = JSON.parse(line.text) as AuditRecord;
      } catch {
        bad(expected, `the line at byte ${line.offset} is not valid JSON: the record was changed`);
        continue;
      }
      if (rec === null || typeof rec !== "object" || !Number.isInteger(rec.seq)) {
        bad(expected, `the line at byte ${line.offset} is not an audit record`);
        continue;
      }
      if (rec.seq !== expected) {
        bad(expected, `expected record ${expected} here but found record ${rec.seq}: records were deleted, inserted or reordered`);
        continue;
      }
      if (typeof rec.hash !== "string" || recordHash(rec as unknown as Record<string, unknown>) !== rec.hash) {
        bad(rec.seq, "its hash does not match its content: the record was changed");
        continue;
      }
      if (canonicalJson(rec) !== line.text) {
        bad(rec.seq, "its bytes are not in canonical form: the record was edited");
        continue;
      }
      if (rec.prev_hash !== prevHash) {
        if (rec.seq === 1) bad(1, "the first record does not start the chain");
        else bad(rec.seq - 1, `record ${rec.seq - 1} does not match the hash that record ${rec.seq} carries: it was changed and re-hashed (or record ${rec.seq}'s link was rewritten)`);
        continue;
      }
      if (isCheckpoint(rec)) {
        const from = result.lastCheckpointSeq + 1;
        const d = rec.detail as Record<string, unknown>;
        const st = d.checkpoint as { v?: unknown; seq?: unknown; hash?: unknown } | undefined;
        if (!st || st.v !== 1 || st.seq !== rec.seq - 1 || st.hash !== rec.prev_hash) {
          bad(rec.seq, `checkpoint ${rec.seq} does not match the chain before it: records ${from}–${rec.seq - 1} were changed and the chain recomputed`);
          continue;
        }
        if (!trusted) {
          bad(rec.seq, `checkpoint ${rec.seq} cannot be checked: no public key (${PUBLIC_KEY_FILE} missing and none given)`);
          continue;
        }
        if (d.key_fingerprint !== trusted.fingerprint) {
          bad(rec.seq, `checkpoint ${rec.seq} was signed by another key (${String(d.key_fingerprint)}, trusted ${trusted.fingerprint}): forged`);
          continue;
        }
        if (typeof d.signature !== "string" || !verifyStatement(trusted, st, d.signature)) {
          bad(rec.seq, `checkpoint ${rec.seq} has an invalid signature: forged or altered; records ${from}–${rec.seq - 1} are not covered`);
          continue;
        }
        result.checkpoints++;
        result.lastCheckpointSeq = rec.seq;
      }
      prevHash = rec.hash;
      expected++;
    }
  } finally {
    fs.closeSync(fd);
  }
  if (result.ok) {
    result.unsignedTail = expected - 1 - result.lastCheckpointSeq;
    if (result.records > 0 && result.checkpoints === 0) result.warnings.push("no checkpoint yet: nothing is signed");
  }
  return result;
}

export interface VerifyCliOptions {
  /** Path of a PEM public key file to trust instead of the directory's own. */
  publicKeyFile?: string;
  /** Where the summary goes; default stdout. */
  write?: (text: string) => void;
}

/**
 * `petri audit verify [dir]`: prints a human summary. Exit code 0 when intact, 1 when tampered
 * (or a checkpoint cannot be checked), 2 when the log cannot be read at all.
 */
export function runAuditVerifyCli(dir: string, opts: VerifyCliOptions = {}): number {
  const write = opts.write ?? ((t: string) => void process.stdout.write(t));
  let res: VerifyResult;
  try {
    const publicKey = opts.publicKeyFile ? fs.readFileSync(opts.publicKeyFile, "utf8") : undefined;
    res = verifyAuditLog(dir, { publicKey });
  } catch (e) {
    write(`audit verify: cannot read ${dir}: ${(e as Error).message}\n`);
    return 2;
  }
  const lines: string[] = [];
  lines.push(`Audit log ${path.resolve(dir)}: ${res.ok ? "OK" : "TAMPERED"}`);
  lines.push(`  records:     ${res.records} (${res.checkpoints} valid signed checkpoint${res.checkpoints === 1 ? "" : "s"})`);
  if (res.keyFingerprint) lines.push(`  signing key: ${res.keyFingerprint}${opts.publicKeyFile ? " (pinned)" : ""}`);
  if (res.ok) {
    if (res.lastCheckpointSeq) lines.push(`  last checkpoint at seq ${res.lastCheckpointSeq}; ${res.unsignedTail} record${res.unsignedTail === 1 ? "" : "s"} after it not yet signed`);
  } else {
    lines.push(`  first bad record: seq ${res.firstBad!.seq}`);
    lines.push(`  reason: ${res.firstBad!.reason}`);
    if (res.lastCheckpointSeq) lines.push(`  records 1–${res.lastCheckpointSeq} are covered by a valid checkpoint`);
  }
  for (const w of res.warnings) lines.push(`  warning: ${w}`);
  write(lines.join("\n") + "\n");
  return res.ok ? 0 : 1;
}
