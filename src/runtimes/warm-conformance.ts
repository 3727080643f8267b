import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { LANGUAGES } from "../exec/languages.js";
import type { RunResult, RunSpec, Runtime } from "./types.js";
import { nodeWarmSection } from "./warm-conformance-node.js";
import { assertWarmMatchesCold, describeRun, type KnownDifference } from "./warm-compare.js";

/**
 * Warm and cold paths of one runtime, side by side (docs/warm.md): every probe runs once in a
 * pre-started interpreter (warm runtime; the test fails unless the run really ran in it, or
 * really went cold where it must) and once cold (a runtime without pre-starting), on the same
 * workspace, and what the user observes must be the same: stdout, stderr, exit code, signal.
 *
 * One workspace per suite, so all runs have one shape: each run pre-starts the unit the next
 * one uses, and the workspace is changed between the two, as users do.
 */
export interface WarmSubject {
  warm: Runtime;
  cold: Runtime;
  /** A runnable spec for this workspace (image, rootfs, uid, limits…); argv and env are set here. */
  baseSpec: (workspaceDir: string) => RunSpec;
}

interface Probe {
  title: string;
  files?: Record<string, string>;
  /** Paths removed before the run (left by an earlier probe). */
  remove?: string[];
  argv: string[];
  stdin?: string;
  env?: Record<string, string>;
  /** true: must run in the pre-started interpreter; a RegExp: must go cold with a matching reason; "exec": handed over as exec. */
  path: true | RegExp | "exec";
  /** Only on images with the data stack. */
  datascience?: boolean;
  /** Also on images with the data stack (where it goes cold by the memory rule); else there it is skipped (CI time). */
  both?: boolean;
  /** Documented differences the probe prints on purpose (docs/warm.md); all else must match. */
  differences?: KnownDifference[];
}

/** The unit froze the data stack for the collector (docs/warm.md, "The frozen stack"): said, not ignored. */
const FROZEN: KnownDifference = { cold: "gc frozen False", warm: "gc frozen True" };

const PROBE = `import sys, os
g = {k: (type(v).__name__, v if isinstance(v, (str, type(None), int)) else "") for k, v in list(globals().items())}
print("globals", g)
print("argv", sys.argv, "orig", sys.orig_argv)
print("path", sys.path)
print("cwd", os.getcwd(), "file", globals().get("__file__"), "main", __name__ == "__main__")
print("env", sorted((k, v) for k, v in os.environ.items() if k != "HOSTNAME"))
print("flags", sys.flags)
print("cmdline", open("/proc/self/cmdline").read().rstrip("\\0").split("\\0"))
print("stdin", repr(sys.stdin.read()))
print("loader", type(__loader__).__name__, __spec__, __package__, __doc__)
import warnings
warnings.warn("careful")
`;

/** The data stack's state a program can observe, before and after it plots (see its probe). */
const DS_STATE = `import gc, hashlib, io, os, sys
import matplotlib
from matplotlib import font_manager as fm, rcsetup
import PIL.Image
def state(when):
    raw = dict.__getitem__(matplotlib.rcParams, "backend")
    print(when, "backend", raw if raw is not rcsetup._auto_backend_sentinel else "auto",
          "rc changed", sorted(k for k, v in matplotlib.rcParams.items() if k != "backend" and str(v) != str(matplotlib.rcParamsDefault[k])),
          "rc orig", sorted(k for k, v in matplotlib.rcParamsOrig.items() if k != "backend" and str(v) != str(matplotlib.rcParamsDefault[k])))
    print(when, "fonts", fm._get_font.cache_info().currsize, fm.FontManager._findfont_cached.cache_info().currsize,
          "cache dir", sorted(os.listdir(matplotlib.get_cachedir())))
    print(when, "pil", PIL.Image._initialized, sorted(PIL.Image.OPEN), sorted(PIL.Image.SAVE), sorted(PIL.Image.EXTENSION))
    print(when, "units", sorted(str(k) for k in matplotlib.units.registry), "gc frozen", gc.get_freeze_count() > 0)
    print(when, "log", [(l, logging.getLogger(l).level, len(logging.getLogger(l).handlers)) for l in ("matplotlib", "PIL", "pandas")])
import logging
state("start")
import matplotlib.pyplot as plt
import pandas as pd
print("pyplot", plt.get_fignums(), matplotlib.get_backend(auto_select=False), pd.get_option("plotting.backend"))
state("pyplot")
df = pd.DataFrame({"x": range(20), "y": [i % 3 for i in range(20)]})
ax = df.plot(x="x", y="y", title="t")
print("figure", ax.figure.number, plt.get_fignums(), matplotlib.get_backend())
buf = io.BytesIO()
plt.savefig(buf, format="png")
print("png", hashlib.sha256(buf.getvalue()).hexdigest())
plt.savefig("/tmp/state.png")
print("next figure", plt.figure().number)
state("end")
`;

