import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig } from "./config.js";

describe("config", () => {
  it("has sane defaults and is frozen", () => {
    const c = loadConfig({}, "/srv");
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.port, 8080);
    assert.equal(c.dataDir, "/srv/.petri");
    assert.equal(c.workspaceRoot, "/srv/.petri/workspaces");
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.defaultLimits) && Object.isFrozen(c.images));
    assert.equal(c.images.python, "standard");
    assert.equal(c.images.typescript, "standard");
    assert.deepEqual(Object.keys(c.imageRecipes).sort(), ["datascience", "standard"]);
  });
  it("lets a language point at any image", () => {
    const c = loadConfig({ PETRI_IMAGE_PYTHON: "python:3.12-slim" }, "/");
    assert.equal(c.images.python, "python:3.12-slim");
    assert.equal(c.images.node, "standard");
    assert.equal(loadConfig({ PETRI_IMAGE: "datascience" }, "/").images.go, "datascience");
    assert.throws(() => loadConfig({ PETRI_IMAGE_NODE: "fancy" }), (e: Error) => e instanceof ConfigError && /PETRI_IMAGE_NODE: no image "fancy"/.test(e.message));
  });
  it("reads custom images from PETRI_IMAGES_FILE and refuses a bad one with the reason", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-cfg-"));
    try {
      const file = path.join(dir, "images.json");
      fs.writeFileSync(file, JSON.stringify({ geo: { from: "datascience", packages: ["python3-shapely"] }, tiny: { packages: [], node: false } }));
      const c = loadConfig({ PETRI_IMAGES_FILE: file, PETRI_IMAGE_PYTHON: "geo" }, "/");
      assert.equal(c.images.python, "geo");
      assert.ok(c.imageRecipes.geo.packages.includes("python3-shapely") && c.imageRecipes.geo.packages.includes("python3-pandas"));
      assert.equal(c.imageRecipes.geo.node?.version, c.imageRecipes.datascience.node?.version);
      assert.equal(c.imageRecipes.tiny.node, null);
      for (const [bad, why] of [
        [{ standard: { packages: [] } }, /built-in image has this name/],
        [{ x: { packages: ["--allow-unauthenticated"] } }, /Debian package names/],
        [{ x: { from: "nope" } }, /no image "nope"/],
        [{ x: { packages: [], node: "latest" } }, /"node" must be a version/],
        [{ x: { pkgs: [] } }, /unknown field "pkgs"/],
      ] as const) {
        fs.writeFileSync(file, JSON.stringify(bad));
        assert.throws(() => loadConfig({ PETRI_IMAGES_FILE: file }), (e: Error) => e instanceof ConfigError && why.test(e.message), JSON.stringify(bad));
      }
      fs.writeFileSync(file, "{");
      assert.throws(() => loadConfig({ PETRI_IMAGES_FILE: file }), /not JSON/);
      assert.throws(() => loadConfig({ PETRI_IMAGES_FILE: path.join(dir, "missing.json") }), /cannot read/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it("refuses bad values with the variable's name", () => {
    assert.throws(() => loadConfig({ PETRI_PORT: "http" }), (e: Error) => e instanceof ConfigError && /PETRI_PORT/.test(e.message));
    assert.throws(() => loadConfig({ PETRI_DEFAULT_MEMORY_MB: "9000", PETRI_MAX_MEMORY_MB: "100" }), /above its maximum/);
    assert.throws(() => loadConfig({ PETRI_OCI_RUNTIME: "kata" }), /PETRI_OCI_RUNTIME/);
    assert.throws(() => loadConfig({ PETRI_RUNTIMES: "runc,firecracker" }), /PETRI_RUNTIMES/);
    assert.deepEqual(loadConfig({ PETRI_RUNTIMES: "gvisor, bwrap" }).allowedRuntimes, ["runsc", "bwrap"]);
  });
});
