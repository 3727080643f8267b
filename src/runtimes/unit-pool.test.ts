import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { LANGUAGES } from "../exec/languages.js";
import { UnitPool } from "./unit-pool.js";
import { LABEL_SANDBOX } from "./launcher.js";
import { StatusFrame, inProcess, passOverWhileImporting, unitPlan } from "./warm.js";
import type { RunSpec } from "./types.js";

const spec = (over: Partial<RunSpec> = {}): RunSpec => ({
  image: "img", rootfs: "/r", argv: ["python3", "-c", "import pandas"], env: { PATH: "/usr/bin:/bin" }, cwd: "/workspace",
  mounts: [{ source: "/w", target: "/workspace", readonly: false }],
  limits: { memoryBytes: 1, cpus: 1, pids: 1, openFiles: 1, fileSizeBytes: 1, tmpfsBytes: 1 },
  timeoutMs: 1000, outputLimitBytes: 1000, uid: 1, gid: 1, labels: {}, interpreter: LANGUAGES.python.warm, ...over,
});

interface Unit { n: number; dead?: boolean }

function pool(idleMs = 60_000) {
  const discarded: Array<[number, string]> = [];
  let n = 0;
  const p = new UnitPool<Unit>({ idleMs, images: new Set(["img"]) }, { alive: (u) => !u.dead, discard: (u, why) => void discarded.push([u.n, why]) });
  return { p, discarded, start: () => ({ n: ++n }) };
}

describe("pre-started units (UnitPool)", () => {
  test("one unit per shape, used once; a run of another shape or image misses", () => {
    const { p, start } = pool();
    p.replenish(spec(), start);
    p.replenish(spec(), start);
    assert.equal(p.stats().ready, 1, "one per shape");
    assert.deepEqual(p.take(spec({ image: "other" })), {}, "an image never pre-started is not a miss");
    assert.deepEqual(p.take(spec({ cwd: "/x", mounts: [] })), {}, "another shape misses");
    assert.equal(p.take(spec()).unit?.n, 1);
    assert.deepEqual(p.take(spec()), {}, "used once");
    assert.deepEqual(p.stats(), { ready: 0, hits: 1, misses: 2, passedOver: 0, importing: 0, starting: 0, predicted: 0 });
  });

  test("a sandbox alternating forms gets units in the form of its next run; one repeating or switching for good, in its own", () => {
    const { p } = pool();
    const node = (argv: string[]) => spec({
      argv, interpreter: LANGUAGES.node.warm, labels: { [LABEL_SANDBOX]: "sb_1" },
      mounts: [{ source: "/w", target: "/workspace", readonly: false }, { source: "/a", target: "/petri/agent", readonly: true }],
    });
    const file = node(["node", "main.js"]);
    const snippet = node(["node", "-e", "LOADER", "/petri/snippet/ex_1/snippet.js"]);
    const runs = [file, snippet, file, snippet, file, snippet, snippet, snippet, file, file];
    const served: boolean[] = [];
    let waiting: RunSpec | undefined;
    for (const r of runs) {
      served.push(waiting !== undefined && p.take(r).unit !== undefined && inProcess(unitPlan(waiting, { interpreters: true }), r));
      waiting = undefined;
      p.replenish(r, (next) => { waiting = next; return { n: 1 }; });
    }
    // Run 1 leaves nothing (a sandbox's first run), runs 3 and 4 find the previous run's form
    // (cold); from the fifth run on the alternation is seen (before: every run cold); the
    // switches to snippets (run 7) and back to files (run 9) cost one cold run each, as before.
    assert.deepEqual(served, [false, false, false, false, true, true, false, true, false, true]);
    assert.equal(p.stats().predicted, 3);
    // One run of another form (a different env, say) is no alternation: the unit after the
    // return to the usual form is of that form (A, A, B, A: A), as before.
    const q = pool().p;
    const odd = node(["node", "main.js"]);
    odd.env = { ...odd.env, EXTRA: "1" };
    let last: RunSpec | undefined;
    for (const r of [file, file, odd, file]) q.replenish(r, (next) => { last = next; return { n: 1 }; });
    assert.ok(last && inProcess(unitPlan(last, { interpreters: true }), file), "the unit after A, A, B, A serves A");
    assert.equal(q.stats().predicted, 0);
  });

  test("a dead unit is discarded and the run misses; an idle one expires", async () => {
    const { p, discarded, start } = pool(30);
    p.replenish(spec(), () => ({ n: 7, dead: true }));
    assert.deepEqual(p.take(spec()), {});
    assert.deepEqual(discarded, [[7, "dead"]]);
    p.replenish(spec(), start);
    await new Promise((r) => setTimeout(r, 80));
    assert.deepEqual(discarded[1], [1, "expired"]);
    assert.equal(p.stats().ready, 0);
  });

  test("a unit passed over stays for the next run; a start that throws keeps nothing", () => {
    const { p, start } = pool();
    p.replenish(spec(), () => { throw new Error("no"); });
    assert.equal(p.stats().ready, 0);
    p.replenish(spec(), start);
    assert.deepEqual(p.take(spec(), () => "busy"), { passedOver: "busy" });
    assert.equal(p.take(spec(), () => null).unit?.n, 1);
    assert.deepEqual(p.stats(), { ready: 0, hits: 1, misses: 0, passedOver: 1, importing: 0, starting: 0, predicted: 0 });
  });

  test("units that have not said ready are counted as starting until they do", () => {
    const frames = new Map<number, StatusFrame>();
    let n = 0;
    const p = new UnitPool<Unit>({ idleMs: 60_000, images: new Set(["img"]) }, {
      alive: () => true, discard: () => undefined,
      importing: (u) => frames.get(u.n)?.phase === "importing",
      starting: (u) => frames.get(u.n)?.phase !== "ready",
    });
    p.replenish(spec(), () => { frames.set(++n, new StatusFrame(() => undefined)); return { n }; });
    assert.deepEqual([p.stats().starting, p.stats().importing], [1, 0], "spawned, interpreter not up");
    frames.get(1)!.push(Buffer.from("\0petri-warm:importing\n"));
    assert.deepEqual([p.stats().starting, p.stats().importing], [1, 1]);
    frames.get(1)!.push(Buffer.from("\0petri-warm:ready\n"));
    assert.deepEqual([p.stats().starting, p.stats().importing], [0, 0], "ready");
  });

  test("asynchronous starts are tracked while preparing; a unit that arrives after close is discarded", async () => {
    const { p, discarded } = pool();
    let resolve!: (u: Unit) => void;
    p.replenish(spec(), () => new Promise<Unit>((r) => { resolve = r; }));
    assert.equal(p.preparing.size, 1);
    p.replenish(spec(), () => { throw new Error("a second start of a shape being prepared"); });
    assert.deepEqual(p.close(), []);
    resolve({ n: 3 });
    await Promise.all(p.preparing.values());
    assert.deepEqual(discarded, [[3, "closed"]]);
    assert.equal(p.preparing.size, 0);
  });
});

