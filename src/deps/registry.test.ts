import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { PetriError } from "../errors.js";
import { checkDeclared, checkRequirement, goEscape } from "./registry.js";
import { parseGoSpec, parseNpmSpec, parsePythonRequirement } from "./specs.js";

/** A fake registry speaking the three protocols' metadata endpoints, in addition to the real ones used by test/deps.test.ts. */
async function fakeRegistry(): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const u = req.url ?? "";
    if (u === "/simple/pandas/") return res.writeHead(200, { "content-type": "text/html" }).end("<a href='/f/pandas-2.2.0.whl'>x</a>");
    if (u === "/npm/lodash") return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ "dist-tags": { latest: "4.17.21" }, versions: { "4.17.21": {}, "3.10.1": {} } }));
    if (u === "/npm/@scope%2fpkg") return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ "dist-tags": { latest: "1.0.0" }, versions: { "1.0.0": {} } }));
    if (u === "/go/github.com/!azure/x/@v/list") return res.writeHead(200).end("v1.0.0\nv1.1.0\n");
    if (u === "/go/github.com/!azure/x/@v/v9.0.0.info") return res.writeHead(404).end("not found");
    res.writeHead(404, "Not Found").end("Not Found");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

test("verdicts name the registry's answer", async () => {
  const f = await fakeRegistry();
  const urls = { pipIndexUrl: `${f.url}/simple`, npmRegistry: `${f.url}/npm`, goProxy: `${f.url}/go` };
  try {
    assert.deepEqual(await checkRequirement("python", parsePythonRequirement("pandas>=2"), urls), { ok: true });
    const missing = await checkRequirement("python", parsePythonRequirement("pandaz"), urls);
    assert.equal(missing.ok, false);
    assert.match((missing as { message: string }).message, /answered 404 Not Found/);
    assert.deepEqual(await checkRequirement("node", parseNpmSpec("lodash@^4"), urls), { ok: true });
    assert.deepEqual(await checkRequirement("node", parseNpmSpec("lodash@latest"), urls), { ok: true });
    assert.deepEqual(await checkRequirement("node", parseNpmSpec("@scope/pkg"), urls), { ok: true });
    const unres = await checkRequirement("node", parseNpmSpec("lodash@^9"), urls);
    assert.equal(unres.ok === false && unres.code, "DEPENDENCY_UNRESOLVABLE");
    assert.deepEqual(await checkRequirement("go", parseGoSpec("github.com/Azure/x@v1.1.0"), urls), { ok: true });
    const gobad = await checkRequirement("go", parseGoSpec("github.com/Azure/x@v9.0.0"), urls);
    assert.equal(gobad.ok === false && gobad.code, "DEPENDENCY_UNRESOLVABLE");
    await assert.rejects(checkDeclared("node", [parseNpmSpec("lodash"), parseNpmSpec("no-such-pkg")], urls),
      (e: unknown) => e instanceof PetriError && e.code === "DEPENDENCY_NOT_FOUND" && /no-such-pkg/.test(e.message));
  } finally {
    await f.close();
  }
});

test("an unreachable registry gives no verdict (the sandboxed install decides)", async () => {
  const v = await checkRequirement("python", parsePythonRequirement("x"), { pipIndexUrl: "http://127.0.0.1:1/simple", npmRegistry: "", goProxy: "" });
  assert.equal(v.ok, null);
});

test("Go module paths are case-encoded", () => {
  assert.equal(goEscape("github.com/BurntSushi/toml"), "github.com/!burnt!sushi/toml");
});
