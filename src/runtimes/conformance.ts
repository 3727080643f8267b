import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import https from "node:https";
import { after, before, describe, test as nodeTest, type TestContext } from "node:test";
import Database from "better-sqlite3";
import { CACHE_DIR, LANGUAGES, SNIPPET_DIR, substitute } from "../exec/languages.js";
import { AGENT_MOUNT, prepareAgentFiles } from "../exec/agent-files.js";
import { cutMarker, type RunResult, type RunSpec, type Runtime } from "./types.js";
import { LABEL_SANDBOX } from "./launcher.js";
import { generateMasterKey } from "../vault/crypto.js";
import { parseEgressPolicy } from "../vault/egress.js";
import { Redactor } from "../vault/redact.js";
import { openBrokerSession } from "../vault/session.js";
import { SecretStore } from "../vault/store.js";
import { RunCa } from "../vault/x509.js";

/**
 * The behaviour every Runtime must show, as node:test tests: what a user (or hostile code)
 * observes from inside and outside a run. A runtime is conformant when this suite passes on it;
 * runtime-specific properties (e.g. "really runs under gVisor") are tested beside it.
 *
 * `baseSpec(workspaceDir)` must return a runnable spec with the workspace mounted at /workspace
 * and cwd /workspace, the run uid/gid, generous limits and timeout; tests override what they probe.
 * The suite creates (and removes) one temp workspace per test, chowned to the spec's uid/gid.
 */
export interface ConformanceSubject {
  runtime: Runtime;
  baseSpec: (workspaceDir: string) => RunSpec;
}

export interface ConformanceOptions {
  /** Skip the whole suite with this reason (e.g. the runtime is not available on this host). */
  skip?: string | false;
  /**
   * Known gaps of this runtime, by test title: those tests still run, but are reported as TODO
   * with the reason instead of failing the suite. Every entry is a bug to fix, not a waiver.
   */
  knownGaps?: Record<string, string>;
  /**
   * Whether to run the slow cases that do not depend on the image's contents beyond a toolchain
   * (the Go binary cache: several builds). Default true; a second image of the same runtime may
   * leave them to the first, and the output says so.
   */
  slowCases?: boolean;
  /**
   * Pre-starting on, as in production (issue 9): the runtime must be made with pre-starting
   * enabled for the image. Every run of the suite is then preceded by a primer run of the same
   * shape, the pre-started unit is waited for, and the run is checked to have started in it, so
   * the pass cannot quietly fall back to cold starts.
   */
  prestart?: boolean;
  /**
   * With pre-start on: this runtime's units for Python runs are warm interpreters (docs/warm.md),
   * so every Python run of the suite must also have run in the pre-started interpreter
   * (`timings.interp` 1), not merely in a pre-started unit that exec'd it cold.
   */
  warmInterpreters?: boolean;
  /**
   * With pre-start on: the image's warm interpreter imports the data stack (datascience). Python
   * programs of the suite then import numpy, as the runs this unit serves do (a program that
   * imports none of the stack goes cold by design), so they run in the interpreter that imported
   * it; the cases that cannot differ from the first image's pre-start-on pass of this runtime
   * (properties of the unit's container, plain-launcher runs) are skipped, saying why.
   */
  dataStack?: boolean;
}

export const PID1_TEST = "the program is not pid 1: a signal it sends itself takes effect";

type Overrides = Partial<Omit<RunSpec, "limits">> & { limits?: Partial<RunSpec["limits"]> };

/** Processes on the host whose command line contains `marker` (sandboxed processes are host processes too, except under gVisor). */
export function hostProcessesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) found.push(Number(entry));
    } catch { /* exited meanwhile */ }
  }
  return found;
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** A Python run a warm interpreter runs in-process (docs/warm.md): `python3 -c CODE` or `python3 FILE`. */
function warmForm(spec: RunSpec): boolean {
  const a = spec.argv;
  return spec.interpreter?.kind === "python" && a[0] === "python3" && ((a[1] === "-c" && a.length >= 3) || (a.length >= 2 && a[1] !== "" && !a[1].startsWith("-")));
}

/** The same program in every language: prints "hello from <language>". */
const HELLO: Record<string, string> = {
  python: "print('hello from python')\n",
  node: "console.log('hello from node')\n",
  typescript: "enum Lang { TS = 'typescript' }\nconst who: string = Lang.TS;\nconsole.log(`hello from ${who}`);\n",
  go: 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go") }\n',
  bash: "echo hello from bash\n",
};

/** A host directory the sandbox uid can traverse and read (bwrap binds as that uid). */
function tempHostDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-mnt-"));
  fs.chmodSync(d, 0o755);
  return d;
}

let agentFiles: string | null = null;
/** The helpers the exec service mounts into every run (the TypeScript preload among them), written once per process. */
function agentFilesDir(): string {
  if (!agentFiles || !fs.existsSync(agentFiles)) {
    const parent = tempHostDir();
    agentFiles = prepareAgentFiles(parent);
    process.once("exit", () => fs.rmSync(parent, { recursive: true, force: true }));
  }
  return agentFiles;
}

function out(r: RunResult): string {
  return r.stdout.toString("utf8");
}

function describeResult(r: RunResult): string {
  const { stdout, stderr, ...rest } = r;
  return `${JSON.stringify(rest)}\nstdout: ${stdout.toString("utf8").slice(0, 800)}\nstderr: ${stderr.toString("utf8").slice(0, 800)}`;
}