/**
 * The program's own garbage with the stack frozen. Prints what a cold start prints: counts that
 * depend on the stack's objects (how many the collector found, gc.get_objects()'s length) are
 * compared as facts, not numbers.
 */
const gcProbe = (stack: "pandas" | "os") => `import gc, sys, weakref
import ${stack} as pre
class Node:
    def __init__(self, name):
        self.name, self.other = name, None
    def __del__(self):
        print("finalised", self.name, flush=True)
def pair(name):
    a, b = Node(name + ".a"), Node(name + ".b")
    a.other, b.other = b, a
    return a
x = pair("collect"); ref = weakref.ref(x, lambda r: print("weakref callback", flush=True)); del x
print("alive before collect", ref() is not None)
print("collect found the cycle", gc.collect() >= 2, ref() is None)
y = pair("automatic"); ref = weakref.ref(y); del y
keep = [[i] for i in range(20000)]
print("automatic collection", ref() is None)
mine, holder = [1, 2], {}
holder["k"] = mine
print("tracked", gc.is_tracked(mine), any(o is mine for o in gc.get_objects()), any(o is holder for o in gc.get_objects()))
print("referrers", any(r is holder for r in gc.get_referrers(mine)), "referents", gc.get_referents(holder) == [mine])
${stack === "pandas" ? `df = pre.DataFrame({"a": [1, 2]}); df.attrs["self"] = df; ref = weakref.ref(df); del df
gc.collect()
print("own DataFrame cycle collected", ref() is None)
` : ""}pre.petri_probe = pair("hung on a pre-imported module"); ref = weakref.ref(pre.petri_probe); del pre.petri_probe
gc.collect()
print("collected once unhooked", ref() is None)
z = pair("left for the exit")
print("gc frozen", gc.get_freeze_count() > 0, "enabled", gc.isenabled(), "garbage", gc.garbage)
`;

/** gc.unfreeze() at the start: the collector sees everything again, and the exit finalises as cold. */
const gcUnfreeze = (stack: "pandas" | "os") => `import gc, ${stack} as pre
gc.unfreeze()
print("frozen", gc.get_freeze_count())
print("objects include what existed before", any(o is vars(pre) for o in gc.get_objects()), any(o is globals() for o in gc.get_objects()))
class Late:
    def __del__(self):
        print("finalised at exit", flush=True)
cycle = Late(); cycle.me = cycle
gc.collect()
print("done")
`;

