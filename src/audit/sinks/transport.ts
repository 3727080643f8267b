import { toOcsf, type OcsfOptions } from "../ocsf.js";
import type { AuditRecord } from "../types.js";
import type { SinkFormat } from "./config.js";

/**
 * One backend of a sink. A SinkWorker hands it batches in seq order and never two at once.
 *
 * `send` resolves with the highest seq the receiver is known to have (for protocols with a
 * response, the last of the batch); it throws when the batch may not have arrived, and the worker
 * then calls `reset` and later re-sends from its durable cursor.
 */
export interface Transport {
  send(records: AuditRecord[]): Promise<number>;
  /** Highest seq known delivered right now; throws if records sent earlier may have been lost. */
  confirmed(): number;
  /** True while sent records are waiting for confirmation (the worker then polls `confirmed`). */
  hasUnconfirmed(): boolean;
  /** Drops any connection after a failure. */
  reset(): void;
  /** Graceful shutdown; resolves with the highest seq known delivered. */
  close(timeoutMs: number): Promise<number>;
}

export interface FormatOptions extends OcsfOptions {
  format: SinkFormat;
}

/** The event a sink emits for a record: the record itself, or its OCSF mapping. */
export function formatEvent(r: AuditRecord, opts: FormatOptions): Record<string, unknown> {
  return opts.format === "ocsf" ? toOcsf(r, opts) : (r as unknown as Record<string, unknown>);
}

export class TransportError extends Error {
  constructor(message: string, readonly retryable = true) {
    super(message);
    this.name = "TransportError";
  }
}
