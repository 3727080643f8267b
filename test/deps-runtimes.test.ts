import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { loadConfig, RUNTIME_NAMES } from "../src/config.js";
import { imageRefOf } from "../src/images/catalog.js";
import { rootfsDirFor } from "../src/images/build.js";
import { createSandbox, exec, startTestServer, type TestServer } from "./helpers.js";
import { canBuildWheels, startPythonIndex, type LoopbackRegistry } from "./deps/registries.js";

/**
 * Installs run in the sandbox's own runtime: on each one Petri offers here, a real install
 * works, and an install script calling a host that is not a registry is blocked.
 */
// An image name (standard) for the server's config; its Docker reference for the checks below.
const IMAGE_NAME = process.env.PETRI_TEST_DEPS_IMAGE || loadConfig({}).images.python;
const IMAGE = imageRefOf(IMAGE_NAME);

function imageHasPip(): boolean {
  try {
    execFileSync("docker", ["run", "--rm", "--network", "none", IMAGE, "sh", "-c", "python3 -m pip --version && python3 -c 'import venv'"], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

const ready = imageHasPip() && canBuildWheels();
if (!ready) console.log(`# SKIP installs per runtime: image ${IMAGE} has no pip/venv, or /usr/bin/python3 cannot build wheels`);

let t: TestServer;
let index: LoopbackRegistry;
let offered: string[] = [];

before(async () => {
  if (!ready) return;
  index = await startPythonIndex(
    RUNTIME_NAMES.map((rt) => ({ name: `petri-on-${rt}`, version: "1.0.0", module: `petri_on_${rt.replace(/-/g, "_")}`, source: `WHERE = ${JSON.stringify(rt)}\n` })),
    [{ name: "petri-hostile", version: "1.0", target: "http://127.0.0.9:9/exfil" }],
  );
  t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_IMAGE_PYTHON: IMAGE_NAME, PETRI_PIP_INDEX_URL: index.url });
  const r = await t.api("GET", "/v1/runtimes");
  offered = r.json.runtimes.map((x: { name: string }) => x.name);
});

after(async () => {
  await t?.close();
  await index?.close();
});

/** gVisor reaches the broker's host Unix socket only when Docker registers runsc with --host-uds=open (scripts/setup.sh does). */
function runscHasHostSockets(): boolean {
  try {
    const runtimes = JSON.parse(execFileSync("docker", ["info", "--format", "{{json .Runtimes}}"], { encoding: "utf8" })) as Record<string, { runtimeArgs?: string[] }>;
    return (runtimes.runsc?.runtimeArgs ?? []).some((a) => /^--?host-uds=(open|all)$/.test(a));
  } catch {
    return false;
  }
}
const runscOk = runscHasHostSockets();

for (const rt of RUNTIME_NAMES) {
  test(`on ${rt}: a real install works and an install script's call home is blocked`, { skip: !ready }, async (ctx) => {
    if (!offered.includes(rt)) return ctx.skip(`${rt} is not available on this host`);
    if (rt === "runsc" && !runscOk) {
      // Fails closed, with the fix in the message; the test still checks that much.
      const sb = await createSandbox(t, { language: "python", runtime: rt });
      const r = await exec(t, sb, { code: "print('ran')", dependencies: { python: ["petri-on-runsc"] } });
      assert.equal(r.json.error?.code, "RUNTIME_UNAVAILABLE", r.text);
      assert.match(r.json.error.message, /host-uds/);
      return ctx.skip("runsc is registered without --host-uds=open here (re-run scripts/setup.sh): installs fail closed, checked above");
    }
    if (rt === "bwrap" && !fs.existsSync(rootfsDirFor(loadConfig({}).imageDir, IMAGE))) return ctx.skip(`no root filesystem of ${IMAGE} for bwrap`);
    const sb = await createSandbox(t, { language: "python", runtime: rt });
    const mod = `petri_on_${rt.replace(/-/g, "_")}`;
    const ok = await exec(t, sb, { code: `import ${mod}; print(${mod}.WHERE)` });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.stdout, `${rt}\n`, ok.json.stderr);
    assert.equal(ok.json.dependencies.status, "installed");
    const bad = await exec(t, sb, { code: "print('ran')", dependencies: { python: ["petri-hostile"] } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.code, "DEPENDENCY_EGRESS_BLOCKED");
  });
}
