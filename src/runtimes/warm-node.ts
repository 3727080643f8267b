import type { Mount, RunSpec } from "./types.js";
import { HANDOVER_OPEN_FLAGS } from "../tracing/program.js";

/**
 * Warm Node interpreters (docs/warm.md, "Node"). A pre-started Node unit is the run's own command
 * line with one more preload: `node [the run's options] --require BOOT [-e LOADER] MAIN PAD`.
 * Node starts exactly as a cold start of that form does (V8, its snapshot, bootstrap, options,
 * NODE_OPTIONS, Petri's preloads, the TypeScript loader with esbuild), then the last preload,
 * BOOT, blocks on stdin for the hand-over. When it returns, node's own start-up code goes on to
 * run the main module (`node FILE`) or the `-e` code (snippets) as a cold start does: module
 * detection, `require.main`, the ESM loader, uncaught exceptions, unhandled rejections and exit
 * codes are node's own, never re-implemented. BOOT only sets what a cold start would have
 * computed from the run's command line before that point: cwd, argv, execArgv, environment,
 * /proc/self/cmdline, and the main module's path (an entry in node's resolution cache for the
 * placeholder MAIN that node resolved at start).
 *
 * The hand-over is marked for the audit tracers (host and gVisor's strace) with an open the kernel
 * refuses (HANDOVER_OPEN_FLAGS): node cannot make Python's access(path, 0x7e7e0) mark (fs.access
 * and its binding refuse modes beyond R|W|X; node has no raw system calls).
 */

/** Where the agent helpers are mounted (agent-files.ts writes BOOT there). */
export const NODE_AGENT_DIR = "/petri/agent";
export const NODE_BOOT_FILE = `${NODE_AGENT_DIR}/node/warm.cjs`;
/** What a file unit starts as its main module: never a file, so a hand-over that went wrong fails loudly. */
const NODE_MAIN_PLACEHOLDER = `${NODE_AGENT_DIR}/node/warm-main-placeholder.js`;
/** Room in the unit's command line for the run's (so /proc/self/cmdline can show the run's). */
const CMDLINE_ROOM = 16 * 1024;

/** Node options a warm run may have (Petri's TypeScript runs); any other option keeps it cold. */
const BOOL_FLAGS = new Set(["--experimental-transform-types", "--experimental-strip-types", "--enable-source-maps", "--no-warnings"]);
/** NODE_OPTIONS entries that load nothing and read no file (anything else keeps the unit a plain launcher). */
const SAFE_NODE_OPTION = /^--(max-old-space-size|max-semi-space-size|stack-size|unhandled-rejections|disable-warning)=[\w.-]+$|^--(no-warnings|no-deprecation|trace-warnings|trace-uncaught|enable-source-maps)$/;
/** Variables under NODE_ that change nothing at start-up but what the same variable gives a cold start. */
const NODE_ENV_OK = new Set(["NODE_PATH", "NODE_ENV", "NODE_OPTIONS"]);

/**
 * A node argv Petri can run warm, split into node's options (up to and including `-e CODE`) and
 * the program: `node [--require ABS | flag]… [-e CODE] FILE ARGS…`. null for anything else.
 */
export function nodeForm(argv: string[]): { opts: string[]; evalCode: boolean; requires: string[] } | null {
  if (argv[0] !== "node") return null;
  const requires: string[] = [];
  let i = 1;
  for (;;) {
    const a = argv[i];
    if (a === "--require" || a === "-r") {
      if (argv[i + 1] === undefined) return null;
      requires.push(argv[i + 1]);
      i += 2;
    } else if (a !== undefined && (BOOL_FLAGS.has(a) || /^--disable-warning=[\w-]+$/.test(a))) {
      i++;
    } else break;
  }
  let evalCode = false;
  if (argv[i] === "-e" || argv[i] === "--eval") {
    if (argv[i + 1] === undefined) return null;
    evalCode = true;
    i += 2;
  }
  const file = argv[i];
  if (file === undefined || file === "" || file.startsWith("-")) return null;
  return { opts: argv.slice(1, i), evalCode, requires };
}