export function runtimeConformanceSuite(
  name: string,
  make: () => Promise<ConformanceSubject>,
  opts: ConformanceOptions = {},
): void {
  describe(`runtime conformance: ${name}`, { concurrency: 1, skip: opts.skip || false }, () => {
    let subject: ConformanceSubject;
    const labels: Record<string, string> = { "io.jhansi.petri.conformance": randomBytes(6).toString("hex") };
    // With pre-start on, every run belongs to one sandbox, as in production: its primers leave a
    // unit pre-started (the sandbox runs again), its real runs are quiet so nothing idles after.
    const sandboxId = `sb_conf_${labels["io.jhansi.petri.conformance"]}`;
    if (opts.prestart) labels[LABEL_SANDBOX] = sandboxId;

    before(async () => {
      subject = await make();
      if (opts.prestart) {
        // The sandbox's first run pre-starts nothing (PrestartGate): make it now.
        const ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-"));
        try {
          const base = subject.baseSpec(ws);
          fs.chownSync(ws, base.uid, base.gid);
          const r = await subject.runtime.run({ ...base, argv: ["python3", "-c", "pass"], labels: { ...base.labels, ...labels } });
          assert.equal(r.exitCode, 0, describeResult(r));
        } finally {
          fs.rmSync(ws, { recursive: true, force: true });
        }
      }
    });

    /** Docker and the direct OCI runtimes create a unit in the background: waits until none is being made. */
    async function unitsSettled(): Promise<void> {
      await subject.runtime.prestartSettled?.();
    }

    /** Units carrying this suite's labels beyond idle pre-started ones: what runs left behind. */
    async function leftBehind(): Promise<number> {
      await unitsSettled();
      return (await subject.runtime.count(labels)) - (subject.runtime.prestartStats?.().ready ?? 0);
    }

    /**
     * With pre-start on: a primer run of this shape and environment pre-starts a unit for `spec`
     * (the sandbox ran before), and it is waited for. Called before the test seeds the workspace,
     * as in production, where files arrive after the unit was started.
     */
    async function prime(spec: RunSpec): Promise<void> {
      const primer = await subject.runtime.run({ ...spec, argv: ["python3", "-c", "pass"], stdin: undefined, stdinStream: undefined, onStdout: undefined, onStderr: undefined, signal: undefined });
      assert.equal(primer.exitCode, 0, `primer: ${describeResult(primer)}`);
      await unitsSettled();
    }

    /**
     * Runs `spec`; with pre-start on, checks it started in the unit pre-started for it (and, where
     * units are warm interpreters, ran in it). Real runs are quiet: no unit idles after the suite.
     */
    async function runPrimed(spec: RunSpec): Promise<RunResult> {
      if (!opts.prestart) return subject.runtime.run(spec);
      const rt = subject.runtime;
      const hits = rt.prestartStats!().hits;
      const quiet = rt.noPrestartFor!(sandboxId);
      try {
        const r = await rt.run(spec);
        assert.equal(rt.prestartStats!().hits, hits + 1, `the run did not start in a pre-started unit: ${JSON.stringify(rt.prestartStats!())}`);
        if (opts.warmInterpreters && warmForm(spec)) assert.equal(r.timings?.interp, 1, `the run did not run in the pre-started interpreter (went cold: ${r.warmFallback ?? "no status"})\n${describeResult(r)}`);
        return r;
      } finally {
        quiet();
      }
    }

    after(async () => {
      if (!subject) return;
      await subject.runtime.reap(labels).catch(() => undefined);
      await subject.runtime.close?.();
    });

    /** Runs `argv` with a fresh workspace; `prepare` may seed it, `check` inspects it after. */
    async function run(
      argv: string[],
      overrides: Overrides = {},
      hooks: {
        prepare?: (ws: string) => void;
        check?: (ws: string, r: RunResult, spec: RunSpec) => void | Promise<void>;
        /** Mounts added to the base spec's (which hold the workspace). */
        extraMounts?: RunSpec["mounts"];
      } = {},
    ): Promise<RunResult> {
      const ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-"));
      try {
        const base = subject.baseSpec(ws);
        fs.chownSync(ws, base.uid, base.gid);
        const spec: RunSpec = {
          ...base,
          // As the exec service gives a Python run (plan.ts): a pre-started unit may start it ahead.
          ...(argv[0] === "python3" ? { interpreter: LANGUAGES.python.warm } : {}),
          ...overrides,
          argv,
          mounts: [...(overrides.mounts ?? base.mounts), ...(hooks.extraMounts ?? [])],
          labels: { ...base.labels, ...labels },
          limits: { ...base.limits, ...(overrides.limits ?? {}) },
        };
        if (opts.prestart) await prime(spec);
        hooks.prepare?.(ws);
        const r = await runPrimed(spec);
        await hooks.check?.(ws, r, spec);
        return r;
      } finally {
        fs.rmSync(ws, { recursive: true, force: true });
      }
    }

    const stack = Boolean(opts.prestart && opts.dataStack);
    /** With the data stack pre-imported, a program imports numpy: the runs such a unit serves do (see dataStack). */
    const STACK_IMPORT = "import numpy\n";
    const py = (code: string, ...extra: string[]) => ["python3", "-c", (stack ? STACK_IMPORT : "") + code, ...extra];
    const test = (title: string, fn: (t: TestContext) => Promise<void>) =>
      nodeTest(title, opts.knownGaps?.[title] ? { todo: opts.knownGaps[title] } : {}, fn);
    /**
     * Cases whose outcome the data stack's warm interpreter cannot change: a property of the
     * unit's container (set up exactly as for the first image), or a run that is not Python's.
     * With the stack pre-imported they are left to the first image's pre-start-on pass.
     */
    const containerCase = (title: string, fn: (t: TestContext) => Promise<void>) =>
      test(title, async (t) => {
        if (stack) return void t.skip("pre-start on, data stack: the unit's container is set up as on the first image, whose pre-start-on pass of this runtime runs this case; the warm interpreter's imports cannot change it");
        await fn(t);
      });

    test("hello world", async () => {
      const r = await run(py("print('hello world')"));
      assert.equal(r.exitCode, 0, describeResult(r));
      assert.equal(out(r), "hello world\n");
      assert.equal(r.signal, null);
      assert.equal(r.timedOut, false);
      assert.equal(r.oomKilled, false);
      assert.equal(r.killed, false);
      assert.equal(r.stdoutTruncated, false);
      assert.equal(r.stderr.length, 0, describeResult(r));
      assert.ok(r.durationMs >= 0);
    });

    test("exit code propagates", async () => {
      const r = await run(py("import sys; sys.exit(42)"));
      assert.equal(r.exitCode, 42, describeResult(r));
      assert.equal(r.signal, null);
    });

    test("death by signal is reported as the signal, with no exit code", async () => {
      const r = await run(py("import ctypes; ctypes.string_at(0)"));
      assert.equal(r.signal, "SIGSEGV", describeResult(r));
      assert.equal(r.exitCode, null);
    });

    // Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec: a pre-started unit's
    // Python launcher must give them back before it execs the program (yes | head would say
    // 'Broken pipe' and a write past the file-size limit would not kill).
    test("a program starts with no signal ignored (yes | head ends quietly)", async () => {
      // gVisor's /proc/self/status has no SigIgn line; there the quiet `yes` is the proof.
      const r = await run(["sh", "-c", "yes | head -1; grep SigIgn /proc/self/status; exit 0"]);
      assert.match(out(r), /^y\n(SigIgn:\t0{16}\n)?$/, describeResult(r));
      assert.equal(r.stderr.toString(), "", describeResult(r));
      assert.equal(r.exitCode, 0, describeResult(r));
    });

    // As pid 1 of a pid namespace, a program ignores every signal it has no handler for
    // (SIGTERM, SIGINT from itself or its children) and must reap orphans: surprising for code
    // written for a normal process. Runtimes put an init (bwrap's reaper, docker --init) above it.
    test(PID1_TEST, async () => {
      const r = await run(py("import os, signal; os.kill(os.getpid(), signal.SIGTERM); print('survived')"));
      assert.equal(r.signal, "SIGTERM", describeResult(r));
      assert.equal(r.exitCode, null);
    });

    test("stdin bytes are fed, then closed", async () => {
      const r = await run(py("import sys; d = sys.stdin.read(); print(d.upper(), end='')"), { stdin: "ping\nmore\n" });
      assert.equal(out(r), "PING\nMORE\n", describeResult(r));
    });

    test("streamed stdin is fed chunk by chunk", async () => {
      async function* chunks() {
        for (const c of ["one\n", "two\n", "three\n"]) {
          await new Promise((res) => setTimeout(res, 30));
          yield c;
        }
      }
      const r = await run(py("import sys\nfor l in sys.stdin: print(len(l.strip()))"), { stdinStream: chunks() });
      assert.equal(out(r), "3\n3\n5\n", describeResult(r));
    });

    test("no stdin reads as end-of-file", async () => {
      const r = await run(py("import sys; print(repr(sys.stdin.read()))"));
      assert.equal(out(r), "''\n", describeResult(r));
    });

    test("stderr is kept apart from stdout, and output is streamed", async () => {
      const live: string[] = [];
      const r = await run(py("import sys; print('to out'); sys.stdout.flush(); print('to err', file=sys.stderr)"), {
        onStdout: (b) => live.push(`o:${b.toString()}`),
        onStderr: (b) => live.push(`e:${b.toString()}`),
      });
      assert.equal(out(r), "to out\n");
      assert.equal(r.stderr.toString(), "to err\n");
      assert.deepEqual(live.sort(), ["e:to err\n", "o:to out\n"]);
    });

    test("the environment is exactly the one given", async () => {
      const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/workspace", LANG: "C.UTF-8", PETRI_TRICKY: "a b=c\nd ünï 'q' \"dq\" $HOME" };
      const r = await run(py("import os, json; print(json.dumps(dict(os.environ)))"), { env });
      assert.equal(r.exitCode, 0, describeResult(r));
      const seen = JSON.parse(out(r)) as Record<string, string>;
      for (const [k, v] of Object.entries(env)) assert.equal(seen[k], v, `env ${k}`);
      // Docker adds HOSTNAME and bubblewrap PWD (always, equal to the cwd); nothing else may
      // appear, in particular nothing of the host's environment.
      if ("PWD" in seen) assert.equal(seen.PWD, "/workspace");
      const extra = Object.keys(seen).filter((k) => !(k in env) && k !== "HOSTNAME" && k !== "PWD");
      assert.deepEqual(extra, [], `unexpected variables: ${extra.join(", ")}`);
    });

    test("workspace: host files are readable, written files appear on the host, owned by the run uid", async () => {
      await run(py("import os; s = open('/workspace/in.txt').read(); open('/workspace/out.txt', 'w').write(s[::-1]); os.mkdir('/workspace/sub'); open('/workspace/sub/f', 'w').write('x')"), {}, {
        prepare: (ws) => fs.writeFileSync(path.join(ws, "in.txt"), "abc"),
        check: (ws, r, spec) => {
          assert.equal(r.exitCode, 0, describeResult(r));
          assert.equal(fs.readFileSync(path.join(ws, "out.txt"), "utf8"), "cba");
          assert.equal(fs.readFileSync(path.join(ws, "sub", "f"), "utf8"), "x");
          const st = fs.statSync(path.join(ws, "out.txt"));
          assert.equal(st.uid, spec.uid, "file owner on the host");
          assert.equal(st.gid, spec.gid);
        },
      });
    });

    test("cwd is the one given", async () => {
      const r = await run(py("import os; print(os.getcwd())"), {}, {});
      assert.equal(out(r), "/workspace\n");
    });

    test("not root: runs as the given uid/gid", async () => {
      await run(py("import os; print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())"), {}, {
        check: (_ws, r, spec) => {
          const [uid, euid, gid, egid] = out(r).split(" ").map(Number);
          assert.equal(uid, spec.uid, describeResult(r));
          assert.equal(euid, spec.uid);
          assert.equal(gid, spec.gid);
          assert.equal(egid, spec.gid);
          assert.notEqual(uid, 0);
        },
      });
    });

    containerCase("no capabilities, and no way to gain them", async () => {
      const r = await run(py("print(open('/proc/self/status').read())"));
      const status = out(r);
      const field = (k: string) => new RegExp(`^${k}:\\s+([0-9a-f]+)$`, "m").exec(status)?.[1];
      assert.equal(BigInt(`0x${field("CapEff") ?? "ff"}`), 0n, status);
      assert.equal(BigInt(`0x${field("CapPrm") ?? "ff"}`), 0n, status);
      assert.equal(BigInt(`0x${field("CapAmb") ?? "0"}`), 0n, status);
      // setuid binaries must not help: su/newgrp exist in the image but cannot elevate.
      const r2 = await run(py("import os; os.setuid(0)"));
      assert.notEqual(r2.exitCode, 0, describeResult(r2));
    });

    containerCase("reading host files is not possible", async () => {
      const secretDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-secret-"));
      const secret = path.join(secretDir, "secret.txt");
      fs.writeFileSync(secret, "host secret");
      const rootMarker = `/root/.petri-conformance-${randomBytes(4).toString("hex")}`;
      let madeRootMarker = false;
      try {
        try { fs.writeFileSync(rootMarker, "x"); madeRootMarker = true; } catch { /* not root: the /root probe below still runs */ }
        const code = [
          "import os, sys, json",
          "res = {}",
          "for p in sys.argv[1:3]:",
          "    try:",
          "        res[p] = open(p).read()[:40]",
          "    except OSError as e:",
          "        res[p] = 'ERR ' + type(e).__name__",
          "try:",
          "    res['/root'] = os.listdir('/root')",
          "except OSError as e:",
          "    res['/root'] = 'ERR ' + type(e).__name__",
          "print(json.dumps(res))",
        ].join("\n");
        const r = await run(py(code, secret, "/etc/shadow"));
        assert.equal(r.exitCode, 0, describeResult(r));
        const res = JSON.parse(out(r)) as Record<string, string | string[]>;
        assert.match(String(res[secret]), /^ERR /, "a host file outside the mounts is visible");
        assert.match(String(res["/etc/shadow"]), /^ERR /, "/etc/shadow is readable");
        if (Array.isArray(res["/root"])) assert.ok(!res["/root"].includes(path.basename(rootMarker)), "the host's /root is visible");
      } finally {
        fs.rmSync(secretDir, { recursive: true, force: true });
        if (madeRootMarker) fs.rmSync(rootMarker, { force: true });
      }
    });

    containerCase("writing outside the workspace and /tmp fails (read-only root)", async () => {
      const code = [
        "import json",
        "res = {}",
        "for p in ['/petri-x', '/etc/petri-x', '/usr/petri-x', '/usr/bin/python3', '/tmp/petri-x', '/workspace/petri-x']:",
        "    try:",
        "        open(p, 'a').write('x')",
        "        res[p] = 'ok'",
        "    except OSError as e:",
        "        res[p] = type(e).__name__",
        "print(json.dumps(res))",
      ].join("\n");
      const r = await run(py(code), {}, {
        check: (ws) => assert.equal(fs.readFileSync(path.join(ws, "petri-x"), "utf8"), "x"),
      });
      const res = JSON.parse(out(r)) as Record<string, string>;
      for (const p of ["/petri-x", "/etc/petri-x", "/usr/petri-x", "/usr/bin/python3"]) assert.notEqual(res[p], "ok", `${p} is writable`);
      assert.equal(res["/tmp/petri-x"], "ok", "/tmp must be writable");
      assert.equal(res["/workspace/petri-x"], "ok");
    });

    containerCase("network: outside addresses and the host's loopback are unreachable, immediately", async () => {
      const server = net.createServer((s) => s.end("host service\n"));
      await new Promise<void>((res) => server.listen(0, "127.0.0.1", () => res()));
      const port = (server.address() as net.AddressInfo).port;
      try {
        // Refuse to try the outside address if the sandbox has any interface but lo: no packet
        // may leave this machine, even when the runtime under test is broken.
        const code = [
          "import socket, json, sys, time",
          "ifaces = [n for _, n in socket.if_nameindex()]",
          "if any(n != 'lo' for n in ifaces):",
          "    print(json.dumps({'ifaces': ifaces})); sys.exit(3)",
          "res = {'ifaces': ifaces}",
          "for host, port in [('1.1.1.1', 53), ('127.0.0.1', int(sys.argv[1]))]:",
          "    t = time.time()",
          "    s = socket.socket(); s.settimeout(5)",
          "    try:",
          "        s.connect((host, port)); res[host] = 'connected'",
          "    except OSError as e:",
          "        res[host] = type(e).__name__",
          "    res[host + '_s'] = time.time() - t",
          "print(json.dumps(res))",
        ].join("\n");
        const r = await run(py(code, String(port)));
        assert.equal(r.exitCode, 0, describeResult(r));
        const res = JSON.parse(out(r)) as Record<string, string | number>;
        assert.notEqual(res["1.1.1.1"], "connected");
        assert.notEqual(res["127.0.0.1"], "connected", "reached a service on the host's loopback");
        assert.ok(Number(res["1.1.1.1_s"]) < 2, `outside connect took ${res["1.1.1.1_s"]} s: it should fail at once`);
      } finally {
        server.close();
      }
    });

    containerCase("a file larger than fileSizeBytes cannot be written", async () => {
      const limit = 1024 * 1024;
      const code = [
        "import errno",
        "try:",
        "    with open('/workspace/big', 'wb') as f:",
        "        for _ in range(4):",
        "            f.write(b'x' * (1024 * 1024)); f.flush()",
        "    print('wrote all')",
        "except OSError as e:",
        "    print(errno.errorcode.get(e.errno))",
      ].join("\n");
      await run(py(code), { limits: { fileSizeBytes: limit } }, {
        check: (ws, r) => {
          assert.ok(r.signal === "SIGXFSZ" || out(r).trim() === "EFBIG", describeResult(r));
          assert.ok(fs.statSync(path.join(ws, "big")).size <= limit);
        },
      });
    });

    containerCase("output flood keeps its head and tail, says how much was cut, and is flagged", async () => {
      const limit = 64 * 1024;
      const r = await run(py("import sys\nsys.stdout.write('HEAD')\nfor _ in range(64): sys.stdout.write('y' * 65536)\nsys.stdout.write('TAIL')\nsys.stderr.write('e' * 10)"), { outputLimitBytes: limit });
      assert.equal(r.exitCode, 0, describeResult(r));
      const cut = 64 * 65536 + 8 - limit;
      assert.equal(r.stdout.toString(), "HEAD" + "y".repeat(limit / 2 - 4) + cutMarker(cut) + "y".repeat(limit / 2 - 4) + "TAIL");
      assert.equal(r.stdoutCutBytes, cut);
      assert.equal(r.stdoutTruncated, true);
      assert.equal(r.stderr.toString(), "eeeeeeeeee");
      assert.equal(r.stderrTruncated, false);
    });

    test("a memory hog is OOM-killed", async () => {
      const r = await run(py("x = []\nwhile True: x.append(b'x' * (8 << 20))"), { limits: { memoryBytes: 128 * 1024 * 1024 }, timeoutMs: 30_000 });
      assert.equal(r.oomKilled, true, describeResult(r));
      assert.notEqual(r.exitCode, 0);
      assert.equal(r.timedOut, false);
    });

    test("an infinite loop times out and its whole process tree is gone", async () => {
      const marker = `petri-conf-loop-${randomBytes(6).toString("hex")}`;
      const code = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(1000)\nwhile True: pass";
      const t0 = Date.now();
      const r = await run(py(code, marker), { timeoutMs: 1500 });
      assert.equal(r.timedOut, true, describeResult(r));
      assert.equal(r.killed, false);
      assert.equal(r.exitCode, null);
      assert.ok(Date.now() - t0 < 15_000, "the timeout was not enforced promptly");
      assert.ok(await waitUntil(() => hostProcessesWith(marker).length === 0, 5000), `left behind: ${hostProcessesWith(marker).join(", ")}`);
      assert.equal(await leftBehind(), 0);
    });

    test("a fork bomb is refused with EAGAIN below the pids limit, and the host stays fine", async () => {
      const marker = `petri-conf-bomb-${randomBytes(6).toString("hex")}`;
      // Forks until refused, keeps pressing for a second, then leaves its sleeping children behind
      // for the runtime to kill (no timeout involved: how fast forks are is no concern here).
      const code = [
        "import os, sys, time",
        "n = 0",
        "while True:",
        "    try:",
        "        if os.fork() == 0:",
        "            time.sleep(1000)",
        "        n += 1",
        "    except OSError as e:",
        "        print('fork refused after', n, e.errno, flush=True)",
        "        break",
        "end = time.time() + 1",
        "while time.time() < end:",
        "    try:",
        "        if os.fork() == 0:",
        "            time.sleep(1000)",
        "    except OSError:",
        "        time.sleep(0.01)",
      ].join("\n");
      // The case is about the pids limit. A process holding the data stack (the warm interpreter's,
      // or a cold program importing it) that forks 30 children needs far more memory than 256 MiB
      // under gVisor (~0.9 GiB measured, cold as warm): with the stack, memory must not bind first.
      const r = await run(py(code, marker), { limits: { pids: 32, ...(stack ? { memoryBytes: 2048 * 1024 * 1024 } : {}) }, timeoutMs: 120_000 });
      // The program itself sees the limit (EAGAIN), as under Linux: the sandbox does not die of it.
      const refused = /fork refused after (\d+) 11\n/.exec(out(r));
      assert.ok(refused, describeResult(r));
      assert.ok(Number(refused[1]) < 32, describeResult(r));
      assert.equal(r.exitCode, 0, describeResult(r));
      assert.ok(await waitUntil(() => hostProcessesWith(marker).length === 0, 10_000), `left behind: ${hostProcessesWith(marker).length} processes`);
      assert.equal(await leftBehind(), 0);
      assert.equal(spawnSync("true").status, 0, "the host cannot start a process");
      const again = await run(py("print('still fine')"));
      assert.equal(out(again), "still fine\n");
    });

    // Under gVisor the OCI pids limit used to land on the host cgroup of the whole sandbox, where
    // the Sentry's own threads count: a dozen processes (a broker's socat connections, go build)
    // crashed the sandbox with exit 2 (gvisor-limits.ts).
    containerCase("a program with many processes, all under the pids limit, runs to its end", async () => {
      const r = await run(["sh", "-c", "for i in $(seq 40); do sleep 2 & done; wait; echo all done"], { limits: { pids: 64 } });
      assert.equal(r.exitCode, 0, describeResult(r));
      assert.equal(out(r), "all done\n");
    });

    // Aborted mid-run: only once the program says it is running (with pre-start on, a timer
    // would fire during the primer and test an aborted start instead).
    test("the abort signal kills the run", async () => {
      const ac = new AbortController();
      const marker = `petri-conf-abort-${randomBytes(6).toString("hex")}`;
      let seen = "";
      let abortedAt = 0;
      const r = await run(py("import sys, time\nprint('running', flush=True)\ntime.sleep(60)\nprint('not killed')", marker), {
        signal: ac.signal,
        timeoutMs: 60_000,
        onStdout: (b) => {
          seen += b.toString();
          if (!abortedAt && seen.includes("running\n")) { abortedAt = Date.now(); ac.abort(); }
        },
      });
      assert.ok(abortedAt > 0, `the run never said it was running: ${describeResult(r)}`);
      assert.equal(out(r), "running\n", describeResult(r));
      assert.equal(r.killed, true, describeResult(r));
      assert.equal(r.timedOut, false);
      assert.equal(r.exitCode, null);
      assert.equal(r.signal, "SIGKILL", describeResult(r));
      assert.ok(Date.now() - abortedAt < 15_000, "the abort was not enforced promptly");
      assert.ok(await waitUntil(() => hostProcessesWith(marker).length === 0, 5000), `left behind: ${hostProcessesWith(marker).join(", ")}`);
      assert.equal(await leftBehind(), 0);
    });

    test("resource usage is reported as numbers", async () => {
      const r = await run(py("x = b'x' * (32 << 20); s = sum(range(3_000_000)); print(len(x))"));
      assert.equal(r.exitCode, 0, describeResult(r));
      assert.equal(typeof r.peakMemoryBytes, "number", describeResult(r));
      assert.equal(typeof r.cpuTimeMs, "number", describeResult(r));
      assert.ok(r.peakMemoryBytes! >= 32 << 20, `peak ${r.peakMemoryBytes} below what the run allocated`);
      assert.ok(r.cpuTimeMs! > 0);
    });

    containerCase("mount points under an image directory are created, and everything stays read-only", async () => {
      // The image has an empty /petri: a mount at /petri/conf/deep needs a mount point inside it.
      const extra = tempHostDir();
      try {
        fs.writeFileSync(path.join(extra, "hello.txt"), "from the host\n", { mode: 0o644 });
        const code = [
          "import json, os",
          "res = {'read': open('/petri/conf/deep/hello.txt').read(), 'usr': os.path.exists('/usr/bin/python3')}",
          "for p in ['/petri/x', '/petri/conf/x', '/petri/conf/deep/x', '/x', '/etc/petri-x']:",
          "    try:",
          "        open(p, 'a').write('x'); res[p] = 'ok'",
          "    except OSError as e:",
          "        res[p] = type(e).__name__",
          "print(json.dumps(res))",
        ].join("\n");
        const r = await run(py(code), {}, { extraMounts: [{ source: extra, target: "/petri/conf/deep", readonly: true }] });
        assert.equal(r.exitCode, 0, describeResult(r));
        const res = JSON.parse(out(r)) as Record<string, unknown>;
        assert.equal(res.read, "from the host\n");
        assert.equal(res.usr, true);
        for (const p of ["/petri/x", "/petri/conf/x", "/petri/conf/deep/x", "/x", "/etc/petri-x"]) assert.notEqual(res[p], "ok", `${p} is writable`);
      } finally {
        fs.rmSync(extra, { recursive: true, force: true });
      }
    });

    // Every language in both forms, built the way the exec service builds them: a snippet that
    // needs a file gets it read-only under SNIPPET_DIR (a mount point the image does not have).
    for (const lang of Object.values(LANGUAGES)) {
      const program = stack && lang.name === "python" ? STACK_IMPORT + HELLO.python : HELLO[lang.name];
      if (stack && lang.name !== "python") {
        nodeTest(`${lang.name}: the file and snippet forms run`, { skip: `pre-start on, data stack: ${lang.name} runs start in units set up as on the first image (only Python's interpreter imports the data stack), whose pre-start-on pass of this runtime runs them` }, () => undefined);
        continue;
      }
      if (!program) {
        nodeTest(`${lang.name}: a file and a snippet run`, { todo: `no hello program for ${lang.name} in the conformance suite` }, () => undefined);
        continue;
      }
      const langRun = async (form: "file" | "snippet") => {
        const cache = tempHostDir();
        const snippetDir = tempHostDir();
        try {
          const base = subject.baseSpec("/nonexistent");
          fs.chownSync(cache, base.uid, base.gid);
          const extraMounts: RunSpec["mounts"] = [
            { source: cache, target: CACHE_DIR, readonly: false },
            { source: agentFilesDir(), target: AGENT_MOUNT, readonly: true },
          ];
          let argv: string[];
          const entry = `hello${lang.extensions[0]}`;
          if (form === "file") argv = substitute(lang.file, { file: entry });
          else {
            fs.writeFileSync(path.join(snippetDir, lang.snippet.filename), program, { mode: 0o644 });
            extraMounts.push({ source: snippetDir, target: SNIPPET_DIR, readonly: true });
            argv = substitute(lang.snippet.argv, { file: `${SNIPPET_DIR}/${lang.snippet.filename}` });
          }
          return await run(argv, { env: { ...base.env, ...lang.env }, interpreter: lang.warm }, {
            extraMounts,
            prepare: (ws) => {
              if (form === "file") fs.writeFileSync(path.join(ws, entry), program, { mode: 0o644 });
            },
          });
        } finally {
          fs.rmSync(cache, { recursive: true, force: true });
          fs.rmSync(snippetDir, { recursive: true, force: true });
        }
      };
      for (const form of ["file", "snippet"] as const) {
        test(`${lang.name}: the ${form} form runs`, async () => {
          const r = await langRun(form);
          assert.equal(r.exitCode, 0, describeResult(r));
          assert.equal(out(r), `hello from ${lang.name}\n`);
        });
      }
    }

    // issue 15 item 5: a Go program is built once per content and then exec'd from the sandbox's
    // cache; it must never run a binary of other sources than the workspace holds now.
    test("go: an unchanged program runs from the binary cache, a changed source or package is rebuilt, //go:embed is never stale", async (t) => {
      if (opts.slowCases === false) return void t.skip("slow case: run on this runtime's first image only");
      if (opts.prestart) return void t.skip("pre-start on: not run in this mode (a slow case of many runs over one workspace; the binary cache does not depend on how the unit started); it runs in this runtime's pre-start-off pass");
      const ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-go-"));
      const cache = fs.mkdtempSync(path.join(os.tmpdir(), "petri-conf-cache-"));
      const snippets = tempHostDir();
      try {
        const base = subject.baseSpec(ws);
        for (const d of [ws, cache]) fs.chownSync(d, base.uid, base.gid);
        const write = (rel: string, text: string) => {
          fs.mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
          fs.writeFileSync(path.join(ws, rel), text);
          for (let d = path.dirname(path.join(ws, rel)); d.startsWith(ws); d = path.dirname(d)) fs.chownSync(d, base.uid, base.gid);
        };
        const goRun = async (entry: string, snippet?: string) => {
          let argv = substitute(LANGUAGES.go.file, { file: entry });
          if (snippet !== undefined) {
            // Every run's snippet has a path of its own (/petri/snippet/<exec id>/main.go).
            fs.mkdirSync(path.join(snippets, entry), { mode: 0o755 });
            fs.writeFileSync(path.join(snippets, entry, LANGUAGES.go.snippet.filename), snippet, { mode: 0o644 });
            argv = substitute(LANGUAGES.go.snippet.argv, { file: `${SNIPPET_DIR}/${entry}/${LANGUAGES.go.snippet.filename}` });
          }
          const r = await subject.runtime.run({
            ...base, argv, env: { ...base.env, ...LANGUAGES.go.env, HOME: "/tmp" },
            mounts: [...base.mounts, { source: cache, target: CACHE_DIR, readonly: false }, { source: snippets, target: SNIPPET_DIR, readonly: true }],
            labels: { ...base.labels, ...labels },
            timeoutMs: 300_000,
          });
          return { r, bins: fs.existsSync(path.join(cache, "go-bin")) ? fs.readdirSync(path.join(cache, "go-bin")).filter((f) => !f.startsWith(".")) : [] };
        };
        const inode = (name: string) => fs.statSync(path.join(cache, "go-bin", name)).ino;
        write("go.mod", "module example.com/m\n\ngo 1.24\n");
        write("greet/greet.go", 'package greet\n\nfunc Word() string { return "v1" }\n');
        write("main.go", 'package main\n\nimport (\n\t"fmt"\n\t"os"\n\n\t"example.com/m/greet"\n)\n\nfunc main() { fmt.Println("main1", greet.Word()); os.Exit(3) }\n');
        const first = await goRun("main.go");
        assert.equal(out(first.r), "main1 v1\n", describeResult(first.r));
        assert.equal(first.r.exitCode, 3, "the program's own exit status");
        assert.equal(first.bins.length, 1, `one binary kept: ${first.bins}`);
        const again = await goRun("main.go");
        assert.equal(out(again.r), "main1 v1\n", describeResult(again.r));
        assert.equal(again.r.exitCode, 3);
        assert.deepEqual(again.bins, first.bins);
        assert.equal(inode(again.bins[0]), inode(first.bins[0]), "an unchanged program was not built again");
        write("greet/greet.go", 'package greet\n\nfunc Word() string { return "v2" }\n');
        const pkg = await goRun("main.go");
        assert.equal(out(pkg.r), "main1 v2\n", `a changed workspace package is rebuilt: ${describeResult(pkg.r)}`);
        write("main.go", 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/m/greet"\n)\n\nfunc main() { fmt.Println("main2", greet.Word()) }\n');
        const main = await goRun("main.go");
        assert.equal(out(main.r), "main2 v2\n", `a changed entry file is rebuilt: ${describeResult(main.r)}`);
        assert.equal(main.r.exitCode, 0);
        assert.equal(main.bins.length, 3, `${main.bins}`);
        // Embedded files are content the key does not cover: such a program always goes through go run.
        write("emb/main.go", 'package main\n\nimport (\n\t_ "embed"\n\t"fmt"\n)\n\n//go:embed msg.txt\nvar msg string\n\nfunc main() { fmt.Print(msg) }\n');
        write("emb/msg.txt", "first\n");
        assert.equal(out((await goRun("emb/main.go")).r), "first\n");
        write("emb/msg.txt", "second\n");
        const emb = await goRun("emb/main.go");
        assert.equal(out(emb.r), "second\n", describeResult(emb.r));
        // The same snippet in a new run (a new path) is a hit; another snippet is not.
        const snip = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("snippet one") }\n';
        const s1 = await goRun("ex_1", snip);
        assert.equal(out(s1.r), "snippet one\n", describeResult(s1.r));
        const s2 = await goRun("ex_2", snip);
        assert.equal(out(s2.r), "snippet one\n", describeResult(s2.r));
        assert.deepEqual(s2.bins.sort(), s1.bins.sort(), "the same snippet again was not built again");
        const s3 = await goRun("ex_3", snip.replace("snippet one", "snippet two"));
        assert.equal(out(s3.r), "snippet two\n", describeResult(s3.r));
        assert.deepEqual(fs.readdirSync(ws).sort(), ["emb", "go.mod", "greet", "main.go"], "nothing was written into the workspace");
      } finally {
        fs.rmSync(ws, { recursive: true, force: true });
        fs.rmSync(cache, { recursive: true, force: true });
        fs.rmSync(snippets, { recursive: true, force: true });
      }
    });

    containerCase("vault: the code sees placeholders only, reaches the broker, and never the secret", async (t) => {
      const noSockets = await subject.runtime.hostSockets?.();
      if (noSockets) return void t.skip(noSockets);
      const TOKEN = `conf_${randomBytes(18).toString("base64url")}`;
      const upstreamCa = new RunCa("conformance upstream");
      const seen: string[] = [];
      const leaf = upstreamCa.leafFor("127.0.0.1");
      const upstream = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
        seen.push(String(req.headers.authorization));
        res.end(req.headers.authorization === `Bearer ${TOKEN}` ? "you are alice" : "who are you?");
      });
      await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
      const port = (upstream.address() as net.AddressInfo).port;
      const egress = parseEgressPolicy({ privateHosts: "127.0.0.0/8" });
      const store = new SecretStore(new Database(":memory:"), generateMasterKey(), { egress });
      store.put("tn_conf", "api", { value: TOKEN, kind: "http", config: { hosts: [`127.0.0.1:${port}`], upstreamCa: upstreamCa.cert.certPem } });
      const dir = tempHostDir();
      const session = await openBrokerSession({
        store, tenantId: "tn_conf", sandboxId: "sb_conf", execId: `ex_conf_${randomBytes(4).toString("hex")}`, secrets: ["api"], egress,
        runDir: path.join(dir, "broker"), onEvent: () => undefined,
      });
      try {
        const code = [
          "import os, urllib.request",
          `r = urllib.request.urlopen('https://127.0.0.1:${port}/whoami', timeout=20)`,
          "print('WHOAMI', r.status, r.read().decode())",
          "print('PLACEHOLDER', os.environ['PETRI_SECRET_API'])",
          "blob = open('/proc/self/environ', 'rb').read()",
          "for root, _, files in os.walk('/petri'):",
          "    for f in files:",
          "        try: blob += open(os.path.join(root, f), 'rb').read()",
          "        except OSError: pass",
          "print('DUMP', blob.hex())",
        ].join("\n");
        const base = subject.baseSpec("/nonexistent");
        const r = await run(session.wrapArgv(py(code)), { env: { ...base.env, ...session.env }, interpreter: LANGUAGES.python.warm }, { extraMounts: [session.mount] });
        assert.equal(r.exitCode, 0, describeResult(r));
        const o = out(r);
        assert.match(o, /^WHOAMI 200 you are alice$/m, "the broker put the secret on the wire");
        assert.match(o, /^PLACEHOLDER petri-secret:api:[0-9a-f]+$/m);
        assert.deepEqual(seen, [`Bearer ${TOKEN}`]);
        const dump = Buffer.from(/^DUMP ([0-9a-f]*)$/m.exec(o)?.[1] ?? "", "hex");
        assert.ok(dump.length > 0, "the code could read its environment and /petri");
        const detector = new Redactor([{ name: "api", value: TOKEN }]);
        assert.deepEqual(detector.detect(dump), [], "the secret (in some encoding) is readable inside the run");
        assert.deepEqual(detector.detect(Buffer.concat([r.stdout, r.stderr])), []);
      } finally {
        await session.close();
        upstream.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    test("count/reap see nothing once runs are over", async () => {
      // With pre-start on, every unit pre-started was taken by a run: none idles (quiet real runs).
      if (opts.prestart) assert.equal(subject.runtime.prestartStats!().ready, 0, "an idle pre-started unit is left");
      assert.equal(await leftBehind(), 0);
      assert.equal(await subject.runtime.reap(labels), 0);
    });
  });
}
