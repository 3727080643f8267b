import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeBpftraceString, parseTraceLine } from "./events.js";
import { RunTraceAggregator, openFlags } from "./aggregate.js";
import { tracerProgram } from "./program.js";

const raw = (data: string) => `{"type": "printf", "data": "${data}\\n"}`;
/**
 * A record as the probes print it; the timed kinds get the kernel's clock after their letter
 * (program.ts), increasing in the order given unless the record names its own ("X@250 …").
 */
let clock = 1_000_000;
const line = (data: string) => {
  const m = /^([FEXNUDHO])(?:@(\d+))? (.*)$/s.exec(data);
  if (!m) return raw(data);
  return raw(`${m[1]} ${m[2] ?? (clock += 10)} ${m[3]}`);
};

describe("bpftrace output decoding", () => {
  test("bytes ≥ 0x80 written as \\uffffffXX come back as the bytes; escapes too", () => {
    assert.deepEqual(decodeBpftraceString("caf\\uffffffc3\\uffffffa9\\n\\uffffffff\\\\x\\\""), Buffer.from([0x63, 0x61, 0x66, 0xc3, 0xa9, 0x0a, 0xff, 0x5c, 0x78, 0x22]));
    assert.equal(decodeBpftraceString("bad\\q"), null);
  });

  test("each record kind", () => {
    assert.deepEqual(parseTraceLine(raw("F 123456789012345 10 11 99")), { t: "fork", ts: 123456789012345, parent: 10, child: 11, run: "99" });
    assert.equal(parseTraceLine(raw("F 10")), null, "a timed record without its fields");
    const e = parseTraceLine(line("E 11 99 1000 /usr/bin/python3"));
    assert.equal(e?.t, "exec");
    assert.equal(e?.t === "exec" && e.path.toString(), "/usr/bin/python3");
    const a = parseTraceLine(line("A 11 1 two words"));
    assert.equal(a?.t === "arg" && a.arg.toString(), "two words", "the last field keeps its spaces");
    assert.deepEqual(parseTraceLine(raw("X 77 11 99 -2 4")), { t: "exec_ret", ts: 77, tid: 11, run: "99", ret: -2, execId: 4 });
    const o = parseTraceLine(line("O 11 99 -13 524288 /etc/sh adow"));
    assert.ok(o?.t === "open" && o.ret === -13 && o.path.toString() === "/etc/sh adow");
    assert.deepEqual(parseTraceLine(raw("N 78 11 99 c -101 4 8443 10.1.2.3")), { t: "net", ts: 78, pid: 11, run: "99", op: "connect", ret: -101, family: "inet", port: 8443, address: "10.1.2.3" });
    const v6 = parseTraceLine(line("N 11 99 c -99 6 8443 0 0 0 1000000"));
    assert.ok(v6?.t === "net" && v6.address === "::1", JSON.stringify(v6));
    const u = parseTraceLine(line("U 11 99 c -2 /var/run/nscd/socket"));
    assert.ok(u?.t === "unix" && u.path.toString() === "/var/run/nscd/socket");
    assert.deepEqual(parseTraceLine(line("B 7")), { t: "barrier", n: 7 });
    assert.deepEqual(parseTraceLine('{"type": "lost_events", "data": {"events": 12}}'), { t: "lost", count: 12 });
    assert.deepEqual(parseTraceLine(raw("Z 99")), { t: "unreadable", run: "99" });
    assert.equal(parseTraceLine('{"type": "printf", "data": "Q what\\n"}'), null);
  });

  test("a newline inside a path stays inside the path (no forged records)", () => {
    const o = parseTraceLine(line("O 11 99 3 577 /tmp/x\\nO 11 99 3 0 /etc/forged"));
    assert.ok(o?.t === "open");
    assert.equal(o.t === "open" && o.path.toString(), "/tmp/x\nO 11 99 3 0 /etc/forged");
  });
});

