import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { AGENT_MOUNT, prepareAgentFiles } from "../exec/agent-files.js";
import { LANGUAGES, SNIPPET_DIR } from "../exec/languages.js";
import type { RunResult, RunSpec } from "./types.js";
import type { WarmSubject } from "./warm-conformance.js";
import { assertWarmMatchesCold, describeRun } from "./warm-compare.js";

/**
 * The Node and TypeScript half of the warm/cold equivalence suite (docs/warm.md, "Node"): each
 * probe runs once in a pre-started node (and must really have run there, or really have gone
 * cold where it must) and once cold, on the same workspace, with the mounts and environment of a
 * production run (the agent helpers with BOOT and the TypeScript loader, the snippet mount,
 * Petri's NODE_OPTIONS preload), and stdout, stderr, exit code and signal must be equal.
 */

type Form = "node" | "node-snippet" | "ts" | "ts-snippet" | "other";

interface NodeProbe {
  title: string;
  form: Form;
  files?: Record<string, string>;
  remove?: string[];
  /** The program file (file forms), or the snippet's code (snippet forms), or the argv ("other"). */
  program: string | string[];
  args?: string[];
  stdin?: string;
  env?: Record<string, string>;
  /** true: must run in the pre-started node; a RegExp: must go cold with that reason; "exec": handed over as an exec. */
  path: true | RegExp | "exec";
  /**
   * Also run under gVisor, where a Node unit starts with the command line of the run it follows
   * (no process can rewrite its own there): a file probe runs once first so the next unit expects
   * its command line; a snippet (its file name holds the run's id) is always exec'd cold.
   */
  gvisor?: boolean;
}

const REPORT = `const fs = require('fs');
const env = Object.entries(process.env).filter(([k]) => k !== 'HOSTNAME').sort();
console.log(JSON.stringify({
  main: require.main === module, id: module.id, parent: module.parent === undefined ? 'undefined' : String(module.parent),
  argv: process.argv, argv0: process.argv0, execArgv: process.execArgv, eval: process._eval === undefined ? null : process._eval.length,
  file: __filename, dir: __dirname, cwd: process.cwd(), title: process.title, execPath: process.execPath,
  env, cmdline: fs.readFileSync('/proc/self/cmdline', 'utf8').replace(/\\0+$/, '').split('\\0'),
  cache: Object.keys(require.cache), globals: ['require', 'module', 'exports', '__filename', '__dirname'].map((k) => typeof globalThis[k]),
  findPath: require('module')._findPath.toString().length, paths: module.paths, globalPaths: require('module').globalPaths,
  tz: Intl.DateTimeFormat().resolvedOptions().timeZone, date: new Date(0).toString(), locale: Intl.DateTimeFormat().resolvedOptions().locale,
  ignored: fs.readFileSync('/proc/self/status', 'utf8').match(/SigIgn:.*/)[0],
  stdin: fs.readFileSync(0, 'utf8'),
}, null, 1));
`;

