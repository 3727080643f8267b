import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";
import Database from "better-sqlite3";
import { generateMasterKey } from "../../src/vault/crypto.js";
import type { BrokerEvent } from "../../src/vault/events.js";
import { Redactor } from "../../src/vault/redact.js";
import { openBrokerSession, type BrokerSession } from "../../src/vault/session.js";
import { SecretStore } from "../../src/vault/store.js";
import { dockerUsable, makeTestCa, randomPassword, readTree, runInSandbox, tmpDir, type TestCa, LOOPBACK_OPEN } from "./support.js";

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../test/vault/fixtures");
const TENANT = "tn_http";
const TOKEN = "tok_" + randomPassword();
const tokenRedactor = new Redactor([{ name: "api_token", value: TOKEN }]);

interface Seen {
  url: string;
  method: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface Upstream {
  server: https.Server;
  port: number;
  seen: Seen[];
}

let ca: TestCa;
let workDir: string;
let store: SecretStore;
let upA: Upstream; // 127.0.0.1, bound to the secret
let upB: Upstream; // localhost, allowed without a secret
const allEvents: BrokerEvent[] = [];

function assertNoToken(what: string, data: Buffer | string): void {
  const s = typeof data === "string" ? data : data.toString("latin1");
  assert.ok(!s.includes(TOKEN), `${what} contains the token`);
  assert.deepEqual(tokenRedactor.detect(data), [], `${what} contains an encoding of the token`);
}

async function startUpstream(host: string): Promise<Upstream> {
  const seen: Seen[] = [];
  const server = https.createServer({ cert: ca.serverCert, key: ca.serverKey }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ url: req.url ?? "", method: req.method ?? "", headers: req.headers, body });
      const url = new URL(req.url ?? "/", "https://x");
      if (url.pathname === "/whoami") {
        if (req.headers.authorization === `Bearer ${TOKEN}`) res.end("you are alice\n");
        else {
          res.statusCode = 401;
          res.end("who are you?\n");
        }
      } else if (url.pathname === "/echo") {
        res.setHeader("content-type", "application/json");
        res.setHeader("x-echo-auth", String(req.headers.authorization ?? ""));
        const echoed = Buffer.from(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
        // Honours byte ranges, as static file servers and many APIs do.
        const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ""));
        if (range) {
          const [from, to] = [Number(range[1]), Math.min(Number(range[2]), echoed.length - 1)];
          res.statusCode = 206;
          res.setHeader("content-range", `bytes ${from}-${to}/${echoed.length}`);
          res.end(echoed.subarray(from, to + 1));
        } else res.end(echoed);
      } else if (url.pathname === "/log") {
        // A request-log viewer of the same service on another host: what the bound host was sent.
        const log = Buffer.from(JSON.stringify(upA.seen.map((r) => r.headers)));
        const from = Number(url.searchParams.get("from") ?? 0);
        const len = Number(url.searchParams.get("len") ?? log.length);
        const slice = log.subarray(from, from + len);
        if (url.searchParams.get("gzip")) {
          res.setHeader("content-encoding", "gzip");
          res.end(zlib.gzipSync(slice));
        } else res.end(slice);
      } else if (url.pathname === "/gzip-echo") {
        // Ignores Accept-Encoding on purpose: the broker must decompress to scrub.
        res.setHeader("content-encoding", "gzip");
        res.end(zlib.gzipSync(JSON.stringify({ headers: req.headers, b64: Buffer.from(String(req.headers.authorization)).toString("base64") })));
      } else if (url.pathname === "/big") {
        res.end(Buffer.alloc(3 * 1024 * 1024, "a"));
      } else {
        res.statusCode = 404;
        res.end("nope\n");
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, seen };
}

before(async () => {
  workDir = tmpDir("petri-vault-http-");
  ca = makeTestCa(path.join(workDir, "ca"), { dns: ["localhost"], ips: ["127.0.0.1"] });
  upA = await startUpstream("127.0.0.1");
  upB = await startUpstream("localhost");
  store = new SecretStore(new Database(":memory:"), generateMasterKey(), { egress: LOOPBACK_OPEN });
  store.put(TENANT, "api_token", { value: TOKEN, kind: "http", config: { hosts: [`127.0.0.1:${upA.port}`], upstreamCa: ca.caCert } });
});

