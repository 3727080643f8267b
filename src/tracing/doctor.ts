import type { RuntimeProbe } from "../runtimes/detect.js";
import { tracerPrerequisites } from "./tracer.js";

/** The audit part of `petri doctor`: which level of audit each working runtime's runs get, and why. */
export function auditDoctorText(probes: RuntimeProbe[], runscTrace?: RuntimeProbe): string {
  const pre = tracerPrerequisites();
  const ok = (id: string) => probes.some((p) => p.available && (p.id === id || p.id.endsWith(`/${id}`) || p.variant === id));
  const lines = ["Audit of runs:"];
  for (const rt of ["runc", "crun", "bwrap", "runc-direct", "crun-direct"]) {
    if (!ok(rt)) continue;
    lines.push(pre.ok
      ? `  ${rt}: eBPF (programs, files opened, network attempts, DNS names) — bpftrace, BTF, tracepoints and cgroup v2 present`
      : `  ${rt}: workspace changes only — NOT traced: ${pre.reason}`);
  }
  if (ok("runsc")) {
    lines.push(runscTrace?.available
      ? "  runsc: gVisor strace (programs, files opened, connects) through runsc-trace"
      : `  runsc: workspace changes only — NOT traced: runsc-trace does not work (${runscTrace?.reason ?? "not probed"}; run scripts/setup.sh)`);
  }
  const direct = probes.find((p) => p.available && p.id === "runsc-direct");
  if (direct) {
    lines.push(direct.trace?.ok
      ? "  runsc-direct: gVisor strace (programs, files opened, connects), per run"
      : `  runsc-direct: workspace changes only — NOT traced: ${direct.trace?.reason ?? "gVisor's strace was not tried"}`);
  }
  if (lines.length === 1) lines.push("  no runtime works here");
  return lines.join("\n");
}
