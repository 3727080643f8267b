import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { startTestServer, createSandbox, putFile, exec, containersOf, docker, freePort, waitHealthy } from "./helpers.js";
import { ViewPool } from "../src/exec/views.js";
import { LABEL_INSTANCE } from "../src/server.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const petri = path.join(repo, "bin", "petri.js");



function startProcess(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [petri, "serve"], { env: { ...process.env, ...env, PETRI_LOG_LEVEL: "warn" }, stdio: ["ignore", "ignore", "pipe"] });
}

describe("lifecycle", () => {
  it("SIGKILL of the server during a run: after restart no orphan container, workspace and records intact", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-kill-"));
    const port = await freePort();
    const key = "pk_lifecycle_test_key_123456";
    // No pre-started containers here, so the only container is the run's own.
    const env = { PETRI_DATA_DIR: dataDir, PETRI_PORT: String(port), PETRI_ADMIN_TOKEN: key, PETRI_WARM_IDLE_MS: "0", PETRI_RUNTIMES: "runc" };
    const url = `http://127.0.0.1:${port}`;
    const h = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    let proc = startProcess(env);
    try {
      await waitHealthy(url);
      const sb = (await (await fetch(`${url}/v1/sandboxes`, { method: "POST", headers: h, body: '{"language":"python"}' })).json() as any).id;
      await fetch(`${url}/v1/sandboxes/${sb}/files/keep.txt`, { method: "PUT", headers: { authorization: h.authorization }, body: "precious" });
      const done: any = await (await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: "print('first')" }) })).json();
      assert.equal(done.stdout, "first\n");
      const started = await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: "import time; open('during.txt','w').write('x'); time.sleep(60)", detach: true }) });
      assert.equal(started.status, 202);
      const running = (await started.json() as any).id;
      const instance = (new Database(path.join(dataDir, "petri.db"), { readonly: true }).prepare("SELECT value FROM meta WHERE key='instance_id'").get() as { value: string }).value;
      // The run's container (and, with pre-started containers on, one waiting for the next run).
      const runContainers = async () => (await docker.listContainers({ all: true, filters: { label: [`io.jhansi.petri.exec=${running}`] } })).length;
      const until = Date.now() + 30000;
      while ((await runContainers()) === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await runContainers(), 1, "the run's container is live");
      proc.kill("SIGKILL");
      await new Promise((r) => proc.once("exit", r));
      assert.equal(await runContainers(), 1, "the container outlived the killed server (an orphan)");
      assert.ok(await containersOf(instance) >= 1);

      proc = startProcess(env);
      await waitHealthy(url);
      assert.equal(await containersOf(instance), 0, "the restarted server reaped the orphan");
      const file = await fetch(`${url}/v1/sandboxes/${sb}/files/keep.txt`, { headers: h });
      assert.equal(await file.text(), "precious");
      const rec: any = await (await fetch(`${url}/v1/sandboxes/${sb}/exec/${running}`, { headers: h })).json();
      assert.equal(rec.status, "failed");
      assert.match(rec.error.message, /server stopped/);
      const first: any = await (await fetch(`${url}/v1/sandboxes/${sb}/exec/${done.id}`, { headers: h })).json();
      assert.equal(first.stdout, "first\n", "earlier records intact");
      const again: any = await (await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: "print(open('keep.txt').read())" }) })).json();
      assert.equal(again.stdout, "precious\n");
    } finally {
      proc.kill("SIGKILL");
      const left = await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}`] } });
      for (const c of left.filter((c) => c.Labels["io.jhansi.petri.sandbox"] && fs.existsSync(path.join(dataDir, "workspaces", c.Labels["io.jhansi.petri.sandbox"])))) {
        await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
      }
      // A SIGKILLed server leaves its runs' workspace views mounted (a restart unmounts them).
      await ViewPool.cleanup(path.join(dataDir, "views")).catch(() => undefined);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("an expired sandbox is destroyed by the reaper; an idle sandbox runs no container", async () => {
    const t = await startTestServer({ PETRI_REAPER_INTERVAL_MS: "200" });
    try {
      const sb = await createSandbox(t, { language: "python", idle_timeout_ms: 1500 });
      const keep = await createSandbox(t, { language: "python" });
      await putFile(t, sb, "a.txt", "x");
      assert.equal(await containersOf(t.server.instanceId), 0, "an idle sandbox has no container");
      const ws = path.join(t.dataDir, "workspaces", sb);
      assert.ok(fs.existsSync(ws));
      const until = Date.now() + 10000;
      while ((await t.api("GET", `/v1/sandboxes/${sb}`)).status === 200 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
      assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 404);
      assert.equal(fs.existsSync(ws), false, "its workspace is gone");
      assert.equal((await t.api("GET", `/v1/sandboxes/${keep}`)).status, 200, "a live sandbox stays");
    } finally {
      await t.close();
    }
  });

  it("idle expiry never removes a sandbox with a run in flight or queued; it expires once they are done", async () => {
    const t = await startTestServer({ PETRI_REAPER_INTERVAL_MS: "200", PETRI_WARM_IDLE_MS: "0" });
    try {
      const sb = await createSandbox(t, { language: "bash", idle_timeout_ms: 1000 });
      const ws = path.join(t.dataDir, "workspaces", sb);
      // The first run outlives the idle timeout several times over; the second waits for its turn.
      const first = await exec(t, sb, { code: "sleep 4; echo one > one.txt", detach: true });
      const second = await exec(t, sb, { code: "cat one.txt > two.txt", detach: true });
      assert.equal(first.status, 202, first.text);
      assert.equal(second.status, 202, second.text);
      const results: Record<string, any> = {};
      for (const until = Date.now() + 120_000; Object.keys(results).length < 2 && Date.now() < until;) {
        assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 200, "the sandbox stays while a run is in flight or queued");
        for (const id of [first.json.id, second.json.id]) {
          const r = await t.api("GET", `/v1/sandboxes/${sb}/exec/${id}`);
          if (r.json.status !== "running") results[id] = r.json;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(results[first.json.id]?.exit_code, 0, JSON.stringify(results));
      assert.equal(results[second.json.id]?.exit_code, 0, JSON.stringify(results));
      assert.equal(results[second.json.id].committed, true);
      assert.equal(fs.readFileSync(path.join(ws, "two.txt"), "utf8"), "one\n", "the queued run saw the first run's commit");
      // Once idle, it expires as any other sandbox.
      const until = Date.now() + 15000;
      while ((await t.api("GET", `/v1/sandboxes/${sb}`)).status === 200 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
      assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 404, "an idle sandbox expires");
      assert.equal(fs.existsSync(ws), false);
      assert.deepEqual(fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(t.dataDir + "/views/vw_")), [], "no view of it stays mounted");
    } finally {
      await t.close();
    }
  });

  it("activity pushes the idle expiry out, never past the TTL", async () => {
    const t = await startTestServer();
    try {
      const created = (await t.api("POST", "/v1/sandboxes", { body: { language: "python", idle_timeout_ms: 60000, ttl_ms: 90000 } })).json;
      await new Promise((r) => setTimeout(r, 50));
      await exec(t, created.id, { code: "print(1)" });
      const after = (await t.api("GET", `/v1/sandboxes/${created.id}`)).json;
      assert.ok(Date.parse(after.expires_at) > Date.parse(created.expires_at));
      assert.ok(Date.parse(after.expires_at) <= Date.parse(created.created_at) + 90000);
    } finally {
      await t.close();
    }
  });

  it("CLI creates keys that work, stored hashed; a revoked key stops at once", async () => {
    const t = await startTestServer();
    try {
      const env = { ...process.env, PETRI_DATA_DIR: t.dataDir, PETRI_LOG_LEVEL: "silent" };
      const out = execFileSync(process.execPath, [petri, "keys", "create", "--name", "ci"], { env }).toString();
      const token = out.trim().split("\n").pop()!;
      const keyId = /key (key_[0-9a-z]+)/.exec(out)![1];
      assert.match(token, /^pk_/);
      assert.equal((await t.api("GET", "/v1/sandboxes", { key: token })).status, 200);
      const db = fs.readFileSync(path.join(t.dataDir, "petri.db"));
      const wal = fs.existsSync(path.join(t.dataDir, "petri.db-wal")) ? fs.readFileSync(path.join(t.dataDir, "petri.db-wal")) : Buffer.alloc(0);
      assert.equal(db.includes(token) || wal.includes(token), false, "the token itself is not stored");
      assert.equal(db.includes(t.adminKey) || wal.includes(t.adminKey), false);
      assert.equal((await t.api("DELETE", `/v1/keys/${keyId}`)).status, 204);
      assert.equal((await t.api("GET", "/v1/sandboxes", { key: token })).status, 401);
    } finally {
      await t.close();
    }
  });

  it("without PETRI_ADMIN_TOKEN a bootstrap key is generated into a 0600 file", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-boot-"));
    const port = await freePort();
    const proc = startProcess({ PETRI_DATA_DIR: dataDir, PETRI_PORT: String(port), PETRI_ADMIN_TOKEN: "" });
    try {
      await waitHealthy(`http://127.0.0.1:${port}`);
      const file = path.join(dataDir, "admin.key");
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      const key = fs.readFileSync(file, "utf8").trim();
      const r = await fetch(`http://127.0.0.1:${port}/v1/sandboxes`, { headers: { authorization: `Bearer ${key}` } });
      assert.equal(r.status, 200);
    } finally {
      proc.kill("SIGKILL");
      // A SIGKILLed server leaves its run scratch made ahead mounted (a restart unmounts it).
      if (proc.exitCode === null && proc.signalCode === null) await new Promise((r) => proc.once("exit", r));
      await ViewPool.cleanup(path.join(dataDir, "views")).catch(() => undefined);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
