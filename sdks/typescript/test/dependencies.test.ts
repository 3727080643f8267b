import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, execSync } from "node:child_process";
import { DependencyError, Sandbox } from "jhansi";
import { REPO_DIR, startServer, type LiveServer } from "./helpers.js";

/** The image the server runs Node in (or PETRI_TEST_DEPS_IMAGE), and whether it has npm to install with. */
const image = process.env.PETRI_TEST_DEPS_IMAGE
  // config names a catalog image ("standard"); docker needs its reference.
  || execFileSync(process.execPath, ["-e", "Promise.all([import('./dist/src/config.js'), import('./dist/src/images/catalog.js')]).then(([c, i]) => console.log(i.imageRefOf(c.loadConfig({}).images.node)))"], { cwd: REPO_DIR, encoding: "utf8" }).trim();
function imageHasNpm(): boolean {
  try {
    execFileSync("docker", ["run", "--rm", "--network", "none", image, "sh", "-c", "command -v npm"], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}
const hasNpm = imageHasNpm();
if (!hasNpm) console.log(`# SKIP real npm installs: image ${image} has no npm`);

let server: LiveServer;

before(async () => {
  const registry = execSync("npm config get registry", { encoding: "utf8" }).trim();
  server = await startServer({ PETRI_NPM_REGISTRY: registry, PETRI_IMAGE_NODE: image, PETRI_IMAGE_PYTHON: image });
});

after(async () => {
  await server?.stop();
});

describe("dependencies", () => {
  test("a run reports what it detected; detection can be turned off", async () => {
    await using sb = await Sandbox.create({ language: "python", ...server.conn });
    const r = await sb.exec("try:\n    import petri_sdk_no_such_module\nexcept ImportError:\n    print('missing')");
    assert.equal(r.stdout, "missing\n");
    assert.ok(r.dependencies);
    assert.equal(r.dependencies.ecosystem, "python");
    assert.deepEqual(r.dependencies.detected, ["petri_sdk_no_such_module"]);
    assert.deepEqual(r.dependencies.skipped.map((s) => s.name), ["petri-sdk-no-such-module"]);
    assert.equal(r.dependencies.installMs, 0);
    const off = await sb.exec("import os", { autoDetectDependencies: false });
    assert.equal(off.dependencies, null);
  });

  test("URLs, paths and installer options are refused with DependencyError before anything runs", async () => {
    await using sb = await Sandbox.create({ language: "python", ...server.conn });
    await assert.rejects(sb.exec("print(1)", { dependencies: { python: ["--index-url=http://127.0.0.9/simple"] } }),
      (e: unknown) => e instanceof DependencyError && e.code === "DEPENDENCY_INVALID" && e.status === 400);
    await assert.rejects(sb.install({ python: ["git+https://127.0.0.9/x/y"] }), DependencyError);
    await assert.rejects(Sandbox.create({ language: "python", dependencies: { python: ["../x"] }, ...server.conn }), DependencyError);
    assert.deepEqual(await sb.history(), [], "no run happened");
  });

  test("install() and dependencies on create, from the real npm registry, reused across sandboxes", { skip: !hasNpm }, async () => {
    await using sb = await Sandbox.create({ language: "node", ...server.conn });
    const rep = await sb.install({ node: ["dayjs@1"] });
    assert.ok(["installed", "reused"].includes(rep.status));
    assert.ok(rep.packages.some((p) => p.name === "dayjs" && /^sha512-/.test(p.hash)));
    const r = await sb.exec('console.log(require("dayjs")(0).year() >= 1969)', { autoDetectDependencies: false });
    assert.equal(r.stdout, "true\n", r.stderr);
    assert.equal(r.dependencies?.status, "reused");
    assert.equal(r.dependencies?.environment, rep.environment);
    await assert.rejects(sb.install({ node: ["petri-sdk-no-such-package-7d2e"] }), (e: unknown) => e instanceof DependencyError && e.code === "DEPENDENCY_NOT_FOUND");

    await using sb2 = await Sandbox.create({ language: "node", dependencies: { node: ["dayjs@1"] }, autoDetectDependencies: false, ...server.conn });
    const r2 = await sb2.exec('console.log(typeof require("dayjs"))');
    assert.equal(r2.stdout, "function\n", r2.stderr);
    assert.equal(r2.dependencies?.environment, rep.environment);
  });
});
