import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

/** Sends a request byte for byte (fetch would normalise `..` out of the URL). */
function rawRequest(url: string, request: string, halfClose = false): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    // halfClose: the client shuts its side down right after the request, as `printf … | nc` does.
    const sock = net.connect(Number(port), hostname, () => (halfClose ? sock.end(request) : sock.write(request)));
    let data = "";
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.on("end", () => {
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1]);
      resolve({ status, body: data.slice(data.indexOf("\r\n\r\n") + 4) });
    });
    sock.on("error", reject);
  });
}

describe("bad input gets a clear 4xx with a stable code, never a 500", () => {
  let t: TestServer;
  let sb: string;
  before(async () => {
    t = await startTestServer({ PETRI_MAX_UPLOAD_MB: "1" });
    sb = await createSandbox(t, { language: "python", limits: { workspace_mb: 2 } });
  });
  after(async () => { await t.close(); });

  function expectError(r: { status: number; json: any; text: string }, status: number, code: string) {
    assert.equal(r.status, status, `${code}: ${r.text}`);
    assert.equal(r.json?.error?.code, code, r.text);
    assert.equal(typeof r.json.error.message, "string");
    assert.ok(r.json.error.message.length > 0);
  }

  it("path traversal, absolute paths, NUL bytes and over-long names are refused", async () => {
    for (const p of ["..%2F..%2Fetc%2Fpasswd", "a/..%2F..%2Fx", "%2Fetc%2Fpasswd", "a%00b", `${"x".repeat(300)}`, `${"a/".repeat(600)}f`]) {
      const w = await putFile(t, sb, p, "x");
      expectError(w, 400, "INVALID_PATH");
      const g = await t.api("GET", `/v1/sandboxes/${sb}/files/${p}`);
      expectError(g, 400, "INVALID_PATH");
    }
    const raw = await rawRequest(t.url, `GET /v1/sandboxes/${sb}/files/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.adminKey}\r\nConnection: close\r\n\r\n`);
    assert.ok(raw.status === 400 || raw.status === 404, `raw traversal answered ${raw.status}`);
    assert.doesNotMatch(raw.body, /root:x:0/);
    // A client that half-closes after its request still gets its answer (the reply waits for its
    // audit record's group commit, and node's HTTP server would otherwise end the socket on the FIN).
    for (let i = 0; i < 5; i++) {
      const half = await rawRequest(t.url, `GET /v1/sandboxes/${sb}/files/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.adminKey}\r\nConnection: close\r\n\r\n`, true);
      assert.ok(half.status === 400 || half.status === 404, `half-closed raw traversal answered ${half.status}`);
    }
    const form = new FormData();
    form.append("path", "../escape.txt");
    form.append("file", new Blob(["x"]), "x.txt");
    expectError(await t.api("POST", `/v1/sandboxes/${sb}/files`, { raw: form }), 400, "INVALID_PATH");
    const abs = new FormData();
    abs.append("/etc/evil", new Blob(["x"]), "x");
    expectError(await t.api("POST", `/v1/sandboxes/${sb}/files`, { raw: abs }), 400, "INVALID_PATH");
    assert.equal(fs.existsSync("/etc/evil"), false);
    expectError(await exec(t, sb, { filename: "../../etc/passwd" }), 400, "INVALID_PATH");
    expectError(await t.api("GET", `/v1/sandboxes/${sb}/files?path=..`), 400, "INVALID_PATH");
  });

  it("malformed JSON, wrong types, unknown fields", async () => {
    expectError(await t.api("POST", "/v1/sandboxes", { body: '{"language": "python"' }), 400, "INVALID_JSON");
    expectError(await t.api("POST", "/v1/sandboxes", { body: '{"language": "python"', headers: { "content-type": "application/x-www-form-urlencoded" } }), 400, "VALIDATION_ERROR");
    expectError(await t.api("POST", "/v1/sandboxes", { body: { language: 7 } }), 400, "VALIDATION_ERROR");
    expectError(await t.api("POST", "/v1/sandboxes", { body: { language: "python", bogus: 1 } }), 400, "VALIDATION_ERROR");
    expectError(await t.api("POST", "/v1/sandboxes", { body: {} }), 400, "VALIDATION_ERROR");
    expectError(await exec(t, sb, { code: 5 }), 400, "VALIDATION_ERROR");
    expectError(await exec(t, sb, {}), 400, "VALIDATION_ERROR");
    expectError(await exec(t, sb, { code: "1", filename: "a.py" }), 400, "VALIDATION_ERROR");
    expectError(await exec(t, sb, { code: "1", env: { "BAD=NAME": "x" } }), 400, "VALIDATION_ERROR");
    expectError(await t.api("GET", "/v1/sandboxes?limit=abc"), 400, "VALIDATION_ERROR");
    expectError(await t.api("GET", "/v1/sandboxes?cursor=notacursor"), 400, "VALIDATION_ERROR");
    expectError(await t.api("POST", `/v1/sandboxes/${sb}/files`, { body: { a: 1 } }), 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  it("fractional counts and NUL bytes are refused with 400 before anything runs (were 200/201, then RUNTIME_UNAVAILABLE)", async () => {
    for (const k of ["pids", "open_files", "memory_mb", "file_size_mb", "workspace_mb", "output_bytes", "timeout_ms"]) {
      const c = await t.api("POST", "/v1/sandboxes", { body: { language: "python", limits: { [k]: 1.5 } } });
      expectError(c, 400, "VALIDATION_ERROR");
      assert.match(c.json.error.message, new RegExp(`${k}.*integer`), c.text);
      expectError(await exec(t, sb, { code: "print(1)", limits: { [k]: 7.25 } }), 400, "VALIDATION_ERROR");
    }
    for (const body of [{ code: "print(1)\0" }, { code: "print(1)", args: ["a", "b\0c"] }, { code: "print(1)", env: { X: "a\0b" } }, { filename: "a\0.py" }]) {
      const r = await exec(t, sb, body);
      expectError(r, 400, "VALIDATION_ERROR");
      assert.match(r.json.error.message, /NUL bytes/, r.text);
    }
    // Whole numbers and fractional cpus are fine, and stdin may carry any byte.
    const ok = await exec(t, sb, { code: "import sys\nprint(len(sys.stdin.buffer.read()))", stdin: "a\0b", limits: { pids: 32, cpus: 0.5 } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.stdout.trim(), "3");
  });

  it("unknown language or runtime, limits above the maximum", async () => {
    expectError(await t.api("POST", "/v1/sandboxes", { body: { language: "cobol" } }), 400, "UNKNOWN_LANGUAGE");
    expectError(await t.api("POST", "/v1/sandboxes", { body: { language: "python", runtime: "nope" } }), 400, "UNKNOWN_RUNTIME");
    expectError(await t.api("POST", "/v1/sandboxes", { body: { language: "python", limits: { memory_mb: 1e9 } } }), 400, "LIMIT_ABOVE_MAXIMUM");
    expectError(await exec(t, sb, { code: "print(1)", timeout_ms: 1e9 }), 400, "LIMIT_ABOVE_MAXIMUM");
    expectError(await exec(t, sb, { code: "print(1)", limits: { cpus: 999 } }), 400, "LIMIT_ABOVE_MAXIMUM");
    // Lowering is fine.
    const low = await t.api("POST", "/v1/sandboxes", { body: { language: "python", limits: { memory_mb: 64, timeout_ms: 2000 } } });
    assert.equal(low.status, 201);
    assert.equal(low.json.limits.memory_mb, 64);
    await t.api("DELETE", `/v1/sandboxes/${low.json.id}`);
  });

  it("exec of a missing file, or of a directory", async () => {
    expectError(await exec(t, sb, { filename: "nope.py" }), 404, "FILE_NOT_FOUND");
    await putFile(t, sb, "dir/x.py", "print(1)");
    expectError(await exec(t, sb, { filename: "dir" }), 400, "NOT_A_FILE");
  });

  it("unknown sandboxes, and other keys' sandboxes, are 404", async () => {
    expectError(await t.api("GET", "/v1/sandboxes/sb_doesnotexist000000000"), 404, "SANDBOX_NOT_FOUND");
    expectError(await exec(t, "sb_doesnotexist000000000", { code: "1" }), 404, "SANDBOX_NOT_FOUND");
    const other = (await t.api("POST", "/v1/keys", { body: { name: "mallory" } })).json.token;
    for (const [m, p] of [
      ["GET", `/v1/sandboxes/${sb}`], ["DELETE", `/v1/sandboxes/${sb}`], ["GET", `/v1/sandboxes/${sb}/files`],
      ["GET", `/v1/sandboxes/${sb}/files/dir/x.py`], ["DELETE", `/v1/sandboxes/${sb}/files/dir/x.py`], ["GET", `/v1/sandboxes/${sb}/exec`],
    ] as const) {
      expectError(await t.api(m, p, { key: other }), 404, "SANDBOX_NOT_FOUND");
    }
    expectError(await exec(t, sb, { code: "print(1)" }, other), 404, "SANDBOX_NOT_FOUND");
    expectError(await putFile(t, sb, "x.py", "1", other), 404, "SANDBOX_NOT_FOUND");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}/files/dir/x.py`)).text, "print(1)", "owner's data untouched");
    expectError(await t.api("GET", `/v1/keys`, { key: other }), 403, "FORBIDDEN");
  });

  it("oversize uploads are 413 and leave nothing behind", async () => {
    const big = Buffer.alloc(1024 * 1024 + 10, 97);
    expectError(await putFile(t, sb, "big.bin", big), 413, "PAYLOAD_TOO_LARGE");
    const form = new FormData();
    form.append("file", new Blob(["small"]), "small.txt");
    form.append("file", new Blob([big]), "big.bin");
    expectError(await t.api("POST", `/v1/sandboxes/${sb}/files`, { raw: form }), 413, "PAYLOAD_TOO_LARGE");
    const list = await t.api("GET", `/v1/sandboxes/${sb}/files`);
    const paths = list.json.files.map((f: { path: string }) => f.path);
    assert.ok(!paths.includes("small.txt"), "a refused multipart upload stores none of its files");
    assert.ok(!paths.includes("big.bin"));
    // Within the upload limit but beyond the 2 MiB workspace quota.
    const half = Buffer.alloc(900 * 1024, 98);
    assert.equal((await putFile(t, sb, "h1.bin", half)).status, 201);
    assert.equal((await putFile(t, sb, "h2.bin", half)).status, 201);
    expectError(await putFile(t, sb, "h3.bin", half), 413, "WORKSPACE_QUOTA_EXCEEDED");
    assert.equal(fs.readdirSync(`${t.dataDir}/workspaces/.staging`).length, 0, "no staging leftovers");
  });

  it("unknown routes and methods", async () => {
    expectError(await t.api("GET", "/v1/nope"), 404, "ROUTE_NOT_FOUND");
    expectError(await t.api("PATCH", `/v1/sandboxes/${sb}`), 404, "ROUTE_NOT_FOUND");
    expectError(await t.api("GET", `/v1/sandboxes/${sb}/exec/ex_nope`), 404, "EXEC_NOT_FOUND");
  });
});
