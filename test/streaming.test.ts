import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, createSandbox, putFile, exec, containersOf, type TestServer } from "./helpers.js";

describe("streaming, detached and cancellable runs, history", () => {
  let t: TestServer;
  let sb: string;
  before(async () => {
    t = await startTestServer();
    sb = await createSandbox(t, { language: "python" });
  });
  after(async () => {
    const left = await containersOf(t);
    await t.close();
    assert.equal(left, 0);
  });

  it("streams NDJSON output as it is produced", async () => {
    const res = await fetch(`${t.url}/v1/sandboxes/${sb}/exec`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ code: "import time, sys\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two')\nprint('err', file=sys.stderr)", stream: true }),
    });
    assert.equal(res.headers.get("content-type"), "application/x-ndjson");
    const reader = res.body!.getReader();
    const t0 = Date.now();
    const events: { type: string; data?: string; result?: any; at: number }[] = [];
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += Buffer.from(value).toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        events.push({ ...JSON.parse(buf.slice(0, i)), at: Date.now() - t0 });
        buf = buf.slice(i + 1);
      }
    }
    assert.equal(events[0].type, "start");
    const one = events.find((e) => e.type === "stdout" && e.data?.includes("one"))!;
    const result = events[events.length - 1];
    assert.equal(result.type, "result");
    assert.equal(result.result.stdout, "one\ntwo\n");
    // Unbuffered writes may arrive in several chunks; together they are the stream.
    assert.equal(events.filter((e) => e.type === "stderr").map((e) => e.data).join(""), "err\n");
    assert.equal(events.filter((e) => e.type === "stdout").map((e) => e.data).join(""), "one\ntwo\n");
    assert.ok(result.at - one.at >= 1000, "the first line arrived well before the run ended");
  });

  it("detached run: 202 at once, then fetched by id; appears in history", async () => {
    const r = await exec(t, sb, { code: "import time; time.sleep(1); print('later')", detach: true });
    assert.equal(r.status, 202);
    assert.equal(r.json.status, "running");
    const live = await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}`);
    assert.equal(live.json.status, "running");
    assert.equal((await t.api("GET", `/v1/sandboxes/${sb}`)).json.status, "running");
    let got;
    const until = Date.now() + 20000;
    do {
      await new Promise((res) => setTimeout(res, 200));
      got = await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}`);
    } while (got.json.status === "running" && Date.now() < until);
    assert.equal(got.json.status, "completed");
    assert.equal(got.json.stdout, "later\n");
    const hist = await t.api("GET", `/v1/sandboxes/${sb}/exec`);
    const item = hist.json.items.find((i: { id: string }) => i.id === r.json.id);
    assert.equal(item.status, "completed");
    assert.equal(typeof item.duration_ms, "number");
  });

  it("stdin stays open and is written while the run lives", async () => {
    const r = await exec(t, sb, { code: "import sys\nfor line in sys.stdin:\n    print('echo', line.strip(), flush=True)\n", detach: true, stdin_open: true });
    assert.equal(r.status, 202);
    const id = r.json.id;
    assert.equal((await t.api("POST", `/v1/sandboxes/${sb}/exec/${id}/stdin`, { body: { data: "a\n" } })).status, 204);
    assert.equal((await t.api("POST", `/v1/sandboxes/${sb}/exec/${id}/stdin`, { body: { data: "b\n", close: true } })).status, 204);
    let got;
    const until = Date.now() + 20000;
    do {
      await new Promise((res) => setTimeout(res, 100));
      got = await t.api("GET", `/v1/sandboxes/${sb}/exec/${id}`);
    } while (got.json.status === "running" && Date.now() < until);
    assert.equal(got.json.stdout, "echo a\necho b\n");
    const closed = await t.api("POST", `/v1/sandboxes/${sb}/exec/${id}/stdin`, { body: { data: "c" } });
    assert.equal(closed.status, 409);
    assert.equal(closed.json.error.code, "EXEC_NOT_RUNNING");
  });

  it("cancel kills the whole process tree", async () => {
    await putFile(t, sb, "spawn.py", "import subprocess, time\nsubprocess.Popen(['sleep', '300'])\nprint('started', flush=True)\ntime.sleep(300)\n");
    const r = await exec(t, sb, { filename: "spawn.py", detach: true });
    await new Promise((res) => setTimeout(res, 1000));
    const c = await t.api("DELETE", `/v1/sandboxes/${sb}/exec/${r.json.id}`);
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.status, "cancelled");
    assert.equal(c.json.cancelled, true);
    assert.equal(c.json.signal, "SIGKILL");
    assert.equal(await containersOf(t), 0, "nothing of the run is left");
  });

  it("deleting a sandbox cancels its live runs", async () => {
    const other = await createSandbox(t, { language: "python" });
    const r = await exec(t, other, { code: "import time; time.sleep(300)", detach: true });
    assert.equal(r.status, 202);
    await new Promise((res) => setTimeout(res, 500));
    assert.equal((await t.api("DELETE", `/v1/sandboxes/${other}`)).status, 204);
    assert.equal(await containersOf(t), 0);
  });
});