describe("warm unit frames (StatusFrame) and runs arriving during the imports", () => {
  const FRAME = (s: string) => Buffer.from(`\0petri-warm:${s}\n`);

  test("importing/ready before the hand-over are read; the status after it; output passes on", () => {
    const out: Buffer[] = [];
    const f = new StatusFrame(() => assert.fail("nothing passes before the hand-over"));
    f.push(Buffer.concat([FRAME("importing"), Buffer.from("\0petri-warm:rea")]));
    assert.equal(f.phase, "importing");
    f.push(Buffer.from("dy\n"));
    assert.equal(f.phase, "ready");
    f.handover((b) => out.push(b), true);
    f.push(Buffer.concat([FRAME("1"), Buffer.from("hello\n")]));
    f.push(FRAME("1"));
    f.end();
    assert.deepEqual(f.status, { warm: true });
    assert.equal(Buffer.concat(out).toString(), "hello\n\0petri-warm:1\n", "after the status everything is the program's");
    assert.equal(f.importWaitMs, undefined, "it was ready before the hand-over");
  });

  test("a run handed over while importing: the frames not read yet are taken off its output, the wait recorded", () => {
    const out: Buffer[] = [];
    const f = new StatusFrame(() => undefined);
    f.push(FRAME("importing"));
    f.handover((b) => out.push(b), false);
    f.push(Buffer.concat([FRAME("ready"), Buffer.from("\0petri-warm:1\nprogram")]));
    f.end();
    assert.equal(Buffer.concat(out).toString(), "\0petri-warm:1\nprogram", "an exec'd run's output is all its own");
    assert.equal(f.status, null);
    assert.equal(typeof f.importWaitMs, "number");
  });

  test("output that does not begin with a frame passes untouched", () => {
    const out: Buffer[] = [];
    const f = new StatusFrame(() => undefined);
    f.handover((b) => out.push(b), true);
    f.push(Buffer.from("plain"));
    assert.equal(Buffer.concat(out).toString(), "plain");
  });

  test("who waits for the imports: a run in the interpreter using the stack; others start cold at once", () => {
    const unit = unitPlan(spec(), { interpreters: true });
    const importing = new StatusFrame(() => undefined);
    importing.push(FRAME("importing"));
    assert.equal(passOverWhileImporting(unit, importing, spec()), null, "a snippet importing pandas waits");
    assert.equal(passOverWhileImporting(unit, importing, spec({ argv: ["python3", "main.py"] })), null, "a file is read by the unit: it waits");
    assert.match(passOverWhileImporting(unit, importing, spec({ argv: ["python3", "-c", "print(1)"] })) ?? "", /does not import/);
    assert.match(passOverWhileImporting(unit, importing, spec({ env: { PATH: "/usr/bin:/bin", X: "1" } })) ?? "", /would not run in it/);
    const ready = new StatusFrame(() => undefined);
    ready.push(Buffer.concat([FRAME("importing"), FRAME("ready")]));
    assert.equal(passOverWhileImporting(unit, ready, spec({ argv: ["python3", "-c", "print(1)"] })), null, "a ready unit serves every run");
  });

  test("the data stack's unit is told to freeze it; PYTHONHASHSEED=random (Python's default) keeps a unit a plain launcher: a cold start on request", () => {
    const unit = unitPlan(spec(), { interpreters: true });
    assert.equal(unit.kind, "python");
    assert.equal(unit.argv[6], "freeze", "after PRELOAD TRIGGERS FIRST_USE (warm-python.ts reads sys.argv[4])");
    assert.equal(unitPlan(spec({ interpreter: { ...LANGUAGES.python.warm!, freeze: false } }), { interpreters: true }).argv[6], "");
    // The escape hatch docs/warm.md ("The frozen stack") names: a run or sandbox env with it starts python3 afresh.
    const cold = spec({ env: { PATH: "/usr/bin:/bin", PYTHONHASHSEED: "random" } });
    assert.equal(unitPlan(cold, { interpreters: true }).kind, "launcher");
  });
});
