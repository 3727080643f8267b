import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { sweepDeadConformanceRuns } from "./conformance-sweep.js";

test("the programs and state of a dead conformance process are removed; a live one's are left alone", async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-sweep-"));
  const cg = path.join(root, "cgroup");
  const state = path.join(root, "state");
  const sleepers: ReturnType<typeof spawn>[] = [];
  try {
    const dead = spawnSync("true").pid!; // exited: its pid names the file that was killed
    const alive = process.ppid;
    const orphan = spawn("sleep", ["600"], { stdio: "ignore" });
    const kept = spawn("sleep", ["600"], { stdio: "ignore" });
    sleepers.push(orphan, kept);
    const orphanExit = new Promise<NodeJS.Signals | null>((r) => orphan.on("exit", (_c, s) => r(s)));
    // A hierarchy (it has cgroup.procs) holding one group of the dead file and one of a live one.
    for (const [name, pid] of [[`petri-conformance-${dead}-crun-datascience/r-1/c`, orphan.pid], [`petri-conformance-${alive}-crun-standard/r-2`, kept.pid]] as const) {
      fs.mkdirSync(path.join(cg, "pids", name), { recursive: true });
      fs.writeFileSync(path.join(cg, "pids", name, "cgroup.procs"), `${pid}\n`);
    }
    fs.writeFileSync(path.join(cg, "pids", "cgroup.procs"), "");
    fs.mkdirSync(path.join(state, `conformance-${dead}-crun-datascience`, "crun-direct"), { recursive: true });
    fs.mkdirSync(path.join(state, `conformance-${alive}-crun-standard`), { recursive: true });

    const killed = await sweepDeadConformanceRuns(cg, state);
    assert.equal(killed, 1);
    const stillRunning = new Promise<string>((r) => setTimeout(() => r("still running after 5 s"), 5000).unref());
    assert.equal(await Promise.race([orphanExit, stillRunning]), "SIGKILL", "the dead file's program is killed");
    assert.equal(kept.exitCode === null && kept.signalCode === null, true, "a live file's program runs on");
    assert.deepEqual(fs.readdirSync(state), [`conformance-${alive}-crun-standard`], "only the dead file's state is removed");
  } finally {
    for (const p of sleepers) p.kill("SIGKILL");
    fs.rmSync(root, { recursive: true, force: true });
  }
});
