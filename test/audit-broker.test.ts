import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startTestServer, createSandbox, exec, type TestServer } from "./helpers.js";

/**
 * Requests through the HTTP egress broker work and leave a record on every runtime (issue 12:
 * under runsc they used to fail with "connection reset" and leave none): an allowed request is
 * a `net.request` success with host, path and status; a host off the allow-list is a denied
 * `net.request` with its error code. The upstream is a real HTTP server on loopback.
 */
describe("HTTP broker records on every runtime", () => {
  let t: TestServer;
  let upstream: http.Server;
  let port = 0;
  let offered: string[] = [];
  before(async () => {
    upstream = http.createServer((req, res) => res.end(`hello ${req.method} ${req.url}`));
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    port = (upstream.address() as { port: number }).port;
    t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "auto", PETRI_EGRESS_PRIVATE_HOSTS: "127.0.0.0/8", PETRI_AUDIT_TRACE: "off" });
    offered = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
  });
  after(async () => {
    await t?.close();
    upstream?.close();
  });

  for (const rt of ["runc", "crun", "runsc", "bwrap"]) {
    it(`${rt}: an allowed request goes through and is recorded; a blocked one is recorded as denied`, async (ctx) => {
      if (!offered.includes(rt)) return ctx.skip(`${rt} is not available on this host`);
      const noSockets = await t.server.runtimes.get(rt)?.hostSockets?.();
      if (noSockets) return ctx.skip(`${rt}: ${noSockets}`);
      const sb = await createSandbox(t, { language: "python", runtime: rt, allow_hosts: [`127.0.0.1:${port}`] });
      const code = [
        "import urllib.request, urllib.error",
        `print(urllib.request.urlopen('http://127.0.0.1:${port}/audited?x=1', timeout=30).read().decode())`,
        "try:\n    urllib.request.urlopen('http://blocked.invalid/nope', timeout=30)\nexcept urllib.error.HTTPError as e:\n    print('blocked', e.code)",
      ].join("\n");
      const r = await exec(t, sb, { code, timeout_ms: 120_000 });
      assert.match(r.json.stdout, /^hello GET \/audited\?x=1\nblocked 403\n/, r.text);
      const recs = (await t.api("GET", `/v1/audit?exec_id=${r.json.id}&kind=network&limit=100`)).json.items as any[];
      const ok = recs.find((x) => x.action === "net.request" && x.outcome === "success");
      assert.ok(ok, `the allowed request's record: ${JSON.stringify(recs)}`);
      assert.equal(ok.detail.host, "127.0.0.1");
      assert.equal(ok.detail.port, port);
      assert.equal(ok.detail.status, 200);
      assert.match(String(ok.detail.path), /^\/audited/);
      const denied = recs.find((x) => x.outcome === "denied" && JSON.stringify(x.detail).includes("blocked.invalid"));
      assert.ok(denied, `the blocked request's record: ${JSON.stringify(recs)}`);
      assert.ok(denied.error_code, "a denial carries its error code");
    });
  }
});
