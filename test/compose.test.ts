import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { docker, freePort } from "./helpers.js";

const ROOT = path.resolve(".");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sh(cmd: string, args: string[], opts: { env?: Record<string, string>; input?: string } = {}): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: "utf8", env: { ...process.env, ...opts.env }, input: opts.input, timeout: 900_000 });
  return { status: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? r.error.message : ""}` };
}


/** The README's curl flow, literally: curl -d JSON, -F file=@…, through the published port. */
function curl(args: string[]): { status: number; body: string } {
  const r = sh("curl", ["-s", "-w", "\n%{http_code}", ...args]);
  const i = r.out.lastIndexOf("\n");
  return { status: Number(r.out.slice(i + 1)), body: r.out.slice(0, i) };
}

const PROGRAMS: Record<string, { file: string; code: string }> = {
  python: { file: "main.py", code: 'print("hi from python")\n' },
  node: { file: "main.js", code: 'console.log("hi from node");\n' },
  go: { file: "main.go", code: 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi from go") }\n' },
};

describe("Docker Compose: Debian's docker-compose brings Petri up, restarts it, takes it down", () => {
  const project = `petri-ci-${process.pid}`;
  const base = `/var/tmp/petri-compose-${process.pid}`;
  const envFile = path.join(base, "compose.env");
  const compose = (...args: string[]) => sh("docker-compose", ["--env-file", envFile, "-p", project, "-f", "docker-compose.yml", ...args]);
  after(() => {
    if (fs.existsSync(envFile)) compose("down", "--remove-orphans", "-t", "30");
    sh("umount", ["-R", `${base}/data`]);
    fs.rmSync(base, { recursive: true, force: true });
  });

  test("curl flow for python, node and go through the published port; files and runs survive a restart; down leaves no container", async (ctx) => {
    if (sh("docker-compose", ["version"]).status !== 0) {
      ctx.skip("SKIPPED: docker-compose is not installed (scripts/setup.sh installs Debian's)");
      return;
    }
    const built = sh("./deploy/build-server-image.sh", [], { env: { PETRI_BUILD_SKIP_NPM: "1" } });
    assert.equal(built.status, 0, built.out);

    const port = await freePort();
    const token = `pk_compose_${randomBytes(12).toString("hex")}`;
    fs.mkdirSync(base, { recursive: true, mode: 0o700 });
    // The data directory must sit on a shared mount (README, Compose): the runs' workspace views
    // Petri mounts in its container reach the host's dockerd through it. systemd hosts have / shared;
    // this one may not, so the test makes the directory a shared mount of its own, as the README says.
    fs.mkdirSync(`${base}/data`, { recursive: true, mode: 0o700 });
    for (const args of [["--bind", `${base}/data`, `${base}/data`], ["--make-rshared", `${base}/data`]]) {
      const m = sh("mount", args);
      assert.equal(m.status, 0, m.out);
    }
    fs.writeFileSync(envFile, [
      `PETRI_PUBLISH=127.0.0.1:${port}`, `PETRI_DATA_DIR=${base}/data`, `PETRI_WORKSPACE_ROOT=${base}/workspaces`,
      `PETRI_KEYS_DIR=${base}/keys`, `PETRI_ADMIN_TOKEN=${token}`, "PETRI_RUNTIMES=runc,runsc", "",
    ].join("\n"));
    const url = `http://127.0.0.1:${port}`;
    const waitReady = async () => {
      // curl, not fetch: a fetch pending on docker-proxy's port does not keep Node's event loop alive.
      for (let i = 0; i < 240; i++) {
        if (curl(["--max-time", "3", `${url}/readyz`]).status === 200) return;
        await sleep(500);
      }
      assert.fail(`Petri did not become ready: ${compose("logs", "--tail", "40").out}`);
    };
    const up = compose("up", "-d");
    assert.equal(up.status, 0, up.out);
    await waitReady();

    const auth = ["-H", `Authorization: Bearer ${token}`];
    const sandboxes: Record<string, string> = {};
    const runs: Record<string, string> = {};
    const dir = path.join(base, "client");
    fs.mkdirSync(dir, { recursive: true });
    for (const [language, p] of Object.entries(PROGRAMS)) {
      const created = curl(["-X", "POST", `${url}/v1/sandboxes`, ...auth, "-d", JSON.stringify({ language })]);
      assert.equal(created.status, 201, created.body);
      const sb = JSON.parse(created.body).id as string;
      sandboxes[language] = sb;
      fs.writeFileSync(path.join(dir, p.file), p.code);
      const up = curl(["-X", "POST", `${url}/v1/sandboxes/${sb}/files`, ...auth, "-F", `file=@${path.join(dir, p.file)}`]);
      assert.equal(up.status, 201, up.body);
      const ran = curl(["-X", "POST", `${url}/v1/sandboxes/${sb}/exec`, ...auth, "-d", JSON.stringify({ filename: p.file })]);
      assert.equal(ran.status, 200, ran.body);
      const res = JSON.parse(ran.body);
      assert.equal(res.exit_code, 0, ran.body);
      assert.equal(res.stdout, `hi from ${language}\n`, ran.body);
      runs[language] = res.id;
    }
    // gVisor through the host's engine, from inside the service.
    const gv = curl(["-X", "POST", `${url}/v1/sandboxes`, ...auth, "-d", JSON.stringify({ language: "python", runtime: "runsc" })]);
    if (gv.status === 201) {
      const gsb = JSON.parse(gv.body).id as string;
      sandboxes.runsc = gsb;
      const r = curl(["-X", "POST", `${url}/v1/sandboxes/${gsb}/exec`, ...auth, "-d", JSON.stringify({ code: "import os; print(os.uname().release)" })]);
      assert.equal(JSON.parse(r.body).exit_code, 0, r.body);
    } else {
      console.error(`# runsc is not offered by this engine (${gv.body}); gVisor through Compose not checked`);
    }
    const metrics = curl([`${url}/metrics`]).body;
    assert.match(metrics, /petri_runs_total\{runtime="runc",language="go",outcome="completed"\} 1/);

    const restarted = compose("restart");
    assert.equal(restarted.status, 0, restarted.out);
    await waitReady();
    for (const [language, p] of Object.entries(PROGRAMS)) {
      const sb = sandboxes[language];
      const file = curl([`${url}/v1/sandboxes/${sb}/files/${p.file}`, ...auth]);
      assert.equal(file.body, p.code, `${language}: the file survived the restart`);
      const history = curl([`${url}/v1/sandboxes/${sb}/exec`, ...auth]);
      assert.ok(history.body.includes(runs[language]), `${language}: the run record survived the restart: ${history.body}`);
    }
    const again = curl(["-X", "POST", `${url}/v1/sandboxes/${sandboxes.python}/exec`, ...auth, "-d", JSON.stringify({ filename: "main.py" })]);
    assert.equal(JSON.parse(again.body).stdout, "hi from python\n", again.body);

    const down = compose("down", "-t", "30");
    assert.equal(down.status, 0, down.out);
    const left = await docker.listContainers({ all: true, filters: { label: [`com.docker.compose.project=${project}`] } });
    assert.deepEqual(left.map((c) => c.Names), [], "the Compose service is gone");
    for (const sb of Object.values(sandboxes)) {
      const runsLeft = await docker.listContainers({ all: true, filters: { label: [`io.jhansi.petri.sandbox=${sb}`] } });
      assert.deepEqual(runsLeft.map((c) => `${c.Id.slice(0, 12)} ${c.State}`), [], `no run or pre-started container of ${sb} is left`);
    }
  });
});