after(async () => {
  upA?.server.close();
  upB?.server.close();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

async function session(events: BrokerEvent[]): Promise<{ s: BrokerSession; runDir: string }> {
  const runDir = path.join(fs.mkdtempSync(path.join(workDir, "run-")), "broker");
  const s = await openBrokerSession({
    egress: LOOPBACK_OPEN,
    store, tenantId: TENANT, sandboxId: "sb_http", execId: `ex_${Math.random().toString(36).slice(2)}`,
    secrets: ["api_token"], allowHosts: [`localhost:${upB.port}`], upstreamCa: ca.caCert, runDir,
    onEvent: (e) => {
      events.push(e);
      allEvents.push(e);
    },
  });
  return { s, runDir };
}

/** An HTTPS request through the broker's socket the way a proxy-aware client makes it: CONNECT, then TLS trusting the run CA. */
async function viaConnect(runDir: string, authority: string, opts: { method?: string; path: string; headers?: Record<string, string>; body?: Buffer | string; hostHeader?: string }): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  const connectRes = await new Promise<{ status: number; sock: net.Socket }>((resolve, reject) => {
    const r = http.request({ socketPath: path.join(runDir, "http.sock"), method: "CONNECT", path: authority });
    r.on("connect", (res, sock) => resolve({ status: res.statusCode ?? 0, sock }));
    r.on("error", reject);
    r.end();
  });
  if (connectRes.status !== 200) {
    connectRes.sock.destroy();
    return { status: connectRes.status, body: "", headers: {} };
  }
  const runCa = fs.readFileSync(path.join(runDir, "ca.pem"), "utf8");
  const [host] = authority.split(":");
  return new Promise((resolve, reject) => {
    const r = https.request(
      {
        createConnection: () => tls.connect({ socket: connectRes.sock, ca: runCa, servername: host === "127.0.0.1" ? undefined : host, checkServerIdentity: (_h, c) => tls.checkServerIdentity(host, c) }),
        host,
        method: opts.method ?? "GET",
        path: opts.path,
        headers: { host: opts.hostHeader ?? authority, ...(opts.headers ?? {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
        res.on("error", reject);
      },
    );
    r.on("error", reject);
    r.end(opts.body);
  });
}

function plainVia(runDir: string, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request({ socketPath: path.join(runDir, "http.sock"), method: "GET", path: url, headers: { host: new URL(url).host, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    r.on("error", reject);
    r.end();
  });
}

test("broker on the host: injection, upgrade, scrubbing, exfiltration and allowlist rules", async () => {
  const events: BrokerEvent[] = [];
  const { s, runDir } = await session(events);
  const A = `127.0.0.1:${upA.port}`;
  const B = `localhost:${upB.port}`;
  const ph = s.placeholders.api_token;
  try {
    assert.equal((await viaConnect(runDir, A, { path: "/whoami" })).body, "you are alice\n");
    assert.equal((await plainVia(runDir, `http://${A}/whoami`)).status, 200, "plain http upgraded to https with the header");

    const echo = await viaConnect(runDir, A, { path: "/echo", headers: { authorization: `Bearer ${ph}` } });
    assert.equal(echo.status, 200);
    assert.match(echo.body, /\[REDACTED:api_token\]/);
    assert.equal(echo.headers["x-echo-auth"], "Bearer [REDACTED:api_token]");
    assertNoToken("echo response", echo.body + JSON.stringify(echo.headers));
    assert.equal(upA.seen.at(-1)!.headers.authorization, `Bearer ${TOKEN}`, "the client's placeholder header was replaced");
    assert.equal(upA.seen.at(-1)!.headers["accept-encoding"], "identity");
    const gz = await viaConnect(runDir, A, { path: "/gzip-echo" });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers["content-encoding"], undefined);
    assert.match(gz.body, /REDACTED:api_token/);
    assertNoToken("gzip echo", gz.body);

    // A large body with the placeholder beyond the scanned prefix is cut off upstream.
    const big = Buffer.concat([Buffer.alloc(2 * 1024 * 1024, "x"), Buffer.from(ph)]);
    const seenBefore = upB.seen.length;
    const bigRes = await viaConnect(runDir, B, { method: "POST", path: "/echo", body: big }).catch((e: Error) => ({ status: -1, body: e.message, headers: {} }));
    assert.notEqual(bigRes.status, 200);
    assert.equal(upB.seen.length, seenBefore, "the upstream never got a complete request");
    // Large responses stream through.
    assert.equal((await viaConnect(runDir, A, { path: "/big" })).body.length, 3 * 1024 * 1024);

    assert.equal((await viaConnect(runDir, B, { path: "/echo", hostHeader: A })).status, 403, "Host header must match the tunnel");
    assert.equal((await viaConnect(runDir, `evil.example:443`, { path: "/" })).status, 403);
    assert.equal((await viaConnect(runDir, `127.0.0.1:${upB.port}`, { path: "/" })).status, 403, "allowed host, other port");
    assert.equal((await plainVia(runDir, "http://169.254.169.254/latest/meta-data/")).status, 403);
    assert.equal((await plainVia(runDir, `http://${B}/echo?x=${encodeURIComponent(ph)}`)).status, 403);
    assert.equal((await viaConnect(runDir, B, { path: "/echo", headers: { "x-token": Buffer.from(ph).toString("hex") } })).status, 403, "hex-encoded placeholder");
    assert.equal((await viaConnect(runDir, B, { path: "/echo", headers: { "x-token": TOKEN } })).status, 403, "the value itself, had the code learnt it");

    const denied = events.filter((e) => e.outcome === "denied").map((e) => String(e.detail.reason));
    assert.ok(denied.includes("exfiltration_attempt") && denied.includes("host_not_allowed") && denied.includes("host_header_mismatch"), denied.join(","));
    const ok = events.filter((e) => e.action === "http_request" && e.outcome === "success");
    assert.ok(ok.some((e) => e.detail.secret === "api_token" && e.detail.path === "/whoami" && e.detail.status === 200 && e.detail.method === "GET"));
    assert.ok(ok.some((e) => e.detail.upgradedToHttps === true));
    assert.ok(ok.some((e) => Array.isArray(e.detail.responseRedactions)));
    assertNoToken("events", JSON.stringify(events));
  } finally {
    await s.close();
  }
});

test("read-back (issue 9): a reflected secret cannot come back whole, in Range slices, through another host, compressed, in pieces or rotated", async () => {
  const events: BrokerEvent[] = [];
  // The token was rotated: the run's secret has a new value, the old one may still be valid.
  const oldValue = "old_" + randomPassword();
  store.put(TENANT, "rotated_token", { value: oldValue, kind: "http", config: { hosts: [`127.0.0.1:${upA.port}`], header: "X-Api-Key", template: "{{value}}", upstreamCa: ca.caCert } });
  store.put(TENANT, "rotated_token", { value: "new_" + randomPassword(), kind: "http", config: { hosts: [`127.0.0.1:${upA.port}`], header: "X-Api-Key", template: "{{value}}", upstreamCa: ca.caCert } });
  const runDir = path.join(fs.mkdtempSync(path.join(workDir, "run-")), "broker");
  const s = await openBrokerSession({
    egress: LOOPBACK_OPEN, store, tenantId: TENANT, sandboxId: "sb_readback", execId: "ex_readback", secrets: ["api_token", "rotated_token"],
    allowHosts: [`localhost:${upB.port}`], upstreamCa: ca.caCert, runDir, onEvent: (e) => events.push(e),
  });
  const A = `127.0.0.1:${upA.port}`;
  const B = `localhost:${upB.port}`;
  const noValue = (what: string, data: string) => {
    assertNoToken(what, data);
    assert.ok(!data.includes(oldValue.slice(0, 12)), `${what} has the rotated value`);
  };
  try {
    // 1. Echo + 6-byte Range: the slices that would spell the token.
    const whole = await viaConnect(runDir, A, { path: "/echo" });
    assert.equal(whole.status, 200);
    noValue("echo", whole.body);
    let joined = "";
    for (let off = 0; off < 1200; off += 6) {
      const r = await viaConnect(runDir, A, { path: "/echo", headers: { range: `bytes=${off}-${off + 5}`, "if-range": "x" } });
      assert.equal(r.status, 200, "Range is stripped: the whole (scrubbed) response comes back");
      assert.equal(r.headers["content-range"], undefined);
      joined += r.body;
      if (off >= 60) break; // the body is whole every time; a few rounds show it
    }
    noValue("Range responses", joined);
    assert.equal(upA.seen.at(-1)!.headers.range, undefined, "the upstream never saw the Range header");

    // 2. Read-back through another allowed host that carries no secret (the log viewer).
    const log = await viaConnect(runDir, B, { path: "/log" });
    assert.equal(log.status, 200);
    assert.match(log.body, /REDACTED:api_token/);
    noValue("log viewer", log.body);
    const gz = await viaConnect(runDir, B, { path: "/log?gzip=1", headers: { "accept-encoding": "gzip" } });
    assert.equal(gz.status, 200);
    noValue("gzip log viewer", gz.body);
    assert.equal(upB.seen.at(-1)!.headers["accept-encoding"], "identity");

    // 3. Server-side slices (no Range): any 8-byte piece of any form of the value is caught.
    const full = JSON.stringify(upA.seen.map((r) => r.headers));
    const at = full.indexOf(TOKEN);
    assert.ok(at > 0);
    for (const [from, len] of [[at, 12], [at + 5, 10], [at + 20, 9]]) {
      const piece = await viaConnect(runDir, B, { path: `/log?from=${from}&len=${len}` });
      assert.ok(!TOKEN.includes(piece.body), `slice ${from}+${len} came back as a piece of the token: ${piece.body}`);
      assert.match(piece.body, /REDACTED:api_token/);
    }

    // 4. The rotated (older) value is scrubbed too: the log still holds a request made with it.
    upA.seen.push({ url: "/whoami", method: "GET", headers: { authorization: `Bearer ${oldValue}` }, body: "" });
    const rotated = await viaConnect(runDir, B, { path: "/log" });
    assert.equal(rotated.status, 200);
    assert.match(rotated.body, /Bearer \[REDACTED:rotated_token\]/);
    noValue("log with the rotated value", rotated.body);
    assert.equal(s.redactor.redact(`x ${oldValue} y`).text, "x [REDACTED:rotated_token] y", "output redaction knows the old value");
    const ok = events.filter((e) => e.action === "http_request" && e.outcome === "success");
    assert.ok(ok.some((e) => e.detail.host === "localhost" && Array.isArray(e.detail.responseRedactions)), "the unbound host's response was scrubbed and it says so");
    assert.ok(ok.some((e) => JSON.stringify(e.detail.strippedHeaders ?? []).includes("range")));
  } finally {
    await s.close();
    store.delete(TENANT, "rotated_token");
  }
});

test("read-back by a run holding no secret: another sandbox of the tenant cannot read a token other runs used", async () => {
  const events: BrokerEvent[] = [];
  const runDir = path.join(fs.mkdtempSync(path.join(workDir, "run-")), "broker");
  const s = await openBrokerSession({
    egress: LOOPBACK_OPEN, store, tenantId: TENANT, sandboxId: "sb_nosecret", execId: "ex_nosecret", secrets: [],
    allowHosts: [`localhost:${upB.port}`], runDir, upstreamCa: ca.caCert, onEvent: (e) => events.push(e),
  });
  try {
    upA.seen.push({ url: "/whoami", method: "GET", headers: { authorization: `Bearer ${TOKEN}` }, body: "" });
    const log = await viaConnect(runDir, `localhost:${upB.port}`, { path: "/log", headers: { range: "bytes=0-5" } });
    assert.equal(log.status, 200);
    assert.match(log.body, /Bearer \[REDACTED:api_token\]/);
    assertNoToken("log read by a run without secrets", log.body);
    assert.equal(upB.seen.at(-1)!.headers.range, undefined, "Range stripped for a tenant that has secrets");
    assert.deepEqual(Object.keys(s.placeholders), [], "the run itself was granted nothing");
  } finally {
    await s.close();
  }
});

test("egress policy (SSRF): loopback, metadata and names resolving to them are refused at connect time; trusted hosts pass", async () => {
  const events: BrokerEvent[] = [];
  const runDir = path.join(fs.mkdtempSync(path.join(workDir, "run-")), "broker");
  // No `egress`: the default policy, as on a server whose operator opened nothing. The allow
  // list is what a tenant asked for (the API refuses these literals; a stored sandbox or a name
  // that resolves to loopback gets here).
  const s = await openBrokerSession({
    store, tenantId: TENANT, sandboxId: "sb_ssrf", execId: "ex_ssrf", secrets: [], runDir, upstreamCa: ca.caCert,
    allowHosts: [`127.0.0.1:${upB.port}`, `localhost:${upB.port}`, "169.254.169.254", `[::ffff:127.0.0.1]:${upB.port}`],
    trustedHosts: [`127.0.0.1:${upA.port}`],
    onEvent: (e) => events.push(e),
  });
  try {
    const seenB = upB.seen.length;
    const lit = await viaConnect(runDir, `127.0.0.1:${upB.port}`, { path: "/echo" });
    assert.equal(lit.status, 403);
    assert.equal(lit.headers["x-petri-denied"], "private_address");
    const named = await viaConnect(runDir, `localhost:${upB.port}`, { path: "/echo" });
    assert.equal(named.status, 403, "a name is checked on the address it resolves to");
    assert.equal(named.headers["x-petri-denied"], "private_address");
    const mapped = await plainVia(runDir, `http://[::ffff:127.0.0.1]:${upB.port}/echo`);
    assert.equal(mapped.status, 403, "IPv4-mapped IPv6 loopback");
    const meta = await plainVia(runDir, "http://169.254.169.254/latest/meta-data/");
    assert.equal(meta.status, 403);
    assert.equal(upB.seen.length, seenB, "the loopback upstream was never reached");
    // An operator-trusted destination (a package registry on loopback) is reachable.
    const trusted = await viaConnect(runDir, `127.0.0.1:${upA.port}`, { path: "/whoami" });
    assert.equal(trusted.status, 401, "reached the trusted upstream (no secret bound, so it asks who we are)");
    const reasons = events.filter((e) => e.outcome === "denied").map((e) => e.detail.reason);
    assert.equal(reasons.filter((r) => r === "private_address").length, 4, JSON.stringify(reasons));
  } finally {
    await s.close();
  }
});

test("python in a real container: uses the token, cannot see or exfiltrate it", async (t) => {
  const why = await dockerUsable();
  if (why) return t.skip(why);
  const events: BrokerEvent[] = [];
  const { s, runDir } = await session(events);
  const seenA = upA.seen.length;
  const seenB = upB.seen.length;
  try {
    assertNoToken("session env", JSON.stringify(s.env));
    for (const f of readTree(runDir)) assertNoToken("run directory file", f);
    const res = await runInSandbox(s, ["python3", "/workspace/http_attack.py"], { "http_attack.py": fs.readFileSync(path.join(FIXTURES, "http_attack.py"), "utf8") }, {
      timeoutMs: 120_000,
      env: { UP_A: `127.0.0.1:${upA.port}`, UP_B: `localhost:${upB.port}` },
    });
    const out = res.stdout.toString();
    if (process.env.PETRI_VAULT_TEST_DUMP) fs.writeFileSync(path.join(process.env.PETRI_VAULT_TEST_DUMP, "http-python.out"), out + "\n--- stderr ---\n" + res.stderr.toString());
    assert.equal(res.exitCode, 0, out.slice(-3000) + res.stderr.toString().slice(-3000));
    const result = (label: string) => new RegExp(`RESULT ${label} (\\S+)`).exec(out)?.[1];
    assert.equal(result("https_whoami"), "200");
    assert.match(out, /you are alice/);
    assert.equal(result("http_whoami_upgraded"), "200");
    assert.equal(result("https_echo"), "200");
    assert.equal(result("gzip_echo"), "200");
    assert.equal(result("clean_to_B"), "200");
    for (const l of ["placeholder_header_to_B", "placeholder_auth_to_B", "placeholder_body_to_B", "placeholder_b64_body_to_B", "placeholder_url_to_B", "placeholder_url_to_A", "placeholder_body_to_A", "placeholder_plain_http_to_B", "not_allowed_http"]) {
      assert.equal(result(l), "403", l);
    }
    // urllib reports a refused CONNECT as an exception ("Tunnel connection failed: 403").
    assert.match(out, /RESULT not_allowed_https ERR\n.*403/);
    assert.match(out, /RESULT not_allowed_port ERR\n.*403/);
    assert.match(out, /DIRECT failed/);

    // The echoed secret arrives redacted, and nothing before output redaction holds the token.
    assert.match(out, /\[REDACTED:api_token\]/);
    assertNoToken("stdout", res.stdout);
    assertNoToken("stderr", res.stderr);
    assert.equal(s.redactor.redact(`echo: ${TOKEN}`).text, "echo: [REDACTED:api_token]", "output backstop");

    // Upstreams: A saw the real token (only in Authorization); B never saw the placeholder.
    const gotA = upA.seen.slice(seenA);
    assert.ok(gotA.length >= 4);
    for (const r of gotA) assert.equal(r.headers.authorization, `Bearer ${TOKEN}`);
    const gotB = upB.seen.slice(seenB);
    assert.equal(gotB.length, 1, JSON.stringify(gotB.map((r) => r.url)));
    assert.equal(gotB[0].headers["x-fine"], "yes");
    assert.ok(!JSON.stringify(gotB).includes("petri-secret:"));

    const denied = events.filter((e) => e.outcome === "denied");
    const exfil = denied.filter((e) => e.detail.reason === "exfiltration_attempt");
    assert.ok(exfil.length >= 8, JSON.stringify(denied.map((e) => e.detail)));
    assert.ok(exfil.every((e) => JSON.stringify(e.detail.found).includes('"secret":"api_token"')));
    assert.ok(denied.some((e) => e.detail.reason === "host_not_allowed" && e.detail.host === "example.com"));
    assertNoToken("events", JSON.stringify(events));
  } finally {
    await s.close();
  }
});

test("node in a real container: plain https.request works through the broker", async (t) => {
  const why = await dockerUsable();
  if (why) return t.skip(why);
  const events: BrokerEvent[] = [];
  const { s } = await session(events);
  try {
    const res = await runInSandbox(s, ["node", "/workspace/http_attack.js"], { "http_attack.js": fs.readFileSync(path.join(FIXTURES, "http_attack.js"), "utf8") }, {
      env: { UP_A: `127.0.0.1:${upA.port}`, UP_B: `localhost:${upB.port}` },
    });
    const out = res.stdout.toString();
    assert.equal(res.exitCode, 0, out + res.stderr.toString());
    assert.match(out, /RESULT node_whoami 200 you are alice/);
    assert.match(out, /RESULT node_echo 200 .*Bearer \[REDACTED:api_token\]/);
    assert.match(out, /RESULT node_leak 403 Petri broker: request blocked/);
    assert.match(out, /RESULT node_denied ERR Petri broker refused CONNECT example.com:443: 403 host_not_allowed/);
    assertNoToken("node stdout", res.stdout);
    assertNoToken("node stderr", res.stderr);
    assertNoToken("events", JSON.stringify(events));
  } finally {
    await s.close();
  }
});

test("no event from any test carries the token", () => {
  assertNoToken("all events", JSON.stringify(allEvents));
});