/**
 * Whether a node started with this environment loads nothing but the image's and Petri's code,
 * and reads nothing of a workspace, before the request: no dynamic-loader, locale-path, OpenSSL
 * config or ICU data variables, no NODE_* variable but NODE_PATH (a search path, used only when
 * the program requires something), NODE_ENV, and NODE_OPTIONS with read-only preloads and
 * harmless flags only.
 */
function startupSafe(env: Record<string, string>, readOnly: (p: string) => boolean): boolean {
  for (const k of Object.keys(env)) {
    if (k.startsWith("LD_") || ["GCONV_PATH", "LOCPATH", "GLIBC_TUNABLES", "ICU_DATA"].includes(k) || k.startsWith("OPENSSL_")) return false;
    if (k.startsWith("NODE_") && !NODE_ENV_OK.has(k)) return false;
  }
  const opts = (env.NODE_OPTIONS ?? "").split(/\s+/).filter(Boolean);
  for (let i = 0; i < opts.length; i++) {
    if (opts[i] === "--require" || opts[i] === "-r") {
      const p = opts[++i];
      if (p === undefined || !p.startsWith("/") || !readOnly(p)) return false;
    } else if (!SAFE_NODE_OPTION.test(opts[i])) return false;
  }
  return true;
}

/**
 * The unit to pre-start after a node run (null: a plain launcher). `readOnly` says whether a path
 * is on a read-only mount or the image.
 *
 * `exactArgv` (gVisor, where no process can write its own memory, so /proc/self/cmdline cannot be
 * rewritten at hand-over): the unit starts with the very command line of the run it follows,
 * which is the next run's when a sandbox repeats its command (`node main.js` again), and BOOT
 * comes through NODE_OPTIONS, which neither /proc/self/cmdline nor process.execArgv shows.
 * A run with another command line is exec'd cold (inProcess). A snippet's file name holds its
 * run's id, never the same twice: a plain launcher.
 */
export function nodeUnit(spec: RunSpec, readOnly: (p: string) => boolean, o: { exactArgv?: boolean } = {}): { argv: string[]; opts: string[]; env?: Record<string, string>; exact?: boolean } | null {
  const form = nodeForm(spec.argv);
  if (!form) return null;
  // BOOT is one of the agent helpers: without them mounted (read-only), there is nothing to hold on.
  if (!spec.mounts.some((m: Mount) => m.target === NODE_AGENT_DIR && m.readonly)) return null;
  if (!startupSafe(spec.env, readOnly)) return null;
  if (form.requires.some((p) => !p.startsWith("/") || !readOnly(p))) return null;
  if (o.exactArgv) {
    if (form.evalCode) return null;
    // BOOT after the run's own NODE_OPTIONS preloads; the command line's --require ones (the
    // TypeScript loader) then load after the hand-over, as the run's own code, in its cwd.
    const env = { ...spec.env, NODE_OPTIONS: [spec.env.NODE_OPTIONS, `--require ${NODE_BOOT_FILE}`].filter(Boolean).join(" ") };
    return { argv: [...spec.argv], opts: form.opts, env, exact: true };
  }
  // BOOT is the last preload (after Petri's and the TypeScript loader): everything before it is warm.
  const k = form.evalCode ? form.opts.length - 2 : form.opts.length;
  const argv = ["node", ...form.opts.slice(0, k), "--require", NODE_BOOT_FILE, ...form.opts.slice(k), ...(form.evalCode ? [] : [NODE_MAIN_PLACEHOLDER])];
  const used = argv.reduce((a, s) => a + Buffer.byteLength(s) + 1, 0);
  argv.push(" ".repeat(Math.max(1, CMDLINE_ROOM - used)));
  return { argv, opts: form.opts };
}

