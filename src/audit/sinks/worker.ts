import fs from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../logfile.js";
import { CHECKPOINT_ACTION, type AuditLogger, type AuditRecord } from "../types.js";
import { describeSink, type SinkConfig } from "./config.js";
import { FileTransport } from "./file.js";
import { SplunkTransport, WebhookTransport } from "./http.js";
import { SyslogTransport } from "./syslog.js";
import type { FormatOptions, Transport } from "./transport.js";

/** A position in the log: the last record consumed and the byte offset just after it. */
export interface LogPosition {
  seq: number;
  offset: number;
}

/** What a sink needs from the log: positions and records read back from the durable file. */
export interface LogSource {
  head(): LogPosition;
  /** Up to `max` records after `pos`, read from the log file, and the position after the last. */
  readAfter(pos: LogPosition, max: number): { records: AuditRecord[]; end: LogPosition };
  /** Position just after record `seq`, or undefined if there is no such record. */
  locate(seq: number): LogPosition | undefined;
}

export interface SinkStatus {
  name: string;
  type: SinkConfig["type"];
  destination: string;
  format: SinkConfig["format"];
  /** Highest seq durably recorded as delivered. */
  delivered_seq: number;
  /** Records in the log not yet delivered. */
  lag: number;
  consecutive_failures: number;
  last_error?: string;
  last_error_at?: string;
  last_delivery_at?: string;
}

export const SINK_DIR = "sinks";

export function createTransport(cfg: SinkConfig, fmt: FormatOptions): Transport {
  switch (cfg.type) {
    case "file":
      return new FileTransport(cfg, fmt);
    case "syslog":
      return new SyslogTransport(cfg, fmt);
    case "webhook":
      return new WebhookTransport(cfg, fmt);
    case "splunk":
      return new SplunkTransport(cfg, fmt);
  }
}

/** What a sink's cursor remembers of what it delivered, besides the position. */
export interface DeliveryMark {
  /** Hash of the record at the cursor's seq. */
  hash?: string;
  /** The last signed checkpoint delivered (the statement, its signature and the record's own seq). */
  checkpoint?: { record_seq: number; seq: number; hash: string; time: string; signature: string; key_fingerprint: string };
}

/**
 * Delivers the log to one sink, in order, from a durable cursor: `<dir>/sinks/<name>.cursor.json`
 * holds the last seq the receiver is known to have. Records are read back from the log file, so a
 * receiver that is down for hours costs disk, not memory, and `append` never waits for it.
 * After a failure the worker backs off exponentially (with jitter) and re-sends from the cursor;
 * a record may therefore arrive twice, always with the same id and seq.
 */
export class SinkWorker {
  private cursor: LogPosition;
  private sent: LogPosition;
  /** Batch boundaries sent but not yet confirmed: seq of the batch's last record → position after it. */
  private inflight: (LogPosition & { mark?: DeliveryMark })[] = [];
  private lastCheckpoint: DeliveryMark["checkpoint"];
  private failures = 0;
  private lastError: string | undefined;
  private lastErrorAt: string | undefined;
  private lastDeliveryAt: string | undefined;
  private stopping = false;
  private busy = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private readonly cursorFile: string;
  private readonly transport: Transport;

  constructor(
    readonly cfg: SinkConfig,
    private readonly source: LogSource,
    dir: string,
    fmt: FormatOptions,
    private readonly log: AuditLogger,
    transport?: Transport,
  ) {
    const sinkDir = path.join(dir, SINK_DIR);
    fs.mkdirSync(sinkDir, { recursive: true, mode: 0o700 });
    this.cursorFile = path.join(sinkDir, `${cfg.name}.cursor.json`);
    this.transport = transport ?? createTransport(cfg, fmt);
    this.cursor = this.loadCursor();
    this.sent = { ...this.cursor };
  }

  private loadCursor(): LogPosition {
    const head = this.source.head();
    let saved: LogPosition | undefined;
    try {
      const j = JSON.parse(fs.readFileSync(this.cursorFile, "utf8")) as Partial<LogPosition> & { checkpoint?: DeliveryMark["checkpoint"] | null };
      if (Number.isInteger(j.seq) && Number.isInteger(j.offset)) saved = { seq: j.seq!, offset: j.offset! };
      this.lastCheckpoint = j.checkpoint ?? undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.log.warn({ sink: this.cfg.name, err: String(e) }, "audit sink cursor unreadable; locating by seq");
    }
    if (!saved) {
      const start = this.cfg.start === "end" ? head : { seq: 0, offset: 0 };
      this.persist(start);
      return start;
    }
    if (saved.seq === 0) return { seq: 0, offset: 0 };
    if (saved.seq > head.seq) {
      // The log is shorter than what was delivered: it was cut or replaced. Keep the cursor as
      // evidence (petri audit verify reports it), then start over; ids let the SIEM de-duplicate.
      const evidence = path.join(path.dirname(this.cursorFile), `${this.cfg.name}.beyond-log-${Date.now()}.json`);
      try { fs.copyFileSync(this.cursorFile, evidence); } catch { /* best effort: the error below says it too */ }
      this.log.error({ sink: this.cfg.name, cursor: saved.seq, head: head.seq, evidence }, "audit sink delivered records the log no longer has: the log was cut or replaced; re-sending from the start");
      return { seq: 0, offset: 0 };
    }
    const located = this.source.locate(saved.seq);
    if (located && located.offset !== saved.offset) {
      this.log.warn({ sink: this.cfg.name, seq: saved.seq }, "audit sink cursor offset did not match the log; re-located by seq");
    }
    return located ?? saved;
  }

