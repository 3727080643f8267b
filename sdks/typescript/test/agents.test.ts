import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { InvalidRequestError, Sandbox } from "jhansi";
import { imageBuilt, startServer, type LiveServer } from "./helpers.js";

let server: LiveServer;
let sb: Sandbox;

before(async () => {
  server = await startServer();
  sb = await Sandbox.create({ language: "python", env: { PYTHONPATH: "/workspace/lib", COLOUR: "teal" }, ...server.conn });
});

after(async () => {
  await sb?.kill().catch(() => undefined);
  await server?.stop();
});

describe("CommonJS and ESM", () => {
  test("require('jhansi') gives the CommonJS build, which talks to the server", async () => {
    const require = createRequire(import.meta.url);
    const cjs = require("jhansi") as typeof import("jhansi");
    assert.equal(typeof cjs.Sandbox, "function");
    assert.notEqual(cjs.Sandbox, Sandbox, "a separate CommonJS build, not the ESM module");
    const s = await cjs.Sandbox.connect(sb.id, server.conn);
    const r = await s.exec("print('from cjs')");
    assert.equal(r.stdout, "from cjs\n");
  });
});

describe("agent-facing options and results", () => {
  test("sandbox env reaches every run; a run's env adds to PYTHONPATH instead of replacing it", async () => {
    assert.deepEqual(sb.info.env, { PYTHONPATH: "/workspace/lib", COLOUR: "teal" });
    const r = await sb.exec("import os, sys; print(os.environ['COLOUR'], os.environ['SHAPE']); print([p for p in sys.path if p.startswith('/workspace')])", { env: { SHAPE: "round" } });
    assert.equal(r.stdout, "teal round\n['/workspace/lib', '/workspace']\n", r.stderr);
  });

  test("allowHosts and secrets are sent and reported", async () => {
    const put = await fetch(`${server.url}/v1/secrets/token`, {
      method: "PUT", headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ value: "s3cr3t-value", kind: "generic" }),
    });
    assert.ok(put.status === 201 || put.status === 200, await put.text());
    const s = await Sandbox.create({ language: "python", allowHosts: ["api.example.com"], secrets: ["token"], ...server.conn });
    try {
      assert.deepEqual(s.info.allowHosts, ["api.example.com"]);
      assert.deepEqual(s.info.secrets, ["token"]);
      const r = await s.exec("import os; print(os.environ['PETRI_SECRET_TOKEN'].startswith('petri-secret:token:'))", { allowHosts: ["other.example.com"] });
      assert.equal(r.stdout, "True\n", r.stderr);
    } finally {
      await s.kill();
    }
  });

  test("a timeout and a crash come with an explanation and an error summary", async () => {
    const slow = await sb.exec("while True: pass", { timeoutMs: 1_500 });
    assert.equal(slow.explanation, "killed: exceeded the 1.5 s time limit");
    const bad = await sb.exec("def f():\n    return 1/0\nf()\n");
    assert.equal(bad.explanation, "exited with code 1: ZeroDivisionError: division by zero (<snippet>:2)");
    assert.deepEqual(bad.errorSummary, { type: "ZeroDivisionError", message: "division by zero", file: "<snippet>", line: 2 });
    const fine = await sb.exec("print(1)");
    assert.equal(fine.explanation, null);
    assert.equal(fine.errorSummary, null);
  });

  test("files the run made come back as artifacts", async () => {
    const r = await sb.exec("open('t.csv', 'w').write('a,b\\n1,2\\n'); open('p.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(8))");
    const csv = r.artifacts.find((a) => a.path === "t.csv");
    assert.equal(csv?.mimeType, "text/csv");
    assert.equal(csv?.text, "a,b\n1,2\n");
    const png = r.artifacts.find((a) => a.path === "p.png");
    assert.equal(png?.mimeType, "image/png");
    assert.equal(png?.data?.length, 16);
    await sb.files.remove("t.csv");
    await sb.files.remove("p.png");
  });

  test("tty: the program runs on a terminal", async () => {
    const plain = await sb.exec("import sys; print(sys.stdout.isatty(), sys.stdin.isatty())");
    assert.equal(plain.stdout, "False False\n");
    const tty = await sb.exec("import sys; print(sys.stdout.isatty(), sys.stdin.isatty())", { tty: true });
    assert.equal(tty.stdout, "True True\n", JSON.stringify(tty.raw));
  });
});

describe("images", () => {
  test("images() says what each image holds; image picks one per sandbox; an unknown one is refused", async (ctx) => {
    const images = await Sandbox.images(server.conn);
    const byName = Object.fromEntries(images.map((i) => [i.name, i]));
    assert.ok(byName.standard && byName.datascience, `standard and datascience are offered: ${images.map((i) => i.name).join(", ")}`);
    assert.ok(byName.standard.defaultFor.includes("python"));
    assert.equal(sb.info.image, "standard", "a sandbox that names no image gets its language's default");
    await assert.rejects(Sandbox.create({ language: "python", image: "no-such-image", ...server.conn }),
      (e: unknown) => e instanceof InvalidRequestError && e.code === "UNKNOWN_IMAGE" && /datascience/.test(e.message));

    const built = await imageBuilt("datascience");
    if (!built.ok) {
      ctx.skip(`SKIP datascience runs: image ${built.ref} is not built here (scripts/setup.sh builds it)`);
      return;
    }
    assert.equal(byName.datascience.built, true);
    assert.match(byName.datascience.pythonPackages.pandas ?? "", /^\d+\./, "pandas is listed with its version");
    assert.match(byName.datascience.languages.python ?? "", /^3\./);
    const ds = await Sandbox.create({ language: "python", image: "datascience", ...server.conn });
    try {
      assert.equal(ds.info.image, "datascience");
      assert.equal((await Sandbox.connect(ds.id, server.conn)).info.image, "datascience");
      const r = await ds.exec("import pandas as pd; print(pd.__version__)", { autoDetectDependencies: false });
      assert.equal(r.exitCode, 0, r.stderr);
      // Debian versions carry a suffix (2.2.3+dfsg) that pandas itself may not report.
      assert.equal(r.stdout.trim().split("+")[0], byName.datascience.pythonPackages.pandas.split("+")[0]);
    } finally {
      await ds.kill();
    }
  });
});