/** Whether a run has the form (node options, file or `-e`) the unit was started with. */
export function nodeRunFits(unitOpts: string[], spec: RunSpec): boolean {
  const form = nodeForm(spec.argv);
  return form !== null && form.opts.length === unitOpts.length && form.opts.every((o, i) => o === unitOpts[i]);
}

/**
 * BOOT, the last preload of a warm Node unit (written to the agent helpers by agent-files.ts).
 * It says `ready` (a frame), reads the same length-prefixed hand-over as the Python bootstrap (warm.ts), then either
 * execs the run's argv (`exec`, or `run` when a rule says cold: status `0 REASON`) or sets up
 * what a cold start would have and returns (status `1`), letting node run the program.
 */
export const NODE_BOOT = String.raw`'use strict';
// Written by Petri (mounted read-only): the hold of a pre-started Node unit (docs/warm.md).
(function () {
  const fs = require('fs');
  const BOOT = __filename;
  function forget() {
    const at = process.execArgv.findIndex((a, j) => a === '--require' && process.execArgv[j + 1] === BOOT);
    if (at >= 0) process.execArgv.splice(at, 2);
    delete require.cache[BOOT];
    const parent = module.parent;
    if (parent && Array.isArray(parent.children) && parent.children.includes(module)) parent.children.splice(parent.children.indexOf(module), 1);
  }
  // Worker threads inherit the preloads and the unit's execArgv: only the main thread holds, and
  // a worker sees no more of BOOT than the main thread does.
  if (!require('worker_threads').isMainThread) return forget();
  const path = require('path');
  const M = require('module');
  // What node took as the main module at start (before the preloads): the placeholder, or under
  // gVisor the expected run's program resolved from '/' (BOOT then came through NODE_OPTIONS).
  const START_MAIN = process.argv[1];
  const VIA_ENV = (process.env.NODE_OPTIONS || '').split(/\s+/).includes(BOOT);

  function readExact(n) {
    const b = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      let r;
      try {
        r = fs.readSync(0, b, got, n - got, null);
      } catch (e) {
        if (e.code === 'EAGAIN') { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2); continue; }
        if (e.code !== 'EOF') throw e;
        r = 0;
      }
      if (r === 0) process.exit(125);
      got += r;
    }
    return b;
  }

  // The frame every warm unit writes once it waits for a run (warm.ts, StatusFrame).
  fs.writeSync(1, '\0petri-warm:ready\n');
  const n = parseInt(readExact(9).toString('latin1', 0, 8), 16);
  const f = readExact(n).toString('utf8').split('\0');
  const mode = f[0], cwd = f[1];
  let i = 2;
  const argv = f.slice(i + 1, i + 1 + Number(f[i]));
  i += 1 + Number(f[i]);
  const env = {};
  for (const kv of f.slice(i + 1, i + 1 + Number(f[i]))) { const at = kv.indexOf('='); env[kv.slice(0, at)] = kv.slice(at + 1); }
  i += 1 + Number(f[i]);
  const unset = f.slice(i + 1, i + 1 + Number(f[i]));
  const full = Object.assign({}, process.env);
  for (const k of unset) delete full[k];
  Object.assign(full, env);
  // A runtime's own PWD (bwrap sets it to where it started us) names the run's directory.
  if ('PWD' in full && !('PWD' in env)) full.PWD = cwd;

  function which(file) {
    if (file.includes('/')) return file;
    for (const dir of (full.PATH || '/usr/local/bin:/usr/bin:/bin').split(':')) {
      const p = path.join(dir || '.', file);
      try { fs.accessSync(p, fs.constants.X_OK); if (fs.statSync(p).isFile()) return p; } catch (e) { /* next */ }
    }
    return file;
  }

  // The cold path: the run's argv exec'd in this unit, as the plain launcher does.
  function cold(reason) {
    if (mode === 'run') fs.writeSync(1, '\0petri-warm:0 ' + reason.replace(/\n/g, ' ') + '\n');
    try {
      process.chdir(cwd);
      // Node ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: give
      // the program the default dispositions a cold start has (adding and removing a listener
      // makes libuv restore SIG_DFL).
      for (const s of ['SIGPIPE', 'SIGXFSZ']) { const h = () => {}; process.on(s, h); process.removeListener(s, h); }
      process.execve(which(argv[0]), argv, full);
    } catch (e) {
      fs.writeSync(2, 'petri: cannot execute ' + argv[0] + ': ' + (e.code || e.message) + '\n');
    }
    process.exit(127);
  }

  if (mode !== 'run') cold('');
  const own = process.execArgv;
  const at = own.findIndex((a, j) => a === '--require' && own[j + 1] === BOOT);
  const opts = at < 0 ? own : own.slice(0, at).concat(own.slice(at + 2));
  const evalCode = opts.length >= 2 && (opts[opts.length - 2] === '-e' || opts[opts.length - 2] === '--eval');
  if ((at < 0 && !VIA_ENV) || argv[0] !== 'node' || opts.some((o, j) => argv[1 + j] !== o) || argv.length < opts.length + 2) {
    cold("the run's node options differ from the pre-started node's");
  }
  const file = argv[1 + opts.length];
  let main = null;
  try {
    process.chdir(cwd);
    // What node resolves the main module to (extensions, symlinks); the cold start says why not.
    if (!evalCode) main = M._findPath(path.resolve(file), null, true);
  } catch (e) {
    cold('cannot resolve the program: ' + e.message);
  }
  if (!evalCode && !main) cold('cannot find the program');

  // /proc/self/cmdline must show the run's command line: it is rewritten in place, in the room
  // the unit's own (longer) command line left. Where that cannot be done, the run goes cold.
  try {
    const cmd = Buffer.from(argv.map((a) => a + '\0').join(''), 'utf8');
    const cur = fs.readFileSync('/proc/self/cmdline');
    // Started with the run's own command line (gVisor: see nodeUnit's exactArgv): nothing to write.
    if (!cur.equals(cmd)) {
      if (VIA_ENV) cold('the command line differs from the pre-started one');
      if (cmd.length > cur.length) cold('the command line is longer than the pre-started one');
      const stat = fs.readFileSync('/proc/self/stat', 'latin1');
      const st = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const start = Number(st[45]), end = Number(st[46]);
      if (!start || end - start !== cur.length) throw new Error('the argument area is not where /proc/self/stat says');
      const room = Buffer.alloc(cur.length);
      cmd.copy(room);
      const fd = fs.openSync('/proc/self/mem', 'r+');
      try { fs.writeSync(fd, room, 0, room.length, start); } finally { fs.closeSync(fd); }
      if (!fs.readFileSync('/proc/self/cmdline').equals(room)) throw new Error('it did not change');
    }
  } catch (e) {
    cold('cannot set /proc/self/cmdline: ' + e.message);
  }

  // The hand-over mark for the host audit tracer (src/tracing/program.ts): an open the kernel
  // refuses before touching anything, by which the tracer knows this process is the run's program
  // from here on. Everything above was Petri's and is not recorded.
  try { fs.closeSync(fs.openSync(process.execPath, ${HANDOVER_OPEN_FLAGS})); } catch (e) { /* refused, as intended */ }
  for (const k of Object.keys(process.env)) if (!(k in full)) delete process.env[k];
  for (const k of Object.keys(full)) if (process.env[k] !== full[k]) process.env[k] = full[k];
  // What a cold start of the run's command line has: [node, the program (absolute for a file), args].
  process.argv.splice(1, process.argv.length - 1, evalCode ? file : path.resolve(file), ...argv.slice(2 + opts.length));

  // Node resolved the placeholder main at start; it now resolves to the run's program (node's
  // resolution cache, the one entry node reads for it before it loads the module).
  if (main) M._pathCache[START_MAIN + '\0'] = main;
  fs.writeSync(1, '\0petri-warm:1\n');
  forget();
})();
`;
