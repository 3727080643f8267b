import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import type { AuditRecord } from "../types.js";
import type { SplunkSinkConfig, WebhookSinkConfig } from "./config.js";
import { formatEvent, TransportError, type FormatOptions, type Transport } from "./transport.js";

export const SIGNATURE_HEADER = "x-petri-signature";
export const TIMESTAMP_HEADER = "x-petri-timestamp";
export const DELIVERY_HEADER = "x-petri-delivery";

/**
 * "v1=<hex HMAC-SHA256(secret, `${timestamp}.${deliveryId}.` + body)>": the timestamp and the
 * delivery id are signed with the body, so a captured request cannot be replayed under a new
 * timestamp, and a receiver that remembers ids it accepted (for its tolerance window) can
 * refuse the same request sent twice. See docs/audit.md, "Webhook requests".
 */
export function webhookSignature(secret: string, m: { timestamp: number | string; deliveryId: string; body: string | Buffer }): string {
  const h = createHmac("sha256", secret).update(`${m.timestamp}.${m.deliveryId}.`).update(m.body);
  return `v1=${h.digest("hex")}`;
}

export interface WebhookCheck {
  ok: boolean;
  /** Why a request was refused: bad-signature, stale (outside the tolerance), replay (id seen before), missing headers. */
  reason?: "missing-headers" | "bad-signature" | "stale" | "replay";
}

/**
 * What a receiver should do with a webhook request (exported for receivers written in Node; the
 * docs give the same steps for any language): check the signature over timestamp, delivery id
 * and raw body in constant time, refuse timestamps outside `toleranceS`, and refuse a delivery
 * id already accepted (`seen` must remember ids for at least the tolerance window).
 */
export function verifyWebhookRequest(secret: string, headers: Record<string, string | string[] | undefined>, body: Buffer | string,
  opts: { toleranceS?: number; seen?: Set<string>; now?: number } = {}): WebhookCheck {
  const h = (k: string) => { const v = headers[k]; return Array.isArray(v) ? v[0] : v; };
  const ts = h(TIMESTAMP_HEADER), id = h(DELIVERY_HEADER), sig = h(SIGNATURE_HEADER);
  if (!ts || !id || !sig || !/^\d{1,12}$/.test(ts)) return { ok: false, reason: "missing-headers" };
  const want = Buffer.from(webhookSignature(secret, { timestamp: ts, deliveryId: id, body }));
  const got = Buffer.from(sig);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, reason: "bad-signature" };
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - Number(ts)) > (opts.toleranceS ?? 300)) return { ok: false, reason: "stale" };
  if (opts.seen) {
    if (opts.seen.has(id)) return { ok: false, reason: "replay" };
    opts.seen.add(id);
  }
  return { ok: true };
}

function readSecret(inline: string | undefined, file: string | undefined): string {
  if (inline !== undefined) return inline;
  return fs.readFileSync(file!, "utf8").replace(/\r?\n$/, "");
}

interface Response {
  status: number;
  body: string;
}

/** Shared by webhook and Splunk HEC: one POST per batch; any 2xx means delivered. */
abstract class HttpTransport implements Transport {
  private last = 0;
  private readonly agent: http.Agent;
  private readonly url: URL;

  constructor(url: string, ca: string | undefined, private readonly timeoutMs: number) {
    this.url = new URL(url);
    this.agent =
      this.url.protocol === "https:"
        ? new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca ? fs.readFileSync(ca) : undefined, minVersion: "TLSv1.2" })
        : new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  protected abstract request(records: AuditRecord[]): { body: string; headers: Record<string, string> };
  protected abstract check(res: Response): void;

  private post(body: string, headers: Record<string, string>): Promise<Response> {
    const mod = this.url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        this.url,
        {
          method: "POST",
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), "user-agent": "petri-audit", ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            // Keep only the start of a reply: it is for error messages, never trusted further.
            if (size < 4096) chunks.push(c);
            size += c.length;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8").slice(0, 4096) }));
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new TransportError(`request to ${this.url.host} timed out`)));
      req.on("error", reject);
      req.end(body);
    });
  }

  async send(records: AuditRecord[]): Promise<number> {
    const { body, headers } = this.request(records);
    const res = await this.post(body, headers);
    this.check(res);
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
    this.agent.destroy();
  }

  async close(): Promise<number> {
    this.agent.destroy();
    return this.last;
  }
}

