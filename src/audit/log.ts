import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { GENESIS_HASH, hashedRecordJson } from "./canonical.js";
import { loadOrCreateSigningKey, signStatement, type CheckpointStatement, type SigningKey } from "./keys.js";
import { acquireLock, LOCK_FILE, LOG_FILE, readAt, readLines, writeAll } from "./logfile.js";
import { RecordIndex, type QueryFilter } from "./recordindex.js";
import { sanitizeDetail } from "./redact.js";
import type { SinkConfig } from "./sinks/config.js";
import { SinkWorker, type LogPosition, type LogSource, type SinkStatus } from "./sinks/worker.js";
import {
  AUDIT_KINDS, AUDIT_OUTCOMES, CHECKPOINT_ACTION, silentLogger,
  type AuditEvent, type AuditLogger, type AuditRecord,
} from "./types.js";

export const INDEX_FILE = "audit-index.sqlite";

type RecordFields = Omit<AuditRecord, "id" | "seq" | "time" | "prev_hash" | "hash">;

/** Records of one append, written and waiting for a sync. */
interface UnsyncedBatch {
  recs: AuditRecord[];
  lengths: number[];
  offset: number;
  /** File size after them. */
  end: number;
  /** appendDurable's waiter. */
  settle?: (e?: Error) => void;
}

export interface AuditLogOptions {
  /** Directory of the log, its signing key, query index and sink cursors. Created (mode 0700) if missing. */
  dir: string;
  sinks?: SinkConfig[];
  /** Write a signed checkpoint after this many records. Default 1000. */
  checkpointEvery?: number;
  /** Also write one every this many milliseconds when records arrived since the last. Default 60000; 0 = off. */
  checkpointIntervalMs?: number;
  log?: AuditLogger;
  /** Reported in OCSF metadata.product.version. */
  productVersion?: string;
  /** Host name in syslog HOSTNAME, OCSF device and Splunk host. Default os.hostname(). */
  hostname?: string;
  /** How long close() lets sinks catch up before stopping them, milliseconds. Default 5000. */
  flushTimeoutMs?: number;
  /**
   * When a record cannot be appended (disk full, I/O error): `closed` (default) makes
   * refusesWork() true until the log can be written again, so the server refuses runs and API
   * calls; `open` lets them go on. Either way the outage is logged, shown by health(), and
   * recorded (`audit.gap`) as soon as the log can be written again.
   */
  failMode?: "closed" | "open";
}

/** What readiness checks and metrics read: can the log be written, and what happens if not. */
export interface AuditHealth {
  writable: boolean;
  fail_mode: "closed" | "open";
  /** Refusing runs and API calls right now (fail_mode closed and not writable). */
  refusing: boolean;
  /** Since when appends fail (ISO time), and the last error. */
  failing_since: string | null;
  last_error: string | null;
  /** Records that could not be written during the current outage. */
  lost_records: number;
}

export type AuditQuery = Omit<QueryFilter, "limit"> & { limit?: number };

const MAX_QUERY_LIMIT = 1000;
const ID_FIELDS = ["tenant_id", "key_id", "sandbox_id", "exec_id", "client_ip", "request_id", "error_code"] as const;
const ACTION_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
// Printable, no control characters: ids end up in syslog structured data and SQL filters.
const ID_RE = /^[^\u0000-\u001f\u007f]{1,256}$/;

function validate(ev: AuditEvent): void {
  if (ev === null || typeof ev !== "object") throw new TypeError("audit event must be an object");
  if (!(AUDIT_KINDS as readonly string[]).includes(ev.kind)) throw new TypeError(`audit event kind must be one of ${AUDIT_KINDS.join(", ")}, got ${JSON.stringify(ev.kind)}`);
  if (!(AUDIT_OUTCOMES as readonly string[]).includes(ev.outcome)) throw new TypeError(`audit event outcome must be one of ${AUDIT_OUTCOMES.join(", ")}, got ${JSON.stringify(ev.outcome)}`);
  if (typeof ev.action !== "string" || !ACTION_RE.test(ev.action)) throw new TypeError(`audit event action must match ${ACTION_RE}, got ${JSON.stringify(ev.action)}`);
  for (const f of ID_FIELDS) {
    const v = ev[f];
    if (v !== undefined && v !== null && (typeof v !== "string" || !ID_RE.test(v))) throw new TypeError(`audit event ${f} must be a short printable string, got ${JSON.stringify(v)}`);
  }
}

