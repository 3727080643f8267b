import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { LANGUAGES } from "../exec/languages.js";
import type { RunSpec } from "./types.js";
import { handover, inProcess, unitPlan } from "./warm.js";
import { NODE_BOOT_FILE, nodeForm } from "./warm-node.js";

/** What the unit plan decides for Node runs (the in-sandbox half is warm-conformance-node.ts). */

const AGENT = { source: "/srv/agent", target: "/petri/agent", readonly: true };
const ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", NODE_OPTIONS: "--require /petri/agent/node/preload.cjs", NODE_PATH: "/workspace/node_modules", PETRI_DISPLAY_DIR: "/petri/display/ex_1" };

function spec(argv: string[], over: Partial<RunSpec> = {}): RunSpec {
  return {
    image: "img", argv, env: ENV, cwd: "/workspace", interpreter: LANGUAGES.node.warm,
    mounts: [{ source: "/srv/ws", target: "/workspace", readonly: false }, AGENT],
    limits: { memoryBytes: 1, cpus: 1, pids: 1, openFiles: 1, fileSizeBytes: 1, tmpfsBytes: 1 },
    timeoutMs: 1, outputLimitBytes: 1, uid: 1000, gid: 1000, labels: {}, ...over,
  };
}

const ts = (file: string) => LANGUAGES.typescript.file.map((a) => (a === "{file}" ? file : a));
const snippet = (lang: "node" | "typescript") => LANGUAGES[lang].snippet.argv.map((a) => (a === "{file}" ? "/petri/snippet/ex_1/s" : a));

describe("warm Node units", () => {
  test("every argv form Petri runs for Node and TypeScript is one a unit can take", () => {
    for (const argv of [["node", "main.js", "a"], ts("main.ts"), snippet("node"), snippet("typescript")]) {
      const form = nodeForm(argv);
      assert.ok(form, argv.join(" "));
      const u = unitPlan(spec(argv), { interpreters: true });
      assert.equal(u.kind, "node");
      assert.equal(u.startCwd, "/", "the unit starts outside the workspace");
      // BOOT is the last preload, after the run's own (the TypeScript loader).
      const boot = u.argv.indexOf(NODE_BOOT_FILE);
      assert.equal(u.argv[boot - 1], "--require");
      assert.ok(!u.argv.slice(boot + 1).includes("--require"));
    }
  });

  test("what could load code or read workspace data at start-up keeps the unit a plain launcher", () => {
    const argv = ["node", "main.js"];
    const cases: Partial<RunSpec>[] = [
      { env: { ...ENV, NODE_OPTIONS: "--import ./x.mjs" } },
      { env: { ...ENV, NODE_OPTIONS: "--require /workspace/hook.js" } },
      { env: { ...ENV, NODE_OPTIONS: `${ENV.NODE_OPTIONS} --env-file=/workspace/.env` } },
      { env: { ...ENV, LD_PRELOAD: "/workspace/x.so" } },
      { env: { ...ENV, NODE_EXTRA_CA_CERTS: "/workspace/ca.pem" } },
      { env: { ...ENV, OPENSSL_CONF: "/workspace/openssl.cnf" } },
      { mounts: [{ source: "/srv/ws", target: "/workspace", readonly: false }] },
      { interpreter: undefined },
    ];
    for (const c of cases) assert.equal(unitPlan(spec(argv, c), { interpreters: true }).kind, "launcher", JSON.stringify(c.env ?? c.mounts ?? c));
    assert.equal(unitPlan(spec(["node", "--require", "/workspace/x.js", "main.js"]), { interpreters: true }).kind, "launcher");
    assert.equal(unitPlan(spec(["node", "--inspect", "main.js"]), { interpreters: true }).kind, "launcher");
    assert.equal(unitPlan(spec(argv, { env: { ...ENV, NODE_OPTIONS: `${ENV.NODE_OPTIONS} --max-old-space-size=512` } }), { interpreters: true }).kind, "node");
  });

  test("a run goes in-process only in the unit's form, cwd and environment (but PETRI_DISPLAY_DIR)", () => {
    const u = unitPlan(spec(["node", "a.js"]), { interpreters: true });
    assert.ok(inProcess(u, spec(["node", "b.js", "x"], { env: { ...ENV, PETRI_DISPLAY_DIR: "/petri/display/ex_2" } })));
    assert.ok(!inProcess(u, spec(snippet("node"))), "a snippet after a file unit");
    assert.ok(!inProcess(u, spec(ts("b.ts"), { interpreter: LANGUAGES.typescript.warm })), "TypeScript after a node unit");
    assert.ok(!inProcess(u, spec(["node", "b.js"], { env: { ...ENV, TZ: "Asia/Tokyo" } })));
    assert.ok(!inProcess(u, spec(["node", "b.js"], { cwd: "/workspace/sub" })));
    assert.ok(!inProcess(u, spec(["python3", "b.py"], { interpreter: LANGUAGES.python.warm })));
    const h = handover(u, spec(["bash", "-c", "true"], { interpreter: undefined }));
    assert.equal(h.inProcess, false);
    assert.ok(h.bytes.includes(Buffer.from("exec\0")), "another program is handed over as an exec");
  });

  test("gVisor (fixedCmdline): the unit has the run's own command line, BOOT comes through NODE_OPTIONS, only the same command runs in it", () => {
    const u = unitPlan(spec(["node", "main.js", "a b"]), { interpreters: true, fixedCmdline: true });
    assert.equal(u.kind, "node");
    assert.deepEqual(u.argv, ["node", "main.js", "a b"], "no hold, placeholder or padding on the command line");
    assert.equal(u.env.NODE_OPTIONS, `--require /petri/agent/node/preload.cjs --require ${NODE_BOOT_FILE}`, "BOOT after the run's own preloads");
    assert.equal(u.startCwd, "/");
    assert.ok(inProcess(u, spec(["node", "main.js", "a b"], { env: { ...ENV, PETRI_DISPLAY_DIR: "/petri/display/ex_2" } })));
    assert.ok(!inProcess(u, spec(["node", "main.js", "a", "b"])), "other arguments: exec'd cold");
    assert.ok(!inProcess(u, spec(["node", "other.js", "a b"])), "another file: exec'd cold");
    const h = handover(u, spec(["node", "main.js", "a b"], { env: { PATH: ENV.PATH } }));
    assert.ok(h.bytes.includes(Buffer.from("\0NODE_OPTIONS")), "a run without NODE_OPTIONS has the unit's unset");
    const tsu = unitPlan(spec(ts("main.ts"), { interpreter: LANGUAGES.typescript.warm }), { interpreters: true, fixedCmdline: true });
    assert.deepEqual(tsu.argv, ts("main.ts"), "TypeScript: its loader stays on the command line, loaded after the hand-over");
    for (const lang of ["node", "typescript"] as const) {
      assert.equal(unitPlan(spec(snippet(lang), { interpreter: LANGUAGES[lang].warm }), { interpreters: true, fixedCmdline: true }).kind, "launcher",
        "a snippet's file name holds its run's id: never the same command line twice");
    }
  });
});
