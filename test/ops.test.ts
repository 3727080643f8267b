import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createSandbox, exec, freePort, startTestServer, type TestServer } from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


describe("readiness, metrics and a real Prometheus", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_RUNTIMES: "runc", PETRI_WARM_IDLE_MS: "30000" }); });
  after(async () => { await t?.close(); });

  test("/readyz checks every dependency; /healthz stays liveness; both need no key", async () => {
    const r = await t.api("GET", "/readyz", { key: null });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, "ready");
    const names = r.json.checks.map((c: { name: string }) => c.name).sort();
    assert.deepEqual(names, ["audit_log", "audit_sinks", "audit_trace", "data_dir", "database", "docker_engine", "images", "runtimes"]);
    assert.equal((await t.api("GET", "/healthz", { key: null })).status, 200);
  });

  test("request ids: a caller's X-Request-Id is kept and echoed; otherwise one is made", async () => {
    const mine = await t.api("GET", "/healthz", { key: null, headers: { "x-request-id": "trace-123" } });
    assert.equal(mine.headers.get("x-request-id"), "trace-123");
    const made = await t.api("GET", "/healthz", { key: null, headers: { "x-request-id": "bad id with spaces" } });
    assert.match(made.headers.get("x-request-id") ?? "", /^req_/);
  });

  test("the data directory is 0700 and petri.db 0600", () => {
    assert.equal(fs.statSync(t.dataDir).mode & 0o777, 0o700);
    for (const f of ["petri.db", "petri.db-wal"]) {
      const p = path.join(t.dataDir, f);
      if (fs.existsSync(p)) assert.equal(fs.statSync(p).mode & 0o777, 0o600, f);
    }
  });

  test("Prometheus scrapes /metrics and a PromQL query returns the run count", async (ctx) => {
    if (!fs.existsSync("/usr/bin/prometheus")) {
      ctx.skip("SKIPPED: Debian's prometheus package is not installed (scripts/setup.sh installs it)");
      return;
    }
    const sb = await createSandbox(t, { language: "python" });
    for (let i = 0; i < 3; i++) {
      const r = await exec(t, sb, { code: `print(${i})` });
      assert.equal(r.json.exit_code, 0, r.text);
    }
    const bad = await exec(t, sb, { code: "raise SystemExit(3)" });
    assert.equal(bad.json.exit_code, 3);

    const text = (await t.api("GET", "/metrics", { key: null })).text;
    assert.match(text, /petri_runs_total\{runtime="runc",language="python",outcome="completed"\} 4/);
    assert.match(text, /petri_run_phase_seconds_count\{phase="total",runtime="runc"\} 4/);
    assert.match(text, /petri_run_phase_seconds_count\{phase="start",runtime="runc"\} 4/);
    assert.match(text, /petri_sandboxes 1/);
    assert.match(text, /petri_prestart_runs_total\{runtime="runc",result="hit"\} [1-9]/);
    assert.match(text, /petri_audit_records [1-9]/);
    assert.ok(!text.includes(sb) && !text.includes(bad.json.id), "no sandbox or run ids in labels");

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-prom-"));
    const port = await freePort();
    const target = new URL(t.url).host;
    fs.writeFileSync(path.join(dir, "prometheus.yml"), `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: petri\n    static_configs:\n      - targets: ["${target}"]\n`);
    let prom: ChildProcess | undefined;
    try {
      prom = spawn("/usr/bin/prometheus", [
        `--config.file=${path.join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ], { stdio: ["ignore", "ignore", "pipe"] });
      let log = "";
      prom.stderr!.on("data", (b: Buffer) => { log += b.toString(); });
      let value: string | undefined;
      for (let i = 0; i < 120 && value === undefined; i++) {
        await sleep(500);
        const q = encodeURIComponent('sum(petri_runs_total{job="petri"})');
        const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${q}`).catch(() => null);
        if (!res?.ok) continue;
        const j = (await res.json()) as { data: { result: { value: [number, string] }[] } };
        value = j.data.result[0]?.value[1];
      }
      assert.equal(value, "4", `PromQL sum(petri_runs_total) after 4 runs; prometheus log tail: ${log.slice(-500)}`);
    } finally {
      prom?.kill("SIGTERM");
      await new Promise((r) => (prom && prom.exitCode === null ? prom.once("exit", r) : r(null)));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