function isoOrThrow(v: string | undefined, what: string): string | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new TypeError(`${what} must be an ISO 8601 time, got ${JSON.stringify(v)}`);
  return new Date(t).toISOString();
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Finds the start of the last line of the first `size` bytes (0 if there is one line). */
function lastLineStart(fd: number, size: number): number {
  const chunk = 64 * 1024;
  let end = size - 1; // skip the final "\n"
  while (end > 0) {
    const from = Math.max(0, end - chunk);
    const buf = readAt(fd, from, end - from);
    const i = buf.lastIndexOf(10);
    if (i !== -1) return from + i + 1;
    end = from;
  }
  return 0;
}

/**
 * The audit log: an append-only JSON Lines file (`audit.jsonl`) where every record carries the
 * SHA-256 of the previous one, with Ed25519-signed checkpoints written into the same chain, a
 * rebuildable SQLite index for queries, and sink workers that stream the file to SIEMs.
 */
function eventFields(ev: AuditEvent): RecordFields {
  return {
    kind: ev.kind,
    action: ev.action,
    outcome: ev.outcome,
    tenant_id: ev.tenant_id ?? null,
    key_id: ev.key_id ?? null,
    sandbox_id: ev.sandbox_id ?? null,
    exec_id: ev.exec_id ?? null,
    client_ip: ev.client_ip ?? null,
    request_id: ev.request_id ?? null,
    error_code: ev.error_code ?? null,
    detail: sanitizeDetail(ev.detail),
  };
}

export class AuditLog implements LogSource {
  private headSeq: number;
  private headHash: string;
  /** File size: where the next record goes. */
  private end: number;
  private sinceCheckpoint: number;
  private closed = false;
  private closing: Promise<void> | undefined;
  private broken: Error | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly workers: SinkWorker[] = [];
  private readonly checkpointEvery: number;
  private readonly flushTimeoutMs: number;
  readonly failMode: "closed" | "open";
  private outage: { since: string; error: string; lost: number; lastProbe: number } | null = null;
  /**
   * Records written to the file and not yet known durable, oldest first, each batch with its
   * waiter (appendDurable) — the group waiting for the next commit. Queries (the index) and sinks
   * see a record only once it is durable.
   */
  private readonly unsynced: UnsyncedBatch[] = [];
  /** Where the log is known durable: the last synced record and the file size after it. */
  private durable: { seq: number; hash: string; end: number };
  /** The group commit in flight (an fdatasync on the thread pool), if any. */
  private syncing: Promise<void> | null = null;
  /** Bumped when unsynced records are dropped: a sync begun before that settles nothing. */
  private epoch = 0;
  private syncCount = 0;

  private constructor(
    readonly dir: string,
    private readonly fd: number,
    private readonly index: RecordIndex,
    private readonly key: SigningKey,
    private readonly release: () => void,
    private readonly log: AuditLogger,
    head: { seq: number; hash: string; end: number; sinceCheckpoint: number },
    opts: AuditLogOptions,
  ) {
    this.headSeq = head.seq;
    this.headHash = head.hash;
    this.end = head.end;
    this.durable = { seq: head.seq, hash: head.hash, end: head.end };
    this.sinceCheckpoint = head.sinceCheckpoint;
    this.checkpointEvery = opts.checkpointEvery ?? 1000;
    this.flushTimeoutMs = opts.flushTimeoutMs ?? 5000;
    this.failMode = opts.failMode ?? "closed";
    if (!Number.isInteger(this.checkpointEvery) || this.checkpointEvery < 1) throw new TypeError("checkpointEvery must be a whole number ≥ 1");
  }

