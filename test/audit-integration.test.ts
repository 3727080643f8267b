import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";
import { toOcsf } from "../src/audit/index.js";

const petri = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/petri.js");

function grepDir(dir: string, needle: string): string[] {
  const hits: string[] = [];
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath ?? e.path, e.name);
    if (fs.readFileSync(p).includes(needle)) hits.push(p);
  }
  return hits;
}

describe("audit records of the engine", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => { await t.close(); });

  it("a scripted run that writes, renames, deletes and reads files is fully recorded", async () => {
    const sb = await createSandbox(t);
    await putFile(t, sb, "data.txt", "hello");
    await putFile(t, sb, "old.txt", "to delete");
    await putFile(t, sb, "script.py", [
      "open('new.txt', 'w').write('created')",
      "import os",
      "os.rename('data.txt', 'moved.txt')",
      "os.remove('old.txt')",
      "print(open('moved.txt').read())",
      "import socket",
      "try:\n    socket.create_connection(('10.0.0.1', 80), timeout=1)\nexcept OSError as e:\n    print('net', type(e).__name__)",
    ].join("\n"));
    const r = await exec(t, sb, { filename: "script.py", env: { API_TOKEN: "hunter2-super-secret-value" } });
    assert.equal(r.json.exit_code, 0, r.text);
    const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&limit=1000`)).json.items as any[];
    const byAction = (a: string) => recs.filter((x) => x.action === a);
    const start = byAction("exec.start")[0];
    const finish = byAction("exec.finish")[0];
    assert.ok(start && finish, JSON.stringify(recs.map((x) => x.action)));
    assert.deepEqual(finish.detail.argv, ["python3", "script.py"]);
    assert.equal(finish.detail.code_sha256, (await t.api("GET", `/v1/sandboxes/${sb}/files`)).json.files.find((f: any) => f.path === "script.py").sha256);
    assert.ok(finish.detail.env_names.includes("API_TOKEN"));
    assert.equal(finish.detail.exit_code, 0);
    assert.equal(finish.detail.stdout_bytes, Buffer.byteLength(r.json.stdout));
    assert.match(finish.detail.changes_sha256, /^[0-9a-f]{64}$/, "the change set's hash (whole-workspace hashes needed a walk)");
    assert.equal(finish.detail.changes_committed, true);
    assert.equal(finish.detail.runtime, "runc");
    assert.equal(typeof finish.detail.peak_memory_bytes, "number");
    assert.deepEqual(byAction("file.create").map((x) => x.detail.path), ["new.txt"]);
    assert.deepEqual(byAction("file.rename").map((x) => [x.detail.path, x.detail.new_path]), [["data.txt", "moved.txt"]]);
    assert.deepEqual(byAction("file.delete").map((x) => x.detail.path), ["old.txt"]);
    assert.equal(toOcsf(finish).class_uid, 1007, "exec → OCSF Process Activity");
    assert.equal(toOcsf(byAction("file.create")[0]).class_uid, 1001, "file → OCSF File System Activity");
    assert.match(finish.tenant_id, /^tn_/);
    for (const x of recs) assert.equal(x.tenant_id, finish.tenant_id);
    // No environment value, anywhere in the audit log.
    assert.deepEqual(grepDir(path.join(t.dataDir, "audit"), "hunter2-super-secret-value"), []);
  });

  it("API actions and authentication failures are recorded, tenant-scoped for readers", async () => {
    const other = (await t.api("POST", "/v1/keys", { body: { name: "reader" } })).json;
    const sb = await createSandbox(t);
    await t.api("DELETE", `/v1/sandboxes/${sb}`);
    assert.equal((await t.api("GET", "/v1/sandboxes", { key: "pk_not_a_key" })).status, 401);
    const mine = (await t.api("GET", `/v1/audit?sandbox_id=${sb}`)).json.items as any[];
    const create = mine.find((x) => x.action === "sandbox.create");
    assert.ok(create, JSON.stringify(mine.map((x) => x.action)));
    assert.equal(create.outcome, "success");
    assert.equal(create.kind, "api");
    assert.match(create.key_id, /^key_/);
    assert.equal(create.client_ip, "127.0.0.1");
    assert.ok(mine.some((x) => x.action === "sandbox.delete"));
    const fails = (await t.api("GET", "/v1/audit?action=auth.failure")).json.items as any[];
    assert.ok(fails.length >= 1);
    assert.equal(fails[fails.length - 1].outcome, "denied");
    assert.equal(toOcsf(fails[fails.length - 1]).class_uid, 3002, "auth failure → OCSF Authentication");
    const theirs = (await t.api("GET", `/v1/audit?sandbox_id=${sb}`, { key: other.token })).json.items;
    assert.deepEqual(theirs, [], "another tenant sees none of these records");
    assert.equal((await t.api("GET", "/v1/audit?tenant_id=tn_x", { key: other.token })).status, 403);
  });

  it("petri audit verify accepts the server's log and catches a changed byte", async () => {
    const dir = path.join(t.dataDir, "audit");
    t.server.audit.checkpoint();
    const ok = spawnSync(process.execPath, [petri, "audit", "verify", dir], { env: { ...process.env, PETRI_LOG_LEVEL: "silent" } });
    assert.equal(ok.status, 0, ok.stdout.toString() + ok.stderr.toString());
    const copy = fs.mkdtempSync(path.join(path.dirname(dir), "audit-copy-"));
    fs.cpSync(dir, copy, { recursive: true });
    const log = fs.readdirSync(copy).map((f) => path.join(copy, f)).find((f) => fs.statSync(f).isFile() && /\.(jsonl|log)$/.test(f))!;
    const text = fs.readFileSync(log, "utf8");
    fs.writeFileSync(log, text.replace('"sandbox.create"', '"sandbox.crEate"'));
    const bad = spawnSync(process.execPath, [petri, "audit", "verify", copy], { env: { ...process.env, PETRI_LOG_LEVEL: "silent" } });
    assert.equal(bad.status, 1, bad.stdout.toString());
  });
});
