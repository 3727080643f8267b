import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { LABEL_SANDBOX, PrestartGate } from "./launcher.js";
import type { RunSpec } from "./types.js";

const specOf = (sandbox?: string) => ({ labels: sandbox ? { [LABEL_SANDBOX]: sandbox } : {} }) as unknown as RunSpec;

describe("pre-start policy (PrestartGate)", () => {
  test("a sandbox's first run pre-starts nothing; a second run within the window does", () => {
    const gate = new PrestartGate(10_000);
    assert.equal(gate.allowsAfter(specOf("sb_a"), 1_000), false, "one run says nothing about the next");
    assert.equal(gate.allowsAfter(specOf("sb_a"), 5_000), true, "a second run within 10 s: another is likely");
    assert.equal(gate.allowsAfter(specOf("sb_a"), 14_000), true, "still used once per window");
    assert.equal(gate.allowsAfter(specOf("sb_b"), 14_000), false, "another sandbox has its own history");
  });

  test("a run after a pause longer than the window starts the count again", () => {
    const gate = new PrestartGate(10_000);
    gate.allowsAfter(specOf("sb_a"), 0);
    assert.equal(gate.allowsAfter(specOf("sb_a"), 30_000), false);
    assert.equal(gate.allowsAfter(specOf("sb_a"), 31_000), true);
  });

  test("a run counts as the sandbox's use until it ends: a run right after a long one pre-starts", () => {
    const gate = new PrestartGate(10_000);
    gate.allowsAfter(specOf("sb_a"), 0);
    gate.allowsAfter(specOf("sb_a"), 1_000);
    // That second run lasted three windows and ended at 31 s.
    gate.noteEnd(specOf("sb_a"), 31_000);
    assert.equal(gate.allowsAfter(specOf("sb_a"), 32_000), true, "used until a second ago");
  });

  test("track() records the run's end", async () => {
    const gate = new PrestartGate(10_000);
    gate.allowsAfter(specOf("sb_a"), Date.now() - 60_000);
    await gate.track(async () => undefined, specOf("sb_a"));
    assert.equal(gate.allowsAfter(specOf("sb_a")), true);
  });

  test("a quiet sandbox (one-request run) never pre-starts, whatever its pattern", () => {
    const gate = new PrestartGate(10_000);
    const done = gate.quietFor("sb_q");
    gate.allowsAfter(specOf("sb_q"), 0);
    assert.equal(gate.allowsAfter(specOf("sb_q"), 1), false);
    done();
    assert.equal(gate.allowsAfter(specOf("sb_q"), 2), true);
  });

  test("runs outside any sandbox keep pre-starting; the history stays bounded", () => {
    const gate = new PrestartGate(10_000, 100);
    assert.equal(gate.allowsAfter(specOf(), 0), true);
    for (let i = 0; i < 1000; i++) gate.allowsAfter(specOf(`sb_${i}`), 5);
    assert.ok((gate as unknown as { lastRun: Map<string, number> }).lastRun.size <= 101);
    assert.equal(gate.allowsAfter(specOf("sb_999"), 6), true, "the most recent sandboxes are remembered");
  });
});
