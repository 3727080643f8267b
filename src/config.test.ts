import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "./config.js";

describe("config", () => {
  it("has sane defaults and is frozen", () => {
    const c = loadConfig({}, "/srv");
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.port, 8080);
    assert.equal(c.dataDir, "/srv/.petri");
    assert.equal(c.workspaceRoot, "/srv/.petri/workspaces");
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.defaultLimits) && Object.isFrozen(c.images));
    assert.match(c.images.python, /^petri\/runtime:/);
  });
  it("lets a language point at any image", () => {
    const c = loadConfig({ PETRI_IMAGE_PYTHON: "python:3.12-slim" }, "/");
    assert.equal(c.images.python, "python:3.12-slim");
    assert.match(c.images.node, /^petri\/runtime:/);
  });
  it("refuses bad values with the variable's name", () => {
    assert.throws(() => loadConfig({ PETRI_PORT: "http" }), (e: Error) => e instanceof ConfigError && /PETRI_PORT/.test(e.message));
    assert.throws(() => loadConfig({ PETRI_DEFAULT_MEMORY_MB: "9000", PETRI_MAX_MEMORY_MB: "100" }), /above its maximum/);
    assert.throws(() => loadConfig({ PETRI_OCI_RUNTIME: "kata" }), /PETRI_OCI_RUNTIME/);
    assert.throws(() => loadConfig({ PETRI_RUNTIMES: "runc,firecracker" }), /PETRI_RUNTIMES/);
    assert.deepEqual(loadConfig({ PETRI_RUNTIMES: "gvisor, bwrap" }).allowedRuntimes, ["runsc", "bwrap"]);
  });
});
