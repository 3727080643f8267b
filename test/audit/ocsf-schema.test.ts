import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import https from "node:https";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { OcsfSchema, findOcsfSchema } from "./ocsf-schema.js";
import { toOcsf, type AuditRecord } from "../../src/audit/index.js";
import { brokerAuditEvent } from "../../src/exec/audit-events.js";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "../helpers.js";
import { makeTestCa, randomPassword, scramVerifier, startPostgres, type PgServer } from "../vault/support.js";

/**
 * Every OCSF class Petri emits, checked against the official OCSF 1.1.0 schema (its source files
 * in ../shared/ocsf-schema-1.1.0 beside the checkout): unknown attributes, missing required
 * ones, types, enums and profiles are all errors.
 */
const here = path.dirname(fileURLToPath(import.meta.url));
const root = findOcsfSchema(here);

describe("OCSF 1.1.0 schema validation", { skip: root ? false : "the OCSF 1.1.0 schema is not in ../shared/ocsf-schema-1.1.0 beside the checkout" }, () => {
  let schema: OcsfSchema;
  before(() => { schema = new OcsfSchema(root!); });

  const base = {
    id: "au_0123456789abcdef01234567", seq: 7, time: "2026-11-30T08:00:00.000Z", tenant_id: "tn_1", key_id: "key_1", sandbox_id: "sb_1",
    exec_id: "ex_1", client_ip: "127.0.0.1", request_id: "req-1", error_code: null, prev_hash: "0".repeat(64), hash: "1".repeat(64),
  };
  const rec = (r: Partial<AuditRecord>): AuditRecord => ({ ...base, detail: {}, ...r } as AuditRecord);
  const broker = (ev: Parameters<typeof brokerAuditEvent>[0]) => rec({ ...brokerAuditEvent(ev, { tenant_id: "tn_1", key_id: "key_1", sandbox_id: "sb_1", exec_id: "ex_1" }) } as Partial<AuditRecord>);

  it("the validator itself catches what 1.1.0 does not allow", () => {
    const ev = toOcsf(rec({ kind: "exec", action: "exec.finish", outcome: "success", detail: { argv: ["python3"] } }));
    assert.deepEqual(schema.validate(ev), []);
    assert.match(schema.validate({ ...ev, container: { uid: "sb_1" } }).join(), /container: not an attribute/);
    assert.match(schema.validate({ ...ev, process: { ...(ev.process as object), pid: "12" } }).join(), /pid: "12" is not a integer_t/);
    const { severity_id: _s, ...noSeverity } = ev;
    assert.match(schema.validate(noSeverity).join(), /severity_id: required/);
    assert.match(schema.validate({ ...ev, activity_id: 42, type_uid: 100742 }).join(), /42 is not in the enum/);
  });

  it("every class Petri emits, from records as the services write them", () => {
    const records: AuditRecord[] = [
      rec({ kind: "exec", action: "exec.start", outcome: "success", detail: { argv: ["python3", "main.py"], image: "petri/runtime:1", runtime: "runc", entry: "main.py", code_sha256: "ab".repeat(32) } }),
      rec({ kind: "exec", action: "exec.finish", outcome: "failure", error_code: "NONZERO_EXIT", detail: { argv: ["python3", "main.py"], exit_code: 3, duration_ms: 10, image: "petri/runtime:1" } }),
      rec({ kind: "process", action: "process.exec", outcome: "success", detail: { path: "/bin/true", argv: ["/bin/true"], pid: 4242, uid: 1000, count: 2, source: "ebpf" } }),
      rec({ kind: "file", action: "file.open", outcome: "denied", error_code: "EACCES", detail: { path: "/etc/shadow", access: "read", flags: "O_RDONLY", count: 1, pid: 4242, source: "ebpf" } }),
      rec({ kind: "file", action: "file.create", outcome: "success", detail: { path: "out.csv", type: "file", size: 3, sha256: "cd".repeat(32), source: "workspace_diff" } }),
      rec({ kind: "file", action: "file.rename", outcome: "success", detail: { path: "a.txt", new_path: "b.txt", type: "file" } }),
      rec({ kind: "network", action: "net.connect", outcome: "denied", error_code: "ENETUNREACH", detail: { ip: "10.1.2.3", port: 8443, family: "inet", count: 1, source: "ebpf" } }),
      rec({ kind: "network", action: "net.connect", outcome: "failure", error_code: "ENOENT", detail: { socket_path: "/var/run/nscd/socket", family: "unix", count: 1 } }),
      rec({ kind: "network", action: "dns.query", outcome: "success", detail: { hostname: "example.org", count: 1, source: "ebpf" } }),
      broker({ kind: "network", action: "http_request", outcome: "success", detail: { scheme: "https", host: "api.example.com", port: 443, method: "POST", path: "/v1/x", status: 200, bytesSent: 12, durationMs: 40, secret: "API" } }),
      broker({ kind: "network", action: "connect", outcome: "denied", detail: { target: "10.0.0.1:80", host: "10.0.0.1", port: 80, reason: "private_address" } }),
      broker({ kind: "datastore", action: "connect", outcome: "success", detail: { connection: 1, secret: "db", host: "127.0.0.1", port: 5432, database: "app", user: "app", tls: false, auth: "scram" } }),
      broker({ kind: "datastore", action: "query", outcome: "success", detail: { connection: 1, secret: "db", protocol: "simple", statement: "SELECT 1" } }),
      rec({ kind: "api", action: "sandbox.list", outcome: "success", detail: { method: "GET", route: "/v1/sandboxes", status: 200 } }),
      rec({ kind: "api", action: "file.get", outcome: "denied", error_code: "SANDBOX_NOT_FOUND", detail: { method: "GET", route: "/v1/sandboxes/:id/files/*", status: 404, path: "a.txt" } }),
      rec({ kind: "auth", action: "auth.failure", outcome: "failure", error_code: "UNAUTHORIZED", key_id: null, detail: { reason: "unknown key", key_prefix: "pk_abc" } }),
      rec({ kind: "audit" as AuditRecord["kind"], action: "audit.checkpoint", outcome: "success", tenant_id: null, key_id: null, sandbox_id: null, exec_id: null,
        detail: { checkpoint: { v: 1, seq: 6, hash: "1".repeat(64), time: base.time }, algorithm: "Ed25519", signature: "x", key_fingerprint: "sha256:00", public_key: "y" } }),
    ];
    const classes = new Set<number>();
    for (const r of records) {
      const ev = toOcsf(r);
      classes.add(ev.class_uid as number);
      assert.deepEqual(schema.validate(ev), [], `${r.action}: ${JSON.stringify(ev)}`);
    }
    assert.deepEqual([...classes].sort((a, b) => a - b), [0, 1001, 1007, 3002, 4001, 4002, 4003, 6003, 6005]);
    const proc = toOcsf(records[2]!) as { process: { pid: number; user: { uid: string } } };
    assert.equal(proc.process.pid, 4242);
    assert.equal(proc.process.user.uid, "1000");
  });

  /**
   * A scripted workload on a real server: a traced runc run (files, programs, a refused connect,
   * a name looked up), the HTTP broker to a real HTTPS upstream and the PostgreSQL broker to a
   * real PostgreSQL (4002, 6005), runs that exit 3, time out and run out of memory (failures in
   * OCSF too), API reads, a refusal and an authentication failure, a checkpoint.
   */
  describe("a scripted workload on a real server", () => {
    let t: TestServer;
    let pg: PgServer | null = null;
    let work: string;
    let upstream: https.Server;
    let port = 0;
    const PASSWORD = "pw_" + randomPassword();
    before(async () => {
      work = fs.mkdtempSync(path.join(os.tmpdir(), "petri-ocsf-"));
      const ca = makeTestCa(path.join(work, "ca"), { dns: ["localhost"], ips: ["127.0.0.1"] });
      upstream = https.createServer({ cert: ca.serverCert, key: ca.serverKey }, (_req, res) => res.end("hello from upstream"));
      await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
      port = (upstream.address() as net.AddressInfo).port;
      pg = await startPostgres();
      pg.sql(`CREATE ROLE app LOGIN PASSWORD '${scramVerifier(PASSWORD)}'; CREATE DATABASE appdb OWNER app;`);
      t = await startTestServer({ PETRI_RUNTIMES: "runc", PETRI_EGRESS_PRIVATE_HOSTS: "127.0.0.0/8" });
      await t.server.tracer.ready();
      assert.equal((await t.api("PUT", "/v1/secrets/db", { body: { kind: "postgres", value: PASSWORD, config: { host: "127.0.0.1", port: pg.port, database: "appdb", user: "app" } } })).status, 201);
      assert.equal((await t.api("PUT", "/v1/secrets/api", { body: { kind: "http", value: "tok_" + randomPassword(), config: { hosts: [`127.0.0.1:${port}`], upstreamCa: ca.caCert } } })).status, 201);
    });
    after(async () => {
      await t?.close();
      await pg?.stop();
      upstream?.close();
      if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("every record it produces validates", async () => {
      const traced = t.server.tracer.active;
      const sb = await createSandbox(t, { language: "python", secrets: ["db", "api"] });
      await putFile(t, sb, "in.txt", "x");
      await putFile(t, sb, "main.py", [
        "import socket, subprocess, urllib.request, psycopg2",
        "open('out.txt','w').write(open('in.txt').read())",
        "subprocess.run(['true'])",
        "subprocess.run(['getent', 'ahosts', 'ocsf-probe.example'], stdout=subprocess.DEVNULL)",
        "try:\n    socket.create_connection(('10.9.9.9', 80), timeout=1)\nexcept OSError:\n    pass",
        `print(urllib.request.urlopen('https://127.0.0.1:${port}/x', timeout=20).read().decode())`,
        "conn = psycopg2.connect(''); cur = conn.cursor(); cur.execute('SELECT 1'); print(cur.fetchone()[0])",
        "raise SystemExit(3)",
      ].join("\n"));
      const r = await exec(t, sb, { filename: "main.py", timeout_ms: 120_000 });
      assert.equal(r.json.exit_code, 3, r.text);
      assert.match(r.json.stdout, /hello from upstream\n1\n/, r.text);
      const slow = await exec(t, sb, { code: "while True: pass", timeout_ms: 1000 });
      assert.equal(slow.json.timed_out, true, slow.text);
      const big = await exec(t, sb, { code: "x = bytearray(400 * 1024 * 1024)\nprint(len(x))", limits: { memory_mb: 64 } });
      assert.equal(big.json.oom_killed, true, big.text);
      await t.api("GET", `/v1/sandboxes/${sb}/files`);
      await t.api("GET", "/v1/sandboxes/sb_doesnotexist");
      await t.api("GET", "/v1/sandboxes", { key: "pk_wrong" });
      t.server.audit.checkpoint();
      const all = (await t.api("GET", "/v1/audit?limit=1000")).json.items as AuditRecord[];
      assert.ok(all.length > 10);
      const classes = new Set<number>();
      for (const x of all) {
        const ev = toOcsf(x);
        classes.add(ev.class_uid as number);
        assert.deepEqual(schema.validate(ev), [], `${x.action}: ${JSON.stringify(ev)}`);
      }
      const expected = [0, 1001, 1007, 3002, 4002, 6003, 6005, ...(traced ? [4001, 4003] : [])];
      for (const c of expected) assert.ok(classes.has(c), `class ${c} among ${[...classes]}`);
      const outcomes: [string, string][] = [[r.json.id, "NONZERO_EXIT"], [slow.json.id, "TIMEOUT"], [big.json.id, "OOM_KILLED"]];
      for (const [id, code] of outcomes) {
        const finish = all.find((x) => x.action === "exec.finish" && x.exec_id === id)!;
        assert.equal(finish.outcome, "failure", code);
        assert.equal(finish.error_code, code);
        assert.ok(finish.detail.reason, `${code}: a reason`);
        const ev = toOcsf(finish) as { status_id: number; status_code?: string; status_detail?: string };
        assert.equal(ev.status_id, 2, `${code} is a failure in OCSF`);
        assert.equal(ev.status_code, code);
        assert.ok(ev.status_detail);
      }
    });
  });
});
