import assert from "node:assert/strict";
import fs from "node:fs";
import { describe, test } from "node:test";
import { DockerRuntime } from "./docker.js";
import { conformanceMatrix, docker, GID, skipReason, standardRunscProbe, TESTED_IMAGES, UID } from "./conformance-matrix.js";

// Part of the conformance matrix (conformance-matrix.ts says what the parts are and why).
// Cold runs through Docker (runc, crun, runsc), every image; and proof that runsc is gVisor.
await conformanceMatrix({ images: TESTED_IMAGES, modes: ["off"], families: ["docker"] });
const runsc = await standardRunscProbe();

describe("docker/runsc really is gVisor", { skip: skipReason(runsc.probe) }, () => {
  test("the guest kernel is gVisor's, and a runsc sandbox process exists on the host while it runs", async () => {
    const runtime = new DockerRuntime({ docker: docker!, ociRuntime: "runsc" });
    const ws = fs.mkdtempSync("/tmp/petri-conf-gvisor-");
    try {
      fs.chownSync(ws, UID, GID);
      let sawSandbox = false;
      const r = await runtime.run({
        ...runsc.baseSpec(ws),
        argv: ["sh", "-c", "cat /proc/version; echo ready; sleep 1"],
        onStdout: (b) => {
          if (b.toString().includes("ready")) sawSandbox = hostHasRunscSandbox();
        },
      });
      const out = r.stdout.toString();
      assert.equal(r.exitCode, 0, r.stderr.toString());
      // gVisor's Sentry reports a fixed Linux 4.4.0 build. (Its dmesg, which says "Starting gVisor",
      // is the syslog call, refused under Petri's seccomp profile as on every other runtime.)
      assert.match(out, /^Linux version 4\.4\.0 #1 SMP Sun Jan 10 15:06:54 PST 2016$/m, "the kernel inside is not gVisor's");
      assert.ok(sawSandbox, "no runsc-sandbox process on the host during the run");
      // The host kernel is not what the sandbox sees.
      assert.ok(!out.includes(fs.readFileSync("/proc/version", "utf8").trim()), "the guest sees the host kernel's version string");
    } finally {
      fs.rmSync(ws, { recursive: true, force: true });
    }
  });
});

function hostHasRunscSandbox(): boolean {
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, "utf8").startsWith("runsc-sandbox")) return true;
    } catch { /* gone */ }
  }
  return false;
}
