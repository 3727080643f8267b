import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startTestServer, createSandbox, putFile, exec, containersOf, type TestServer } from "./helpers.js";

describe("the documented flow, per language, through HTTP", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer(); });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  it("python: create, multipart upload with a sub-directory, exec, delete", async () => {
    const created = await t.api("POST", "/v1/sandboxes", { body: '{"language": "python"}', headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(created.status, 201, created.text);
    assert.match(created.json.id, /^sb_[0-9a-z]{20}$/);
    assert.equal(created.json.language, "python");
    assert.equal(created.json.status, "ready");
    assert.ok(Date.parse(created.json.expires_at) > Date.parse(created.json.created_at));
    const sb = created.json.id;

    const form = new FormData();
    form.append("file", new Blob(["import sys\nfrom lib.util import greet\nprint(greet('world'), sys.argv[1:])\n"]), "main.py");
    form.append("path", "lib/util.py");
    form.append("file", new Blob(["def greet(n):\n    return 'hello ' + n\n"]), "ignored.py");
    form.append("lib/__init__.py", new Blob([""]), "x");
    const up = await t.api("POST", `/v1/sandboxes/${sb}/files`, { raw: form });
    assert.equal(up.status, 201, up.text);
    assert.deepEqual(up.json.files.map((f: { path: string }) => f.path).sort(), ["lib/__init__.py", "lib/util.py", "main.py"]);

    const r = await t.api("POST", `/v1/sandboxes/${sb}/exec`, { body: '{"filename": "main.py", "args": ["a", "b c"]}', headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(r.status, 200, r.text);
    assert.match(r.json.id, /^ex_[0-9a-z]{20}$/);
    assert.equal(r.json.exit_code, 0);
    assert.equal(r.json.stdout, "hello world ['a', 'b c']\n");
    assert.equal(r.json.stderr, "");
    assert.equal(r.json.timed_out, false);
    assert.equal(r.json.oom_killed, false);
    assert.equal(typeof r.json.duration_ms, "number");
    assert.equal(typeof r.json.cpu_time_ms, "number");
    assert.ok(r.json.peak_memory_bytes > 1024 * 1024, `peak memory ${r.json.peak_memory_bytes}`);

    const ws = path.join(t.dataDir, "workspaces", sb);
    assert.ok(fs.existsSync(ws));
    const del = await t.api("DELETE", `/v1/sandboxes/${sb}`);
    assert.equal(del.status, 204);
    assert.equal(fs.existsSync(ws), false, "workspace is gone");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).status, 404);
  });

  it("node: file and snippet", async () => {
    const sb = await createSandbox(t, { language: "node" });
    await putFile(t, sb, "lib/math.js", "module.exports.add = (a, b) => a + b;\n");
    await putFile(t, sb, "main.js", "const { add } = require('./lib/math');\nconsole.log('sum', add(2, 3), process.argv.slice(2).join(','));\nconsole.error('to stderr');\n");
    const r = await exec(t, sb, { filename: "main.js", args: ["x", "y"] });
    assert.equal(r.json.exit_code, 0, r.text);
    assert.equal(r.json.stdout, "sum 5 x,y\n");
    assert.equal(r.json.stderr, "to stderr\n");
    const s = await exec(t, sb, { code: "console.log(6 * 7); process.exit(3)" });
    assert.equal(s.json.stdout, "42\n");
    assert.equal(s.json.exit_code, 3);
  });

  it("go: runs, and a second run of an unchanged program reuses the sandbox's build cache", async () => {
    const sb = await createSandbox(t, { language: "go" });
    await putFile(t, sb, "main.go", 'package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\nfunc main() {\n\tfmt.Println("hello from go", len(os.Args))\n}\n');
    const first = await exec(t, sb, { filename: "main.go", timeout_ms: 120000 });
    assert.equal(first.json.exit_code, 0, first.text);
    assert.equal(first.json.stdout, "hello from go 1\n");
    const cache = path.join(t.dataDir, "cache", sb, "go-build");
    assert.ok(fs.existsSync(cache) && fs.readdirSync(cache).length > 0, "the go build cache persists in the sandbox's cache dir");
    const cacheFilesBefore = countFiles(cache);
    const second = await exec(t, sb, { filename: "main.go", timeout_ms: 120000 });
    assert.equal(second.json.stdout, "hello from go 1\n");
    // Nothing new compiled: the cache holds the same entries (only link output may be added).
    assert.ok(countFiles(cache) - cacheFilesBefore <= 4, `cache grew from ${cacheFilesBefore} to ${countFiles(cache)}`);
    // The cache is not part of the workspace the user sees.
    const list = await t.api("GET", `/v1/sandboxes/${sb}/files`);
    assert.deepEqual(list.json.files.map((f: { path: string }) => f.path), ["main.go"]);
    const snippet = await exec(t, sb, { code: 'package main\nimport "fmt"\nfunc main() { fmt.Print("snip") }\n', timeout_ms: 120000 });
    assert.equal(snippet.json.stdout, "snip", snippet.text);
  });

  it("bash, stdin, env and the workspace diff", async () => {
    const sb = await createSandbox(t, { language: "bash" });
    await putFile(t, sb, "old.txt", "old");
    await putFile(t, sb, "keep.txt", "keep");
    const r = await exec(t, sb, {
      code: 'read line; echo "got $line and $GREETING"; echo new > new.txt; echo more >> keep.txt; rm old.txt; mkdir -p d/e && echo x > d/e/f',
      stdin: "from stdin\n", env: { GREETING: "hi" },
    });
    assert.equal(r.json.stdout, "got from stdin and hi\n", r.text);
    assert.deepEqual(r.json.files, { created: ["d/e/f", "new.txt"], modified: ["keep.txt"], deleted: ["old.txt"] });
    const got = await t.api("GET", `/v1/sandboxes/${sb}/files/d/e/f`);
    assert.equal(got.text, "x\n");
  });

  it("files: list with sha256, download, overwrite, delete", async () => {
    const sb = await createSandbox(t);
    const w = await putFile(t, sb, "a/b/c.txt", "hello");
    assert.equal(w.status, 201, w.text);
    assert.equal(w.json.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    const list = await t.api("GET", `/v1/sandboxes/${sb}/files`);
    const file = list.json.files.find((f: { path: string }) => f.path === "a/b/c.txt");
    assert.deepEqual({ size: file.size, sha256: file.sha256, type: file.type }, { size: 5, sha256: w.json.sha256, type: "file" });
    assert.ok(Date.parse(file.mtime) > 0);
    await putFile(t, sb, "a/b/c.txt", "bye");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/a/b/c.txt`)).text, "bye");
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}/files/a/b/c.txt`)).status, 204);
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/a/b/c.txt`)).status, 404);
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}/files/a`)).json.error.code, "DIRECTORY_NOT_EMPTY");
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${sb}/files/a?recursive=true`)).status, 204);
    assert.deepEqual((await t.api("GET", `/v1/sandboxes/${sb}/files`)).json.files, []);
  });

  it("lists sandboxes with pagination, only the caller's", async () => {
    const other = (await t.api("POST", "/v1/keys", { body: { name: "other" } })).json.token;
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) mine.push(await createSandbox(t, { language: "python" }, other));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `?limit=2&cursor=${cursor}` : "?limit=2";
      const page = await t.api("GET", `/v1/sandboxes${q}`, { key: other });
      assert.equal(page.status, 200);
      assert.ok(page.json.items.length <= 2);
      seen.push(...page.json.items.map((s: { id: string }) => s.id));
      cursor = page.json.next_cursor;
    } while (cursor);
    assert.deepEqual(seen, mine);
  });

  it("serves an OpenAPI 3 document generated from the route schemas", async () => {
    const doc = await t.api("GET", "/openapi.json");
    assert.equal(doc.status, 200);
    assert.match(doc.json.openapi, /^3\./);
    for (const p of ["/v1/sandboxes", "/v1/sandboxes/{id}", "/v1/sandboxes/{id}/files", "/v1/sandboxes/{id}/exec", "/healthz"]) {
      assert.ok(doc.json.paths[p], `path ${p} documented`);
    }
    assert.ok(doc.json.paths["/v1/sandboxes"].post.requestBody, "request body schema is present");
  });

  it("every route but health needs a key", async () => {
    assert.equal((await t.api("GET", "/healthz", { key: null })).status, 200);
    const r = await t.api("GET", "/v1/sandboxes", { key: null });
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, "UNAUTHORIZED");
    assert.equal((await t.api("GET", "/v1/sandboxes", { key: "pk_wrong" })).status, 401);
    assert.equal((await t.api("GET", "/openapi.json", { key: null })).status, 401);
  });
});

function countFiles(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
  return n;
}
