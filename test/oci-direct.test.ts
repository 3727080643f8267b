import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { strategyFor } from "../src/runtimes/detect.js";
import { rootfsDirFor } from "../src/images/build.js";
import { BUILTIN_IMAGES, recipeRef } from "../src/images/catalog.js";
import { hostProcessesWith } from "../src/runtimes/conformance.js";
import { OCI_STATE_ROOT } from "../src/server.js";
import { ViewPool } from "../src/exec/views.js";
import { freePort, waitHealthy } from "./helpers.js";

/**
 * The OCI runtimes called directly (no dockerd): a server killed with SIGKILL leaves its
 * containers running (the runtime's foreground process and the container outlive it); the next
 * start of the same instance must remove every one of them, their cgroups, bundles and root
 * overlays, and fail the interrupted run cleanly.
 */
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const petri = path.join(repo, "bin", "petri.js");
const STANDARD = recipeRef(BUILTIN_IMAGES.standard);
const RUNTIMES = ["runc-direct", "crun-direct", "runsc-direct"];
const probes = await Promise.all(RUNTIMES.map((r) => strategyFor(r, { image: STANDARD, rootfs: rootfsDirFor("/var/lib/petri/images", STANDARD), sandboxUid: 65600, sandboxGid: 65600 }).probe()));



async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

/** Cgroup directories of this runtime's instance parent, in every hierarchy. */
function runCgroups(parent: string): string[] {
  const out: string[] = [];
  for (const h of fs.readdirSync("/sys/fs/cgroup")) {
    const dir = path.join("/sys/fs/cgroup", h, parent);
    try {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(path.join(dir, e.name));
    } catch { /* no such parent here */ }
  }
  return out;
}

function mountsUnder(dir: string): string[] {
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]).filter((m) => m?.startsWith(dir + "/"));
}

describe("direct OCI runtimes: a crashed server's containers are reaped at the next start", () => {
  for (const [i, runtime] of RUNTIMES.entries()) {
    it(runtime, { skip: probes[i].available ? false : `SKIPPED: ${runtime} is not available on this host: ${probes[i].reason}` }, async () => {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-oci-kill-"));
      const port = await freePort();
      const key = "pk_oci_reaper_test_key_123456";
      // Pre-started containers on: after the first run one waits for the next, a second orphan.
      const env = { PETRI_DATA_DIR: dataDir, PETRI_PORT: String(port), PETRI_ADMIN_TOKEN: key, PETRI_WARM_IDLE_MS: "120000", PETRI_RUNTIMES: runtime, PETRI_LOG_LEVEL: "warn" };
      const url = `http://127.0.0.1:${port}`;
      const h = { authorization: `Bearer ${key}`, "content-type": "application/json" };
      const start = (): ChildProcess => spawn(process.execPath, [petri, "serve"], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
      const marker = `petri-oci-orphan-${Math.random().toString(36).slice(2)}`;
      let proc = start();
      let instance = "";
      try {
        await waitHealthy(url, 60_000);
        instance = (new Database(path.join(dataDir, "petri.db"), { readonly: true }).prepare("SELECT value FROM meta WHERE key='instance_id'").get() as { value: string }).value;
        const stateDir = path.join(OCI_STATE_ROOT, instance, runtime);
        const parent = `petri-${runtime}-${instance}`;
        const sb = (await (await fetch(`${url}/v1/sandboxes`, { method: "POST", headers: h, body: JSON.stringify({ language: "python", runtime }) })).json() as { id: string }).id;
        const first = await (await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: "print('first')" }) })).json() as { stdout: string };
        assert.equal(first.stdout, "first\n");
        const started = await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: `import time, sys; print(sys.argv); time.sleep(120)`, args: [marker], detach: true }) });
        assert.equal(started.status, 202);
        const running = (await started.json() as { id: string }).id;
        // gVisor's processes are not host processes: there the bundle says the run is live.
        // (A sandbox run once gets no pre-started unit, so the detached run's is the one bundle.)
        const live = () => (runtime === "runsc-direct" ? fs.readdirSync(path.join(stateDir, "bundles")).length >= 1 : hostProcessesWith(marker).length > 0);
        assert.ok(await waitFor(live, 30000), "the run is live");
        await new Promise((r) => setTimeout(r, 500));

        proc.kill("SIGKILL");
        await new Promise((r) => proc.once("exit", r));
        assert.ok(fs.readdirSync(path.join(stateDir, "bundles")).length >= 1, "the killed server left containers (orphans)");
        assert.ok(runCgroups(parent).length >= 1, "and their cgroups");
        assert.ok(mountsUnder(path.join(OCI_STATE_ROOT, instance)).length >= 1, "and its root overlay");
        if (runtime !== "runsc-direct") assert.ok(hostProcessesWith(marker).length > 0, "the orphan still runs");

        proc = start();
        await waitHealthy(url, 60_000);
        assert.ok(await waitFor(() => hostProcessesWith(marker).length === 0, 10000), `left running: ${hostProcessesWith(marker).join(", ")}`);
        assert.deepEqual(fs.readdirSync(path.join(stateDir, "bundles")), [], "no bundle left");
        assert.deepEqual(runCgroups(parent), [], "no run cgroup left");
        assert.deepEqual(mountsUnder(path.join(OCI_STATE_ROOT, instance)), [], "no root overlay left mounted");
        const rec = await (await fetch(`${url}/v1/sandboxes/${sb}/exec/${running}`, { headers: h })).json() as { status: string; error: { message: string } };
        assert.equal(rec.status, "failed");
        assert.match(rec.error.message, /server stopped/);
        const again = await (await fetch(`${url}/v1/sandboxes/${sb}/exec`, { method: "POST", headers: h, body: JSON.stringify({ code: "print('after')" }) })).json() as { stdout: string };
        assert.equal(again.stdout, "after\n", "the restarted server runs code again");
        // A clean stop leaves nothing either: no state, no cgroup parent, no mount.
        proc.kill("SIGTERM");
        await new Promise((r) => proc.once("exit", r));
        assert.equal(fs.existsSync(stateDir), false, "the state directory is removed at a clean stop");
        assert.deepEqual(mountsUnder(path.join(OCI_STATE_ROOT, instance)), []);
        assert.equal(fs.existsSync(path.join("/sys/fs/cgroup/memory", parent)), false, "the parent cgroup is removed");
      } finally {
        proc.kill("SIGKILL");
        // A server killed here (a failed assertion above) leaves its runs' workspace views mounted.
        await new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r(null) : proc.once("exit", r)));
        await ViewPool.cleanup(path.join(dataDir, "views")).catch(() => undefined);
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
    });
  }
});