  /** Opens (creating on first start) the log in `opts.dir` and starts its sinks. Synchronous. */
  static open(opts: AuditLogOptions): AuditLog {
    const log = opts.log ?? silentLogger;
    const dir = path.resolve(opts.dir);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const release = acquireLock(path.join(dir, LOCK_FILE));
    let fd: number | undefined;
    let index: RecordIndex | undefined;
    try {
      const key = loadOrCreateSigningKey(dir);
      fd = fs.openSync(path.join(dir, LOG_FILE), "a+", 0o600);
      let size = fs.fstatSync(fd).size;
      if (size === 0) fsyncDir(dir); // make the new log's (and key's) directory entries durable too

      if (size > 0 && readAt(fd, size - 1, 1)[0] !== 10) {
        // A write that never returned (crash mid-append): it was never acknowledged, so it is cut
        // off — but kept beside the log, because this is evidence and not ours to destroy.
        const cut = size === 1 ? 0 : lastLineStart(fd, size + 1);
        const tornFile = path.join(dir, `${LOG_FILE}.torn-${Date.now()}`);
        fs.writeFileSync(tornFile, readAt(fd, cut, size - cut), { mode: 0o600 });
        fs.ftruncateSync(fd, cut);
        fs.fsyncSync(fd);
        log.warn({ bytes: size - cut, saved_to: tornFile }, "audit log ended in an incomplete record; moved it aside");
        size = cut;
      }

      let head = { seq: 0, hash: GENESIS_HASH };
      if (size > 0) {
        const start = lastLineStart(fd, size);
        try {
          const last = JSON.parse(readAt(fd, start, size - 1 - start).toString("utf8")) as AuditRecord;
          if (!Number.isInteger(last.seq) || typeof last.hash !== "string") throw new Error("no seq/hash");
          head = { seq: last.seq, hash: last.hash };
        } catch (e) {
          throw new Error(`audit log ${path.join(dir, LOG_FILE)}: its last record is unreadable (${(e as Error).message}); run "petri audit verify" and move the file aside to start a new log`);
        }
      }

      index = new RecordIndex(path.join(dir, INDEX_FILE));
      AuditLog.catchUpIndex(fd, size, index, log);
      const lastCheckpoint = index.lastOfKind("audit");
      const al = new AuditLog(dir, fd, index, key, release, log, { ...head, end: size, sinceCheckpoint: head.seq - lastCheckpoint }, opts);
      al.startSinks(opts);
      const every = opts.checkpointIntervalMs ?? 60_000;
      if (every > 0) {
        al.timer = setInterval(() => {
          try {
            al.checkpoint();
          } catch (e) {
            log.error({ err: String(e) }, "audit checkpoint failed");
          }
        }, every);
        al.timer.unref();
      }
      log.info({ dir, seq: head.seq, key: key.fingerprint, sinks: (opts.sinks ?? []).map((s) => s.name) }, "audit log open");
      return al;
    } catch (e) {
      index?.close();
      if (fd !== undefined) fs.closeSync(fd);
      release();
      throw e;
    }
  }

  /** Brings the index level with the log; rebuilds it if it disagrees with the file. */
  private static catchUpIndex(fd: number, size: number, index: RecordIndex, log: AuditLogger): void {
    let from = 0;
    const last = index.last();
    if (last) {
      let agrees = false;
      if (last.offset + last.length <= size) {
        try {
          const r = JSON.parse(readAt(fd, last.offset, last.length).toString("utf8")) as AuditRecord;
          agrees = r.seq === last.seq && r.hash === last.hash;
        } catch {
          /* disagrees */
        }
      }
      if (agrees) from = last.offset + last.length;
      else {
        log.warn({}, "audit index disagrees with the log; rebuilding it");
        index.clear();
      }
    }
    let batch: { record: AuditRecord; offset: number; length: number }[] = [];
    for (const line of readLines(fd, from, size)) {
      try {
        batch.push({ record: JSON.parse(line.text) as AuditRecord, offset: line.offset, length: line.length });
      } catch {
        log.error({ offset: line.offset }, "audit log holds an unreadable line; not indexed (run petri audit verify)");
      }
      if (batch.length >= 1000) {
        index.insertMany(batch);
        batch = [];
      }
    }
    if (batch.length) index.insertMany(batch);
  }

