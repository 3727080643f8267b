import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { auditDoctorText } from "./doctor.js";
import { runAuditLevel } from "../exec/audit-events.js";
import type { RuntimeProbe } from "../runtimes/detect.js";
import type { Runtime } from "../runtimes/types.js";

const direct = (trace?: RuntimeProbe["trace"]): RuntimeProbe => ({ id: "runsc-direct", name: "runsc-direct", variant: "runsc-direct", available: true, reason: "ok", ...(trace ? { trace } : {}) });

describe("runsc-direct's audit level", () => {
  it("petri doctor says it is traced only when the probe's test run showed gVisor's strace", () => {
    assert.match(auditDoctorText([direct({ ok: true, reason: "seen" })]), /runsc-direct: gVisor strace \(programs, files opened, connects\)/);
    assert.match(auditDoctorText([direct({ ok: false, reason: "the test container left no gVisor strace log" })]), /runsc-direct: workspace changes only — NOT traced: the test container left no gVisor strace log/);
    assert.match(auditDoctorText([direct()]), /runsc-direct: workspace changes only — NOT traced/);
  });

  it("each run's record says gvisor-strace when the runtime traces, else why not", () => {
    const rt = (gvisorTrace: boolean) => ({ variant: "runsc-direct", gvisorTrace }) as unknown as Runtime;
    assert.deepEqual(runAuditLevel("runsc-direct", rt(true)), { level: "gvisor-strace", reason: null });
    const off = runAuditLevel("runsc-direct", rt(false));
    assert.equal(off.level, "workspace-diff");
    assert.match(off.reason ?? "", /not traced/);
  });
});
