import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { imageRefOf } from "../src/images/catalog.js";
import { createSandbox, exec, imageBuilt, putFile, startTestServer, type TestServer } from "./helpers.js";
import { canBuildWheels, loopbackName, npmRegistryFromNpm, startGoProxy, startPythonIndex, type LoopbackRegistry } from "./deps/registries.js";

/**
 * Dependencies installed for real: from the real npm registry, and from a PEP 503 index on
 * loopback serving wheels built offline (PyPI is unreachable here), each install in its own
 * sandboxed run whose only way out is the egress broker.
 */
// An image name (standard) for the server's config; its Docker reference for the checks below.
const IMAGE_NAME = process.env.PETRI_TEST_DEPS_IMAGE || loadConfig({}).images.python;
const IMAGE = imageRefOf(IMAGE_NAME);

function imageHas(cmd: string): boolean {
  try {
    execFileSync("docker", ["run", "--rm", "--network", "none", IMAGE, "sh", "-c", cmd], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

const hasPip = imageHas("python3 -m pip --version && python3 -c 'import venv'");
const hasNpm = imageHas("command -v npm");
const hasGo = imageHas("command -v go");
if (!hasGo || !loopbackName()) console.log(`# SKIP Go module installs: image ${IMAGE} has no go, or no name other than localhost resolves to loopback here (the test GOPROXY needs one: Go bypasses proxies for localhost)`);
const wheels = canBuildWheels();
if (!hasPip) console.log(`# SKIP Python install tests: image ${IMAGE} has no pip/venv (set PETRI_TEST_DEPS_IMAGE or build the standard image)`);
if (!hasNpm) console.log(`# SKIP npm install tests: image ${IMAGE} has no npm`);
if (!wheels) console.log("# SKIP Python install tests: /usr/bin/python3 lacks setuptools/wheel to build test wheels (scripts/setup.sh installs them)");

const imageEnv = { PETRI_IMAGE_PYTHON: IMAGE_NAME, PETRI_IMAGE_NODE: IMAGE_NAME, PETRI_IMAGE_GO: IMAGE_NAME };

function envDirs(t: TestServer): string[] {
  const root = path.join(t.dataDir, "deps");
  const out: string[] = [];
  for (const tenant of fs.existsSync(root) ? fs.readdirSync(root) : []) {
    if (tenant === "probes") continue;
    for (const e of fs.readdirSync(path.join(root, tenant))) out.push(e);
  }
  return out;
}

describe("npm packages from the real registry", { skip: !hasNpm }, () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ ...imageEnv, PETRI_NPM_REGISTRY: npmRegistryFromNpm() });
  });
  after(async () => {
    await t?.close();
  });

  test("a Node run importing lodash and dayjs gets them installed; a second sandbox reuses them", async () => {
    const sb = await createSandbox(t, { language: "node" });
    await putFile(t, sb, "main.mjs", 'import _ from "lodash";\nimport dayjs from "dayjs";\nconsole.log(_.chunk([1, 2, 3, 4], 2).length, dayjs("2020-01-02").format("YYYY"));\n');
    const r1 = await exec(t, sb, { filename: "main.mjs" });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.json.exit_code, 0, r1.json.stderr);
    assert.equal(r1.json.stdout, "2 2020\n");
    const d1 = r1.json.dependencies;
    assert.deepEqual(d1.detected, ["dayjs", "lodash"]);
    assert.equal(d1.status, "installed");
    assert.ok(d1.install_ms > 0);
    const names = d1.packages.map((p: { name: string }) => p.name);
    assert.ok(names.includes("lodash") && names.includes("dayjs"));
    for (const p of d1.packages) assert.match(p.hash, /^sha512-/);
    assert.deepEqual(r1.json.files, { created: [], modified: [], deleted: [] }, "nothing is installed into the workspace");

    // Another sandbox of the same tenant, CommonJS this time: the same environment, no install.
    const sb2 = await createSandbox(t, { language: "node" });
    const r2 = await exec(t, sb2, { code: 'const _ = require("lodash"); const dayjs = require("dayjs"); console.log(typeof _.chunk, dayjs(0).year() > 1960)' });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.stdout, "function true\n", r2.json.stderr);
    assert.equal(r2.json.dependencies.status, "reused");
    assert.equal(r2.json.dependencies.install_ms, 0);
    assert.equal(r2.json.dependencies.environment, d1.environment);

    const audit = await t.api("GET", "/v1/audit?action=dependency.install");
    const lodash = audit.json.items.find((i: { detail: { package: string } }) => i.detail.package === "lodash");
    assert.ok(lodash, "each installed package is audited");
    assert.equal(lodash.outcome, "success");
    assert.match(lodash.detail.hash, /^sha512-/);
    assert.equal(lodash.detail.registry, npmRegistryFromNpm());
    // The install's traffic went through the broker, and only to the registry.
    const net = await t.api("GET", "/v1/audit?kind=network");
    assert.ok(net.json.items.length > 0);
    for (const i of net.json.items) assert.equal(i.outcome, "success", JSON.stringify(i.detail));
  });

  test("a workspace package-lock.json pins the installed version (lodash 4.17.20, not the newest 4.17.x)", async () => {
    const sb = await createSandbox(t, { language: "node" });
    await putFile(t, sb, "package.json", JSON.stringify({ name: "app", version: "1.0.0", dependencies: { lodash: "^4.17.0" } }));
    // No "resolved" URL: npm fetches from the configured registry and checks the integrity.
    await putFile(t, sb, "package-lock.json", JSON.stringify({
      name: "app", version: "1.0.0", lockfileVersion: 3, requires: true,
      packages: {
        "": { name: "app", version: "1.0.0", dependencies: { lodash: "^4.17.0" } },
        "node_modules/lodash": { version: "4.17.20", integrity: "sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA==" },
      },
    }));
    const r = await exec(t, sb, { code: 'console.log(require("lodash").VERSION)', timeout_ms: 120_000 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stdout, "4.17.20\n", r.text);
  });

  test("a package the registry does not have is a 400 naming the registry's answer, before any run", async () => {
    const sb = await createSandbox(t, { language: "node" });
    const r = await exec(t, sb, { code: "console.log(1)", dependencies: { node: ["petri-no-such-package-4f1c9a"] } });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, "DEPENDENCY_NOT_FOUND");
    assert.match(r.json.error.message, /404/);
    const runs = await t.api("GET", `/v1/sandboxes/${sb}/exec`);
    assert.equal(runs.json.items.length, 0, "the code did not run");
    const v = await exec(t, sb, { code: "console.log(1)", dependencies: { node: ["lodash@^999"] } });
    assert.equal(v.status, 400);
    assert.equal(v.json.error.code, "DEPENDENCY_UNRESOLVABLE");
  });
});