const PROBES: Probe[] = [
  { title: "a file: __main__, argv, orig_argv, path, cwd, env, flags, cmdline, stdin, warnings", files: { "probe.py": PROBE }, argv: ["python3", "probe.py", "a b", "-x"], stdin: "in\nput", path: true, both: true },
  { title: "a snippet: the same for -c", argv: ["python3", "-c", PROBE, "arg"], stdin: "", path: true },
  {
    title: "an uncaught exception: the traceback (with the source line) and exit status 1",
    files: { "boom.py": "def f(x):\n    return 1 / x\n\nprint('before', flush=True)\nf(0)\n" }, argv: ["python3", "boom.py"], path: true, both: true,
  },
  { title: "an uncaught exception in a snippet: the traceback shows the -c source", argv: ["python3", "-c", "x = 1\nraise ValueError(f'bad {x}')"], path: true },
  { title: "sys.exit(n), sys.exit(message)", argv: ["python3", "-c", "import sys; print('o'); sys.exit(3)"], path: true },
  { title: "sys.exit with a message", argv: ["python3", "-c", "import sys; sys.exit('bye')"], path: true },
  { title: "a syntax error", files: { "bad.py": "print('x'\n" }, argv: ["python3", "bad.py"], path: true },
  { title: "a signal the program sends itself", argv: ["python3", "-c", "import os, signal; print('x', flush=True); os.kill(os.getpid(), signal.SIGTERM)"], path: true },
  {
    title: "KeyboardInterrupt: traceback, atexit, then death by SIGINT",
    argv: ["python3", "-c", "import atexit\natexit.register(print, 'atexit ran')\nraise KeyboardInterrupt"], path: true,
  },
  {
    title: "threads and atexit finish before exit",
    argv: ["python3", "-c", "import threading, time, atexit\natexit.register(print, 'atexit')\nthreading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\nprint('main')"], path: true,
  },
  {
    title: "workspace modules, pickling a class of __main__, if __name__ == '__main__'",
    files: { "lib/util.py": "def twice(x):\n    return 2 * x\n", "app.py": "import pickle, lib.util\nclass C:\n    pass\nif __name__ == '__main__':\n    print(lib.util.twice(21), type(pickle.loads(pickle.dumps(C()))).__module__)\n" },
    argv: ["python3", "app.py"], path: true,
  },
  {
    title: "the interpreter's own objects frozen: the program's cycles are collected and finalised as cold (gc.collect, automatic, at exit)",
    files: { "gcprobe.py": gcProbe("os") }, argv: ["python3", "gcprobe.py"], path: true, differences: [FROZEN],
  },
  { title: "gc.unfreeze() first: the collector's cold-start view", argv: ["python3", "-c", gcUnfreeze("os")], path: true },
  {
    title: "a workspace module named like one the interpreter already imported goes cold, and is the one imported",
    files: { "linecache.py": "print('workspace linecache')\n" }, argv: ["python3", "-c", "import linecache"], path: /would shadow/,
  },

  {
    title: "pandas and matplotlib from the image, pre-imported",
    remove: ["linecache.py"], files: { "plot.py": "import pandas as pd, matplotlib.pyplot as plt\ndf = pd.DataFrame({'a': [1, 2, 3]})\nplt.plot(df.a)\nplt.savefig('/tmp/f.png')\nprint(df.a.sum(), pd.__file__, plt.get_backend())\n" },
    argv: ["python3", "plot.py"], path: true, datascience: true,
  },
  {
    // Whatever the unit did ahead (imports, first-use imports) must leave no state a program can
    // see: no figure, no chosen backend, no changed rcParams, no filled cache or registry, no
    // write to matplotlib's cache dir, no frozen objects; and the drawing must be the same bytes.
    title: "with the data stack pre-imported: pyplot, rcParams, backend, font and image caches, cache dir are a cold start's; the same PNG; the stack is frozen for gc (the documented difference)",
    files: { "state.py": DS_STATE }, argv: ["python3", "state.py"], path: true, datascience: true, differences: [FROZEN],
  },
  {
    // With the stack frozen, the program's own objects are still the collector's as on a cold
    // start: explicit and automatic collections, __del__ of cycles during the run and at exit,
    // weakref callbacks, gc.get_objects()/get_referrers() for what the program made.
    title: "with the data stack frozen: the program's own cycles are collected and finalised as cold (gc.collect, automatic, at exit)",
    files: { "gcprobe.py": gcProbe("pandas") }, argv: ["python3", "gcprobe.py"], path: true, datascience: true, differences: [FROZEN],
  },
  {
    title: "with the data stack frozen: a program that calls gc.unfreeze() first gets the collector's cold-start view back",
    argv: ["python3", "-c", gcUnfreeze("pandas")], path: true, datascience: true,
  },
  {
    title: "with the data stack pre-imported: a file's __main__, argv, path, env, cmdline, stdin, warnings",
    files: { "dsprobe.py": "import numpy\n" + PROBE }, argv: ["python3", "dsprobe.py", "x"], stdin: "data", path: true, datascience: true,
  },
  {
    title: "with the data stack pre-imported: a snippet's uncaught exception inside pandas",
    argv: ["python3", "-c", "import pandas as pd\npd.DataFrame({'a': [1]})['missing']"], path: true, datascience: true,
  },
  {
    title: "a workspace pandas.py shadows the image's pandas exactly as on the cold path",
    files: { "pandas.py": "print('workspace pandas')\n" }, argv: ["python3", "-c", "import pandas; print(pandas.__file__)"], path: /pandas\.py in \/workspace would shadow/, datascience: true,
  },
  {
    title: "a workspace numpy/ package shadows the image's numpy exactly as on the cold path",
    remove: ["pandas.py"], files: { "numpy/__init__.py": "print('workspace numpy')\n" }, argv: ["python3", "-c", "import numpy; print(numpy.__file__)"], path: /numpy in \/workspace would shadow/, datascience: true,
  },
  {
    title: "a program that imports none of the data stack goes cold (the pre-imports would only cost memory)",
    remove: ["numpy"], argv: ["python3", "-c", "import sys; print('pandas' in sys.modules)"], path: /imports none/, datascience: true,
  },
  {
    title: "a run whose environment differs from the pre-started one execs cold",
    remove: ["linecache.py", "numpy"], argv: ["python3", "-c", "import os; print(os.environ['EXTRA'])"], env: { EXTRA: "1" }, path: "exec", both: true,
  },];

