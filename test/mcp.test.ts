import { imageRefOf } from "../src/images/catalog.js";
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { execFileSync } from "node:child_process";
import { loadConfig } from "../src/config.js";
import { startTestServer, containersOf, imageBuilt, type TestServer } from "./helpers.js";
import { npmRegistryFromNpm } from "./deps/registries.js";

type Content = { type: string; text?: string; data?: string; mimeType?: string };

function text(r: unknown): string {
  return (((r as { content?: Content[] }).content ?? []) as Content[]).filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

function images(r: unknown): Content[] {
  return (((r as { content?: Content[] }).content ?? []) as Content[]).filter((c) => c.type === "image");
}

function sandboxIdIn(s: string): string {
  const m = /sb_[0-9a-z]{20}/.exec(s);
  assert.ok(m, `no sandbox id in: ${s}`);
  return m[0];
}

// Asked of Docker, not of the describe_images tool under test.
const HAVE_DATASCIENCE = imageBuilt("datascience").ok;

const CSV = "month,sales\njan,3\nfeb,5\nmar,8\napr,13\n";

// In the datascience image the chart is made with pandas and matplotlib, the way an agent would;
// where that image is not built, plain Python writes the PNG itself, so the session still runs.
const PANDAS_CHART = `import pandas as pd, matplotlib.pyplot as plt
df = pd.read_csv("sales.csv")
print(df["sales"].sum())
df.plot(x="month", y="sales")
plt.savefig("chart.png")
df.describe().to_csv("summary.csv")
`;
const PLAIN_CHART = `import csv, struct, zlib
rows = list(csv.DictReader(open("sales.csv")))
print(sum(int(r["sales"]) for r in rows))
w, h = 40, 20
px = b"".join(b"\\x00" + b"".join(b"\\x00\\x80\\xff" if x < int(rows[x * len(rows) // w]["sales"]) * 3 else b"\\xff\\xff\\xff" for x in range(w)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(px)) + chunk(b"IEND", b"")
open("chart.png", "wb").write(png)
open("summary.csv", "w").write("count,sum\\n%d,%d\\n" % (len(rows), sum(int(r["sales"]) for r in rows)))
`;

/** The session the issue describes, over any connected client. */
async function fullSession(client: Client, log: (s: string) => void): Promise<void> {
  const tools = await client.listTools();
  for (const name of ["create_sandbox", "list_sandboxes", "delete_sandbox", "run_code", "install_dependencies", "write_file", "read_file", "list_files", "delete_file", "describe_images"]) {
    assert.ok(tools.tools.some((t) => t.name === name), `tool ${name} is listed`);
  }
  // What an agent asks first: which image has the data stack.
  const described = await client.callTool({ name: "describe_images", arguments: {} });
  assert.equal(described.isError, false, text(described));
  assert.match(text(described), /^## standard \(built\), default for python, node, typescript, go, bash\n/m);
  assert.match(text(described), /^languages: python 3\.\d+\.\d+, bash [\d.]+, node [\d.]+, typescript [\d.]+, go [\d.]+$/m);
  const noImage = await client.callTool({ name: "describe_images", arguments: { name: "nope" } });
  assert.equal(noImage.isError, true);
  assert.match(text(noImage), /^error IMAGE_NOT_FOUND: no image "nope"; this server offers: standard, datascience/);
  const badImage = await client.callTool({ name: "create_sandbox", arguments: { language: "python", image: "nope" } });
  assert.equal(badImage.isError, true);
  assert.match(text(badImage), /^error UNKNOWN_IMAGE: unknown image "nope"/);
  if (HAVE_DATASCIENCE) {
    assert.match(text(described), /^## datascience \(built\)\n/m);
    const ds = await client.callTool({ name: "describe_images", arguments: { name: "datascience" } });
    const pyLine = /^python packages \(\d+\): (.*)$/m.exec(text(ds))?.[1] ?? "";
    for (const p of [/\bpandas 2\./, /\bnumpy 2\./, /\bmatplotlib 3\./, /\bscikit-learn \d/]) assert.match(pyLine, p, "one image lists its Python packages");
  } else {
    log("SKIP the pandas + matplotlib chart: the datascience image is not built here (scripts/setup.sh builds it); plain Python makes the chart");
  }
  const created = await client.callTool({ name: "create_sandbox", arguments: { language: "python", ...(HAVE_DATASCIENCE ? { image: "datascience" } : {}) } });
  assert.equal(created.isError, false, text(created));
  const sb = sandboxIdIn(text(created));
  assert.match(text(created), new RegExp(`image ${HAVE_DATASCIENCE ? "datascience" : "standard"}\\)`));
  try {
    const listed = await client.callTool({ name: "list_sandboxes", arguments: {} });
    assert.match(text(listed), new RegExp(sb));

    const wrote = await client.callTool({ name: "write_file", arguments: { sandbox_id: sb, path: "sales.csv", content: CSV } });
    assert.equal(wrote.isError, false, text(wrote));

    const run = await client.callTool({ name: "run_code", arguments: { sandbox_id: sb, code: HAVE_DATASCIENCE ? PANDAS_CHART : PLAIN_CHART } });
    assert.equal(run.isError, false, text(run));
    assert.match(text(run), /exit code 0/);
    assert.match(text(run), /--- stdout ---\n29\n/);
    assert.match(text(run), /--- workspace changes ---\n\+chart\.png\n\+summary\.csv/);
    // The chart comes back inline with the run, as an MCP image; the small CSV as text.
    const imgs = images(run);
    assert.equal(imgs.length, 1, `the chart comes back inline: ${text(run)}`);
    assert.equal(imgs[0].mimeType, "image/png");
    assert.ok(Buffer.from(imgs[0].data!, "base64").subarray(0, 8).equals(Buffer.from("\x89PNG\r\n\x1a\n", "latin1")));
    assert.match(text(run), /--- summary\.csv \(text\/csv\) ---\n/);
    const readImg = await client.callTool({ name: "read_file", arguments: { sandbox_id: sb, path: "chart.png" } });
    assert.equal(images(readImg)[0]?.data, imgs[0].data);
    const read = await client.callTool({ name: "read_file", arguments: { sandbox_id: sb, path: "sales.csv" } });
    assert.equal(text(read), CSV);

    const res = await client.readResource({ uri: `petri://sandboxes/${sb}/files/sales.csv` });
    assert.equal((res.contents[0] as { text: string }).text, CSV);
    const listedRes = await client.listResources();
    assert.ok(listedRes.resources.some((r) => r.uri === `petri://sandboxes/${sb}/files/chart.png` && r.mimeType === "image/png"));

    const files = await client.callTool({ name: "list_files", arguments: { sandbox_id: sb } });
    assert.match(text(files), /chart\.png/);
    const del = await client.callTool({ name: "delete_file", arguments: { sandbox_id: sb, path: "chart.png" } });
    assert.equal(del.isError, false, text(del));
    const gone = await client.callTool({ name: "read_file", arguments: { sandbox_id: sb, path: "chart.png" } });
    assert.equal(gone.isError, true);
    assert.match(text(gone), /^error FILE_NOT_FOUND: /);

    // Errors the model can correct: a bad argument and an unknown sandbox.
    const bad = await client.callTool({ name: "run_code", arguments: { sandbox_id: sb, code: "print(1)", timeout_ms: "soon" } });
    assert.equal(bad.isError, true);
    assert.match(text(bad), /^error VALIDATION_ERROR: run_code: argument \/timeout_ms must be integer/);
    const missing = await client.callTool({ name: "list_files", arguments: { sandbox_id: "sb_00000000000000000000" } });
    assert.equal(missing.isError, true);
    assert.match(text(missing), /^error SANDBOX_NOT_FOUND: /);
    const badDep = await client.callTool({ name: "install_dependencies", arguments: { sandbox_id: sb, python: ["x @ file:///etc"] } });
    assert.equal(badDep.isError, true);
    assert.equal(text(badDep), 'error DEPENDENCY_INVALID: dependency "x @ file:///etc" is refused: a URL; only package names from the configured registry are installed');
    const wrongEco = await client.callTool({ name: "install_dependencies", arguments: { sandbox_id: sb, node: ["lodash"] } });
    assert.equal(text(wrongEco), "error VALIDATION_ERROR: dependencies.node: a python sandbox installs python packages");
    const failing = await client.callTool({ name: "run_code", arguments: { sandbox_id: sb, code: "1/0" } });
    assert.equal(failing.isError, true);
    assert.match(text(failing), /exit code 1/);
    assert.match(text(failing), /\nexplanation: exited with code 1: ZeroDivisionError: division by zero \(<snippet>:1\)\n/);
  } finally {
    const deleted = await client.callTool({ name: "delete_sandbox", arguments: { sandbox_id: sb } });
    assert.equal(deleted.isError, false, text(deleted));
  }
  const after = await client.callTool({ name: "list_files", arguments: { sandbox_id: sb } });
  assert.match(text(after), /^error SANDBOX_NOT_FOUND/);
}

describe("MCP over streamable HTTP (/mcp), with the SDK's own Client", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_NPM_REGISTRY: npmRegistryFromNpm() }); });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0, "no container may be left behind");
  });

  function connect(key: string): Promise<Client> {
    const client = new Client({ name: "petri-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(`${t.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${key}` } } });
    return client.connect(transport).then(() => client);
  }

  it("a full session: create, write a CSV, chart it, read, delete", async (ctx) => {
    const client = await connect(t.adminKey);
    try {
      await fullSession(client, (s) => ctx.diagnostic(s));
    } finally {
      await client.close();
    }
  });

  it("install_dependencies installs from the real npm registry for later runs", async (ctx) => {
    // config names a catalog image ("standard"); docker needs its reference.
    const image = imageRefOf(loadConfig({}).images.node);
    try {
      execFileSync("docker", ["run", "--rm", "--network", "none", image, "sh", "-c", "command -v npm"], { stdio: "ignore", timeout: 60_000 });
    } catch {
      ctx.skip(`image ${image} has no npm to install with`);
      return;
    }
    const client = await connect(t.adminKey);
    try {
      const sb = sandboxIdIn(text(await client.callTool({ name: "create_sandbox", arguments: { language: "node" } })));
      const inst = await client.callTool({ name: "install_dependencies", arguments: { sandbox_id: sb, node: ["is-number@7.0.0"] } });
      assert.equal(inst.isError, false, text(inst));
      const run = await client.callTool({ name: "run_code", arguments: { sandbox_id: sb, code: "console.log(require('is-number')(5))" } });
      assert.match(text(run), /--- stdout ---\ntrue/, text(run));
      await client.callTool({ name: "delete_sandbox", arguments: { sandbox_id: sb } });
    } finally {
      await client.close();
    }
  });

  it("refuses a missing or wrong API key", async () => {
    await assert.rejects(connect("pk_not_a_key"), /401|Unauthorized|not valid/i);
    const r = await fetch(`${t.url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }) });
    assert.equal(r.status, 401);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, "UNAUTHORIZED");
  });

  it("a session belongs to the key that opened it", async () => {
    const other = await t.api("POST", "/v1/keys", { body: { name: "other" } });
    const client = await connect(t.adminKey);
    try {
      const transport = client.transport as StreamableHTTPClientTransport;
      const r = await fetch(`${t.url}/mcp`, {
        method: "POST",
        headers: { authorization: `Bearer ${other.json.token}`, "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": transport.sessionId!, "mcp-protocol-version": "2025-06-18" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/list" }),
      });
      assert.equal(r.status, 404);
    } finally {
      await client.close();
    }
  });

  it("cancelling a call cancels the run", async () => {
    const client = await connect(t.adminKey);
    try {
      const created = await client.callTool({ name: "create_sandbox", arguments: { language: "python" } });
      const sb = sandboxIdIn(text(created));
      const ac = new AbortController();
      const call = client.callTool({ name: "run_code", arguments: { sandbox_id: sb, code: "import time\nprint('started', flush=True)\ntime.sleep(120)" } }, undefined, { signal: ac.signal });
      // Wait until the run is really in flight.
      for (let i = 0; i < 600; i++) {
        const h = await t.api("GET", `/v1/sandboxes/${sb}/exec`);
        if (h.json.items.some((x: { status: string }) => x.status === "running")) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      ac.abort("the user changed their mind");
      await assert.rejects(call, /abort|cancel|changed their mind/i);
      let status = "running";
      for (let i = 0; i < 300 && status === "running"; i++) {
        const h = await t.api("GET", `/v1/sandboxes/${sb}/exec`);
        status = h.json.items[0].status;
        if (status === "running") await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, "cancelled");
      await client.callTool({ name: "delete_sandbox", arguments: { sandbox_id: sb } });
    } finally {
      await client.close();
    }
  });
});

describe("MCP over stdio (petri mcp), with the SDK's own Client", () => {
  it("a full session through a spawned `petri mcp`", async (ctx) => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-mcp-stdio-"));
    const key = `pk_test_${Math.random().toString(36).slice(2)}`;
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [path.resolve("bin/petri.js"), "mcp"],
      env: { ...process.env as Record<string, string>, PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: key, PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "0", PETRI_LOG_LEVEL: "warn" },
      stderr: "pipe",
    });
    let stderr = "";
    transport.stderr?.on("data", (b: Buffer) => { stderr += b.toString(); });
    const client = new Client({ name: "petri-test", version: "1.0.0" });
    try {
      await client.connect(transport);
      await fullSession(client, (s) => ctx.diagnostic(s));
    } catch (e) {
      ctx.diagnostic(`petri mcp stderr:\n${stderr}`);
      throw e;
    } finally {
      await client.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses a key that is not valid", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-mcp-stdio-"));
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [path.resolve("bin/petri.js"), "mcp"],
      env: { ...process.env as Record<string, string>, PETRI_DATA_DIR: dataDir, PETRI_API_KEY: "pk_wrong", PETRI_RUNTIMES: "runc", PETRI_LOG_LEVEL: "warn" },
      stderr: "pipe",
    });
    let stderr = "";
    transport.stderr?.on("data", (b: Buffer) => { stderr += b.toString(); });
    const client = new Client({ name: "petri-test", version: "1.0.0" });
    try {
      await assert.rejects(client.connect(transport));
      assert.match(stderr, /PETRI_API_KEY is not a valid API key/);
    } finally {
      await client.close().catch(() => undefined);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
