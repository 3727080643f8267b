import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BUILTIN_IMAGES, recipeRef } from "./catalog.js";
import { manifestFileFor, rootfsDirFor } from "./build.js";
import { ImageCatalog } from "./images.js";
import { PetriError } from "../errors.js";

function fakeBuilt(dir: string, name: string, languages: Record<string, string>): void {
  const ref = recipeRef(BUILTIN_IMAGES[name]);
  fs.mkdirSync(rootfsDirFor(dir, ref), { recursive: true });
  fs.writeFileSync(manifestFileFor(dir, ref), JSON.stringify({
    format: 1, name, ref, suite: "trixie", built_at: "2026-11-30T00:00:00.000Z", build_seconds: 1, size_bytes: 1,
    languages, tools: {}, node_build: null, python_packages: { pandas: "2.2.3" }, python_modules: [], python_stdlib: [],
    node_packages: {}, node_builtins: [], debian_packages: {},
  }));
}

const code = (fn: () => unknown) => {
  try { fn(); } catch (e) { return (e as PetriError).code; }
  return "no error";
};

describe("image catalog", () => {
  it("gives a sandbox its language's default or the image it asks for, and refuses with a stable code", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-images-"));
    try {
      const cat = new ImageCatalog(BUILTIN_IMAGES, dir, { python: "standard", node: "standard", go: "my/go:1" });
      assert.equal(cat.forSandbox("python"), "standard", "without a manifest (engine-only servers) the run decides");
      assert.equal(cat.info("standard").built, false);
      fakeBuilt(dir, "standard", { python: "3.13.5", node: "24.22.3", bash: "5.2.37" });
      fakeBuilt(dir, "datascience", { python: "3.13.5" });
      assert.equal(cat.forSandbox("python"), "standard");
      assert.equal(cat.forSandbox("python", "datascience"), "datascience");
      assert.equal(code(() => cat.forSandbox("python", "gpu")), "UNKNOWN_IMAGE");
      assert.equal(code(() => cat.forSandbox("node", "datascience")), "IMAGE_LACKS_LANGUAGE");
      assert.equal(cat.forSandbox("go"), "my/go:1", "an external image is taken on the operator's word");
      assert.equal(cat.ref("my/go:1"), "my/go:1");
      assert.match(cat.ref("standard"), /^petri\/standard:[0-9a-f]{12}$/);
      const ds = cat.list().find((i) => i.name === "datascience")!;
      assert.deepEqual([ds.built, ds.python_packages.pandas, ds.default_for], [true, "2.2.3", []]);
      const ext = cat.info("my/go:1");
      assert.deepEqual([ext.external, ext.built, ext.default_for], [true, true, ["go"]]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it("names images by a hash of their recipe, so a changed package list is a new image", () => {
    const a = recipeRef(BUILTIN_IMAGES.standard);
    const b = recipeRef({ ...BUILTIN_IMAGES.standard, packages: [...BUILTIN_IMAGES.standard.packages, "jq"] });
    const c = recipeRef({ ...BUILTIN_IMAGES.standard, node: { version: "24.0.0" } });
    assert.equal(new Set([a, b, c]).size, 3);
  });
});
