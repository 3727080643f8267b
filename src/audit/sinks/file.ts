import fs from "node:fs";
import path from "node:path";
import type { AuditRecord } from "../types.js";
import type { FileSinkConfig } from "./config.js";
import { formatEvent, type FormatOptions, type Transport } from "./transport.js";

/** JSON Lines file: one event per line, appended and fsynced per batch. */
export class FileTransport implements Transport {
  private fh: fs.promises.FileHandle | undefined;
  private last = 0;

  constructor(private readonly cfg: FileSinkConfig, private readonly fmt: FormatOptions) {}

  async send(records: AuditRecord[]): Promise<number> {
    if (!this.fh) {
      await fs.promises.mkdir(path.dirname(this.cfg.path), { recursive: true });
      this.fh = await fs.promises.open(this.cfg.path, "a", 0o600);
    }
    const text = records.map((r) => JSON.stringify(formatEvent(r, this.fmt)) + "\n").join("");
    await this.fh.write(text);
    await this.fh.datasync();
    this.last = records[records.length - 1]!.seq;
    return this.last;
  }

  confirmed(): number {
    return this.last;
  }

  hasUnconfirmed(): boolean {
    return false;
  }

  reset(): void {
    const fh = this.fh;
    this.fh = undefined;
    void fh?.close().catch(() => {});
  }

  async close(): Promise<number> {
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    return this.last;
  }
}