const PROBES: NodeProbe[] = [
  { title: "a file: require.main, argv, execArgv, __filename, cwd, env, TZ, locale, cmdline, stdin, require.cache", form: "node", files: { "probe.js": REPORT }, program: "probe.js", args: ["a b", "-x"], stdin: "in\nput", gvisor: true, path: true },
  {
    title: "an uncaught exception: the same stderr (source line, stack) and exit status 1",
    form: "node", files: { "boom.js": "console.log('before');\nfunction f(x) {\n  if (!x) throw new TypeError('bad ' + x);\n}\nf(0);\n" }, program: "boom.js", gvisor: true, path: true,
  },
  { title: "process.exit(n) and process.exitCode", form: "node", gvisor: true, files: { "exit.js": "process.exitCode = 4;\nconsole.log('o');\nsetTimeout(() => process.exit(3), 5);\n" }, program: "exit.js", path: true },
  { title: "an unhandled rejection ends the run as a cold start's does", form: "node", gvisor: true, files: { "rej.js": "setTimeout(() => console.log('never'), 1000);\nPromise.reject(new RangeError('nope'));\n" }, program: "rej.js", path: true },
  { title: "a signal the program sends itself", form: "node", files: { "sig.js": "console.log('x');\nprocess.kill(process.pid, 'SIGTERM');\nsetTimeout(() => {}, 1000);\n" }, program: "sig.js", path: true },
  {
    title: "an ES module (.mjs): import.meta, top-level await, its error",
    form: "node", files: { "m.mjs": "import { readFileSync } from 'node:fs';\nconsole.log(import.meta.url, import.meta.filename, typeof require, process.argv.slice(1));\nawait new Promise((r) => setTimeout(r, 5));\nthrow new Error('esm ' + readFileSync('/proc/self/cmdline', 'utf8').replace(/\\0+$/, ''));\n" },
    program: "m.mjs", args: ["q"], path: true, gvisor: true,
  },
  {
    title: 'package.json "type": "module" makes a .js an ES module, a .cjs stays CommonJS',
    form: "node", files: { "esm/package.json": '{"type": "module"}', "esm/x.js": "import c from './c.cjs';\nconsole.log(typeof require, import.meta.filename, c);\n", "esm/c.cjs": "module.exports = [require.main === module, __filename];\n" },
    program: "esm/x.js", path: true, gvisor: true,
  },
  { title: "module syntax in a .js without a type: node's own detection", form: "node", files: { "detect.js": "export const a = 1;\nconsole.log('detected', typeof require, typeof module);\n" }, program: "detect.js", path: true },
  {
    title: 'workspace node_modules and package.json "imports", resolved as at a cold start',
    form: "node", remove: ["esm"],
    files: {
      "package.json": '{"name": "app", "imports": {"#util": "./lib/util.js"}}', "lib/util.js": "module.exports = (x) => 2 * x;\n",
      "node_modules/dep/package.json": '{"name": "dep", "main": "main.js"}', "node_modules/dep/main.js": "console.log('dep loaded from', __dirname);\nmodule.exports = 'dep';\n",
      "app.js": "const twice = require('#util');\nconsole.log(twice(21), require('dep'), require.resolve('dep'), Object.keys(require.cache));\n",
    },
    program: "app.js", path: true, gvisor: true,
  },
  {
    title: "a worker thread and a child node: no trace of the hold (execArgv, preloads)",
    form: "node", remove: ["package.json"],
    files: {
      "threads.js": "const { Worker } = require('worker_threads');\nconst { execFileSync } = require('child_process');\n"
        + "console.log(execFileSync(process.execPath, [...process.execArgv, '-p', 'process.execArgv.length + \" \" + Object.keys(require.cache).length']).toString().trim());\n"
        + "new Worker(\"require('worker_threads').parentPort.postMessage([process.argv.length, process.execArgv, Object.keys(require.cache)])\", { eval: true }).on('message', (m) => console.log(JSON.stringify(m)));\n",
    },
    program: "threads.js", path: true, gvisor: true,
  },
  {
    title: "NODE_OPTIONS as the program and its children see it; a child node runs normally (no hold of its own)",
    form: "node",
    files: {
      "env.js": "const { execFileSync } = require('child_process');\nconsole.log(JSON.stringify(process.env.NODE_OPTIONS));\n"
        + "console.log(execFileSync(process.execPath, ['-e', 'console.log(JSON.stringify([process.env.NODE_OPTIONS, process.execArgv, Object.keys(require.cache), require(\"fs\").readFileSync(0, \"utf8\")]))'], { input: 'child stdin', timeout: 20000 }).toString().trim());\n"
        + "console.log(execFileSync('/bin/sh', ['-c', 'echo \"$NODE_OPTIONS\"; tr \"\\\\0\" \"\\\\n\" < /proc/self/environ | grep ^NODE_OPTIONS=; echo grep=$?']).toString().trim());\n",
    },
    program: "env.js", path: true, gvisor: true,
  },
  { title: "a missing program goes cold and fails as a cold start does", form: "node", program: "missing.js", path: /cannot find the program/, gvisor: true },
  { title: "a snippet (CommonJS): require, module, [eval] names, argv, execArgv, cmdline, env, stdin", form: "node-snippet", program: REPORT, args: ["s1"], stdin: "snippet input", gvisor: true, path: "exec" },
  { title: "a snippet again: now in the pre-started node (a unit takes the form of the run it follows)", form: "node-snippet", program: REPORT, args: ["s2"], stdin: "", gvisor: true, path: true },
  { title: "an ES module snippet (import, top-level await)", form: "node-snippet", program: "import os from 'node:os';\nconst v = await Promise.resolve(typeof os.cpus);\nconsole.log(v, typeof require, import.meta.url, process.argv.slice(1));\n", args: ["e"], path: true },
  { title: "a snippet's uncaught exception", form: "node-snippet", program: "const o = null;\nconsole.log('start');\no.x;\n", path: true },
  { title: "TypeScript: the first run after a node run execs cold (the unit was a node one)", form: "ts", files: { "t.ts": "enum E { A = 1 }\nconst n: number = E.A;\nconsole.log(n, require.main === module, process.execArgv, process.argv.slice(1));\n" }, program: "t.ts", args: ["x"], gvisor: true, path: "exec" },
  {
    title: "TypeScript: a file in the pre-started node with the loader, its stack on the TypeScript lines",
    form: "ts", files: { "t2.ts": "interface P { x: number }\nconst p: P = { x: 1 };\nconsole.log(p.x, require.main === module, __filename);\nfunction fail(v: P): never {\n  throw new Error('ts ' + v.x);\n}\nfail(p);\n" },
    program: "t2.ts", gvisor: true, path: true,
  },
  { title: "TypeScript: an ES module file (.mts)", form: "ts", files: { "m.mts": "const x: string = 'mts';\nconsole.log(x, import.meta.filename, typeof require);\n" }, program: "m.mts", path: true },
  { title: "TypeScript: the report of a .ts file (argv, execArgv, cmdline, env, stdin)", form: "ts", files: { "r.ts": REPORT }, program: "r.ts", stdin: "ts in", path: true, gvisor: true },
  { title: "TypeScript snippet, first after a file (exec), then in the pre-started node", form: "ts-snippet", program: "const s: string = 'ts snippet';\nconsole.log(s, typeof require);\n", path: "exec" },
  { title: "TypeScript snippet, ES module with types", form: "ts-snippet", program: "import path from 'node:path';\nconst s: string = path.basename(import.meta.url);\nawait Promise.resolve();\nconsole.log(s);\n", path: true },
  { title: "a run whose environment differs from the pre-started one execs cold (TZ is read at start)", form: "ts-snippet", program: "const d: Date = new Date(0);\nconsole.log(d.toString(), process.env.TZ);\n", env: { TZ: "Asia/Tokyo" }, path: "exec" },
  { title: "a bash run after a TypeScript run execs cold, with no signal left ignored (yes | head)", form: "other", program: ["bash", "-c", "yes | head -2; grep SigIgn /proc/self/status"], path: "exec" },
];


