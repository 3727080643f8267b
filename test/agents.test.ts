import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import os from "node:os";
import { startTestServer, createSandbox, exec, putFile, containersOf, imageBuilt, type TestServer } from "./helpers.js";
import { NO_NETWORK } from "../src/exec/explain.js";
import { cutMarker } from "../src/runtimes/types.js";

/**
 * Results an agent can act on, on real containers: every abnormal end carries one exact line of
 * explanation, failures carry a parsed error, output floods keep head and tail, files a run made
 * come back inline, and the network explains itself.
 */
describe("results an LLM can act on (real containers)", () => {
  let t: TestServer;
  // Loopback opened the way an operator would, for the upstream of the fetch() test.
  before(async () => { t = await startTestServer({ PETRI_MAX_CPUS: String(os.cpus().length * 2), PETRI_EGRESS_PRIVATE_HOSTS: "127.0.0.0/8" }); });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  it("timeout", async () => {
    const sb = await createSandbox(t);
    const r = await exec(t, sb, { code: "while True: pass", timeout_ms: 1500 });
    assert.equal(r.json.timed_out, true, r.text);
    assert.equal(r.json.explanation, "killed: exceeded the 1.5 s time limit");
  });

  it("out of memory", async () => {
    const sb = await createSandbox(t, { language: "python", limits: { memory_mb: 64 } });
    const r = await exec(t, sb, { code: "x = []\nwhile True: x.append(b'x' * (8 << 20))", timeout_ms: 60_000 });
    assert.equal(r.json.oom_killed, true, r.text);
    assert.equal(r.json.explanation, "killed: out of memory (64 MB limit)");
  });

  it("a start failure carries its real cause", async () => {
    // More CPUs than the host has: the server's maximum allows it, Docker refuses to create the container.
    const n = os.cpus().length;
    const sb = await createSandbox(t, { language: "python", limits: { cpus: n * 2 } });
    const r = await exec(t, sb, { code: "print(1)" });
    assert.equal(r.json.status, "failed", r.text);
    assert.equal(r.json.error.code, "RUNTIME_UNAVAILABLE");
    assert.match(r.json.error.message, new RegExp(`^the runtime could not start this run: .*Range of CPUs is from 0\\.01 to ${n}\\.00, as there are only ${n} CPUs available`));
    assert.equal(r.json.explanation, `could not start: ${r.json.error.message}`);
  });

  it("output flood keeps the head and the tail and says how much was cut", async () => {
    const sb = await createSandbox(t, { language: "python", limits: { output_bytes: 65536 } });
    const r = await exec(t, sb, { code: "import sys\nsys.stdout.write('BEGIN' + 'x' * 3000000 + 'the answer is 42')" });
    const total = 5 + 3000000 + 16;
    const cut = total - 65536;
    assert.equal(r.json.stdout_cut_bytes, cut);
    assert.equal(r.json.stdout, "BEGIN" + "x".repeat(32768 - 5) + cutMarker(cut) + "x".repeat(32768 - 16) + "the answer is 42");
    assert.equal(r.json.explanation, `output cut: ${cut} bytes of stdout cut from the middle (64 KB kept per stream); write large output to a file`);
  });

  it("Python, Node and Go errors are summarized with file and line", async () => {
    const py = await createSandbox(t);
    await putFile(t, py, "app/main.py", "import json\n\ndef load():\n    return json.loads('{')\n\nload()\n");
    const r1 = await exec(t, py, { filename: "app/main.py" });
    assert.deepEqual(r1.json.error_summary, { type: "json.decoder.JSONDecodeError", message: "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", file: "app/main.py", line: 4 });
    assert.equal(r1.json.explanation, "exited with code 1: json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) (app/main.py:4)");

    const node = await createSandbox(t, { language: "node" });
    await putFile(t, node, "main.js", "function f() { return null.x; }\nf();\n");
    const r2 = await exec(t, node, { filename: "main.js" });
    assert.deepEqual(r2.json.error_summary, { type: "TypeError", message: "Cannot read properties of null (reading 'x')", file: "main.js", line: 1 });

    const go = await createSandbox(t, { language: "go" });
    await putFile(t, go, "main.go", "package main\n\nfunc main() {\n\tvar a []int\n\t_ = a[3]\n}\n");
    const r3 = await exec(t, go, { filename: "main.go", timeout_ms: 120_000 });
    assert.deepEqual(r3.json.error_summary, { type: "panic", message: "runtime error: index out of range [3] with length 0", file: "main.go", line: 5 });
  });

  it("no network: an immediate, explicit refusal that says how to allow a host (Python and Node)", async () => {
    const py = await createSandbox(t);
    const r1 = await exec(t, py, { code: "import urllib.request\nurllib.request.urlopen('http://example.com/', timeout=30)" });
    assert.equal(r1.json.explanation, NO_NETWORK, r1.text);
    assert.match(r1.json.stderr, /petri: no network in this sandbox: allow the host with allow_hosts \(tried to reach example\.com\)/);
    // Loopback addresses still pass: code may run its own servers.
    const lo = await exec(t, py, { code: "import socket; print(socket.getaddrinfo('127.0.0.1', 80)[0][4][0])" });
    assert.equal(lo.json.stdout, "127.0.0.1\n", lo.text);

    const node = await createSandbox(t, { language: "node" });
    const r2 = await exec(t, node, { code: "fetch('https://example.com/').catch((e) => { console.error(e.cause?.message ?? e.message); process.exit(1); })" });
    assert.equal(r2.json.explanation, NO_NETWORK, r2.text);
    assert.match(r2.json.stderr, /petri: no network in this sandbox: allow the host with allow_hosts \(tried to reach example\.com\)/);
  });

  it("a blocked host is told it is not on the allow-list, and the result says so", async () => {
    const sb = await createSandbox(t, { language: "python", allow_hosts: ["allowed.invalid"] });
    const code = [
      "import urllib.request, urllib.error, sys",
      "try:\n    urllib.request.urlopen('http://blocked.invalid/x', timeout=30)\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode().strip())",
      "urllib.request.urlopen('https://blocked.invalid/y', timeout=30)",
    ].join("\n");
    const r = await exec(t, sb, { code });
    assert.equal(r.json.stdout, "403 Petri broker: blocked.invalid is not on this sandbox's allow-list; add it with allow_hosts\n", r.text);
    assert.match(r.json.stderr, /Tunnel connection failed: 403 blocked\.invalid is not on this sandbox's allow-list; add it with allow_hosts/);
    assert.equal(r.json.explanation, "blocked: blocked.invalid is not on this sandbox's allow-list: add it with allow_hosts");
  });

  it("Node's global fetch() goes through the broker to an allowed host", async () => {
    const upstream = http.createServer((req, res) => res.end(`hello ${req.method} ${req.url}`));
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    const port = (upstream.address() as { port: number }).port;
    try {
      const sb = await createSandbox(t, { language: "node", allow_hosts: [`127.0.0.1:${port}`] });
      const r = await exec(t, sb, { code: `fetch('http://127.0.0.1:${port}/via-fetch').then((r) => r.text()).then(console.log, (e) => { console.error(e.cause ?? e); process.exit(1); })` });
      assert.equal(r.json.stdout, "hello GET /via-fetch\n", r.text);
      const audit = await t.api("GET", `/v1/audit?exec_id=${r.json.id}&kind=network`);
      assert.ok(audit.json.items.some((x: any) => x.outcome === "success" && JSON.stringify(x.detail).includes("/via-fetch")), JSON.stringify(audit.json.items));
    } finally {
      upstream.close();
    }
  });

  it("images and data files a run made come back inline", async () => {
    const sb = await createSandbox(t);
    const r = await exec(t, sb, { code: "import json\nopen('out.json', 'w').write(json.dumps({'a': 1}))\nopen('pic.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(100))\nopen('big.csv', 'w').write('x,' * 200000)\nopen('notes.txt', 'w').write('not an artifact')" });
    const byPath = Object.fromEntries(r.json.artifacts.map((a: any) => [a.path, a]));
    assert.deepEqual(byPath["out.json"], { path: "out.json", mime_type: "application/json", size: 8, encoding: "utf8", data: "{\"a\": 1}" });
    assert.equal(byPath["pic.png"].mime_type, "image/png");
    assert.equal(Buffer.from(byPath["pic.png"].data, "base64").length, 108);
    assert.equal(byPath["big.csv"].data, undefined);
    assert.match(byPath["big.csv"].omitted, /^larger than the 262144 bytes returned inline; download the file$/);
    assert.equal(byPath["notes.txt"], undefined);
  });

  it("plt.show() figures and display() come back inline in the datascience image", async (ctx) => {
    const ds = imageBuilt("datascience");
    if (!ds.ok) {
      ctx.skip(`SKIP plt.show(): the datascience image (${ds.ref}) is not built here; scripts/setup.sh builds it`);
      return;
    }
    const sb = await createSandbox(t, { language: "python", image: "datascience", limits: { memory_mb: 1024 } });
    const shown = await exec(t, sb, { code: "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nplt.plot([3, 2, 1])\nplt.show()\nprint('after')", timeout_ms: 120_000 });
    assert.equal(shown.json.exit_code, 0, shown.text);
    assert.equal(shown.json.stdout, "after\n");
    assert.deepEqual(shown.json.artifacts.map((a: any) => [a.path, a.mime_type]), [["display/figure-1.png", "image/png"], ["display/figure-2.png", "image/png"]], shown.text);
    for (const a of shown.json.artifacts) {
      const png = Buffer.from(a.data, "base64");
      assert.ok(png.subarray(0, 8).equals(Buffer.from("\x89PNG\r\n\x1a\n", "latin1")), `${a.path} is a PNG`);
      assert.ok(png.length > 1000, `${a.path} is a real chart (${png.length} bytes)`);
    }
    // A figure handed to display() directly, as in a notebook; nothing is written to the workspace.
    const fig = await exec(t, sb, { code: "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])\ndisplay(fig)", timeout_ms: 120_000 });
    assert.deepEqual(fig.json.artifacts.map((a: any) => [a.path, a.mime_type]), [["display/figure-1.png", "image/png"]], fig.text);
    assert.deepEqual(fig.json.files, { created: [], modified: [], deleted: [] });
    // display() of a DataFrame prints it as a notebook would show it in text.
    const df = await exec(t, sb, { code: "import pandas as pd\ndisplay(pd.DataFrame({'a': [1, 2]}))", timeout_ms: 120_000 });
    assert.equal(df.json.stdout, "   a\n0  1\n1  2\n", df.text);
  });

  it("sandbox env reaches every run, and a run's env adds to PYTHONPATH and NODE_PATH", async () => {
    const sb = await createSandbox(t, { language: "python", env: { PYTHONPATH: "/workspace/lib", MODE: "test" } });
    const info = await t.api("GET", `/v1/sandboxes/${sb}`);
    assert.deepEqual(info.json.env, { PYTHONPATH: "/workspace/lib", MODE: "test" });
    await putFile(t, sb, "lib/helper.py", "X = 'from lib'\n");
    await putFile(t, sb, "extra/more.py", "Y = 'from extra'\n");
    const r = await exec(t, sb, { code: "import os, helper, more; print(helper.X, more.Y, os.environ['MODE'])", env: { PYTHONPATH: "/workspace/extra" } });
    assert.equal(r.json.stdout, "from lib from extra test\n", r.text);
    const bad = await t.api("POST", "/v1/sandboxes", { body: { language: "python", env: { "1BAD": "x" } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, "VALIDATION_ERROR");
  });

  it("tty: true runs the program on a terminal", async () => {
    const sb = await createSandbox(t);
    const r = await exec(t, sb, { code: "import sys, os\nprint(sys.stdout.isatty(), sys.stdin.isatty(), os.environ['TERM'])\nprint('err', file=sys.stderr)\nsys.exit(3)", tty: true });
    assert.equal(r.json.stdout, "True True xterm-256color\nerr\n", r.text);
    assert.equal(r.json.exit_code, 3);
  });
});

describe("the agent helpers on every runtime this host offers", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_RUNTIMES: "all" }); });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  it("tty, display() figures and the no-network refusal", async (ctx) => {
    const offered = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((r: { name: string }) => r.name) as string[];
    for (const name of ["runc", "crun", "runsc", "bwrap"]) if (!offered.includes(name)) ctx.diagnostic(`SKIPPED on ${name}: not available on this host`);
    for (const runtime of offered) {
      const sb = await createSandbox(t, { language: "python", runtime });
      const tty = await exec(t, sb, { code: "import sys; print(sys.stdout.isatty())", tty: true });
      assert.equal(tty.json.stdout, "True\n", `${runtime}: ${tty.text}`);
      const shown = await exec(t, sb, { code: "class Pic:\n    def _repr_png_(self):\n        return b'\\x89PNG\\r\\n\\x1a\\n' + bytes(4)\ndisplay(Pic())" });
      assert.deepEqual(shown.json.artifacts?.map((a: any) => [a.path, a.size]), [["display/figure-1.png", 12]], `${runtime}: ${shown.text}`);
      const net = await exec(t, sb, { code: "import urllib.request\nurllib.request.urlopen('http://example.com/', timeout=30)" });
      assert.equal(net.json.explanation, NO_NETWORK, `${runtime}: ${net.text}`);
    }
  });
});