  private startSinks(opts: AuditLogOptions): void {
    const names = new Set<string>();
    for (const cfg of opts.sinks ?? []) {
      if (names.has(cfg.name)) throw new TypeError(`two audit sinks share the name "${cfg.name}": they would share a cursor`);
      names.add(cfg.name);
    }
    const fmtBase = { productVersion: opts.productVersion, hostname: opts.hostname };
    for (const cfg of opts.sinks ?? []) {
      const w = new SinkWorker(cfg, this, this.dir, { ...fmtBase, format: cfg.format }, this.log);
      this.workers.push(w);
    }
    for (const w of this.workers) w.start();
  }

  /** Public key fingerprint ("sha256:<hex>") of the checkpoint signing key. */
  get keyFingerprint(): string {
    return this.key.fingerprint;
  }

  /**
   * Appends one event durably (written and fdatasync'ed before returning) and returns the stored
   * record. Synchronous; never waits for sinks. Throws TypeError on an invalid event, and the I/O
   * error if the record could not be made durable (nothing is then recorded).
   */
  append(ev: AuditEvent): AuditRecord {
    return this.appendMany([ev])[0]!;
  }

  /**
   * Appends several events as one write and one fdatasync (a run's finish, file and trace
   * records): all are durable when it returns, or none is recorded and it throws. A run that
   * opened a thousand files costs one sync, not a thousand.
   */
  appendMany(evs: AuditEvent[]): AuditRecord[] {
    for (const ev of evs) validate(ev);
    if (evs.length === 0) return [];
    if (this.outage) this.recordGap();
    let recs: AuditRecord[];
    try {
      recs = this.write(evs.map(eventFields));
    } catch (e) {
      for (let i = 0; i < evs.length; i++) this.noteFailure(e as Error);
      throw e;
    }
    this.countTowardsCheckpoint(recs.length);
    return recs;
  }

  /**
   * Appends several events as one write, in order and chained like appendMany, and resolves once
   * they are durable. The records are placed at once (their seq and hash chain are fixed when
   * this returns); the fdatasync is a group commit on the thread pool: one sync covers every
   * record written before it started, appends arriving meanwhile share the next one, and the
   * event loop never waits for the disk. Rejects (with nothing of the group recorded, counted
   * as lost in the outage like a failed append) when the write or the sync fails; a sync failure
   * drops every record not yet durable, since each later one chains on the lost ones. Throws
   * TypeError at once on an invalid event.
   */
  appendDurable(evs: AuditEvent[]): Promise<AuditRecord[]> {
    for (const ev of evs) validate(ev);
    if (evs.length === 0) return Promise.resolve([]);
    let batch: UnsyncedBatch;
    try {
      if (this.outage) this.recordGap();
    } catch (e) {
      return Promise.reject(e);
    }
    try {
      batch = this.put(evs.map(eventFields));
    } catch (e) {
      for (let i = 0; i < evs.length; i++) this.noteFailure(e as Error);
      return Promise.reject(e);
    }
    const durable = new Promise<AuditRecord[]>((resolve, reject) => {
      batch.settle = (e) => (e ? reject(e) : resolve(batch.recs));
    });
    this.countTowardsCheckpoint(batch.recs.length);
    this.commitSoon();
    return durable;
  }

  /** fdatasyncs so far (group commits and synchronous appends): for tests and metrics. */
  get syncs(): number {
    return this.syncCount;
  }

  private countTowardsCheckpoint(n: number): void {
    this.sinceCheckpoint += n;
    if (this.sinceCheckpoint >= this.checkpointEvery) {
      try {
        this.checkpoint();
      } catch (e) {
        this.log.error({ err: String(e) }, "audit checkpoint failed");
      }
    }
  }

