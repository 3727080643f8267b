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
  /** The log must hold at least this many records (e.g. the last seq your SIEM received). */
  expectSeq?: number;
  /**
   * Checkpoints your SIEM received (Petri JSON records, OCSF events, or bare statements with
   * signature): each must be validly signed by the trusted key and be in the log, unchanged.
   */
  checkpoints?: unknown[];
  /** Compare with the sink cursors in `<dir>/sinks/` (default true). */
  sinkCursors?: boolean;
}

/** A point outside the log (a sink's cursor, a SIEM's checkpoint, --expect-seq) the log must reach. */
interface Witness {
  source: string;
  seq: number;
  hash?: string;
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
  /** Seq of the last record in the log. */
  lastSeq: number;
  /** What the log was compared with besides itself: sink cursors, SIEM checkpoints, --expect-seq. */
  witnesses: string[];
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
  const result: VerifyResult = { ok: true, records: 0, checkpoints: 0, lastCheckpointSeq: 0, unsignedTail: 0, warnings: [], lastSeq: 0, witnesses: [] };
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

  // Read before the log: a server appending meanwhile only makes the log longer than these.
  const witnesses = collectWitnesses(dir, opts, trusted, result);
  const hashAt = new Map<number, string>(witnesses.filter((w) => w.hash).map((w) => [w.seq, ""]));
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
      if (hashAt.has(rec.seq)) hashAt.set(rec.seq, rec.hash);
      expected++;
    }
  } finally {
    fs.closeSync(fd);
  }
  result.lastSeq = expected - 1;
  if (result.ok) {
    // What left the machine says how long the log was: a shorter or different log was cut or rewritten.
    for (const w of witnesses) {
      if (w.seq > result.lastSeq) {
        bad(result.lastSeq + 1, `the log ends at seq ${result.lastSeq} but ${w.source} has seq ${w.seq}: records ${result.lastSeq + 1}–${w.seq} were cut off`);
        break;
      }
      if (w.hash && hashAt.get(w.seq) !== w.hash) {
        bad(w.seq, `record ${w.seq} is not the one ${w.source} has (hash ${w.hash.slice(0, 12)}…): the log was rewritten`);
        break;
      }
    }
  }
  if (result.ok) {
    result.unsignedTail = expected - 1 - result.lastCheckpointSeq;
    if (result.records > 0 && result.checkpoints === 0) result.warnings.push("no checkpoint yet: nothing is signed");
  }
  return result;
}

/** Sink cursors (and cursors kept as evidence), --expect-seq and SIEM checkpoints, as witnesses. */
function collectWitnesses(dir: string, opts: VerifyOptions, trusted: PublicKeyInfo | undefined, result: VerifyResult): Witness[] {
  const out: Witness[] = [];
  if (opts.sinkCursors !== false) {
    const sinkDir = path.join(dir, "sinks");
    let names: string[] = [];
    try { names = fs.readdirSync(sinkDir).sort(); } catch { /* no sinks */ }
    for (const name of names) {
      const m = /^(.*)\.(cursor|beyond-log-\d+)\.json$/.exec(name);
      if (!m) continue;
      try {
        const j = JSON.parse(fs.readFileSync(path.join(sinkDir, name), "utf8")) as { seq?: number; hash?: string | null; checkpoint?: { seq: number; hash: string; record_seq: number; signature: string; time: string } | null };
        const source = m[2] === "cursor" ? `sink "${m[1]}" (its cursor)` : `sink "${m[1]}" (a cursor kept when the log was found shorter than what it had delivered)`;
        if (Number.isInteger(j.seq) && j.seq! > 0) out.push({ source, seq: j.seq!, hash: j.hash ?? undefined });
        if (j.checkpoint) out.push({ source: `sink "${m[1]}" (last checkpoint delivered)`, seq: j.checkpoint.seq, hash: j.checkpoint.hash });
        result.witnesses.push(`${name}: seq ${j.seq ?? "?"}${j.checkpoint ? `, checkpoint through ${j.checkpoint.seq}` : ""}`);
      } catch (e) {
        result.warnings.push(`sink cursor ${name} unreadable: ${(e as Error).message}`);
      }
    }
  }
  if (opts.expectSeq !== undefined) {
    out.push({ source: "--expect-seq", seq: opts.expectSeq });
    result.witnesses.push(`--expect-seq ${opts.expectSeq}`);
  }
  for (const c of opts.checkpoints ?? []) {
    const st = checkpointOf(c);
    if (!st) { result.warnings.push("a given checkpoint is not a checkpoint record"); continue; }
    if (!trusted || st.key_fingerprint !== trusted.fingerprint || !verifyStatement(trusted, st.statement, st.signature)) {
      result.ok = false;
      result.firstBad ??= { seq: st.statement.seq, reason: `the given checkpoint through seq ${st.statement.seq} is not validly signed by the trusted key` };
      continue;
    }
    out.push({ source: `the SIEM's checkpoint through seq ${st.statement.seq}`, seq: st.statement.seq, hash: st.statement.hash });
    // The checkpoint record itself, as the SIEM received it, is one record further.
    if (st.record) out.push({ source: `the SIEM's checkpoint record (seq ${st.record.seq})`, seq: st.record.seq, hash: st.record.hash });
    result.witnesses.push(`checkpoint through seq ${st.statement.seq} (signature valid)`);
  }
  // The farthest first: the message then names the whole cut.
  return out.sort((a, b) => b.seq - a.seq);
}

/** The signed statement in a checkpoint as a SIEM stores it (Petri JSON, OCSF unmapped, or bare). */
function checkpointOf(c: unknown): { statement: { v: 1; seq: number; hash: string; time: string }; signature: string; key_fingerprint: string; record?: { seq: number; hash: string } } | null {
  const o = c as Record<string, any> | null;
  const d = o?.detail ?? o?.unmapped?.detail ?? o;
  const st = d?.checkpoint;
  if (!st || typeof st.seq !== "number" || typeof st.hash !== "string" || typeof d.signature !== "string") return null;
  const meta = o?.unmapped?.petri ?? o;
  const record = Number.isInteger(meta?.seq) && typeof meta?.hash === "string" && meta.seq === st.seq + 1 ? { seq: meta.seq as number, hash: meta.hash as string } : undefined;
  return { statement: st, signature: d.signature, key_fingerprint: d.key_fingerprint, record };
}

export interface VerifyCliOptions {
  /** Path of a PEM public key file to trust instead of the directory's own. */
  publicKeyFile?: string;
  expectSeq?: number;
  /** Files holding checkpoints your SIEM received (JSON: one record/event, an array, or JSON Lines). */
  checkpointFiles?: string[];
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
    const checkpoints = (opts.checkpointFiles ?? []).flatMap((f) => {
      const text = fs.readFileSync(f, "utf8").trim();
      if (text.startsWith("[")) return JSON.parse(text) as unknown[];
      return text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as unknown);
    });
    res = verifyAuditLog(dir, { publicKey, expectSeq: opts.expectSeq, checkpoints });
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
  lines.push(`  compared with: ${res.witnesses.length ? res.witnesses.join("; ") : "nothing outside the log (no sink cursors, no --expect-seq, no --checkpoint): a cut tail after the last checkpoint cannot be seen"}`);
  for (const w of res.warnings) lines.push(`  warning: ${w}`);
  write(lines.join("\n") + "\n");
  return res.ok ? 0 : 1;
}
