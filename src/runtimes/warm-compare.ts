import assert from "node:assert/strict";
import type { RunResult } from "./types.js";

/** Helpers shared by the warm-vs-cold equivalence suites (Python: warm-conformance.ts; Node: warm-conformance-node.ts). */

/** The lines that differ, for a readable failure. */
export function lineDiff(a: string, b: string): string {
  const x = a.split("\n");
  const y = b.split("\n");
  const out: string[] = [];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if (x[i] !== y[i]) out.push(`line ${i + 1}:\n  warm: ${x[i]?.slice(0, 400)}\n  cold: ${y[i]?.slice(0, 400)}`);
  return out.join("\n");
}

export function describeRun(r: RunResult): string {
  return `exit ${r.exitCode} signal ${r.signal} warm ${r.timings?.warm} interp ${r.timings?.interp} fallback ${r.warmFallback}\nstdout: ${r.stdout.toString().slice(0, 3000)}\nstderr: ${r.stderr.toString().slice(0, 2000)}`;
}

/**
 * The warm run was served by a pre-started unit and took the expected path — in its interpreter
 * (true), handed over as an exec ("exec"), or cold with a reason matching the pattern — and the
 * user saw exactly what the cold run showed: stdout, stderr, exit code, signal.
 */
export function assertWarmMatchesCold(warm: RunResult, cold: RunResult, expected: true | "exec" | RegExp): void {
  assert.equal(warm.timings?.warm, 1, `a pre-started unit served the warm run\n${describeRun(warm)}`);
  if (expected === true) assert.equal(warm.timings?.interp, 1, `ran in the pre-started interpreter\n${describeRun(warm)}`);
  else if (expected === "exec") assert.equal(warm.timings?.interp, undefined, `handed over as an exec\n${describeRun(warm)}`);
  else {
    assert.equal(warm.timings?.interp, 0, `went cold\n${describeRun(warm)}`);
    assert.match(warm.warmFallback ?? "", expected);
  }
  assert.equal(cold.timings?.warm, undefined, "the cold run was cold");
  assert.equal(warm.stdout.toString(), cold.stdout.toString(), `stdout differs\n${lineDiff(warm.stdout.toString(), cold.stdout.toString())}`);
  assert.equal(warm.stderr.toString(), cold.stderr.toString(), `stderr differs\n${lineDiff(warm.stderr.toString(), cold.stderr.toString())}`);
  assert.equal(warm.exitCode, cold.exitCode, describeRun(warm));
  assert.equal(warm.signal, cold.signal, describeRun(warm));
}
