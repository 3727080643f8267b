import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { Sandbox } from "jhansi";
import { startServer, type LiveServer } from "./helpers.js";

let server: LiveServer;
let sb: Sandbox;

before(async () => {
  server = await startServer();
  sb = await Sandbox.create({ language: "python", ...server.conn });
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