describe("per-run aggregation", () => {
  const ev = (s: string) => parseTraceLine(line(s))!;
  const feed = (agg: RunTraceAggregator, lines: string[]) => { for (const l of lines) agg.push(ev(l)); return agg.summary(); };

  test("helpers before the program are left out; the program, its children and their activity are counted once per path and access", () => {
    const s = feed(new RunTraceAggregator(["python3", "main.py"]), [
      "O 5 99 3 524288 /proc/self/mountinfo", // runc init
      "E 5 99 0 /sbin/docker-init", "A 5 0 /sbin/docker-init", "A 5 1 --", "A 5 2 python3", "A 5 3 main.py", "X 5 99 0",
      "F 5 6 99",
      "E 6 99 1000 /usr/local/bin/python3", "A 6 0 python3", "A 6 1 main.py", "X 6 99 -2",
      "E 6 99 1000 /usr/bin/python3", "A 6 0 python3", "A 6 1 main.py", "X 6 99 0",
      "O 6 99 3 524288 /usr/lib/python3.11/os.py",
      "O 6 99 3 577 /workspace/out.txt", "O 6 99 3 577 /workspace/out.txt", "O 6 99 3 0 /workspace/out.txt",
      "O 6 99 -13 0 /etc/shadow",
      "F 6 7 99", "E 7 99 1000 /bin/true", "A 7 0 /bin/true", "X 7 99 0",
      "N 7 99 c -101 4 80 10.0.0.1", "N 7 99 c -101 4 80 10.0.0.1",
      "O 5 99 3 0 /etc/docker-init-only",
      "D 6 99 example.org",
    ]);
    assert.deepEqual(s.execs.map((e) => [e.path, e.argv, e.count]), [["/usr/bin/python3", ["python3", "main.py"], 1], ["/bin/true", ["/bin/true"], 1]]);
    assert.deepEqual(s.files.map((f) => [f.path, f.access, f.count, f.errno]), [
      ["/workspace/out.txt", "write", 2, null], ["/workspace/out.txt", "read", 1, null], ["/etc/shadow", "read", 1, "EACCES"],
    ]);
    assert.deepEqual(s.libraries, { count: 1, distinct: 1, paths: ["/usr/lib/python3.11/os.py"] });
    assert.deepEqual(s.net.map((n) => [n.address, n.port, n.count, n.errno]), [["10.0.0.1", 80, 2, "ENETUNREACH"]]);
    assert.deepEqual(s.dns.map((d) => d.name), ["example.org"]);
  });

  test("caps bound the record and say how much was left out; lost kernel events are counted", () => {
    const agg = new RunTraceAggregator(["p"], { files: 2, execs: 10, net: 10, dns: 10, libraryPaths: 10 });
    const lines = ["E 1 9 0 /p", "A 1 0 p", "X 1 9 0"];
    for (let i = 0; i < 5; i++) lines.push(`O 1 9 3 577 /tmp/f${i}`);
    const s = feed(agg, lines);
    agg.push({ t: "lost", count: 3 });
    assert.equal(s.files.length, 2);
    assert.equal(s.dropped, 3);
    assert.equal(agg.summary().lost_events, 3);
  });

  test("kernel open counts: one JSON map, keys parsed by hand (commas and quotes in paths, bytes ≥ 0x80), attributed by exec id", () => {
    // The exec id field is self_exec_id × 2 (+ 1 after a warm hand-over mark): 20 is exec id 10, 22 is 11.
    const map = '{"type": "map", "data": {"@o0": {"99,5,20,0,524288,/etc/launcher-only": 1, "99,5,22,0,577,/workspace/a,b \\"c\\"": 3, ' +
      '"99,5,22,-13,0,/etc/shadow": 1, "99,7,22,0,0,/tmp/caf\\uffffffe9": 2, "42,8,6,0,0,/other/run": 5, "99,9,22,0,0,/not/ours": 1}}}';
    const ev = parseTraceLine(map);
    assert.ok(ev?.t === "open_map", JSON.stringify(ev));
    assert.equal(ev.size, 6);
    assert.equal(ev.entries[1].path.toString(), '/workspace/a,b "c"');
    assert.equal(ev.entries[1].count, 3);
    assert.deepEqual(ev.entries[3].path, Buffer.from("/tmp/caf\xe9", "latin1"));
    assert.deepEqual(parseTraceLine('{"type": "map", "data": {"@o1": {}}}'), { t: "open_map", entries: [], size: 0 });
    // pid 5 is the launcher (exec id 10) that execs the program (exec id 11); pid 7 is its child; pid 9 is not the program's.
    const agg = new RunTraceAggregator(["p"]);
    for (const l of ["E 5 99 0 /p", "A 5 0 p", "X 5 99 0 11", "F 5 7 99"]) agg.push(parseTraceLine(line(l))!);
    agg.push(ev);
    const s = agg.summary();
    assert.deepEqual(s.files.map((f) => [f.path, f.access, f.count, f.errno]), [
      ['/workspace/a,b "c"', "write", 3, null], ["/etc/shadow", "read", 1, "EACCES"], ["/tmp/caf\ufffd", "read", 2, null],
    ]);
  });

  test("library opens past the kernel's listing bound: counted exactly per process image and attributed, distinct said to be a lower bound", () => {
    const agg = new RunTraceAggregator(["p"]);
    for (const l of ["E 5 99 0 /p", "A 5 0 p", "X 5 99 0 11", "F 5 7 99"]) agg.push(parseTraceLine(line(l))!);
    agg.push(parseTraceLine('{"type": "map", "data": {"@o0": {"99,5,22,0,0,/usr/lib/a.so": 2, "99,5,20,0,0,/usr/lib/launcher.so": 1}}}')!);
    // pid 5 before its exec of the program (exec id 10) is the launcher: its 40 are not the run's.
    const lc = parseTraceLine('{"type": "map", "data": {"@lc0": {"99,5,22": 1000, "99,7,0": 5, "99,5,20": 40}}}');
    assert.ok(lc?.t === "lib_map", JSON.stringify(lc));
    assert.deepEqual(lc.entries[0], { t: "lib_count", run: "99", pid: 5, execId: 22, count: 1000 });
    assert.deepEqual(parseTraceLine('{"type": "map", "data": {"@lc1": {}}}'), { t: "lib_map", entries: [] });
    agg.push(lc);
    assert.deepEqual(agg.summary().libraries, { count: 1007, distinct: 1, paths: ["/usr/lib/a.so"], distinct_at_least: true });
    const exact = new RunTraceAggregator(["p"]);
    for (const l of ["E 5 99 0 /p", "A 5 0 p", "X 5 99 0 11"]) exact.push(parseTraceLine(line(l))!);
    exact.push(parseTraceLine('{"type": "map", "data": {"@o0": {"99,5,22,0,0,/usr/lib/a.so": 2}}}')!);
    assert.deepEqual(exact.summary().libraries, { count: 2, distinct: 1, paths: ["/usr/lib/a.so"] }, "nothing past the bound: distinct is exact");
  });

  test("the library test the probes run matches the server's prefixes on the path's first 16 bytes", () => {
    const prog = tracerProgram({ serverPid: 1, tag: 70 });
    const cond = /if \((\(\$w0.*)\) \{ \$lib = 1; \}/.exec(prog)![1]!;
    const words = (p: string) => { const b = Buffer.alloc(16); Buffer.from(p, "latin1").copy(b, 0, 0, 16); return [b.readBigUInt64LE(0), b.readBigUInt64LE(8)]; };
    const test = (p: string) => {
      const [w0, w1] = words(p);
      // Evaluate the generated condition with BigInt arithmetic.
      const js = cond.replace(/\$w0/g, `${w0}n`).replace(/\$w1/g, `${w1}n`).replace(/(\d+)(?![\dn])/g, "$1n");
      return Boolean(eval(js));
    };
    for (const p of ["/usr/lib/x", "/usr/lib64/x", "/lib/x", "/lib64/x", "/usr/local/lib/x", "/usr/share/x", "/etc/ld.so.cache", "/usr/libexec/x"]) assert.equal(test(p), true, p);
    for (const p of ["/usr/li", "/usr/libfoo/x", "/lib", "/lib6/x", "/usr/local/bin/x", "/workspace/usr/lib/x", "/etc/ld.so.cach", "/usr/sharex/y", ""]) assert.equal(test(p), false, p);
  });

  test("warm hand-over: the interpreter's start and imports are left out, the program's record and opens from the mark on are kept", () => {
    // pid 5 is a pre-started interpreter (exec id 4); its mark says it runs the program from now on.
    const agg = new RunTraceAggregator(["python3", "main.py"]);
    const map = '{"type": "map", "data": {"@o1": {"99,5,8,0,0,/workspace/before-mark": 1, "99,5,9,0,0,/workspace/in0.txt": 2, "99,6,0,0,577,/tmp/child": 1}}}';
    for (const l of ["H 5 99 1000 4 /usr/bin/python3", "F 5 6 99", "E 6 99 1000 /bin/true", "A 6 0 /bin/true", "X 6 99 0 5"]) agg.push(parseTraceLine(line(l))!);
    agg.push(parseTraceLine(map)!);
    const s = agg.summary();
    assert.deepEqual(s.execs.map((e) => [e.path, e.argv, e.pid, e.uid, e.warm ?? false]), [["/bin/true", ["/bin/true"], 6, 1000, false], ["/usr/bin/python3", ["python3", "main.py"], 5, 1000, true]]);
    assert.deepEqual(s.files.map((f) => [f.path, f.count]), [["/workspace/in0.txt", 2], ["/tmp/child", 1]]);
    // A mark followed by the program's own exec (the bootstrap went cold after it): one record, the exec's.
    const cold = new RunTraceAggregator(["python3", "main.py"]);
    for (const l of ["H 5 99 1000 4 /usr/bin/python3", "E 5 99 1000 /usr/bin/python3", "A 5 0 python3", "A 5 1 main.py", "X 5 99 0 5"]) cold.push(parseTraceLine(line(l))!);
    assert.deepEqual(cold.summary().execs.map((e) => [e.path, e.warm ?? false]), [["/usr/bin/python3", false]]);
    // The mark's record: the interpreter's path is the last field and keeps its spaces.
    assert.deepEqual(parseTraceLine(raw("H 79 5 99 1000 4 /usr/bin/py thon")), { t: "handover", ts: 79, pid: 5, run: "99", uid: 1000, execId: 4, path: Buffer.from("/usr/bin/py thon") });
  });

  test("a child's exec read before its parent's fork (per-CPU buffers) still counts; a launcher's earlier activity does not", () => {
    const s = feed(new RunTraceAggregator(["python3", "main.py"]), [
      "N 5 99 c -101 4 80 10.9.9.9", // the launcher, before it executes the program
      "E 5 99 1000 /usr/bin/python3", "A 5 0 python3", "A 5 1 main.py", "X 5 99 0 3",
      // pid 8's exec and connect arrive before the fork 5 → 8 that made it
      "E 8 99 1000 /usr/bin/getent", "A 8 0 getent", "A 8 1 ahosts", "X 8 99 0 4", "N 8 99 c -101 4 53 10.0.0.53", "F 8 9 99",
      "F 5 8 99",
      "E 9 99 1000 /bin/true", "A 9 0 /bin/true", "X 9 99 0 5",
    ]);
    assert.deepEqual(s.execs.map((e) => e.argv), [["python3", "main.py"], ["getent", "ahosts"], ["/bin/true"]]);
    assert.deepEqual(s.net.map((n) => n.address), ["10.0.0.53"]);
  });

  test("events read out of order (one buffer per CPU) are taken in the kernel's order", () => {
    // A cold run: pid 5 is the launcher (exec id 2) that executes the program (exec id 3). execve
    // moved it to another CPU, so its return (and what followed there) is read before its entry.
    const map = '{"type": "map", "data": {"@o0": {"99,5,4,0,0,/etc/launcher-only": 1, "99,5,6,0,0,/workspace/in0.txt": 1, "99,5,6,0,577,/tmp/out.txt": 1, "99,6,0,0,0,/workspace/child": 1}}}';
    const cold = new RunTraceAggregator(["python3", "main.py"]);
    for (const l of [
      "X@300 5 99 0 3", "N@310 5 99 c -101 4 8443 10.1.2.3", "F@320 5 6 99",
      "N@100 5 99 c -101 4 80 10.9.9.9", // the launcher's own, before the exec: not the program's
      "E@400 6 99 1000 /bin/true", "A 6 0 /bin/true", "X@450 6 99 0 4", "D@460 6 99 example.org",
      "E@200 5 99 1000 /usr/bin/python3", "A 5 0 python3", "A 5 1 main.py",
    ]) cold.push(parseTraceLine(line(l))!);
    cold.push(parseTraceLine(map)!);
    assert.equal(cold.doubt(), null);
    const s = cold.summary();
    assert.deepEqual(s.execs.map((e) => [e.path, e.argv]), [["/usr/bin/python3", ["python3", "main.py"]], ["/bin/true", ["/bin/true"]]]);
    assert.deepEqual(s.files.map((f) => f.path), ["/workspace/in0.txt", "/tmp/out.txt", "/workspace/child"]);
    assert.deepEqual(s.net.map((n) => n.address), ["10.1.2.3"]);
    assert.deepEqual(s.dns.map((d) => d.name), ["example.org"]);

    // A warm run: the interpreter's fork (and its child's exec) read before its hand-over mark.
    const warm = new RunTraceAggregator(["python3", "main.py"]);
    for (const l of ["F@500 5 6 99", "E@510 6 99 1000 /bin/true", "A 6 0 /bin/true", "X@520 6 99 0 5", "F@100 5 4 99", "H@400 5 99 1000 4 /usr/bin/python3"]) warm.push(parseTraceLine(line(l))!);
    assert.equal(warm.doubt(), null);
    assert.deepEqual(warm.summary().execs.map((e) => [e.path, e.warm ?? false]), [["/bin/true", false], ["/usr/bin/python3", true]]);
  });

  test("a record the events cannot vouch for says why (the run's trace_complete is false then)", () => {
    const take = (argv: string[], lines: string[]) => {
      const agg = new RunTraceAggregator(argv);
      for (const l of lines) agg.push(parseTraceLine(line(l))!);
      return agg.doubt();
    };
    // The program's start never seen: everything would be left out, silently.
    assert.match(take(["node", "main.js"], ["E 5 99 0 /sbin/docker-init", "A 5 0 docker-init", "X 5 99 0 2"]) ?? "", /did not see the program start/);
    // An exec's return without its entry: the entry was lost.
    assert.match(take(["p"], ["E 5 99 0 /p", "A 5 0 p", "X 5 99 0 2", "X 7 99 0 2"]) ?? "", /without their exec/);
    // An open whose arguments the probe could not read (another kernel stack layout): not counted, so not complete.
    assert.match(take(["p"], ["E 5 99 0 /p", "A 5 0 p", "X 5 99 0 2", "Z 99"]) ?? "", /1 opens could not be read/);
    // A program that could not be executed was still seen to start (and fail).
    assert.equal(take(["nope"], ["E 5 99 0 /usr/bin/nope", "A 5 0 nope", "X 5 99 -2 1"]), null);
    // Past the reorder window, an event older than those taken in cannot be put in order.
    const busy = new RunTraceAggregator(["p"]);
    for (const l of ["E@10 5 99 0 /p", "A 5 0 p", "X@20 5 99 0 2"]) busy.push(parseTraceLine(line(l))!);
    for (let i = 0; i < 50_000; i++) busy.push(parseTraceLine(line(`F@${100 + i} 5 ${1000 + i} 99`))!);
    busy.push(parseTraceLine(line("N@50 5 99 c -101 4 80 10.0.0.1"))!);
    assert.match(busy.doubt() ?? "", /too late to be put in order/);
  });

  test("an exec by a thread other than the leader: its return names the thread that entered and the process it is now", () => {
    // The launcher (pid 5) executes the program from its thread 8: the kernel's de_thread() gives
    // that thread pid 5, so the return comes from pid 5 and names thread 8. The program's child 7
    // does the same from its thread 12, and the program (pid 5) then replaces itself from thread 14.
    assert.deepEqual(parseTraceLine(raw("X 77 8 99 0 4 5")), { t: "exec_ret", ts: 77, tid: 8, run: "99", ret: 0, execId: 4, pid: 5 });
    const agg = new RunTraceAggregator(["python3", "main.py"]);
    for (const l of [
      "E 8 99 1000 /usr/bin/python3", "A 8 0 python3", "A 8 1 main.py", "X 8 99 0 3 5",
      "F 5 7 99", "F 7 12 99", "E 12 99 1000 /bin/true", "A 12 0 /bin/true", "A 12 1 child", "X 12 99 0 1 7",
      "E 14 99 1000 /bin/echo", "A 14 0 /bin/echo", "X 14 99 -13 3 5", "E 14 99 1000 /bin/true", "A 14 0 /bin/true", "A 14 1 self", "X 14 99 0 4 5",
    ]) agg.push(parseTraceLine(line(l))!);
    agg.push(parseTraceLine('{"type": "map", "data": {"@o0": {"99,5,6,0,0,/workspace/in0.txt": 1, "99,5,8,0,0,/workspace/after-self-exec": 1, "99,5,4,0,0,/launcher/own": 1}}}')!);
    assert.equal(agg.doubt(), null);
    const s = agg.summary();
    assert.deepEqual(s.execs.map((e) => [e.argv, e.pid, e.errno]), [
      [["python3", "main.py"], 5, null], [["/bin/true", "child"], 7, null], [["/bin/echo"], 5, "EACCES"], [["/bin/true", "self"], 5, null],
    ]);
    assert.deepEqual(s.files.map((f) => f.path), ["/workspace/in0.txt", "/workspace/after-self-exec"]);
  });

  test("a file name that is not UTF-8 is kept losslessly", () => {
    const s = feed(new RunTraceAggregator(["p"]), ["E 1 9 0 /p", "A 1 0 p", "X 1 9 0", "O 1 9 3 577 /tmp/caf\\uffffffe9"]);
    assert.equal(Buffer.from(s.files[0].path_b64!, "base64").toString("latin1"), "/tmp/caf\xe9");
  });

  test("open flags: access and names", () => {
    assert.deepEqual(openFlags(0o2000000), { access: "read", names: ["O_RDONLY", "O_CLOEXEC"] });
    assert.equal(openFlags(0o1101).access, "write");
    assert.equal(openFlags(2).access, "read-write");
  });
});
