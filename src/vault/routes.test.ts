import { test } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import Fastify from "fastify";
import { isPetriError } from "../errors.js";
import { generateMasterKey } from "./crypto.js";
import { vaultRoutes } from "./routes.js";
import { SecretStore } from "./store.js";

const VALUE = "pw-Very-Secret-123";

async function app() {
  const store = new SecretStore(new Database(":memory:"), generateMasterKey());
  const a = Fastify();
  // Stand-ins for what the lead's server provides: auth decoration and the error contract.
  a.decorateRequest("auth", null as never);
  a.addHook("onRequest", async (req) => {
    const t = req.headers["x-tenant"];
    (req as unknown as { auth: unknown }).auth = typeof t === "string" ? { tenantId: t, keyId: "k", isAdmin: false } : null;
  });
  a.setErrorHandler((err, _req, reply) => {
    if (isPetriError(err)) return reply.code(err.status).send(err.toJSON());
    const e = err as { validation?: unknown; message: string };
    if (e.validation) return reply.code(400).send({ error: { code: "VALIDATION_ERROR", message: e.message } });
    return reply.code(500).send({ error: { code: "INTERNAL", message: "internal" } });
  });
  await a.register(vaultRoutes, { store });
  return { a, store };
}

test("secret routes: create, version, list, get, delete; value never returned", async () => {
  const { a, store } = await app();
  const A = { "x-tenant": "tA" };
  const body = { value: VALUE, kind: "postgres", config: { host: "db", database: "app", user: "ro" } };
  let r = await a.inject({ method: "PUT", url: "/v1/secrets/maindb", headers: A, payload: body });
  assert.equal(r.statusCode, 201, r.body);
  assert.equal(r.json().version, 1);
  r = await a.inject({ method: "PUT", url: "/v1/secrets/maindb", headers: A, payload: body });
  assert.equal(r.statusCode, 200);
  assert.equal(r.json().version, 2);
  const all: string[] = [r.body];
  r = await a.inject({ method: "GET", url: "/v1/secrets", headers: A });
  assert.equal(r.statusCode, 200);
  assert.deepEqual(r.json().secrets.map((s: { name: string }) => s.name), ["maindb"]);
  all.push(r.body);
  r = await a.inject({ method: "GET", url: "/v1/secrets/maindb", headers: A });
  assert.equal(r.statusCode, 200);
  assert.deepEqual(r.json().scope, ["db:5432/app"]);
  all.push(r.body);
  for (const b of all) assert.ok(!b.includes(VALUE) && !b.includes('"value"'), b);
  assert.equal(store.resolve("tA", "maindb").value, VALUE);
  r = await a.inject({ method: "DELETE", url: "/v1/secrets/maindb", headers: A });
  assert.equal(r.statusCode, 204);
  r = await a.inject({ method: "GET", url: "/v1/secrets/maindb", headers: A });
  assert.equal(r.statusCode, 404);
  assert.equal(r.json().error.code, "SECRET_NOT_FOUND");
  await a.close();
});

test("another tenant gets 404 for every route, and nothing in lists", async () => {
  const { a } = await app();
  await a.inject({ method: "PUT", url: "/v1/secrets/tok", headers: { "x-tenant": "tA" }, payload: { value: VALUE, kind: "generic" } });
  const B = { "x-tenant": "tB" };
  assert.equal((await a.inject({ method: "GET", url: "/v1/secrets/tok", headers: B })).statusCode, 404);
  assert.equal((await a.inject({ method: "DELETE", url: "/v1/secrets/tok", headers: B })).statusCode, 404);
  assert.deepEqual((await a.inject({ method: "GET", url: "/v1/secrets", headers: B })).json().secrets, []);
  // B writing the same name creates B's own secret, version 1; A's is untouched.
  const r = await a.inject({ method: "PUT", url: "/v1/secrets/tok", headers: B, payload: { value: "other-value", kind: "generic" } });
  assert.equal(r.json().version, 1);
  assert.equal((await a.inject({ method: "GET", url: "/v1/secrets/tok", headers: { "x-tenant": "tA" } })).json().version, 1);
  await a.close();
});

test("bad input is a 400 with a clear message that does not echo the value; no auth is 401", async () => {
  const { a } = await app();
  const A = { "x-tenant": "tA" };
  const cases = [
    { url: "/v1/secrets/bad name", payload: { value: VALUE, kind: "generic" } },
    { url: "/v1/secrets/ok", payload: { value: VALUE, kind: "weird" } },
    { url: "/v1/secrets/ok", payload: { value: "x", kind: "generic" } },
    { url: "/v1/secrets/ok", payload: { value: VALUE, kind: "http", config: { hosts: [] } } },
    { url: "/v1/secrets/ok", payload: { value: VALUE, kind: "http", config: { hosts: ["a.com"], template: "Bearer {{value}}", extra: 1 } } },
    { url: "/v1/secrets/ok", payload: { value: VALUE, kind: "postgres", config: { host: "h", database: "d", user: "u", sslmode: "maybe" } } },
  ];
  for (const c of cases) {
    const r = await a.inject({ method: "PUT", url: c.url, headers: A, payload: c.payload });
    assert.equal(r.statusCode, 400, `${c.url} ${JSON.stringify(c.payload)} → ${r.body}`);
    assert.ok(!r.body.includes(VALUE));
  }
  assert.equal((await a.inject({ method: "GET", url: "/v1/secrets" })).statusCode, 401);
  await a.close();
});
