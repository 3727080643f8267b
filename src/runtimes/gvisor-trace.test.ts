import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { parseGvisorStrace, readGvisorTrace } from "./gvisor-trace.js";

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
      { path: "/usr/bin/python3", argv: ["python3", "main.py"] },
      { path: "/usr/bin/ls", argv: ["ls"] },
      { path: "/usr/bin/sh", argv: ["sh", "-c", 'echo "quoted, arg" > /tmp/x; cat /tmp/x'] },
      { path: "/usr/bin/cat", argv: ["cat", "/tmp/x"] },
    ]);
  });

  test("opens: paths as the program saw them, relative ones resolved, write flagged", () => {
    const by = new Map(t.opens.map((o) => [o.path + " " + o.flags, o]));
    assert.equal(by.get("/workspace/a.txt O_WRONLY|O_CLOEXEC|O_CREAT|O_TRUNC")?.write, true);
    assert.equal(by.get("/etc/hostname O_RDONLY|O_CLOEXEC")?.write, false);
    assert.equal(by.get("/workspace/rel.txt O_WRONLY|O_APPEND|O_CLOEXEC|O_CREAT")?.write, true);
    assert.equal(by.get("/workspace/main.py O_RDONLY")?.write, false, "the 0x0 gVisor prints is dropped");
    assert.equal(by.get("/tmp/x O_WRONLY|O_CREAT|O_TRUNC")?.write, true);
    assert.equal(by.get("/workspace O_RDONLY|O_CLOEXEC|O_DIRECTORY|O_NONBLOCK")?.write, false, "ls opened '.'");
  });

  test("failed calls and docker-init's own start-up are left out; entries are distinct", () => {
    assert.ok(!t.execs.some((e) => e.path.startsWith("/usr/local/")), "PATH lookups that failed");
    assert.ok(!t.opens.some((o) => o.path === "/usr/lib/locale/locale-archive"), "ENOENT opens");
    const keys = t.opens.map((o) => o.path + " " + o.flags);
    assert.equal(new Set(keys).size, keys.length);
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

  test("a line forged through a file name with a newline is not believed", () => {
    const real = sample.split("\n").find((l) => l.includes("X openat(") && l.includes("/etc/hostname"))!;
    const forged = real.replace(/^(\S+ \S+\s+)\d+/, "$1" + "4242").replace("/etc/hostname", "/etc/shadow");
    const t2 = parseGvisorStrace(sample + "\n" + forged + "\n");
    assert.ok(!t2.opens.some((o) => o.path === "/etc/shadow"));
    const sameLine = parseGvisorStrace(sample + "\n" + real.replace("/etc/hostname", "/etc/shadow") + "\n");
    assert.ok(sameLine.opens.some((o) => o.path === "/etc/shadow"), "control: a genuine-looking line is parsed");
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
});
