import assert from "node:assert/strict";
import { test } from "node:test";
import { explainEnd, summarizeError, NO_NETWORK, type EndFacts } from "./explain.js";

// Tracebacks as the runtime image's interpreters print them (captured from real runs).
const PY = `Traceback (most recent call last):
  File "/workspace/main.py", line 3, in <module>
    f()
  File "/workspace/main.py", line 2, in f
    return 1/0
           ~^~
ZeroDivisionError: division by zero
`;
const PY_SYNTAX = `  File "/workspace/syn.py", line 1
    x = (
        ^
SyntaxError: '(' was never closed
`;
const PY_LIB = `Traceback (most recent call last):
  File "/workspace/app/main.py", line 7, in <module>
    json.loads("{")
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
`;
const NODE = `/workspace/main.js:1
function f(){ null.x }
                   ^

TypeError: Cannot read properties of null (reading 'x')
    at f (/workspace/main.js:1:20)
    at Object.<anonymous> (/workspace/main.js:2:1)
    at Module._compile (node:internal/modules/cjs/loader:1364:14)

Node.js v18.20.4
`;
const NODE_EVAL = `[eval]:1
throw new TypeError("bad")
^

TypeError: bad
    at [eval]:1:7
    at runScriptInThisContext (node:internal/vm:143:10)

Node.js v18.20.4
`;
const GO_PANIC = `panic: runtime error: index out of range [3] with length 0

goroutine 1 [running]:
main.main()
	/workspace/main.go:4 +0x1a
exit status 2
`;
const GO_COMPILE = `# command-line-arguments
./bad.go:3:2: x declared but not used
`;

test("Python tracebacks: the exception and the user's last frame", () => {
  assert.deepEqual(summarizeError("python", PY), { type: "ZeroDivisionError", message: "division by zero", file: "main.py", line: 2 });
  assert.deepEqual(summarizeError("python", PY_SYNTAX), { type: "SyntaxError", message: "'(' was never closed", file: "syn.py", line: 1 });
  assert.deepEqual(summarizeError("python", PY_LIB), {
    type: "json.decoder.JSONDecodeError", message: "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", file: "app/main.py", line: 7,
  });
  assert.equal(summarizeError("python", "just some output\n"), null);
});

test("Node errors: the thrown error and where it was thrown", () => {
  assert.deepEqual(summarizeError("node", NODE), { type: "TypeError", message: "Cannot read properties of null (reading 'x')", file: "main.js", line: 1 });
  assert.deepEqual(summarizeError("node", NODE_EVAL), { type: "TypeError", message: "bad", file: "<snippet>", line: 1 });
  // Snippets run from a file through the loader: CommonJS and ES module names of the snippet.
  const cjs = NODE_EVAL.replace("[eval]:1\n", "/workspace/[eval]:1\n").replace("at [eval]:1:7", "at Object.<anonymous> (/workspace/[eval]:1:7)");
  assert.deepEqual(summarizeError("node", cjs), { type: "TypeError", message: "bad", file: "<snippet>", line: 1 });
  const esm = "file:///workspace/%5Beval%5D:2\nawait 0; throw new Error(\"boom\")\n          ^\n\nError: boom\n    at file:///workspace/%5Beval%5D:2:16\n\nNode.js v24.22.3\n";
  assert.deepEqual(summarizeError("typescript", esm), { type: "Error", message: "boom", file: "<snippet>", line: 2 });
});

test("Go panics and compile errors", () => {
  assert.deepEqual(summarizeError("go", GO_PANIC), { type: "panic", message: "runtime error: index out of range [3] with length 0", file: "main.go", line: 4 });
  assert.deepEqual(summarizeError("go", GO_COMPILE), { type: "compile error", message: "x declared but not used", file: "bad.go", line: 3 });
});

const base: EndFacts = { language: "python", exitCode: 0, signal: null, timedOut: false, oomKilled: false, timeoutMs: 30_000, memoryMb: 512, networkAllowed: false, stdout: "", stderr: "" };

test("explanations for each abnormal end", () => {
  assert.equal(explainEnd(base), null);
  assert.equal(explainEnd({ ...base, exitCode: null, signal: "SIGKILL", timedOut: true }), "killed: exceeded the 30 s time limit");
  assert.equal(explainEnd({ ...base, exitCode: null, signal: "SIGKILL", timedOut: true, timeoutMs: 1500 }), "killed: exceeded the 1.5 s time limit");
  assert.equal(explainEnd({ ...base, exitCode: 137, oomKilled: true }), "killed: out of memory (512 MB limit)");
  assert.equal(explainEnd({ ...base, exitCode: 1, stderr: PY }), "exited with code 1: ZeroDivisionError: division by zero (main.py:2)");
  assert.equal(explainEnd({ ...base, exitCode: 3 }), "exited with code 3");
  assert.equal(explainEnd({ ...base, exitCode: null, signal: "SIGSEGV" }), "killed by SIGSEGV (segmentation fault)");
  assert.equal(explainEnd({ ...base, startError: { code: "RUNTIME_UNAVAILABLE", message: "boom" } }), "could not start: boom");
  assert.equal(explainEnd({ ...base, exitCode: 1, stderr: "urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>" }), NO_NETWORK);
  // With a network path, a DNS failure is the remote side's, not a missing allow-list entry.
  assert.equal(explainEnd({ ...base, networkAllowed: true, exitCode: 1, stderr: "Temporary failure in name resolution" }), "exited with code 1");
  assert.equal(explainEnd({ ...base, networkAllowed: true, exitCode: 1, blockedHosts: ["example.org"] }),
    "blocked: example.org is not on this sandbox's allow-list: add it with allow_hosts");
  assert.equal(explainEnd({ ...base, stdoutCutBytes: 3_000_000, outputLimitBytes: 1024 * 1024 }),
    "output cut: 3000000 bytes of stdout cut from the middle (1 MB kept per stream); write large output to a file");
  assert.equal(explainEnd({ ...base, cancelled: "cancel", exitCode: null, signal: "SIGKILL" }), "cancelled: stopped by a cancel request");
});
