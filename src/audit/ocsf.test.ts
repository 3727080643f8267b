import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { toOcsf } from "./ocsf.js";
import type { AuditRecord } from "./types.js";

function rec(over: Partial<AuditRecord>): AuditRecord {
  return {
    id: "au_0123456789abcdef01234567", seq: 42, time: "2025-01-02T03:04:05.678Z",
    kind: "api", action: "sandbox.create", outcome: "success",
    tenant_id: "t_acme", key_id: "key_1", sandbox_id: "sb_1", exec_id: null, client_ip: "10.0.0.7", request_id: "req-1", error_code: null,
    detail: {}, prev_hash: "a".repeat(64), hash: "b".repeat(64), ...over,
  };
}

type O = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function common(e: O, classUid: number, activityId: number): void {
  assert.equal(e.class_uid, classUid);
  assert.equal(e.activity_id, activityId);
  assert.equal(e.type_uid, classUid * 100 + activityId);
  assert.equal(e.category_uid, Math.floor(classUid / 1000));
  assert.equal(e.time, Date.parse("2025-01-02T03:04:05.678Z"));
  assert.equal(e.metadata.version, "1.1.0");
  assert.deepEqual(e.metadata.product, { name: "Petri", vendor_name: "Jhansi.io", version: "9.9.9" });
  assert.equal(e.metadata.uid, "au_0123456789abcdef01234567");
  assert.equal(e.metadata.sequence, 42);
  assert.equal(e.unmapped.petri.hash, "b".repeat(64));
  assert.ok(Number.isInteger(e.severity_id));
  assert.ok([1, 2].includes(e.status_id));
}

const opts = { productVersion: "9.9.9", hostname: "petri-host" };

describe("OCSF mapping", () => {
  it("API activity (6003)", () => {
    const e = toOcsf(rec({ detail: { method: "POST", route: "/v1/sandboxes", status: 201 } }), opts) as O;
    common(e, 6003, 1);
    assert.equal(e.api.operation, "sandbox.create");
    assert.equal(e.api.request.uid, "req-1");
    assert.equal(e.api.response.code, 201);
    assert.equal(e.actor.user.uid, "key_1");
    assert.equal(e.src_endpoint.ip, "10.0.0.7");
    assert.equal(e.metadata.tenant_uid, "t_acme");
    const del = toOcsf(rec({ action: "sandbox.delete", outcome: "denied", error_code: "FORBIDDEN" }), opts) as O;
    common(del, 6003, 4);
    assert.equal(del.status, "Failure");
    assert.equal(del.status_code, "FORBIDDEN");
    assert.equal(del.severity_id, 3);
  });

  it("Authentication (3002) for a failed key", () => {
    const e = toOcsf(rec({ kind: "auth", action: "auth.failure", outcome: "failure", key_id: null, tenant_id: null, error_code: "UNAUTHORIZED", detail: { reason: "unknown key", key_prefix: "pk_ab" } }), opts) as O;
    common(e, 3002, 1);
    assert.equal(e.status_id, 2);
    assert.equal(e.status_detail, "unknown key");
    assert.equal(e.user.uid, "pk_ab");
    assert.equal(e.src_endpoint.ip, "10.0.0.7");
  });

  it("Process Activity (1007) for a run", () => {
    const start = toOcsf(rec({ kind: "exec", action: "exec.start", exec_id: "ex_1", detail: { argv: ["python3", "/workspace/main.py", "it's"], entry_file: "/workspace/main.py", code_sha256: "c".repeat(64), image: "petri/python", runtime: "runc", env: ["HOME"] } }), opts) as O;
    common(start, 1007, 1);
    assert.equal(start.process.uid, "ex_1");
    assert.equal(start.process.name, "python3");
    assert.equal(start.process.cmd_line, "python3 /workspace/main.py 'it'\\''s'");
    assert.deepEqual(start.process.file.hashes, [{ algorithm_id: 3, algorithm: "SHA-256", value: "c".repeat(64) }]);
    assert.equal(start.container, undefined, "OCSF 1.1.0: no top-level container on System Activity");
    assert.equal(start.process.container.uid, "sb_1");
    assert.ok(start.metadata.profiles.includes("container"));
    assert.equal(start.device.hostname, "petri-host");
    assert.deepEqual(start.unmapped.detail.env, ["HOME"]);
    const fin = toOcsf(rec({ kind: "exec", action: "exec.finish", outcome: "failure", exec_id: "ex_1", detail: { exit_code: 3, duration_ms: 120 } }), opts) as O;
    common(fin, 1007, 2);
    assert.equal(fin.exit_code, 3);
    assert.equal(fin.duration, 120);
  });

  it("File System Activity (1001): create, rename, delete, read", () => {
    const mk = (action: string, detail: O) => toOcsf(rec({ kind: "file", action, exec_id: "ex_1", detail }), opts) as O;
    const c = mk("file.create", { path: "/workspace/out.txt", size: 5, sha256: "d".repeat(64) });
    common(c, 1001, 1);
    assert.equal(c.file.name, "out.txt");
    assert.equal(c.file.size, 5);
    assert.equal(c.actor.process.uid, "ex_1");
    const r = mk("file.rename", { path: "/workspace/a", new_path: "/workspace/b" });
    common(r, 1001, 5);
    assert.equal(r.file_result.path, "/workspace/b");
    common(mk("file.delete", { path: "/workspace/a" }), 1001, 4);
    common(mk("file.read", { path: "/workspace/a" }), 1001, 2);
    common(mk("file.modify", { path: "/workspace/a" }), 1001, 3);
  });

  it("HTTP Activity (4002) and Network Activity (4001)", () => {
    const h = toOcsf(rec({ kind: "network", action: "net.request", exec_id: "ex_1", detail: { method: "GET", host: "api.example.com", port: 443, path: "/v1/x", status: 200, bytes_in: 10, bytes_out: 2, secret_name: "EXAMPLE_KEY" } }), opts) as O;
    common(h, 4002, 3);
    assert.equal(h.http_request.url.hostname, "api.example.com");
    assert.equal(h.http_response.code, 200);
    assert.equal(h.dst_endpoint.port, 443);
    assert.equal(h.disposition_id, 1);
    assert.equal(h.unmapped.detail.secret_name, "EXAMPLE_KEY");
    const n = toOcsf(rec({ kind: "network", action: "net.connect", outcome: "denied", detail: { host: "10.1.2.3", port: 5432, reason: "not in allow list" } }), opts) as O;
    common(n, 4001, 5);
    assert.equal(n.disposition_id, 2);
    assert.equal(n.action, "Denied");
    assert.equal(n.status_detail, "not in allow list");
    common(toOcsf(rec({ kind: "network", action: "net.close", detail: { host: "x" } }), opts) as O, 4001, 2);
  });

  it("Datastore Activity (6005)", () => {
    const e = toOcsf(rec({ kind: "datastore", action: "db.query", exec_id: "ex_1", detail: { engine: "PostgreSQL", database: "app", query: "SELECT 1", host: "db", port: 5432 } }), opts) as O;
    common(e, 6005, 4);
    assert.equal(e.database.name, "app");
    assert.equal(e.database.type_id, 1);
    assert.equal(e.query_info.query_string, "SELECT 1");
  });

  it("checkpoints become Base Events carrying the signature", () => {
    const e = toOcsf(rec({ kind: "audit", action: "audit.checkpoint", detail: { checkpoint: { v: 1, seq: 41 }, signature: "sig" } }), opts) as O;
    assert.equal(e.class_uid, 0);
    assert.equal(e.type_uid, 99);
    assert.equal(e.unmapped.detail.signature, "sig");
  });
});