/** The Node section of warmEquivalenceSuite: its own runtimes, workspace and mounts (a shape of its own). */
export function nodeWarmSection(name: string, make: () => Promise<WarmSubject>, opts: { skip?: string | false; gvisor?: boolean }): void {
  describe(`warm and cold paths agree, Node and TypeScript: ${name}`, { concurrency: 1, skip: opts.skip || false }, () => {
    let subject: WarmSubject;
    let root: string;
    let ws: string;
    let agentDir: string;
    let snippetDir: string;
    let n = 0;
    before(async () => {
      subject = await make();
      root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-warmconf-node-"));
      fs.chmodSync(root, 0o755);
      ws = path.join(root, "ws");
      snippetDir = path.join(root, "snippet");
      fs.mkdirSync(ws, { mode: 0o755 });
      fs.mkdirSync(snippetDir, { mode: 0o755 });
      agentDir = prepareAgentFiles(root);
      const base = subject.baseSpec(ws);
      fs.chownSync(ws, base.uid, base.gid);
      // The first run of the shape is cold; it pre-starts the unit the first probe uses.
      const r = await subject.warm.run(specFor({ title: "primer", form: "node", program: "primer.js", path: true }, "primer", { "primer.js": "" }));
      assert.equal(r.exitCode, 0, describeRun(r));
    });
    after(async () => {
      await subject?.warm.close?.();
      await subject?.cold.close?.();
      if (root) fs.rmSync(root, { recursive: true, force: true });
    });

    async function unitReady(): Promise<void> {
      for (let i = 0; i < 600 && (subject.warm.prestartStats?.().ready ?? 1) === 0; i++) await new Promise((r) => setTimeout(r, 100));
    }

    function write(files: Record<string, string>, remove: string[] = []): void {
      const base = subject.baseSpec(ws);
      for (const p of remove) fs.rmSync(path.join(ws, p), { recursive: true, force: true });
      for (const [rel, content] of Object.entries(files)) {
        const full = path.join(ws, rel);
        fs.mkdirSync(path.dirname(full), { recursive: true });
        fs.writeFileSync(full, content);
        for (let d = path.dirname(full); d.startsWith(ws); d = path.dirname(d)) fs.chownSync(d, base.uid, base.gid);
        fs.chownSync(full, base.uid, base.gid);
      }
    }

    /** The spec of a probe, as plan.ts builds a production run's (same argv forms, mounts, env layers). */
    function specFor(probe: NodeProbe, id: string, files?: Record<string, string>): RunSpec {
      if (files) write(files);
      const base = subject.baseSpec(ws);
      const lang = probe.form.startsWith("ts") ? LANGUAGES.typescript : LANGUAGES.node;
      let argv: string[];
      if (probe.form === "other") argv = probe.program as string[];
      else if (probe.form.endsWith("snippet")) {
        const dir = path.join(snippetDir, id);
        fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
        fs.writeFileSync(path.join(dir, lang.snippet.filename), probe.program as string, { mode: 0o644 });
        argv = [...lang.snippet.argv.map((a) => (a === "{file}" ? `${SNIPPET_DIR}/${id}/${lang.snippet.filename}` : a)), ...(probe.args ?? [])];
      } else argv = [...lang.file.map((a) => (a === "{file}" ? (probe.program as string) : a)), ...(probe.args ?? [])];
      return {
        ...base,
        argv,
        env: {
          PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", TZ: "America/New_York",
          PETRI_NETWORK: "none", NODE_OPTIONS: `--require ${AGENT_MOUNT}/node/preload.cjs`,
          ...(probe.form === "ts" || probe.form === "ts-snippet" ? { ...LANGUAGES.typescript.env, PETRI_TS_CACHE: "/tmp/ts-cache" } : LANGUAGES.node.env),
          // A per-run variable (set late, at hand-over): the same for a probe's two runs, new for the next probe.
          PETRI_DISPLAY_DIR: `/petri/display/${id}`,
          ...(probe.env ?? {}),
        },
        mounts: [
          ...base.mounts,
          { source: snippetDir, target: SNIPPET_DIR, readonly: true },
          { source: agentDir, target: AGENT_MOUNT, readonly: true },
        ],
        interpreter: probe.form === "other" ? undefined : lang.warm,
        stdin: probe.stdin,
      };
    }

    for (const probe of PROBES) {
      // Under gVisor a probe costs twice the runs (below): the probes marked for it, the rest would cost CI time only.
      const skip = opts.gvisor && !probe.gvisor ? "gVisor: only the probes marked for it (each file probe runs twice there)" : false;
      test(probe.title, { skip }, async () => {
        const id = `ex_${++n}`;
        write(probe.files ?? {}, probe.remove);
        let expected = probe.path;
        if (opts.gvisor) {
          // gVisor lets no process write its own memory (/proc/self/mem), so a unit starts with the
          // command line of the run it follows (warm-node.ts, exactArgv): run the probe once so the
          // next unit expects it. A snippet's command line is never the same twice: exec'd cold.
          if (probe.form.endsWith("snippet")) expected = "exec";
          else if (probe.path !== "exec") {
            await unitReady();
            await subject.warm.run(specFor(probe, id));
          }
        }
        await unitReady();
        const warm = await subject.warm.run(specFor(probe, id));
        const cold = await subject.cold.run(specFor(probe, id));
        assertWarmMatchesCold(warm, cold, expected);
      });
    }
  });
}
