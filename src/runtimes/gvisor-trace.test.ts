import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { GvisorStraceParser, GvisorTraceFollower, parseGvisorStrace, readGvisorTrace } from "./gvisor-trace.js";
import { HANDOVER_OPEN_FLAGS } from "../tracing/program.js";

// Compiled tests run from dist/; the sample stays in the source tree.
const here = path.dirname(fileURLToPath(import.meta.url));
const SAMPLE = path.resolve(here, "../../../src/runtimes/testdata/runsc-strace-boot.log");
const CID = "c371eb4835aea1b5a69cabd4095bb6f50edc13cfa55e84129d2a985cfa75eacf";
// Recorded from `docker run --init --runtime=runsc-trace -e SECRET_TOKEN=hunter2 -w /workspace ... python3 main.py`
// where main.py writes /workspace/a.txt, reads /etc/hostname, appends rel.txt, runs `ls` and
// `sh -c 'echo "quoted, arg" > /tmp/x; cat /tmp/x'`.
const sample = fs.readFileSync(SAMPLE, "utf8");

describe("parseGvisorStrace", () => {
  const t = parseGvisorStrace(sample);

  test("execs: the program itself (from docker-init), then what it ran, with argv", () => {
    assert.deepEqual(t.execs, [
      { path: "/usr/bin/python3", argv: ["python3", "main.py"], count: 1 },
      { path: "/usr/bin/ls", argv: ["ls"], count: 1 },
      { path: "/usr/bin/sh", argv: ["sh", "-c", 'echo "quoted, arg" > /tmp/x; cat /tmp/x'], count: 1 },
      { path: "/usr/bin/cat", argv: ["cat", "/tmp/x"], count: 1 },
    ]);
  });

  test("opens: paths as the program saw them, relative ones resolved, write flagged", () => {
    const by = new Map(t.opens.map((o) => [o.path, o]));
    assert.equal(by.get("/workspace/a.txt")?.write, true);
    assert.equal(by.get("/workspace/a.txt")?.flags, "O_WRONLY|O_CLOEXEC|O_CREAT|O_TRUNC");
    assert.equal(by.get("/etc/hostname")?.write, false);
    assert.equal(by.get("/workspace/rel.txt")?.flags, "O_WRONLY|O_APPEND|O_CLOEXEC|O_CREAT");
    assert.equal(by.get("/workspace/main.py")?.write, false);
    assert.ok(!t.opens.some((o) => o.flags.includes("0x0")), "the 0x0 gVisor prints is dropped");
    assert.ok(t.opens.some((o) => o.path === "/tmp/x" && o.write) && t.opens.some((o) => o.path === "/tmp/x" && !o.write), "written by echo, read by cat: two entries");
    assert.equal(by.get("/workspace")?.write, false, "ls opened '.'");
  });

  test("failed calls and docker-init's own start-up are left out; entries are distinct", () => {
    assert.ok(!t.execs.some((e) => e.path.startsWith("/usr/local/")), "PATH lookups that failed");
    assert.ok(!t.opens.some((o) => o.path === "/usr/lib/locale/locale-archive"), "ENOENT opens");
    const keys = t.opens.map((o) => o.path + " " + o.write);
    assert.equal(new Set(keys).size, keys.length, "one entry per path and access, with a count");
    assert.ok(t.opens.every((o) => o.count >= 1));
    assert.equal(t.truncated, false);
  });

  test("environment values never come out", () => {
    assert.doesNotMatch(JSON.stringify(t), /hunter2|SECRET_TOKEN|HOSTNAME=/);
  });

  test("startAtExec skips a launcher's exec; limit caps and says so", () => {
    const warm = parseGvisorStrace(sample, { startAtExec: 2 });
    assert.equal(warm.execs[0].path, "/usr/bin/ls");
    assert.ok(!warm.opens.some((o) => o.path === "/workspace/a.txt"), "opens before the start are dropped");
    const capped = parseGvisorStrace(sample, { limit: 3 });
    assert.equal(capped.opens.length, 3);
    assert.equal(capped.execs.length, 3);
    assert.equal(capped.truncated, true);
  });

  test("programArgv: what runs before the program (Petri's forwarder and its socat) is left out", () => {
    const pre = (pid: number, what: string) => `I1126 05:12:24.100000   29417 strace.go:605] [   ${pid}:   ${pid}] sh X ${what} (1.2µs)`;
    const header = sample.split("\n")[0];
    const lines = [
      header,
      pre(2, 'execve(0x1 /bin/sh, 0x2 ["/bin/sh", "-c", "socat …", "petri-run", "python3", "main.py"], 0x3 []) = 0 (0x0)'),
      pre(3, 'execve(0x1 /usr/bin/socat, 0x2 ["socat", "TCP-LISTEN:3128"], 0x3 []) = 0 (0x0)'),
      pre(3, "openat(AT_FDCWD /, 0x1 /etc/socat.conf, O_RDONLY, 0o0) = 3 (0x3)"),
      pre(2, 'execve(0x1 /usr/bin/python3, 0x2 ["python3", "main.py"], 0x3 []) = 0 (0x0)'),
      pre(2, "openat(AT_FDCWD /workspace, 0x1 data.csv, O_RDONLY, 0o0) = 3 (0x3)"),
      pre(3, "openat(AT_FDCWD /, 0x1 /etc/socat2.conf, O_RDONLY, 0o0) = 3 (0x3)"),
      pre(2, "connect(0x3 socket:[5], 0x7f00 {Family: AF_INET, Addr: 10.1.2.3, Port: 8443}, 0x10) = 0 (0x0) errno=101 (network is unreachable)"),
      pre(2, "connect(0x3 socket:[5], 0x7f00 {Family: AF_INET, Addr: 10.1.2.3, Port: 8443}, 0x10) = 0 (0x0) errno=101 (network is unreachable)"),
      pre(2, 'connect(0x4 socket:[6], 0x7f00 {Family: AF_UNIX, Addr: "/run/x.sock"}, 0xd) = 0 (0x0)'),
    ].map((l) => l.replace(/^(I\S+ \S+\s+)\d+/, (m0, p1: string) => p1 + header.split(/\s+/)[2]));
    const got = parseGvisorStrace(lines.join("\n"), { programArgv: ["python3", "main.py"] });
    assert.deepEqual(got.execs.map((e) => e.path), ["/usr/bin/python3"]);
    assert.deepEqual(got.opens.map((o) => o.path), ["/workspace/data.csv"]);
    assert.deepEqual(got.connects, [
      { family: "inet", address: "10.1.2.3", port: 8443, errno: "ENETUNREACH", count: 2 },
      { family: "unix", address: "/run/x.sock", port: null, errno: null, count: 1 },
    ]);
  });

  test("a line forged through a file name with a newline is not believed", () => {
    const real = sample.split("\n").find((l) => l.includes("X openat(") && l.includes("/etc/hostname"))!;
    const forged = real.replace(/^(\S+ \S+\s+)\d+/, "$1" + "4242").replace("/etc/hostname", "/etc/shadow");
    const t2 = parseGvisorStrace(sample + "\n" + forged + "\n");
    assert.ok(!t2.opens.some((o) => o.path === "/etc/shadow"));
    const sameLine = parseGvisorStrace(sample + "\n" + real.replace("/etc/hostname", "/etc/shadow") + "\n");
    assert.ok(sameLine.opens.some((o) => o.path === "/etc/shadow"), "control: a genuine-looking line is parsed");
  });
});

