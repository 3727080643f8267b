import assert from "node:assert/strict";
import { mock, test } from "node:test";
import { armTimeLimit } from "./run-io.js";
import { IMPORT_WAIT_MAX_MS, StatusFrame } from "./warm.js";

const frameLine = (s: string) => Buffer.from(`\0petri-warm:${s}\n`);

test("a run handed over while the unit imports: its time limit starts when the imports are done", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const f = new StatusFrame(() => undefined);
    f.push(frameLine("importing"));
    const out: string[] = [];
    f.handover((b) => out.push(b.toString()), true);
    let timedOut = 0;
    let started = 0;
    const limit = armTimeLimit(f, 1500, () => { timedOut++; }, () => { started++; });
    // The imports take longer than the run's own limit: the run is not timed out for that.
    mock.timers.tick(5000);
    assert.equal(timedOut, 0);
    f.push(Buffer.concat([frameLine("ready"), frameLine("1"), Buffer.from("hello\n")]));
    assert.equal(started, 1, "the program's start is told (CPU time counts from there)");
    assert.deepEqual(out, ["hello\n"]);
    mock.timers.tick(1499);
    assert.equal(timedOut, 0);
    mock.timers.tick(1);
    assert.equal(timedOut, 1, "the full limit, from the program's start");
    limit.clear();
  } finally {
    mock.timers.reset();
  }
});

test("a unit ready at hand-over: the limit runs from the hand-over; a unit that never gets ready is ended", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const ready = new StatusFrame(() => undefined);
    ready.push(Buffer.concat([frameLine("importing"), frameLine("ready")]));
    ready.handover(() => undefined, true);
    let timedOut = 0;
    armTimeLimit(ready, 1500, () => { timedOut++; });
    mock.timers.tick(1500);
    assert.equal(timedOut, 1);
    const stuck = new StatusFrame(() => undefined);
    stuck.push(frameLine("importing"));
    stuck.handover(() => undefined, true);
    let ended = 0;
    armTimeLimit(stuck, 1500, () => { ended++; });
    mock.timers.tick(1500 + IMPORT_WAIT_MAX_MS - 1);
    assert.equal(ended, 0);
    mock.timers.tick(1);
    assert.equal(ended, 1, "the wait for imports is bounded");
    // Without a warm interpreter the limit is the plain one.
    let plain = 0;
    armTimeLimit(undefined, 100, () => { plain++; });
    mock.timers.tick(100);
    assert.equal(plain, 1);
  } finally {
    mock.timers.reset();
  }
});
