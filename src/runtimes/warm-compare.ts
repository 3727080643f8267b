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
/**
 * A documented difference of warm runs a probe prints on purpose: the cold output has `cold`, the
 * warm output has `warm` in its place (every occurrence), and is otherwise the same.
 */
export interface KnownDifference { cold: string; warm: string }

export function assertWarmMatchesCold(warm: RunResult, cold: RunResult, expected: true | "exec" | RegExp, differences: KnownDifference[] = []): void {
  assert.equal(warm.timings?.warm, 1, `a pre-started unit served the warm run\n${describeRun(warm)}`);
  if (expected === true) assert.equal(warm.timings?.interp, 1, `ran in the pre-started interpreter\n${describeRun(warm)}`);
  else if (expected === "exec") assert.equal(warm.timings?.interp, undefined, `handed over as an exec\n${describeRun(warm)}`);
  else {
    assert.equal(warm.timings?.interp, 0, `went cold\n${describeRun(warm)}`);
    assert.match(warm.warmFallback ?? "", expected);
  }
  assert.equal(cold.timings?.warm, undefined, "the cold run was cold");
  let coldOut = cold.stdout.toString();
  for (const d of differences) {
    assert.ok(coldOut.includes(d.cold), `the cold run shows ${JSON.stringify(d.cold)}\n${coldOut.slice(0, 3000)}`);
    assert.ok(warm.stdout.toString().includes(d.warm), `the warm run shows the documented difference ${JSON.stringify(d.warm)}\n${describeRun(warm)}`);
    coldOut = coldOut.replaceAll(d.cold, d.warm);
  }
  assert.equal(warm.stdout.toString(), coldOut, `stdout differs${differences.length ? " (beyond the documented differences)" : ""}\n${lineDiff(warm.stdout.toString(), coldOut)}`);
  assert.equal(warm.stderr.toString(), cold.stderr.toString(), `stderr differs\n${lineDiff(warm.stderr.toString(), cold.stderr.toString())}`);
  assert.equal(warm.exitCode, cold.exitCode, describeRun(warm));
  assert.equal(warm.signal, cold.signal, describeRun(warm));
}
