import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import tls from "node:tls";
import type { AuditRecord } from "../types.js";
import type { SyslogSinkConfig } from "./config.js";
import { formatEvent, TransportError, type FormatOptions, type Transport } from "./transport.js";

/** Private enterprise number 32473 is reserved for documentation (RFC 5612); SD-ID "petri@32473". */
export const SD_ID = "petri@32473";

const SEVERITY = { success: 6, failure: 5, denied: 4 } as const;

function printable(s: string, max: number): string {
  const out = s.replace(/[^!-~]/g, "_").slice(0, max);
  return out === "" ? "-" : out;
}

function sdValue(s: string): string {
  return s.replace(/[\\"\]]/g, (c) => `\\${c}`);
}

/**
 * One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, MSG being the
 * event as JSON (UTF-8, so it starts with the BOM as RFC 5424 §6.4 requires of a UTF-8 MSG; JSON
 * escapes every control character, so a multi-line value stays on one line and no receiver-side
 * escaping mangles it). The structured data repeats id and seq so a
 * receiver can de-duplicate without parsing MSG.
 */
export function syslogMessage(r: AuditRecord, cfg: Pick<SyslogSinkConfig, "facility" | "app_name" | "hostname">, fmt: FormatOptions): string {
  const pri = cfg.facility * 8 + (r.kind === "auth" && r.outcome !== "success" ? 4 : SEVERITY[r.outcome]);
  const host = printable(cfg.hostname ?? os.hostname(), 255);
  const sd = `[${SD_ID} id="${sdValue(r.id)}" seq="${r.seq}" kind="${sdValue(r.kind)}" outcome="${sdValue(r.outcome)}"]`;
  const msg = JSON.stringify(formatEvent(r, fmt));
  return `<${pri}>1 ${r.time} ${host} ${printable(cfg.app_name, 48)} ${process.pid} ${printable(r.action, 32)} ${sd} ${UTF8_BOM}${msg}`;
}

/** U+FEFF, sent as EF BB BF: RFC 5424 §6.4 says a MSG encoded in UTF-8 starts with it. */
export const UTF8_BOM = "\uFEFF";

/** Octet-counting framing (RFC 6587 §3.4.1, RFC 5425 §4.3): "MSG-LEN SP SYSLOG-MSG". */
export function octetFrame(msg: string): Buffer {
  const body = Buffer.from(msg, "utf8");
  return Buffer.concat([Buffer.from(`${body.length} `, "ascii"), body]);
}

/**
 * Syslog over TCP or TLS. The protocol has no acknowledgements, so delivery is confirmed by
 * time: a batch counts as delivered once the connection stayed healthy for `confirm_ms` after it
 * was written, or when a graceful close was answered by the receiver closing its side (it read
 * everything up to our FIN). A connection lost with unconfirmed batches makes `confirmed` throw,
 * and the worker re-sends them: at least once, never silently dropped.
 */
export class SyslogTransport implements Transport {
  private sock: net.Socket | undefined;
  private pending: { seq: number; at: number }[] = [];
  private lastConfirmed = 0;
  private lost: Error | undefined;
  private closing = false;
  private readonly tlsFiles: { ca?: Buffer; cert?: Buffer; key?: Buffer };

  constructor(private readonly cfg: SyslogSinkConfig, private readonly fmt: FormatOptions) {
    this.tlsFiles = {
      ca: cfg.ca ? fs.readFileSync(cfg.ca) : undefined,
      cert: cfg.cert ? fs.readFileSync(cfg.cert) : undefined,
      key: cfg.key ? fs.readFileSync(cfg.key) : undefined,
    };
  }

  private connect(): Promise<net.Socket> {
    const { host, port, timeout_ms } = this.cfg;
    return new Promise((resolve, reject) => {
      const s =
        this.cfg.transport === "tls"
          ? tls.connect({
              host,
              port,
              ...this.tlsFiles,
              servername: this.cfg.servername ?? (net.isIP(host) ? undefined : host),
              minVersion: "TLSv1.2",
            })
          : net.connect({ host, port });
      const timer = setTimeout(() => s.destroy(new TransportError(`connect to ${host}:${port} timed out`)), timeout_ms);
      const onError = (e: Error) => {
        clearTimeout(timer);
        s.destroy();
        reject(e);
      };
      s.once("error", onError);
      s.once(this.cfg.transport === "tls" ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        s.off("error", onError);
        s.setNoDelay(true);
        s.setKeepAlive(true, 10_000);
        // Receivers send nothing; reading is what lets us notice their FIN.
        s.on("data", () => {});
        s.on("error", (e) => this.onLost(s, e));
        s.on("close", () => this.onLost(s, new TransportError("connection closed by the receiver")));
        resolve(s);
      });
    });
  }

  private onLost(s: net.Socket, e: Error): void {
    if (this.sock !== s || this.closing) return;
    this.sock = undefined;
    s.destroy();
    if (this.pending.length) this.lost = e;
  }

  async send(records: AuditRecord[]): Promise<number> {
    this.confirmed();
    if (!this.sock) this.sock = await this.connect();
    const s = this.sock;
    const data = Buffer.concat(records.map((r) => octetFrame(syslogMessage(r, this.cfg, this.fmt))));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const e = new TransportError(`write to ${this.cfg.host}:${this.cfg.port} timed out (receiver not reading)`);
        this.onLost(s, e);
        reject(e);
      }, this.cfg.timeout_ms);
      s.write(data, (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
    if (this.sock !== s) throw this.lost ?? new TransportError("connection lost while writing");
    this.pending.push({ seq: records[records.length - 1]!.seq, at: Date.now() });
    return this.confirmed();
  }

  confirmed(): number {
    if (this.lost) {
      const e = this.lost;
      this.lost = undefined;
      this.pending = [];
      throw e;
    }
    const now = Date.now();
    while (this.pending.length && now - this.pending[0]!.at >= this.cfg.confirm_ms) this.lastConfirmed = this.pending.shift()!.seq;
    return this.lastConfirmed;
  }

  hasUnconfirmed(): boolean {
    return this.pending.length > 0 || this.lost !== undefined;
  }

  reset(): void {
    const s = this.sock;
    this.sock = undefined;
    this.pending = [];
    this.lost = undefined;
    s?.destroy();
  }

  async close(timeoutMs: number): Promise<number> {
    const s = this.sock;
    if (!s) return this.lastConfirmed;
    this.closing = true;
    const clean = await new Promise<boolean>((resolve) => {
      let peerEnded = false;
      const timer = setTimeout(() => resolve(false), timeoutMs);
      s.once("end", () => (peerEnded = true));
      s.once("error", () => {
        clearTimeout(timer);
        resolve(false);
      });
      s.once("close", (hadError) => {
        clearTimeout(timer);
        resolve(peerEnded && !hadError);
      });
      s.end();
    });
    s.destroy();
    this.sock = undefined;
    if (clean && this.pending.length) this.lastConfirmed = this.pending[this.pending.length - 1]!.seq;
    this.pending = [];
    return this.lastConfirmed;
  }
}
