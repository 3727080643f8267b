import { after, before, describe, test } from "node:test";
import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { DEFAULT_IMAGE } from "../src/images/recipe.js";
import { LABEL_INSTANCE } from "../src/server.js";
import { createSandbox, exec, startTestServer, type TestServer } from "./helpers.js";
import { OwnDockerd } from "./own-dockerd.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, f: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("engine faults are told as they are (own dockerd, stopped and started during runs)", () => {
  const engine = new OwnDockerd("faults");
  let t: TestServer;
  before(async () => {
    await engine.start();
    await engine.ensureImage(DEFAULT_IMAGE);
    // The periodic reaper is what the test calls at its end (reapNow): its own timer must not tick
    // first and remove the dead containers the test checks the engine kept (a slow run did).
    t = await startTestServer({ PETRI_DOCKER_SOCKET: engine.socket, PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "120000", PETRI_REAPER_INTERVAL_MS: "3600000" });
  });
  after(async () => {
    await engine.start().catch(() => undefined);
    await t?.close();
    await engine.stop();
  });

  test("a run lost to the engine fails with ENGINE_LOST; the dead pre-started container is discarded; readiness follows the engine; the reaper cleans up", async () => {
    const rt = t.server.runtimes.get("runc")!;
    const sb = await createSandbox(t, { language: "python" });
    // Two runs: from its second run on a sandbox gets a pre-started container (the pre-start policy).
    for (let i = 0; i < 2; i++) {
      const first = await exec(t, sb, { code: "print('warm-up')" });
      assert.equal(first.json.exit_code, 0, first.text);
    }
    await until("a pre-started container", () => (rt.prestartStats?.().ready ?? 0) > 0);

    const ready = await t.api("GET", "/readyz");
    assert.equal(ready.status, 200, ready.text);
    assert.ok(ready.json.checks.some((c: { name: string; ok: boolean }) => c.name === "docker_engine" && c.ok));

    const running = exec(t, sb, { code: "import time\nprint('started', flush=True)\ntime.sleep(60)" });
    // The run takes the pre-started container (a hit), then the program sleeps.
    const hits = rt.prestartStats!().hits;
    await until("the run to take the pre-started container", () => rt.prestartStats!().hits > hits);
    // A pre-started container waiting through the outage: a unit is pre-started after a run's
    // result (on the next run's workspace view), so the sleeping run has none behind it yet;
    // another sandbox's two finished runs leave one.
    const sb2 = await createSandbox(t, { language: "python" });
    for (let i = 0; i < 2; i++) assert.equal((await exec(t, sb2, { code: "print(2)" })).json.exit_code, 0);
    await until("a pre-started container for the other sandbox", () => (rt.prestartStats?.().ready ?? 0) > 0);
    await sleep(1500);
    await engine.stop();
    const lost = await running;
    assert.equal(lost.status, 200, lost.text);
    assert.equal(lost.json.status, "failed", lost.text);
    assert.equal(lost.json.error?.code, "ENGINE_LOST", lost.text);
    assert.match(lost.json.error.message, /engine/i);
    assert.equal(lost.json.exit_code, null);
    assert.equal(lost.json.signal, null, "no signal is blamed on the program");

    await sleep(1100); // readiness caches for a second
    const down = await t.api("GET", "/readyz");
    assert.equal(down.status, 503, down.text);
    assert.ok(down.json.checks.some((c: { name: string; ok: boolean }) => c.name === "docker_engine" && !c.ok), down.text);
    assert.equal((await t.api("GET", "/healthz")).status, 200, "liveness is not readiness");

    await engine.start();
    await sleep(1100);
    assert.equal((await t.api("GET", "/readyz")).status, 200);

    // The sandbox's next run really runs (its pre-started container died with the engine).
    const next = await exec(t, sb, { code: "print('after the restart')" });
    assert.equal(next.json.status, "completed", next.text);
    assert.equal(next.json.exit_code, 0, next.text);
    assert.equal(next.json.stdout, "after the restart\n");
    assert.equal(next.json.error, null);
    const next2 = await exec(t, sb2, { code: "print('other after the restart')" });
    assert.equal(next2.json.stdout, "other after the restart\n", next2.text);

    const metrics = (await t.api("GET", "/metrics", { key: null })).text;
    assert.match(metrics, /petri_engine_faults_total\{runtime="runc",kind="run_lost"\} [1-9]/);
    assert.match(metrics, /petri_runs_total\{runtime="runc",language="python",outcome="ENGINE_LOST"\} 1/);

    // What the engine kept of the lost run (its removal failed while the engine was down) is
    // removed by the periodic reaper, without a server restart.
    const mine = `${LABEL_INSTANCE}=${t.server.instanceId}`;
    await until("the run after the restart to be removed", async () => !(await engine.containers(mine)).some((c) => c.State !== "running"), 10_000).catch(() => undefined);
    const before = (await engine.containers(mine)).filter((c) => c.State !== "running");
    assert.ok(before.length > 0, "the engine kept the dead containers (the fault this test is about)");
    await t.server.reapNow();
    const left = (await engine.containers(mine)).filter((c) => c.State !== "running");
    assert.deepEqual(left.map((c) => `${c.Id.slice(0, 12)} ${c.State}`), []);
  });
});

/** Pids of bwrap helpers this test process started (the server runs in-process). */
function bwrapChildren(): number[] {
  const r = spawnSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)], { encoding: "utf8" });
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)).filter((p) => p[1] === "bwrap").map((p) => Number(p[0]));
}

describe("bwrap: its helper killed from outside during a run", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_RUNTIMES: "bwrap", PETRI_WARM_IDLE_MS: "120000" }); });
  after(async () => { await t?.close(); });

  test("the run fails as ENGINE_LOST, not as the program's signal; a killed pre-started helper is replaced by a cold start", async (ctx) => {
    if (!t.server.runtimes.has("bwrap")) {
      ctx.skip("SKIPPED: bwrap is not available on this host");
      return;
    }
    const rt = t.server.runtimes.get("bwrap")!;
    const sb = await createSandbox(t, { language: "python", runtime: "bwrap" });
    for (let i = 0; i < 2; i++) assert.equal((await exec(t, sb, { code: "print('warm-up')" })).json.exit_code, 0);
    await until("a pre-started bwrap sandbox", () => (rt.prestartStats?.().ready ?? bwrapChildren().length) > 0 && bwrapChildren().length > 0);

    // The pre-started helper is killed: the next run must still run, cold.
    for (const pid of bwrapChildren()) process.kill(pid, "SIGKILL");
    await sleep(300);
    const cold = await exec(t, sb, { code: "print('ran anyway')" });
    assert.equal(cold.json.stdout, "ran anyway\n", cold.text);
    assert.equal(cold.json.error, null);

    await until("the replacement pre-started sandbox", () => bwrapChildren().length > 0);
    const running = exec(t, sb, { code: "import time\nprint('started', flush=True)\ntime.sleep(60)" });
    await sleep(1500);
    const helpers = bwrapChildren();
    assert.ok(helpers.length > 0, "the run's bwrap helper is a child of the server");
    for (const pid of helpers) process.kill(pid, "SIGKILL");
    const lost = await running;
    assert.equal(lost.json.status, "failed", lost.text);
    assert.equal(lost.json.error?.code, "ENGINE_LOST", lost.text);
    assert.match(lost.json.error.message, /bwrap helper was killed/);
    assert.equal(lost.json.signal, null);
    const after = await exec(t, sb, { code: "print('still fine')" });
    assert.equal(after.json.stdout, "still fine\n", after.text);
  });
});
