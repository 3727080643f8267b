import assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AuditLog, parseSinkConfig, verifyWebhookRequest, type AuditRecord } from "./index.js";

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "petri-audit-sinks-"));
}

interface Receiver {
  port: number;
  close(): Promise<void>;
}

async function listen(handler: (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void, port = 0): Promise<Receiver> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => handler(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const SECRET = "webhook-test-secret";

/**
 * What a receiving service would do, written out by hand (not with Petri's helper): HMAC over
 * "<timestamp>.<delivery id>.<raw body>", a fresh timestamp, and a delivery id not seen before.
 */
const seenDeliveries = new Set<string>();
function verifyWebhook(req: http.IncomingMessage, body: Buffer): boolean {
  const sig = String(req.headers["x-petri-signature"] ?? "");
  const ts = String(req.headers["x-petri-timestamp"] ?? "");
  const id = String(req.headers["x-petri-delivery"] ?? "");
  const want = Buffer.from(`v1=${createHmac("sha256", SECRET).update(`${ts}.${id}.`).update(body).digest("hex")}`);
  if (!id || sig.length !== want.length || !timingSafeEqual(Buffer.from(sig), want)) return false;
  if (!/^\d+$/.test(ts) || Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  if (seenDeliveries.has(id)) return false;
  seenDeliveries.add(id);
  return (JSON.parse(body.toString()) as { sent_at: number }).sent_at === Number(ts);
}

/** In order by seq, nothing missing; duplicates allowed only as exact re-deliveries (same id). */
function assertComplete(got: { seq: number; id: string }[], expected: AuditRecord[]): void {
  const byId = new Map<string, number>();
  for (const g of got) {
    const prev = byId.get(g.id);
    assert.ok(prev === undefined || prev === g.seq, `id ${g.id} delivered with two seqs`);
    byId.set(g.id, g.seq);
  }
  const unique: number[] = [];
  for (const g of got) if (!unique.includes(g.seq)) unique.push(g.seq);
  assert.deepEqual(unique, [...unique].sort((a, b) => a - b), "delivered out of order");
  for (const r of expected) assert.equal(byId.get(r.id), r.seq, `record ${r.seq} missing`);
}

function appendMany(log: AuditLog, n: number, from = 1): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (let i = from; i < from + n; i++) {
    out.push(log.append({ kind: "exec", action: "exec.finish", outcome: "success", tenant_id: "t_1", sandbox_id: "sb_1", exec_id: `ex_${i}`, detail: { exit_code: 0, note: `line one\nline two ✓ ${i}` } }));
  }
  return out;
}

describe("webhook sink", { timeout: 30_000 }, () => {
  it("delivers signed batches in order, through an outage, without losing a record", async () => {
    const dir = tmpDir();
    const got: { seq: number; id: string }[] = [];
    let requests = 0;
    let badSignatures = 0;
    let failNext = 3;
    const rx = await listen((req, body, res) => {
      requests++;
      if (!verifyWebhook(req, body)) {
        badSignatures++;
        res.writeHead(401).end();
        return;
      }
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end();
        return;
      }
      const batch = JSON.parse(body.toString()) as { events: AuditRecord[]; first_seq: number; last_seq: number };
      assert.equal(batch.first_seq, batch.events[0]!.seq);
      got.push(...batch.events.map((e) => ({ seq: e.seq, id: e.id })));
      res.writeHead(204).end();
    });
    let log: AuditLog | undefined;
    try {
      const sinks = parseSinkConfig(`webhook+http://127.0.0.1:${rx.port}/hook?secret=${SECRET}&batch_size=7&retry_min_ms=20&retry_max_ms=200`);
      log = AuditLog.open({ dir, sinks, checkpointIntervalMs: 0 });
      const recs = appendMany(log, 30);
      assert.equal(await log.waitForSinks(10_000), true, JSON.stringify(log.sinkStatus()));
      assertComplete(got, recs);
      assert.equal(badSignatures, 0);
      assert.ok(requests >= 5 + 3, `batched: ${requests} requests`);
      const st = log.sinkStatus()[0]!;
      assert.equal(st.lag, 0);
      assert.equal(st.consecutive_failures, 0);
      assert.match(st.last_error ?? "", /503/);
    } finally {
      await log?.close();
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a captured request cannot be replayed: not as it is, not with a new timestamp, not late", async () => {
    const dir = tmpDir();
    const captured: { headers: http.IncomingHttpHeaders; body: Buffer }[] = [];
    const rx = await listen((req, body, res) => { captured.push({ headers: req.headers, body }); res.writeHead(204).end(); });
    let log: AuditLog | undefined;
    try {
      log = AuditLog.open({ dir, sinks: parseSinkConfig(`webhook+http://127.0.0.1:${rx.port}/hook?secret=${SECRET}`), checkpointIntervalMs: 0 });
      appendMany(log, 3);
      assert.equal(await log.waitForSinks(10_000), true);
      const { headers, body } = captured[0]!;
      const seen = new Set<string>();
      assert.deepEqual(verifyWebhookRequest(SECRET, headers, body, { seen }), { ok: true });
      assert.deepEqual(verifyWebhookRequest(SECRET, headers, body, { seen }), { ok: false, reason: "replay" });
      const later = String(Number(headers["x-petri-timestamp"]) + 600);
      assert.deepEqual(verifyWebhookRequest(SECRET, { ...headers, "x-petri-timestamp": later, "x-petri-delivery": "fresh-id" }, body, { seen }),
        { ok: false, reason: "bad-signature" }, "a new timestamp or id breaks the signature");
      assert.deepEqual(verifyWebhookRequest(SECRET, headers, body, { now: Number(headers["x-petri-timestamp"]) + 301 }), { ok: false, reason: "stale" });
      assert.deepEqual(verifyWebhookRequest(SECRET, headers, Buffer.concat([body, Buffer.from(" ")])), { ok: false, reason: "bad-signature" });
      assert.equal(new Set(captured.map((c) => c.headers["x-petri-delivery"])).size, captured.length, "every request has its own delivery id");
    } finally {
      await log?.close();
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("keeps its cursor across restarts and catches up after the receiver was down", async () => {
    const dir = tmpDir();
    const got: { seq: number; id: string }[] = [];
    const handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => {
      assert.ok(verifyWebhook(req, body));
      got.push(...(JSON.parse(body.toString()) as { events: AuditRecord[] }).events.map((e) => ({ seq: e.seq, id: e.id })));
      res.writeHead(200).end("ok");
    };
    let rx = await listen(handler);
    const port = rx.port;
    const spec = `webhook+http://127.0.0.1:${port}/hook?secret=${SECRET}&retry_min_ms=20&retry_max_ms=100&name=hook`;
    let log: AuditLog | undefined;
    try {
      log = AuditLog.open({ dir, sinks: parseSinkConfig(spec), checkpointIntervalMs: 0, flushTimeoutMs: 300 });
      const first = appendMany(log, 5);
      assert.equal(await log.waitForSinks(5000), true);
      await rx.close(); // receiver goes away
      const during = appendMany(log, 10, 6);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(log.sinkStatus()[0]!.lag >= 10);
      await log.close(); // Petri restarts while the receiver is still down
      const cursor = JSON.parse(fs.readFileSync(path.join(dir, "sinks", "hook.cursor.json"), "utf8"));
      assert.equal(cursor.seq, 5);
      rx = await listen(handler, port);
      log = AuditLog.open({ dir, sinks: parseSinkConfig(spec), checkpointIntervalMs: 0 });
      const laterRecs = appendMany(log, 3, 16);
      assert.equal(await log.waitForSinks(10_000), true, JSON.stringify(log.sinkStatus()));
      assertComplete(got, [...first, ...during, ...laterRecs]);
      // Checkpoints travel too: one was written when the log closed.
      assert.ok(log.query({ kind: "audit" }).every((c) => got.some((g) => g.id === c.id)));
    } finally {
      await log?.close();
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("never lets a hanging receiver slow down append", async () => {
    const dir = tmpDir();
    const rx = await listen(() => {
      /* never answers */
    });
    let log: AuditLog | undefined;
    try {
      log = AuditLog.open({ dir, sinks: parseSinkConfig(`webhook+http://127.0.0.1:${rx.port}/?secret=x&timeout_ms=5000`), checkpointIntervalMs: 0, flushTimeoutMs: 200 });
      const t0 = Date.now();
      appendMany(log, 300);
      const elapsed = Date.now() - t0;
      assert.ok(elapsed < 3000, `300 appends took ${elapsed} ms`);
      const t1 = Date.now();
      await log.close();
      assert.ok(Date.now() - t1 < 4000, "close is bounded");
    } finally {
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("Splunk HEC sink", { timeout: 30_000 }, () => {
  it("posts batched event envelopes with the Splunk token, in OCSF", async () => {
    const dir = tmpDir();
    const TOKEN = "11111111-2222-3333-4444-555555555555";
    const got: { seq: number; id: string }[] = [];
    let rejected = 0;
    const rx = await listen((req, body, res) => {
      if (req.method !== "POST" || req.url !== "/services/collector/event") {
        res.writeHead(404, { "content-type": "application/json" }).end('{"text":"The requested URL was not found on this server.","code":404}');
        return;
      }
      if (req.headers.authorization !== `Splunk ${TOKEN}`) {
        rejected++;
        res.writeHead(403, { "content-type": "application/json" }).end('{"text":"Invalid token","code":4}');
        return;
      }
      const events = body.toString().split("\n").map((l) => JSON.parse(l) as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
      for (const e of events) {
        assert.equal(typeof e.time, "number");
        assert.equal(e.source, "petri");
        assert.equal(e.sourcetype, "ocsf");
        assert.equal(e.index, "audit");
        assert.equal(typeof e.host, "string");
        assert.ok(e.event.class_uid === 1007 || e.event.class_uid === 0, `class ${e.event.class_uid}`);
        assert.equal(e.event.metadata.product.name, "Petri");
        assert.equal(e.fields.petri_seq, e.event.metadata.sequence);
        got.push({ seq: e.event.metadata.sequence, id: e.event.metadata.uid });
      }
      res.writeHead(200, { "content-type": "application/json" }).end('{"text":"Success","code":0}');
    });
    let log: AuditLog | undefined;
    const tokenFile = path.join(dir, "hec-token");
    try {
      fs.writeFileSync(tokenFile, `${TOKEN}\n`);
      const sinks = parseSinkConfig(
        `splunk+http://127.0.0.1:${rx.port}?token_file=${tokenFile}&index=audit&format=ocsf&batch_size=4&retry_min_ms=20,` +
          `splunk+http://127.0.0.1:${rx.port}?token=wrong&name=wrongtoken&retry_min_ms=20&retry_max_ms=50`,
      );
      log = AuditLog.open({ dir: path.join(dir, "audit"), sinks, checkpointEvery: 5, checkpointIntervalMs: 0, flushTimeoutMs: 200 });
      const recs = appendMany(log, 12);
      const all = [...recs, ...log.query({ kind: "audit" })].sort((a, b) => a.seq - b.seq);
      const deadline = Date.now() + 10_000;
      while (got.length < all.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assertComplete(got, all);
      const wrong = log.sinkStatus().find((s) => s.name === "wrongtoken")!;
      assert.equal(wrong.delivered_seq, 0, "a rejected sink does not advance");
      assert.match(wrong.last_error ?? "", /403: Invalid token \(code 4\)/);
      assert.ok(rejected > 0);
    } finally {
      await log?.close();
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("JSON Lines file sink", { timeout: 30_000 }, () => {
  it("writes one event per line, Petri JSON or OCSF", async () => {
    const dir = tmpDir();
    let log: AuditLog | undefined;
    try {
      const a = path.join(dir, "out", "petri.jsonl");
      const b = path.join(dir, "out", "ocsf.jsonl");
      log = AuditLog.open({ dir: path.join(dir, "audit"), sinks: parseSinkConfig(`file://${a}, file://${b}?format=ocsf`), checkpointIntervalMs: 0 });
      const recs = appendMany(log, 20);
      assert.equal(await log.waitForSinks(5000), true);
      const petri = fs.readFileSync(a, "utf8").trim().split("\n").map((l) => JSON.parse(l) as AuditRecord);
      assert.deepEqual(petri, recs);
      const ocsf = fs.readFileSync(b, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { class_uid: number; metadata: { uid: string } });
      assert.deepEqual(ocsf.map((e) => e.metadata.uid), recs.map((r) => r.id));
      assert.ok(ocsf.every((e) => e.class_uid === 1007));
    } finally {
      await log?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
