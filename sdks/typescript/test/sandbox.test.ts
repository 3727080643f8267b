import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  AuthenticationError, ConfigurationError, ConflictError, ConnectionError, ExecNotFoundError, FileNotFoundError,
  InvalidRequestError, PetriError, Sandbox, SandboxNotFoundError, TimeoutError,
} from "jhansi";
import { REPO_DIR, SDK_DIR, runProcess, startServer, tmpDir, writeTree, type LiveServer } from "./helpers.js";

let server: LiveServer;
let sb: Sandbox;

before(async () => {
  server = await startServer();
  sb = await Sandbox.create({ language: "python", ...server.conn });
});

after(async () => {
  await sb?.kill().catch(() => undefined);
  await server?.stop();
});

describe("the seed program", () => {
  test("runs as written, with PETRI_URL and PETRI_API_KEY from the environment", async () => {
    const dir = tmpDir("jhansi-seed-");
    try {
      fs.mkdirSync(path.join(dir, "node_modules"));
      fs.symlinkSync(SDK_DIR, path.join(dir, "node_modules", "jhansi"));
      fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "seed", private: true, type: "module" }));
      fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
        compilerOptions: {
          target: "ES2022", lib: ["ES2022", "ESNext.Disposable"], module: "NodeNext", moduleResolution: "NodeNext",
          strict: true, skipLibCheck: true, types: ["node"], typeRoots: [path.join(SDK_DIR, "node_modules", "@types")],
        },
        files: ["seed.ts"],
      }));
      fs.writeFileSync(path.join(dir, "seed.ts"), [
        'import { Sandbox } from "jhansi";',
        'await using sb = await Sandbox.create({ language: "python" });',
        "const result = await sb.exec(\"print('hello from isolation')\");",
        "console.log(result.output);",
        "",
      ].join("\n"));
      const tsc = await runProcess(process.execPath, [path.join(SDK_DIR, "node_modules", "typescript", "bin", "tsc"), "-p", dir]);
      assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
      const before = (await Sandbox.list(server.conn)).length;
      const env = { ...process.env, PETRI_URL: server.url, PETRI_API_KEY: server.apiKey };
      const r = await runProcess(process.execPath, [path.join(dir, "seed.js")], { cwd: dir, env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), "hello from isolation");
      // `await using` killed the sandbox on the way out.
      assert.equal((await Sandbox.list(server.conn)).length, before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("configuration", () => {
  test("without options or environment the error names PETRI_API_KEY and PETRI_URL", async () => {
    const saved = { key: process.env.PETRI_API_KEY, url: process.env.PETRI_URL };
    delete process.env.PETRI_API_KEY;
    delete process.env.PETRI_URL;
    try {
      await assert.rejects(Sandbox.create({ language: "python" }), (e: unknown) => {
        assert.ok(e instanceof ConfigurationError && e instanceof PetriError);
        assert.match(e.message, /PETRI_API_KEY/);
        assert.match(e.message, /PETRI_URL/);
        return true;
      });
      await assert.rejects(Sandbox.list({ url: server.url }), /PETRI_API_KEY/);
    } finally {
      if (saved.key !== undefined) process.env.PETRI_API_KEY = saved.key;
      if (saved.url !== undefined) process.env.PETRI_URL = saved.url;
    }
  });
});

describe("sandbox lifecycle", () => {
  test("create, connect, list, kill", async () => {
    const a = await Sandbox.create({ language: "bash", metadata: { owner: "tests" }, timeoutMs: 20_000, limits: { memoryMb: 256 }, ...server.conn });
    assert.match(a.id, /^sb_/);
    assert.equal(a.language, "bash");
    assert.equal(a.info.limits.timeoutMs, 20_000);
    assert.equal(a.info.limits.memoryMb, 256);
    assert.deepEqual(a.info.metadata, { owner: "tests" });
    assert.ok(a.info.createdAt instanceof Date);
    const b = await Sandbox.connect(a.id, server.conn);
    assert.equal(b.id, a.id);
    assert.equal((await b.getInfo()).language, "bash");
    const ids = (await Sandbox.list(server.conn)).map((s) => s.id);
    assert.ok(ids.includes(a.id) && ids.includes(sb.id));
    assert.equal((await Sandbox.list({ ...server.conn, limit: 1 })).length, 1);
    assert.equal(await a.kill(), true);
    assert.equal(await b.kill(), false, "a second kill reports the sandbox was already gone");
    await assert.rejects(Sandbox.connect(a.id, server.conn), SandboxNotFoundError);
  });

  test("await using kills the sandbox when the block ends, even on error", async () => {
    let id = "";
    await assert.rejects((async () => {
      await using s = await Sandbox.create({ language: "python", ...server.conn });
      id = s.id;
      throw new Error("boom");
    })(), /boom/);
    await assert.rejects(Sandbox.connect(id, server.conn), SandboxNotFoundError);
  });
});

describe("files", () => {
  test("write, read, list, exists, remove, with sub-directories", async () => {
    const info = await sb.files.write("dir/sub/hello.txt", "héllo\n");
    assert.equal(info.path, "dir/sub/hello.txt");
    assert.equal(info.size, Buffer.byteLength("héllo\n"));
    assert.match(info.sha256 ?? "", /^[0-9a-f]{64}$/);
    assert.equal(await sb.files.read("dir/sub/hello.txt"), "héllo\n");
    const bin = new Uint8Array([0, 1, 2, 255]);
    await sb.files.write("dir/bin.dat", bin);
    assert.deepEqual(await sb.files.read("dir/bin.dat", { format: "bytes" }), bin);
    const listed = await sb.files.list("dir");
    assert.deepEqual(listed.map((f) => f.path).sort(), ["dir/bin.dat", "dir/sub", "dir/sub/hello.txt"]);
    assert.equal(listed.find((f) => f.path === "dir/sub")?.type, "directory");
    assert.equal(await sb.files.exists("dir/sub/hello.txt"), true);
    assert.equal(await sb.files.exists("dir/nope.txt"), false);
    assert.equal(await sb.files.exists("nodir/nope.txt"), false);
    const written = await sb.files.writeMany([{ path: "many/a.txt", data: "a" }, { path: "many/b/c.txt", data: "c" }]);
    assert.deepEqual(written.map((f) => f.path).sort(), ["many/a.txt", "many/b/c.txt"]);
    const local = path.join(tmpDir(), "out", "hello.txt");
    await sb.files.download("dir/sub/hello.txt", local);
    assert.equal(fs.readFileSync(local, "utf8"), "héllo\n");
    await assert.rejects(sb.files.remove("dir"), ConflictError, "a non-empty directory needs recursive");
    await sb.files.remove("dir", { recursive: true });
    await sb.files.remove("many", { recursive: true });
    assert.equal(await sb.files.exists("dir"), false);
    await assert.rejects(sb.files.read("dir/sub/hello.txt"), FileNotFoundError);
    await assert.rejects(sb.files.remove("dir/nothing"), FileNotFoundError);
    await assert.rejects(sb.files.write("../escape.txt", "x"), InvalidRequestError);
  });

  test("upload(localDir) sends the tree, honouring .petriignore", async () => {
    const dir = tmpDir();
    writeTree(dir, {
      "app/main.py": "import lib.util\nprint(lib.util.X)\n",
      "app/lib/util.py": "X = 42\n",
      "app/lib/__init__.py": "",
      "app/__pycache__/x.pyc": "junk",
      "app/notes.log": "junk",
      "app/.petriignore": "*.log\n",
    });
    const files = await sb.files.upload(path.join(dir, "app"), { remoteDir: "proj" });
    assert.deepEqual(files.map((f) => f.path).sort(), ["proj/.petriignore", "proj/lib/__init__.py", "proj/lib/util.py", "proj/main.py"]);
    const r = await sb.exec("import runpy, sys; sys.path.insert(0, 'proj'); runpy.run_path('proj/main.py')");
    assert.equal(r.stdout, "42\n", r.stderr);
    await sb.files.remove("proj", { recursive: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe("runs", () => {
  test("exec returns output, exit code and errors of a snippet", async () => {
    const r = await sb.exec("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)");
    assert.equal(r.output, "out\n");
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(r.exitCode, 3);
    assert.equal(r.status, "completed");
    assert.equal(r.ok, false);
    assert.match(r.id, /^ex_/);
    assert.ok(r.durationMs > 0);
  });

  test("exec passes stdin, env and a per-run timeout", async () => {
    const r = await sb.exec("import os, sys; print(sys.stdin.read().upper(), os.environ['GREETING'])", { stdin: "abc", env: { GREETING: "hi" } });
    assert.equal(r.stdout, "ABC hi\n");
    assert.ok(r.ok);
    const slow = await sb.exec("import time; time.sleep(30)", { timeoutMs: 1_500 });
    assert.equal(slow.timedOut, true);
    assert.equal(slow.ok, false);
  });

  test("run executes a workspace file with args", async () => {
    await sb.files.write("pkg/main.py", "import sys\nfrom pkg.helper import twice\nprint(twice(sys.argv[1:]))\n");
    await sb.files.write("pkg/helper.py", "def twice(xs):\n    return [x * 2 for x in xs]\n");
    await sb.files.write("pkg/__init__.py", "");
    const r = await sb.run("pkg/main.py", { args: ["a", "b c"] });
    assert.equal(r.stdout, "['aa', 'b cb c']\n", r.stderr);
    assert.equal(r.entry, "pkg/main.py");
    await assert.rejects(sb.run("pkg/missing.py"), FileNotFoundError);
    await sb.files.remove("pkg", { recursive: true });
  });

  test("a run reports the workspace files it changed", async () => {
    const r = await sb.exec("open('made.txt', 'w').write('x')");
    assert.deepEqual(r.files.created, ["made.txt"]);
    await sb.files.remove("made.txt");
  });

  test("streaming callbacks receive output before the run ends", async () => {
    const t0 = Date.now();
    const seen: { at: number; stream: string; data: string }[] = [];
    const r = await sb.exec("import sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\ntime.sleep(1)\nprint('second')", {
      onStdout: (data) => { seen.push({ at: Date.now() - t0, stream: "out", data }); },
      onStderr: (data) => { seen.push({ at: Date.now() - t0, stream: "err", data }); },
    });
    const end = Date.now() - t0;
    assert.equal(r.stdout, "first\nsecond\n");
    assert.equal(r.stderr, "warn\n");
    const out = seen.filter((s) => s.stream === "out").map((s) => s.data).join("");
    assert.equal(out, "first\nsecond\n");
    assert.equal(seen.filter((s) => s.stream === "err").map((s) => s.data).join(""), "warn\n");
    const first = seen.find((s) => s.data.includes("first"))!;
    assert.ok(first.at <= end - 700, `first chunk at ${first.at} ms, run ended at ${end} ms`);
  });

  test("a failing callback stops the run and its error reaches the caller", async () => {
    const t0 = Date.now();
    await assert.rejects(
      sb.exec("import time\nprint('x', flush=True)\ntime.sleep(20)", { onStdout: () => { throw new Error("callback failed"); } }),
      /callback failed/,
    );
    assert.ok(Date.now() - t0 < 15_000);
  });

  test("a detached run can be waited for, fetched later, and listed in the history", async () => {
    const h = await sb.start("import time\ntime.sleep(1)\nprint('done')");
    assert.match(h.id, /^ex_/);
    assert.equal((await h.status()).status, "running");
    const r = await h.wait();
    assert.equal(r.status, "completed");
    assert.equal(r.stdout, "done\n");
    const again = await sb.getExec(h.id);
    assert.equal((await again.wait()).stdout, "done\n");
    const history = await sb.history();
    const mine = history.find((x) => x.id === h.id);
    assert.ok(mine, "the run is in the history");
    assert.equal(mine!.status, "completed");
    assert.equal(mine!.entry, "<snippet>");
    assert.ok(history.length >= 2);
    await assert.rejects(sb.getExec("ex_doesnotexist"), ExecNotFoundError);
  });

  test("startFile runs a workspace file in the background", async () => {
    await sb.files.write("bg.py", "import sys\nprint('bg', *sys.argv[1:])\n");
    const h = await sb.startFile("bg.py", { args: ["x"] });
    assert.equal((await h.wait()).stdout, "bg x\n");
    await sb.files.remove("bg.py");
  });

  test("kill cancels a live run and its process tree", async () => {
    const h = await sb.start("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)");
    await new Promise((r) => setTimeout(r, 1_000));
    const t0 = Date.now();
    const r = await h.kill();
    assert.equal(r.cancelled, true);
    assert.equal(r.status, "cancelled");
    assert.ok(Date.now() - t0 < 15_000);
    assert.equal((await h.wait()).status, "cancelled");
    const info = await sb.getInfo();
    assert.equal(info.status, "ready", "no run is left in flight");
  });

  test("stdin can be written while a run lives, with output streamed to callbacks", async () => {
    const lines: string[] = [];
    const h = await sb.start("import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\nprint('eof')", {
      stdinOpen: true,
      onStdout: (d) => { lines.push(d); },
    });
    await h.sendStdin("one\n");
    await h.sendStdin("two\n");
    await h.closeStdin();
    const r = await h.wait();
    assert.equal(r.stdout, "got one\ngot two\neof\n");
    assert.equal(lines.join(""), "got one\ngot two\neof\n");
    await assert.rejects(h.sendStdin("late\n"), ConflictError);
  });

  test("waiting past the client's deadline raises TimeoutError and leaves the run going", async () => {
    const h = await sb.start("import time\ntime.sleep(3)\nprint('late')");
    await assert.rejects(h.wait({ timeoutMs: 300 }), TimeoutError);
    assert.equal((await h.wait()).stdout, "late\n");
  });
});

describe("typed errors", () => {
  test("server codes map to error classes", async () => {
    await assert.rejects(Sandbox.connect("sb_doesnotexist", server.conn), (e: unknown) => {
      assert.ok(e instanceof SandboxNotFoundError);
      assert.equal(e.code, "SANDBOX_NOT_FOUND");
      assert.equal(e.status, 404);
      return true;
    });
    await assert.rejects(Sandbox.create({ language: "cobol", ...server.conn }), (e: unknown) => e instanceof InvalidRequestError && e.code === "UNKNOWN_LANGUAGE");
    await assert.rejects(Sandbox.list({ url: server.url, apiKey: "pk_wrong" }), AuthenticationError);
  });

  test("an unreachable server raises ConnectionError", async () => {
    await assert.rejects(Sandbox.list({ url: "http://127.0.0.1:9", apiKey: "k" }), ConnectionError);
  });
});

void REPO_DIR;