  /**
   * Starts a group commit of what is unsynced, unless one is under way (it starts the next when
   * it ends). It begins once this turn of the event loop is over, so the appends of one turn
   * share it: a run's exec.finish and its request's own record are one sync, not two.
   */
  private commitSoon(): void {
    if (this.syncing || this.unsynced.length === 0 || this.closed) return;
    this.syncing = new Promise<void>((done) => {
      setImmediate(() => {
        // A synchronous append may have synced everything meanwhile.
        if (this.unsynced.length === 0 || this.closed) {
          this.syncing = null;
          done();
          return;
        }
        const epoch = this.epoch;
        const upTo = this.end;
        fs.fdatasync(this.fd, (err) => {
          this.syncing = null;
          if (epoch === this.epoch && !this.closed) {
            if (!err) {
              this.syncCount++;
              this.markDurable(upTo);
            } else if (this.durable.end < upTo) {
              this.dropUnsynced(err);
            }
          }
          // Records written while this one ran: the next group.
          this.commitSoon();
          done();
        });
      });
    });
  }

  /** Everything up to `end` is on disk: those batches become visible (index, sinks) and their waiters resolve, in order. */
  private markDurable(end: number): void {
    let moved = false;
    while (this.unsynced.length && this.unsynced[0]!.end <= end) {
      const b = this.unsynced.shift()!;
      try {
        let at = b.offset;
        this.index.insertMany(b.recs.map((record, i) => {
          const row = { record, offset: at, length: b.lengths[i]! };
          at += b.lengths[i]!;
          return row;
        }));
      } catch (e) {
        // The log has the records; the index is rebuilt from it on the next start.
        this.log.error({ seq: b.recs[0]!.seq, err: String(e) }, "audit index insert failed");
      }
      const last = b.recs[b.recs.length - 1]!;
      this.durable = { seq: last.seq, hash: last.hash, end: b.end };
      moved = true;
      b.settle?.();
    }
    if (moved) for (const w of this.workers) w.notify();
  }

  /**
   * A sync failed: nothing after the last durable record can be trusted to be on disk, and each
   * unsynced record chains on the ones before it, so all of them are cut off and their appends
   * fail (`except`: the synchronous append that saw the failure, which counts its own loss).
   */
  private dropUnsynced(e: Error, except?: UnsyncedBatch): void {
    this.epoch++;
    try {
      fs.ftruncateSync(this.fd, this.durable.end);
    } catch {
      this.broken = e;
    }
    this.end = this.durable.end;
    this.headSeq = this.durable.seq;
    this.headHash = this.durable.hash;
    for (const b of this.unsynced.splice(0)) {
      if (b === except) continue;
      for (let i = 0; i < b.recs.length; i++) this.noteFailure(e);
      b.settle?.(e);
    }
  }

  private noteFailure(e: Error): void {
    if (this.closed) return;
    if (!this.outage) {
      this.outage = { since: new Date().toISOString(), error: e.message, lost: 0, lastProbe: Date.now() };
      this.log.error({ err: e.message, fail_mode: this.failMode },
        this.failMode === "closed"
          ? "AUDIT LOG CANNOT BE WRITTEN: refusing runs and API calls until it can (PETRI_AUDIT_FAIL=closed)"
          : "AUDIT LOG CANNOT BE WRITTEN: runs and API calls go on UNRECORDED (PETRI_AUDIT_FAIL=open)");
    }
    this.outage.error = e.message;
    this.outage.lost++;
  }

  /** The first record after an outage says how long it lasted and how many records were lost. Throws if still failing. */
  private recordGap(): void {
    const o = this.outage!;
    try {
      this.writeEvent({ kind: "audit" as AuditEvent["kind"], action: "audit.gap", outcome: "failure", error_code: "AUDIT_UNAVAILABLE",
        detail: { failing_since: o.since, until: new Date().toISOString(), lost_records: o.lost, last_error: o.error, fail_mode: this.failMode } });
    } catch (e) {
      this.noteFailure(e as Error);
      throw e;
    }
    this.outage = null;
    this.log.warn({ lost_records: o.lost, since: o.since }, "audit log writable again; the outage is recorded as audit.gap");
  }