/**
 * HTTP webhook. Body: `{"sent_at": <unix seconds>, "format": "json"|"ocsf", "first_seq", "last_seq",
 * "events": [...]}`. Headers: `X-Petri-Timestamp: <unix seconds>` (equal to sent_at),
 * `X-Petri-Delivery: <uuid>` and `X-Petri-Signature: v1=<hex HMAC>` (see webhookSignature).
 */
export class WebhookTransport extends HttpTransport {
  private readonly secret: string;

  constructor(private readonly cfg: WebhookSinkConfig, private readonly fmt: FormatOptions) {
    super(cfg.url, cfg.ca, cfg.timeout_ms);
    this.secret = readSecret(cfg.secret, cfg.secret_file);
  }

  protected request(records: AuditRecord[]): { body: string; headers: Record<string, string> } {
    const ts = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      sent_at: ts,
      format: this.fmt.format,
      first_seq: records[0]!.seq,
      last_seq: records[records.length - 1]!.seq,
      events: records.map((r) => formatEvent(r, this.fmt)),
    });
    // A new id for every attempt: a retry is a new request, and the events inside carry their
    // own ids (record id, seq) for de-duplication.
    const deliveryId = randomUUID();
    return {
      body,
      headers: {
        [TIMESTAMP_HEADER]: String(ts),
        [DELIVERY_HEADER]: deliveryId,
        [SIGNATURE_HEADER]: webhookSignature(this.secret, { timestamp: ts, deliveryId, body }),
        "x-petri-sink": this.cfg.name,
      },
    };
  }

  protected check(res: Response): void {
    if (res.status < 200 || res.status > 299) {
      throw new TransportError(`webhook answered HTTP ${res.status}`);
    }
  }
}

/**
 * Splunk HTTP Event Collector: `POST /services/collector/event` with `Authorization: Splunk <token>`,
 * the batch as concatenated event envelopes `{"time","host","source","sourcetype","index","event"}`.
 */
export class SplunkTransport extends HttpTransport {
  private readonly token: string;
  private readonly host = os.hostname();

  constructor(private readonly cfg: SplunkSinkConfig, private readonly fmt: FormatOptions) {
    super(cfg.url, cfg.ca, cfg.timeout_ms);
    this.token = readSecret(cfg.token, cfg.token_file);
  }

  protected request(records: AuditRecord[]): { body: string; headers: Record<string, string> } {
    const sourcetype = this.cfg.sourcetype ?? (this.fmt.format === "ocsf" ? "ocsf" : "petri:audit");
    const body = records
      .map((r) =>
        JSON.stringify({
          time: Date.parse(r.time) / 1000,
          host: this.fmt.hostname ?? this.host,
          source: this.cfg.source,
          sourcetype,
          ...(this.cfg.index ? { index: this.cfg.index } : {}),
          fields: { petri_id: r.id, petri_seq: r.seq },
          event: formatEvent(r, this.fmt),
        }),
      )
      .join("\n");
    return { body, headers: { authorization: `Splunk ${this.token}` } };
  }

  protected check(res: Response): void {
    if (res.status >= 200 && res.status <= 299) return;
    let detail = "";
    try {
      const j = JSON.parse(res.body) as { text?: unknown; code?: unknown };
      if (typeof j.text === "string") detail = `: ${j.text.slice(0, 200)} (code ${String(j.code)})`;
    } catch {
      /* not JSON */
    }
    throw new TransportError(`Splunk HEC answered HTTP ${res.status}${detail}`);
  }
}