describe("GvisorStraceParser: the log fed as it grows", () => {
  test("any split (mid-line, mid-character) gives what the whole log gives", () => {
    const header = sample.split("\n")[0];
    const pid = header.split(/\s+/)[2];
    // A path with multi-byte characters, so some splits fall inside one.
    const extra = `I1126 05:12:24.100000   ${pid} strace.go:605] [   2:   2] python3 X openat(AT_FDCWD /workspace, 0x1 /workspace/héllo-ü.txt, O_RDONLY, 0o0) = 3 (0x3) (1.2µs)\n`;
    const text = sample.replace(/\n?$/, "\n") + extra;
    const whole = parseGvisorStrace(text);
    assert.ok(whole.opens.some((o) => o.path === "/workspace/héllo-ü.txt"));
    const bytes = Buffer.from(text, "utf8");
    for (const step of [1, 7, 4096, 65536]) {
      const p = new GvisorStraceParser();
      for (let i = 0; i < bytes.length; i += step) p.push(bytes.subarray(i, i + step));
      assert.deepEqual(p.result(), whole, `pieces of ${step} bytes`);
    }
  });
});

describe("GvisorTraceFollower: a log that keeps growing while the run lasts", () => {
  test("past maxBytes the file is emptied at each look (the disk holds one look's worth), and the trace says it was cut", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gvtrace-"));
    const file = path.join(dir, "runsc.log.20261126-051219.224515.boot.txt");
    try {
      // gVisor opens its log O_APPEND: a writer that appends, as this one does ('a').
      const out = fs.openSync(file, "a");
      fs.writeSync(out, sample);
      const pid = sample.split("\n")[0].split(/\s+/)[2];
      const flood = (n: number) => Array.from({ length: n }, (_, i) =>
        `I1126 05:12:25.000000   ${pid} strace.go:605] [   2:   2] python3 X openat(AT_FDCWD /workspace, 0x1 /workspace/f${i}.txt, O_RDONLY, 0o0) = 3 (0x3) (1.2µs)\n`).join("");
      const cap = sample.length + 64 * 1024;
      const f = new GvisorTraceFollower(CID, { dir, maxBytes: cap, intervalMs: 0, limit: 100_000 });
      let written = Buffer.byteLength(sample);
      let most = 0;
      for (let round = 0; round < 20; round++) {
        const chunk = flood(2000); // ~250 KB per look
        fs.writeSync(out, chunk);
        written += Buffer.byteLength(chunk);
        await f.look();
        most = Math.max(most, fs.statSync(file).size);
      }
      assert.ok(written > 10 * cap, "the log was written far past the cap");
      assert.ok(most <= cap + 300_000, `the file stayed within the cap plus one look's writing: at most ${most} bytes`);
      assert.ok(fs.statSync(file).size < 300_000, "after the last look it holds only what came since");
      fs.closeSync(out);
      const t = await f.finish();
      assert.ok(t);
      assert.match(t.cut ?? "", new RegExp(`was ${written} bytes; only the first ${cap} were read`));
      assert.ok(t.opens.some((o) => o.path === "/workspace/a.txt"), "what came before the cap is kept");
      const flooded = t.opens.filter((o) => /^\/workspace\/f\d+\.txt$/.test(o.path)).length;
      assert.ok(flooded > 100 && flooded < 1000, `what came before the cap is parsed, nothing after it: ${flooded} of 40,000 opens`);
      assert.deepEqual(fs.readdirSync(dir), [], "the log is removed");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a log that stays under maxBytes, read while it grows, is complete and equals a read after the run", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gvtrace-"));
    const file = path.join(dir, "runsc.log.20261126-051219.224515.boot.txt");
    try {
      const f = new GvisorTraceFollower(CID, { dir, intervalMs: 0 });
      await f.look(); // no log yet: found on a later look
      const out = fs.openSync(file, "a");
      const bytes = Buffer.from(sample, "utf8");
      for (let i = 0; i < bytes.length; i += 3000) {
        fs.writeSync(out, bytes.subarray(i, i + 3000));
        await f.look();
      }
      fs.closeSync(out);
      const t = await f.finish();
      assert.equal(t?.cut, undefined);
      assert.deepEqual(t, parseGvisorStrace(sample));
      assert.deepEqual(fs.readdirSync(dir), []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("readGvisorTrace", () => {
  test("finds a container's log by id, parses it, deletes it; old leftovers go too", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gvtrace-"));
    try {
      fs.writeFileSync(path.join(dir, "runsc.log.20261126-051219.224515.boot.txt"), sample);
      const other = path.join(dir, "runsc.log.20261126-051219.000001.boot.txt");
      fs.writeFileSync(other, sample.replaceAll(CID, "f".repeat(64)));
      const stale = path.join(dir, "runsc.log.20200101-000000.000000.boot.txt");
      fs.writeFileSync(stale, "old");
      fs.utimesSync(stale, new Date(0), new Date(0));
      assert.equal(await readGvisorTrace("0".repeat(64), { dir }), null);
      const t = await readGvisorTrace(CID, { dir });
      assert.equal(t?.execs[0].path, "/usr/bin/python3");
      assert.deepEqual(fs.readdirSync(dir), [path.basename(other)]);
      assert.equal(await readGvisorTrace(CID, { dir: path.join(dir, "missing") }), null);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a log longer than what is read says so (the run's trace is then incomplete)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gvtrace-"));
    try {
      fs.writeFileSync(path.join(dir, "runsc.log.20261126-051219.224515.boot.txt"), sample);
      const cut = await readGvisorTrace(CID, { dir, maxBytes: sample.length - 1 });
      assert.match(cut?.cut ?? "", new RegExp(`was ${Buffer.byteLength(sample)} bytes; only the first ${sample.length - 1} were read`));
      fs.writeFileSync(path.join(dir, "runsc.log.20261126-051219.224515.boot.txt"), sample);
      assert.equal((await readGvisorTrace(CID, { dir }))?.cut, undefined, "a log read whole is not cut");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("parseGvisorStrace: a run handed to a pre-started warm interpreter (runsc-direct)", () => {
  // Lines as this gVisor prints them (captured from a runsc-direct run): the unit's bootstrap is
  // exec'd by docker-init, imports, then marks the hand-over with access(python3, 0x7e7e0) = EINVAL.
  const L = (s: string) => `I1130 14:43:52.180349    6691 strace.go:602] ${s}`;
  const log = [
    "I1130 14:43:51.885220    6691 main.go:217] Args: [runsc-sandbox boot r-1]",
    L(`[   2:   2] docker-init X execve(0x7f82df5d8870 /usr/bin/python3, 0x4b56d0 ["python3", "-c", "boot"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`),
    L("[   2:   2] python3 X openat(AT_FDCWD /, 0x7f2c54f27500 /usr/lib/python3.11/json/__init__.py, O_RDONLY|O_CLOEXEC, 0o0) = 3 (0x3) (10µs)"),
    L("[   2:   2] python3 X access(0x7f2c54983750 /usr/bin/python3, 0o4) = 0 (0x0) (1.152µs)"),
    L("[   2:   2] python3 X access(0x7f2c54983750 /usr/bin/python3, 0o1763740) = 0 (0x0) errno=22 (invalid argument) (1.152µs)"),
    L("[   2:   2] python3 X openat(AT_FDCWD /workspace, 0x7f2c54f27500 /workspace/main.py, O_RDONLY|O_CLOEXEC, 0o0) = 3 (0x3) (10µs)"),
    L(`[   3:   3] python3 X execve(0x7f82df5d8870 /bin/true, 0x4b56d0 ["/bin/true"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`),
  ];

  test("the mark starts the program: recorded as its exec (warm), the bootstrap's imports left out", () => {
    const t = parseGvisorStrace(log.join("\n"), { programArgv: ["python3", "main.py"], warmMark: true });
    assert.deepEqual(t.execs, [
      { path: "/usr/bin/python3", argv: ["python3", "main.py"], count: 1, warm: true },
      { path: "/bin/true", argv: ["/bin/true"], count: 1 },
    ]);
    assert.deepEqual(t.opens.map((o) => o.path), ["/workspace/main.py"]);
  });

  test("without warmMark (a plain launcher, or a runsc-trace registration that does not trace access) the mark starts nothing", () => {
    const t = parseGvisorStrace(log.join("\n"), { programArgv: ["python3", "main.py"] });
    assert.deepEqual(t.execs, []);
    assert.deepEqual(t.opens, []);
  });

  test("a bootstrap that went cold after its mark: the program's own exec is the record", () => {
    const cold = [...log.slice(0, 5), L(`[   2:   2] python3 X execve(0x7f82df5d8870 /usr/bin/python3, 0x4b56d0 ["python3", "main.py"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`)];
    const t = parseGvisorStrace(cold.join("\n"), { programArgv: ["python3", "main.py"], warmMark: true });
    assert.deepEqual(t.execs, [{ path: "/usr/bin/python3", argv: ["python3", "main.py"], count: 1 }]);
  });
});

describe("parseGvisorStrace: a run handed to a pre-started warm node (runsc, runsc-direct)", () => {
  // Lines as this gVisor prints them (the mark captured from a real runsc-trace run of node 24):
  // under gVisor a Node unit starts with the run's own command line (warm-node.ts, exactArgv),
  // so its own exec by docker-init has the program's argv; the hold marks the hand-over with
  // openat(node, O_WRONLY|O_CREAT|O_EXCL|O_TRUNC|O_DIRECTORY), which gVisor refuses with EISDIR.
  const L = (s: string) => `I1130 20:11:16.916816   28813 strace.go:608] ${s}`;
  const log = [
    "I1130 20:11:16.100000   28813 main.go:217] Args: [runsc-sandbox boot r-1]",
    L(`[   2:   2] docker-init X execve(0x7fdbe09d8770 /usr/local/bin/node, 0x4b56d0 ["node", "main.js"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`),
    L("[   2:   2] node X openat(AT_FDCWD /, 0x7f8f52c0f2b2 /etc/ld.so.cache, O_RDONLY|O_CLOEXEC, 0o0) = 3 (0x3) (174.118µs)"),
    L("[   2:   2] MainThread X openat(AT_FDCWD /, 0x7ff9bbbd5968 /petri/agent/node/warm.cjs, O_RDONLY|O_CLOEXEC, 0o0) = 17 (0x11) (146.477µs)"),
    L("[   2:   2] MainThread X openat(AT_FDCWD /, 0x7f02cdacc938 /usr/local/bin/node, O_WRONLY|O_CLOEXEC|O_CREAT|O_DIRECTORY|O_EXCL|O_TRUNC, 0o666) = 0 (0x0) errno=21 (is a directory) (9.024µs)"),
    L("[   2:   2] MainThread X openat(AT_FDCWD /workspace, 0x7f2c54f27500 /workspace/main.js, O_RDONLY|O_CLOEXEC, 0o0) = 17 (0x11) (10µs)"),
    L(`[   3:   3] node X execve(0x7f82df5d8870 /bin/true, 0x4b56d0 ["/bin/true"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`),
    // The program itself making the same open later is an open like any other.
    L("[   2:   2] MainThread X openat(AT_FDCWD /, 0x7f02cdacc938 /usr/local/bin/node, O_WRONLY|O_CLOEXEC|O_CREAT|O_DIRECTORY|O_EXCL|O_TRUNC, 0o666) = 0 (0x0) errno=21 (is a directory) (9.024µs)"),
  ];

  test("the unit's own exec (with the run's argv) is not the program; the mark is, recorded as its warm exec", () => {
    const t = parseGvisorStrace(log.join("\n"), { startAtExec: 2, programArgv: ["node", "main.js"], warmMark: true });
    assert.deepEqual(t.execs, [
      { path: "/usr/local/bin/node", argv: ["node", "main.js"], count: 1, warm: true },
      { path: "/bin/true", argv: ["/bin/true"], count: 1 },
    ]);
    assert.deepEqual(t.opens.map((o) => [o.path, o.errno]), [["/workspace/main.js", null], ["/usr/local/bin/node", "EISDIR"]],
      "node's start and Petri's hold are left out; after the hand-over the same open is the program's");
  });

  test("a unit that went cold (its hold exec'd the run): that exec is the program", () => {
    const cold = [...log.slice(0, 4), L(`[   2:   2] MainThread X execve(0x7f82df5d8870 /usr/local/bin/node, 0x4b56d0 ["node", "main.js"], 0x7f82df5d8df0 ["A=1"]) = 0 (0x0) (383.488µs)`), log[5]];
    const t = parseGvisorStrace(cold.join("\n"), { startAtExec: 2, programArgv: ["node", "main.js"], warmMark: true });
    assert.deepEqual(t.execs, [{ path: "/usr/local/bin/node", argv: ["node", "main.js"], count: 1 }]);
    assert.deepEqual(t.opens.map((o) => o.path), ["/workspace/main.js"]);
  });

  test("the mark's flags by name are HANDOVER_OPEN_FLAGS", () => {
    const c = fs.constants as Record<string, number>;
    assert.equal(["O_WRONLY", "O_CREAT", "O_EXCL", "O_TRUNC", "O_DIRECTORY"].reduce((a, f) => a | c[f], 0), HANDOVER_OPEN_FLAGS);
    const other = log.map((l) => l.replace("O_EXCL|", ""));
    assert.deepEqual(parseGvisorStrace(other.join("\n"), { startAtExec: 2, programArgv: ["node", "main.js"], warmMark: true }).execs, [], "another open is no mark");
  });
});