  /** For readiness and metrics. */
  health(): AuditHealth {
    const o = this.outage;
    return {
      writable: !o && !this.broken, fail_mode: this.failMode, refusing: this.refusesWork(false),
      failing_since: o?.since ?? null, last_error: o?.error ?? this.broken?.message ?? null, lost_records: o?.lost ?? 0,
    };
  }

  /**
   * True when work must be refused: fail mode closed and the log cannot be written. While
   * failing, it tries (at most once a second) to write the audit.gap record: once that works,
   * the outage is over.
   */
  refusesWork(probe = true): boolean {
    if (this.failMode !== "closed") return false;
    if (this.broken) return true;
    if (!this.outage) return false;
    if (probe && Date.now() - this.outage.lastProbe >= 1000) {
      this.outage.lastProbe = Date.now();
      try { this.recordGap(); } catch { /* still failing */ }
    }
    return this.outage !== null;
  }

  private writeEvent(ev: AuditEvent): AuditRecord {
    return this.write([eventFields(ev)])[0]!;
  }

  /** Writes and syncs (covering every unsynced record before it too). Throws with none of them recorded. */
  private write(list: RecordFields[], time = new Date().toISOString()): AuditRecord[] {
    const batch = this.put(list, time);
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      this.dropUnsynced(e as Error, batch);
      throw e;
    }
    this.syncCount++;
    this.markDurable(batch.end);
    return batch.recs;
  }

  /**
   * Chains the records after the head and writes them to the file, not yet synced (queued in
   * `unsynced`). A failed write is cut off again (records before it stay) and throws.
   */
  private put(list: RecordFields[], time = new Date().toISOString()): UnsyncedBatch {
    if (this.closed) throw new Error("audit log is closed");
    if (this.broken) throw new Error(`audit log is unusable after a failed write: ${this.broken.message}`);
    const recs: AuditRecord[] = [];
    const bufs: Buffer[] = [];
    let seq = this.headSeq;
    let prev = this.headHash;
    for (const fields of list) {
      const unhashed = { id: `au_${randomBytes(12).toString("hex")}`, seq: ++seq, time, ...fields, prev_hash: prev };
      const { hash, json } = hashedRecordJson(unhashed);
      const rec: AuditRecord = { ...unhashed, hash };
      recs.push(rec);
      bufs.push(Buffer.from(json + "\n", "utf8"));
      prev = rec.hash;
    }
    const buf = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
    const offset = this.end;
    try {
      writeAll(this.fd, buf);
    } catch (e) {
      try {
        fs.ftruncateSync(this.fd, offset);
      } catch {
        this.broken = e as Error;
      }
      throw e;
    }
    this.end = offset + buf.length;
    this.headSeq = seq;
    this.headHash = prev;
    const batch: UnsyncedBatch = { recs, lengths: bufs.map((b) => b.length), offset, end: this.end };
    this.unsynced.push(batch);
    return batch;
  }

  /**
   * Writes a signed checkpoint now if any record arrived since the last one; returns it. Called
   * by the timer, every `checkpointEvery` records, and on close.
   */
  checkpoint(): AuditRecord | undefined {
    if (this.sinceCheckpoint === 0 || this.headSeq === 0) return undefined;
    const statement: CheckpointStatement = { v: 1, seq: this.headSeq, hash: this.headHash, time: new Date().toISOString() };
    const [rec] = this.write([
      {
        kind: "audit",
        action: CHECKPOINT_ACTION,
        outcome: "success",
        tenant_id: null, key_id: null, sandbox_id: null, exec_id: null, client_ip: null, request_id: null, error_code: null,
        detail: {
          checkpoint: statement,
          algorithm: "Ed25519",
          signature: signStatement(this.key, statement),
          key_fingerprint: this.key.fingerprint,
          public_key: this.key.spkiBase64,
        },
      },
    ], statement.time);
    this.sinceCheckpoint = 0;
    return rec;
  }

  /**
   * Records matching every given filter, oldest first (or newest first with order "desc"). `since`
   * is inclusive, `until` exclusive. Page with after_seq (asc) or before_seq (desc). limit ≤ 1000.
   */
  query(f: AuditQuery = {}): AuditRecord[] {
    if (this.closed) throw new Error("audit log is closed");
    const limit = f.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT) throw new TypeError(`limit must be between 1 and ${MAX_QUERY_LIMIT}`);
    for (const k of ["after_seq", "before_seq"] as const) {
      if (f[k] !== undefined && (!Number.isInteger(f[k]) || f[k]! < 0)) throw new TypeError(`${k} must be a whole number`);
    }
    const filter: QueryFilter = { ...f, since: isoOrThrow(f.since, "since"), until: isoOrThrow(f.until, "until") };
    const out: AuditRecord[] = [];
    for (const row of this.index.find(filter, limit)) {
      try {
        out.push(JSON.parse(readAt(this.fd, row.offset, row.length).toString("utf8")) as AuditRecord);
      } catch (e) {
        this.log.error({ offset: row.offset, err: String(e) }, "audit query: unreadable record");
      }
    }
    return out;
  }

  /** Delivery state of each sink, for health endpoints and metrics. */
  sinkStatus(): SinkStatus[] {
    return this.workers.map((w) => w.status());
  }

  /** Resolves true once every sink has delivered everything appended so far; false on timeout. */
  async waitForSinks(timeoutMs: number): Promise<boolean> {
    const seq = this.durable.seq;
    const results = await Promise.all(this.workers.map((w) => w.waitDelivered(seq, timeoutMs)));
    return results.every(Boolean);
  }

  /** Writes a final checkpoint, lets sinks catch up (bounded by flushTimeoutMs), stops timers, releases the directory. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.timer) clearInterval(this.timer);
      // The group commit in flight settles first; the checkpoint's own sync covers what is left.
      while (this.syncing) await this.syncing;
      try {
        this.checkpoint();
      } catch (e) {
        this.log.error({ err: String(e) }, "audit checkpoint on close failed");
      }
      if (this.unsynced.length) {
        try {
          fs.fdatasyncSync(this.fd);
          this.syncCount++;
          this.markDurable(this.end);
        } catch (e) {
          this.dropUnsynced(e as Error);
        }
      }
      this.closed = true;
      // Hand everything to the transports; stopping them then closes gracefully, which is what
      // confirms syslog deliveries without waiting out their confirmation window.
      const head = this.durable.seq;
      await Promise.all(this.workers.map((w) => w.waitSent(head, this.flushTimeoutMs)));
      await Promise.all(this.workers.map((w) => w.stop(1000)));
      this.index.close();
      fs.closeSync(this.fd);
      this.release();
    })();
    return this.closing;
  }

  // LogSource, for the sink workers.

  /** Sinks deliver what is durable only (a record a failed sync cuts off was never sent). */
  head(): LogPosition {
    return { seq: this.durable.seq, offset: this.durable.end };
  }

  locate(seq: number): LogPosition | undefined {
    if (seq === 0) return { seq: 0, offset: 0 };
    const p = this.index.position(seq);
    return p ? { seq, offset: p.offset + p.length } : undefined;
  }

  readAfter(pos: LogPosition, max: number): { records: AuditRecord[]; end: LogPosition } {
    const records: AuditRecord[] = [];
    let end = pos;
    if (pos.offset >= this.durable.end) return { records, end };
    for (const line of readLines(this.fd, pos.offset, this.durable.end, 256 * 1024)) {
      if (line.partial) break;
      try {
        const r = JSON.parse(line.text) as AuditRecord;
        records.push(r);
        end = { seq: r.seq, offset: line.offset + line.length };
      } catch {
        this.log.error({ offset: line.offset }, "audit sink skipped an unreadable line (run petri audit verify)");
        end = { seq: end.seq, offset: line.offset + line.length };
      }
      if (records.length >= max) break;
    }
    return { records, end };
  }
}