export function warmEquivalenceSuite(name: string, make: () => Promise<WarmSubject>, opts: { skip?: string | false; datascience: boolean }): void {
  // Node and TypeScript (warm-conformance-node.ts): on the standard image; the datascience image
  // has the same node, BOOT and loader (its data stack is Python's), so CI time goes elsewhere.
  if (!opts.datascience) nodeWarmSection(name, make, { skip: opts.skip, gvisor: /runsc/.test(name) });
  describe(`warm and cold paths agree: ${name}`, { concurrency: 1, skip: opts.skip || false }, () => {
    let subject: WarmSubject;
    let ws: string;
    before(async () => {
      subject = await make();
      ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-warmconf-"));
      fs.chmodSync(ws, 0o755);
      const base = subject.baseSpec(ws);
      fs.chownSync(ws, base.uid, base.gid);
      // The first run of the shape is cold; it pre-starts the unit the first probe uses.
      const r = await subject.warm.run(specFor(["python3", "-c", "pass"]));
      assert.equal(r.exitCode, 0, describeRun(r));
    });

    /**
     * Docker creates a pre-started container in the background: wait until it is in the pool, and
     * until its interpreter has imported what it imports (a run arriving earlier may pass it over:
     * that path has its own test below).
     */
    async function unitReady(): Promise<void> {
      const s = () => (subject.warm.prestartStats?.() ?? { ready: 1 }) as { ready: number; importing?: number };
      for (let i = 0; i < 1200 && (s().ready === 0 || (s().importing ?? 0) > 0); i++) await new Promise((r) => setTimeout(r, 50));
    }
    after(async () => {
      await subject?.warm.close?.();
      await subject?.cold.close?.();
      if (ws) fs.rmSync(ws, { recursive: true, force: true });
    });

    function specFor(argv: string[], probe?: Probe): RunSpec {
      const base = subject.baseSpec(ws);
      return {
        ...base,
        argv,
        env: {
          PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", TMPDIR: "/tmp",
          ...LANGUAGES.python.env, MPLCONFIGDIR: "/tmp/mpl", ...(probe?.env ?? {}),
        },
        interpreter: LANGUAGES.python.warm,
        stdin: probe?.stdin,
        limits: { ...base.limits, memoryBytes: Math.max(base.limits.memoryBytes, 768 * 1024 * 1024) },
      };
    }

    function write(probe: Probe): void {
      for (const p of probe.remove ?? []) fs.rmSync(path.join(ws, p), { recursive: true, force: true });
      const base = subject.baseSpec(ws);
      for (const [rel, content] of Object.entries(probe.files ?? {})) {
        const full = path.join(ws, rel);
        fs.mkdirSync(path.dirname(full), { recursive: true });
        fs.writeFileSync(full, content);
        for (let d = path.dirname(full); d.startsWith(ws); d = path.dirname(d)) fs.chownSync(d, base.uid, base.gid);
        fs.chownSync(full, base.uid, base.gid);
      }
    }

    for (const probe of PROBES) {
      const skip = probe.datascience && !opts.datascience ? "needs the data stack (datascience image)"
        : !probe.datascience && !probe.both && opts.datascience ? "run on the standard image (here it would only show the memory rule again)" : false;
      test(probe.title, { skip }, async () => {
        write(probe);
        // On an image with the data stack, a program that imports none of it goes cold (the memory rule).
        const expected = opts.datascience && !probe.datascience && probe.path !== "exec" ? /imports none/ : probe.path;
        await unitReady();
        const warm = await subject.warm.run(specFor(probe.argv, probe));
        const cold = await subject.cold.run(specFor(probe.argv, probe));
        assertWarmMatchesCold(warm, cold, expected, expected === true ? probe.differences : []);
      });
    }

    /** Waits (bounded) until the waiting unit says it is importing the data stack. */
    async function unitImporting(): Promise<void> {
      const stats = () => subject.warm.prestartStats!() as { importing?: number };
      for (let end = Date.now() + 60_000; (stats().importing ?? 0) === 0 && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
      assert.ok((stats().importing ?? 0) > 0, `the pre-started unit never said it was importing: ${JSON.stringify(stats())}`);
    }

    /**
     * Starts a run that takes the waiting unit (a new one is pre-started at its hand-over), and
     * returns, with that run still going, once the new unit says it is importing: the run the test
     * makes next arrives during those imports. Returns the first run, to be awaited (wrapped: a
     * promise returned from an async function would be awaited with it).
     */
    async function freshImportingUnit(): Promise<{ first: Promise<RunResult> }> {
      await unitReady();
      const first = subject.warm.run(specFor(["python3", "-c", "import numpy; print(numpy.int64(2) + 1)"]));
      first.catch(() => undefined);
      await unitImporting();
      return { first };
    }

    test("a run arriving while the unit imports the data stack: one that uses it waits for the imports, one that does not starts cold at once", { skip: opts.datascience ? false : "needs the data stack (datascience image)" }, async () => {
      write({ title: "", argv: [], path: true, remove: ["linecache.py", "numpy", "pandas.py"] });
      const stats = () => subject.warm.prestartStats!() as { hits: number; ready: number; passedOver?: number };
      let { first } = await freshImportingUnit();
      const uses = await subject.warm.run(specFor(["python3", "-c", "import pandas as pd; print(pd.Series([1, 2, 3]).sum())"]));
      assert.equal((await first).stdout.toString(), "3\n");
      assert.equal(uses.stdout.toString(), "6\n", describeRun(uses));
      assert.equal(uses.exitCode, 0, describeRun(uses));
      assert.equal(uses.timings?.warm, 1, `served by the unit still importing\n${describeRun(uses)}`);
      assert.equal(uses.timings?.interp, 1, `ran in its interpreter once the imports were done\n${describeRun(uses)}`);
      assert.equal(typeof uses.timings?.importWait, "number", `the wait for the imports is recorded\n${describeRun(uses)}`);
      ({ first } = await freshImportingUnit());
      const before = stats();
      const other = await subject.warm.run(specFor(["python3", "-c", "print(6 * 7)"]));
      assert.equal((await first).stdout.toString(), "3\n");
      assert.equal(other.stdout.toString(), "42\n", describeRun(other));
      assert.equal(other.exitCode, 0, describeRun(other));
      assert.equal(other.timings?.warm, undefined, `started cold, not in the unit\n${describeRun(other)}`);
      assert.match(other.warmFallback ?? "", /still importing .* does not import: started cold at once/, describeRun(other));
      const after = stats();
      assert.equal(after.passedOver, (before.passedOver ?? 0) + 1, JSON.stringify(after));
      assert.equal(after.hits, before.hits, "the unit was not used");
      assert.equal(after.ready, 1, "the unit stays for the next run");
    });
  });
}