describe("Python packages from a PEP 503 index on loopback", { skip: !hasPip || !wheels }, () => {
  let t: TestServer;
  let index: LoopbackRegistry;
  before(async () => {
    index = await startPythonIndex([
      { name: "petri-hello", version: "1.0.0", module: "petri_hello", source: "def greet():\n    return 'hello 1'\n" },
      { name: "petri-hello", version: "2.0.0", module: "petri_hello", source: "import petri_dep\ndef greet():\n    return 'hello 2 ' + petri_dep.X\n", requires: ["petri-dep>=1"] },
      { name: "petri-dep", version: "1.0.0", module: "petri_dep", source: "X = 'dep'\n" },
      // Stand-ins under the real distribution names, to check the import → distribution mapping.
      { name: "python-dateutil", version: "9.0.0", module: "dateutil", source: "STANDIN = 'dateutil stand-in'\n" },
      { name: "pyyaml", version: "9.0.0", module: "yaml", source: "STANDIN = 'yaml stand-in'\n" },
      { name: "petri-shared", version: "1.0.0", module: "petri_shared", source: "OK = 'shared'\n" },
      // Needs numpy, which the index does not have: only an install that sees the datascience image's numpy succeeds.
      { name: "petri-needs-numpy", version: "1.0.0", module: "petri_needs_numpy", source: "import numpy\ndef mean(xs):\n    return float(numpy.mean(xs))\n", requires: ["numpy>=1"] },
      { name: "petri-big", version: "1.0.0", module: "petri_big", source: `# ${randomBytes(3 * 1024 * 1024).toString("base64")}\n` },
    ], [
      { name: "petri-hostile", version: "1.0", target: "http://127.0.0.9:9/exfil" },
      { name: "petri-slow", version: "1.0", sleep: 60 },
    ]);
    t = await startTestServer({ ...imageEnv, PETRI_PIP_INDEX_URL: index.url });
  });
  after(async () => {
    await t?.close();
    await index?.close();
  });

  test("imports are detected (mapped to their distributions), installed with their dependencies, then reused", async () => {
    const sb = await createSandbox(t);
    await putFile(t, sb, "lib/util.py", "import yaml\n");
    await putFile(t, sb, "main.py", "import os, json\nimport lib.util\nimport petri_hello\nfrom dateutil import STANDIN\nprint(petri_hello.greet(), STANDIN, lib.util.yaml.STANDIN)\n");
    const r1 = await exec(t, sb, { filename: "main.py" });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.json.stdout, "hello 2 dep dateutil stand-in yaml stand-in\n", r1.json.stderr);
    const d = r1.json.dependencies;
    assert.deepEqual(d.detected, ["dateutil", "petri_hello", "yaml"]);
    assert.deepEqual(d.requirements, ["petri-hello", "python-dateutil", "pyyaml"]);
    assert.equal(d.status, "installed");
    assert.deepEqual(d.packages.map((p: { name: string; version: string }) => `${p.name}==${p.version}`), ["petri-dep==1.0.0", "petri-hello==2.0.0", "python-dateutil==9.0.0", "pyyaml==9.0.0"]);
    for (const p of d.packages) assert.match(p.hash, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(r1.json.files.created, []);

    const before = index.requests.length;
    const r2 = await exec(t, sb, { filename: "main.py" });
    assert.equal(r2.json.dependencies.status, "reused");
    assert.equal(r2.json.dependencies.environment, d.environment);
    assert.equal(index.requests.length, before, "a cached environment needs no registry");

    const audit = await t.api("GET", "/v1/audit?action=dependency.install");
    const rec = audit.json.items.find((i: { detail: { package: string } }) => i.detail.package === "petri-dep");
    assert.equal(rec.detail.version, "1.0.0");
    assert.match(rec.detail.hash, /^sha256:/);
    assert.equal(rec.detail.registry, index.url);
  });

  test("a sandbox on the datascience image installs in that image: its numpy satisfies a dependency, its pandas is not installed again", async (ctx) => {
    const ds = imageBuilt("datascience");
    if (!ds.ok) {
      ctx.skip(`SKIP installs on the datascience image: ${ds.ref} is not built here (scripts/setup.sh builds it)`);
      return;
    }
    const sb = await createSandbox(t, { language: "python", image: "datascience" });
    const r = await exec(t, sb, { code: "import pandas, petri_needs_numpy\nprint(petri_needs_numpy.mean([1, 2, 6]), pandas.__name__)", timeout_ms: 120_000 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stdout, "3.0 pandas\n", r.json.stderr);
    const d = r.json.dependencies;
    assert.deepEqual(d.detected, ["pandas", "petri_needs_numpy"]);
    assert.deepEqual(d.requirements, ["petri-needs-numpy"], "pandas comes with the image");
    assert.deepEqual(d.skipped, []);
    assert.deepEqual(d.packages.map((p: { name: string }) => p.name), ["petri-needs-numpy"], "numpy was not fetched: the image has it");
    assert.ok(!index.requests.some((p) => /numpy\/?$/.test(p) && !p.includes("petri")), "pip never looked numpy up on the index");
    const envs = await t.api("GET", "/v1/dependencies/environments");
    const env = envs.json.items.find((e: { id: string }) => e.id === d.environment);
    assert.equal(env.image, ds.ref, "the environment belongs to the sandbox's image");
    // On the default image, which has no numpy, the same install cannot be satisfied from this index.
    const plain = await exec(t, await createSandbox(t), { code: "import petri_needs_numpy" });
    assert.equal(plain.status, 200, plain.text);
    assert.deepEqual(plain.json.dependencies.skipped.map((x: { name: string }) => x.name), ["petri-needs-numpy"], plain.text);
    assert.match(plain.json.dependencies.skipped[0].reason, /numpy/);
  });

  test("declared dependencies: on the run, in requirements.txt, through POST …/dependencies; detection can be turned off", async () => {
    const sb = await createSandbox(t);
    const pinned = await exec(t, sb, { code: "import petri_hello; print(petri_hello.greet())", dependencies: { python: ["petri-hello==1.0.0"] } });
    assert.equal(pinned.json.stdout, "hello 1\n", pinned.text);
    assert.deepEqual(pinned.json.dependencies.requirements, ["petri-hello==1.0.0"]);

    const off = await exec(t, sb, { code: "import petri_shared", auto_detect_dependencies: false });
    assert.equal(off.status, 200);
    assert.match(off.json.stderr, /ModuleNotFoundError/);
    assert.equal(off.json.dependencies, null);

    const inst = await t.api("POST", `/v1/sandboxes/${sb}/dependencies`, { body: { python: ["petri-shared"] } });
    assert.equal(inst.status, 200, inst.text);
    assert.deepEqual(inst.json.packages.map((p: { name: string }) => p.name), ["petri-shared"]);
    const kept = await t.api("GET", `/v1/sandboxes/${sb}/dependencies`);
    assert.deepEqual(kept.json.dependencies, { python: ["petri-shared"] });
    const now = await exec(t, sb, { code: "import petri_shared; print(petri_shared.OK)", auto_detect_dependencies: false });
    assert.equal(now.json.stdout, "shared\n", now.text);

    const sb2 = await createSandbox(t);
    await putFile(t, sb2, "requirements.txt", "# pinned\npetri-hello==1.0.0\n");
    const fromFile = await exec(t, sb2, { code: "import petri_hello; print(petri_hello.greet())", auto_detect_dependencies: false });
    assert.equal(fromFile.json.stdout, "hello 1\n", fromFile.text);
    assert.equal(fromFile.json.dependencies.status, "reused", "the same lock as the pinned run above: one environment");

    const created = await t.api("POST", "/v1/sandboxes", { body: { language: "python", dependencies: { python: ["petri-shared"] }, auto_detect_dependencies: false } });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.json.dependencies, { python: ["petri-shared"] });
    const r = await exec(t, created.json.id, { code: "import petri_shared; print(petri_shared.OK)" });
    assert.equal(r.json.stdout, "shared\n", r.text);
  });

  test("bad input is a 400 before any code runs, and nothing half-installed is left", async () => {
    const sb = await createSandbox(t);
    const cases: [unknown, string][] = [
      [["--index-url=http://127.0.0.9/simple"], "DEPENDENCY_INVALID"],
      [["git+https://github.com/x/y"], "DEPENDENCY_INVALID"],
      [["../x"], "DEPENDENCY_INVALID"],
      [["petri-hello @ https://127.0.0.9/x.whl"], "DEPENDENCY_INVALID"],
      [["file:../x"], "DEPENDENCY_INVALID"],
      [["petri-no-such-dist"], "DEPENDENCY_NOT_FOUND"],
      [["petri-hello==7.0"], "DEPENDENCY_UNRESOLVABLE"],
    ];
    for (const [spec, code] of cases) {
      const r = await exec(t, sb, { code: "open('/workspace/ran', 'w')", dependencies: { python: spec } });
      assert.equal(r.status, 400, `${JSON.stringify(spec)}: ${r.text}`);
      assert.equal(r.json.error.code, code, JSON.stringify(spec));
    }
    const notFound = await exec(t, sb, { code: "1", dependencies: { python: ["petri-no-such-dist"] } });
    assert.match(notFound.json.error.message, /answered 404/);
    const badCreate = await t.api("POST", "/v1/sandboxes", { body: { language: "python", dependencies: { python: ["-r /etc/passwd"] } } });
    assert.equal(badCreate.json.error.code, "DEPENDENCY_INVALID");
    const wrongEco = await t.api("POST", `/v1/sandboxes/${sb}/dependencies`, { body: { node: ["lodash"] } });
    assert.equal(wrongEco.status, 400);
    await putFile(t, sb, "requirements.txt", "petri-hello\n--extra-index-url http://127.0.0.9/simple\n");
    const badFile = await exec(t, sb, { code: "open('/workspace/ran', 'w')" });
    assert.equal(badFile.json.error.code, "DEPENDENCY_INVALID");
    const files = await t.api("GET", `/v1/sandboxes/${sb}/files?path=&recursive=true`);
    assert.deepEqual(files.json.files.map((f: { path: string }) => f.path), ["requirements.txt"], "no run happened");
    assert.equal(envDirs(t).filter((e) => e.startsWith(".tmp-")).length, 0);
  });

  test("an install script reaching a host that is not a registry is blocked, audited, and fails the install", async () => {
    const sb = await createSandbox(t);
    const before = envDirs(t);
    const r = await exec(t, sb, { code: "print('ran')", dependencies: { python: ["petri-hostile"] } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, "DEPENDENCY_EGRESS_BLOCKED");
    assert.match(r.json.error.message, /127\.0\.0\.9/);
    const denied = await t.api("GET", "/v1/audit?kind=network");
    assert.ok(denied.json.items.some((i: { outcome: string; detail: { host?: string } }) => i.outcome === "denied" && i.detail.host === "127.0.0.9"));
    const failed = await t.api("GET", "/v1/audit?action=dependency.install");
    assert.ok(failed.json.items.some((i: { outcome: string; error_code: string }) => i.outcome === "denied" && i.error_code === "DEPENDENCY_EGRESS_BLOCKED"));
    assert.deepEqual(envDirs(t), before, "a failed install leaves no environment and no temp directory");
  });

  test("detection never refuses a run: names the registry lacks, and detected packages that fail to install, are skipped and reported", async () => {
    const sb = await createSandbox(t);
    const r = await exec(t, sb, { code: "try:\n    import petri_not_on_index\nexcept ImportError:\n    pass\nimport petri_dep\nprint(petri_dep.X)" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stdout, "dep\n", r.json.stderr);
    assert.deepEqual(r.json.dependencies.skipped.map((s: { name: string }) => s.name), ["petri-not-on-index"]);
    assert.match(r.json.dependencies.skipped[0].reason, /404/);
    const hostile = await exec(t, sb, { code: "import petri_hostile" });
    assert.equal(hostile.status, 200, hostile.text);
    assert.match(hostile.json.stderr, /ModuleNotFoundError/);
    assert.match(hostile.json.dependencies.skipped[0].reason, /DEPENDENCY_EGRESS_BLOCKED/);
  });

  test("two runs needing the same new environment install it once", async () => {
    const [a, b] = [await createSandbox(t), await createSandbox(t)];
    const fetches = () => index.requests.filter((p) => p.includes("petri_big")).length;
    // A small environment, requested by both at once (different sandboxes, same tenant).
    const code = "import yaml, petri_dep; print(yaml.STANDIN)";
    const [r1, r2] = await Promise.all([exec(t, a, { code }), exec(t, b, { code })]);
    assert.equal(r1.json.stdout, "yaml stand-in\n", r1.text);
    assert.equal(r2.json.stdout, "yaml stand-in\n", r2.text);
    assert.equal(r1.json.dependencies.environment, r2.json.dependencies.environment);
    const installs = [r1, r2].filter((r) => r.json.dependencies.install_ms > 0).length;
    assert.ok(installs >= 1);
    const audit = await t.api("GET", "/v1/audit?action=dependency.install");
    const ids = new Set(audit.json.items.filter((i: { detail: { package: string; environment_id: string } }) => i.detail.package === "petri-dep" && i.detail.environment_id === r1.json.dependencies.environment)
      .map((i: { detail: { install_id: string } }) => i.detail.install_id));
    assert.equal(ids.size, 1, "one install for both runs");
    assert.equal(fetches(), 0);
  });

  test("installs over their time or size limit fail with a clear error", async () => {
    const t2 = await startTestServer({ ...imageEnv, PETRI_PIP_INDEX_URL: index.url, PETRI_DEPS_INSTALL_TIMEOUT_MS: "8000", PETRI_DEPS_MAX_ENV_MB: "1" });
    try {
      const sb = await createSandbox(t2);
      const slow = await exec(t2, sb, { code: "1", dependencies: { python: ["petri-slow"] } });
      assert.equal(slow.json.error?.code, "DEPENDENCY_INSTALL_TIMEOUT", slow.text);
      const big = await exec(t2, sb, { code: "1", dependencies: { python: ["petri-big"] } });
      assert.equal(big.json.error?.code, "DEPENDENCY_TOO_LARGE", big.text);
      assert.equal(big.status, 413);
      assert.deepEqual(envDirs(t2), []);
    } finally {
      await t2.close();
    }
  });
});

describe("Go modules from a GOPROXY file tree", { skip: !hasGo || !loopbackName() }, () => {
  test("a go.mod's requirements are downloaded through the broker into a shared module cache", async () => {
    const proxy = await startGoProxy([{ path: "example.com/petri/greet", version: "v1.0.0", files: { "greet.go": "package greet\n\nfunc Hello() string { return \"hello from a module\" }\n" } }]);
    const t = await startTestServer({ ...imageEnv, PETRI_GOPROXY: proxy.url });
    try {
      const sb = await createSandbox(t, { language: "go" });
      await putFile(t, sb, "go.mod", "module demo\n\ngo 1.21\n\nrequire example.com/petri/greet v1.0.0\n");
      await putFile(t, sb, "main.go", 'package main\n\nimport (\n\t"fmt"\n\t"example.com/petri/greet"\n)\n\nfunc main() { fmt.Println(greet.Hello()) }\n');
      // A first Go build compiles the standard library: minutes on a busy 2-core machine.
      const r = await exec(t, sb, { filename: "main.go", timeout_ms: 300_000 });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.stdout, "hello from a module\n", r.json.stderr);
      const d = r.json.dependencies;
      assert.deepEqual(d.requirements, ["example.com/petri/greet@v1.0.0"]);
      assert.equal(d.status, "installed");
      assert.match(d.packages[0].hash, /^h1:/);
      assert.ok(proxy.requests.some((p) => p.endsWith("/@v/v1.0.0.zip")));
    } finally {
      await t.close();
      await proxy.close();
    }
  });
});