  /**
   * The cursor also keeps the hash of the last delivered record and the last signed checkpoint
   * delivered: `petri audit verify` compares them with the log, so a log cut or rewritten after
   * delivery is caught (see verify.ts).
   */
  private persist(pos: LogPosition, mark?: DeliveryMark): void {
    if (mark?.checkpoint) this.lastCheckpoint = mark.checkpoint;
    writeFileAtomic(this.cursorFile, JSON.stringify({
      seq: pos.seq, offset: pos.offset, hash: mark?.hash ?? null, checkpoint: this.lastCheckpoint ?? null, updated_at: new Date().toISOString(),
    }) + "\n");
  }

  private commit(seq: number): void {
    let next: (LogPosition & { mark?: DeliveryMark }) | undefined;
    let checkpoint: DeliveryMark["checkpoint"];
    while (this.inflight.length && this.inflight[0]!.seq <= seq) {
      next = this.inflight.shift();
      checkpoint = next?.mark?.checkpoint ?? checkpoint;
    }
    if (!next || next.seq <= this.cursor.seq) return;
    this.cursor = { seq: next.seq, offset: next.offset };
    this.lastDeliveryAt = new Date().toISOString();
    this.persist(this.cursor, { hash: next.mark?.hash, checkpoint });
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Called on every append: wakes an idle worker. Cheap when it is busy. */
  notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private sleep(ms: number, wakeable: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = undefined;
        if (this.stopWake === done) this.stopWake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      // A failing sink is woken only by stop(), so appends do not cut its back-off short.
      if (wakeable) this.wake = done;
      this.stopWake = done;
    });
  }

  private stopWake: (() => void) | undefined;

  private async run(): Promise<void> {
    while (!this.stopping) {
      try {
        this.commit(this.transport.confirmed());
        const { records, end } = this.source.readAfter(this.sent, this.cfg.batch_size);
        if (records.length === 0) {
          if (end.offset !== this.sent.offset) {
            // Only unreadable lines were there (a damaged log): move past them.
            this.sent = end;
            if (!this.inflight.length) {
              this.cursor = end;
              this.persist(end);
            }
          }
          await this.sleep(this.transport.hasUnconfirmed() ? 100 : 1000, true);
          continue;
        }
        const last = records[records.length - 1]!;
        const cp = [...records].reverse().find((r) => r.kind === "audit" && r.action === CHECKPOINT_ACTION);
        const st = cp?.detail.checkpoint as { seq: number; hash: string; time: string } | undefined;
        this.inflight.push({ ...end, mark: {
          hash: end.seq === last.seq ? last.hash : undefined,
          checkpoint: cp && st ? { record_seq: cp.seq, seq: st.seq, hash: st.hash, time: st.time, signature: String(cp.detail.signature), key_fingerprint: String(cp.detail.key_fingerprint) } : undefined,
        } });
        this.sent = end;
        this.busy = true;
        const acked = await this.transport.send(records).finally(() => (this.busy = false));
        this.commit(acked);
        if (this.failures) this.log.info({ sink: this.cfg.name, seq: acked }, "audit sink recovered");
        this.failures = 0;
      } catch (e) {
        this.failures++;
        this.lastError = e instanceof Error ? e.message : String(e);
        this.lastErrorAt = new Date().toISOString();
        this.transport.reset();
        this.inflight = [];
        this.sent = { ...this.cursor };
        const base = Math.min(this.cfg.retry_max_ms, this.cfg.retry_min_ms * 2 ** Math.min(this.failures - 1, 30));
        const delay = Math.round(base / 2 + (Math.random() * base) / 2);
        const level = this.failures === 1 || this.failures % 10 === 0 ? "warn" : "debug";
        this.log[level]({ sink: this.cfg.name, destination: describeSink(this.cfg), failures: this.failures, retry_in_ms: delay, err: this.lastError }, "audit sink delivery failed");
        if (!this.stopping) await this.sleep(delay, false);
      }
    }
  }

  /**
   * Resolves once everything up to `seq` has been handed to the transport (not necessarily
   * confirmed: a graceful syslog close confirms it), or after `timeoutMs` (then false).
   */
  async waitSent(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.busy || this.sent.seq < seq) {
      if (Date.now() >= deadline || !this.loop) return false;
      this.notify();
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** Resolves once everything up to `seq` is confirmed delivered, or after `timeoutMs` (then false). */
  async waitDelivered(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.cursor.seq < seq) {
      if (Date.now() >= deadline || !this.loop) return false;
      this.notify();
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** Stops the loop, bounded by `timeoutMs`; a graceful transport close may confirm what was in flight. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.notify();
    this.stopWake?.();
    const within = (p: Promise<unknown> | undefined, ms: number) =>
      Promise.race([p?.then(() => true) ?? Promise.resolve(true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    if (!(await within(this.loop, timeoutMs))) {
      // A send is stuck (receiver hanging): cut it; its batch stays undelivered and is re-sent next start.
      this.transport.reset();
      await within(this.loop, 1000);
    }
    try {
      const acked = await this.transport.close(Math.min(timeoutMs, 5000));
      this.commit(acked);
    } catch (e) {
      this.log.debug({ sink: this.cfg.name, err: String(e) }, "audit sink close failed");
    }
  }

  status(): SinkStatus {
    const head = this.source.head();
    return {
      name: this.cfg.name,
      type: this.cfg.type,
      destination: describeSink(this.cfg),
      format: this.cfg.format,
      delivered_seq: this.cursor.seq,
      lag: Math.max(0, head.seq - this.cursor.seq),
      consecutive_failures: this.failures,
      last_error: this.lastError,
      last_error_at: this.lastErrorAt,
      last_delivery_at: this.lastDeliveryAt,
    };
  }
}
