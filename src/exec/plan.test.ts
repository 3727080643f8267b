import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../config.js";
import type { Sandbox } from "../sandboxes/sandboxes.js";
import { PetriError } from "../errors.js";
import { planRun, type PlanInput } from "./plan.js";
import { LANGUAGES, SNIPPET_DIR } from "./languages.js";

const config = loadConfig({}, "/srv");
function sandbox(language: string): Sandbox {
  return {
    id: "sb_aaaaaaaaaaaaaaaaaaaa", tenant_id: "tn_x", language, image: "standard", runtime: "runc", status: "ready", limits: { ...config.defaultLimits },
    metadata: {}, created_at: "", last_active_at: "", expires_at: "", idle_timeout_ms: 1, ttl_ms: 1, secrets: ["db"], allow_hosts: [], env: {},
  };
}
function input(language: string, req: PlanInput["req"]): PlanInput {
  return {
    config, sandbox: sandbox(language), req, image: "petri/standard:test", execId: "ex_bbbbbbbbbbbbbbbbbbbb", instanceId: "i1",
    workspaceDir: "/w/sb", cacheDir: "/c/sb", snippetDir: "/s/sb", rootfs: "/r", interactiveStdin: false, agentDir: "/a", displayDir: "/d/sb",
  };
}

describe("planRun", () => {
  it("never puts a snippet's code in argv, for any language", () => {
    for (const lang of Object.keys(LANGUAGES)) {
      const code = `secret-looking code for ${lang}`;
      const plan = planRun(input(lang, { code, args: ["a1"] }));
      assert.ok(!plan.spec.argv.some((a) => a.includes(code)), `${lang}: ${JSON.stringify(plan.spec.argv)}`);
      const file = `${SNIPPET_DIR}/ex_bbbbbbbbbbbbbbbbbbbb/${LANGUAGES[lang].snippet.filename}`;
      assert.ok(plan.spec.argv.includes(file), `${lang} runs ${file}`);
      assert.equal(plan.spec.argv.at(-1), "a1", "args come last");
      assert.deepEqual(plan.snippet, { filename: LANGUAGES[lang].snippet.filename, code });
      assert.equal(plan.entry, "<snippet>");
    }
  });

  it("mounts are the same for every run of a sandbox (a pre-started container's shape)", () => {
    const a = planRun(input("python", { code: "1" }));
    const b = planRun({ ...input("python", { filename: "main.py" }), execId: "ex_cccccccccccccccccccc" });
    assert.deepEqual(a.spec.mounts, b.spec.mounts);
    assert.deepEqual(a.spec.mounts.slice(0, 3).map((m) => [m.target, m.readonly]), [["/workspace", false], [SNIPPET_DIR, true], ["/cache", false]]);
    assert.deepEqual(b.spec.argv, ["python3", "main.py"]);
    assert.equal(a.spec.image, "petri/standard:test", "the sandbox's image reference");
    assert.equal(b.snippet, null);
  });

  it("validates before anything happens", () => {
    assert.throws(() => planRun(input("python", {})), (e: PetriError) => e.code === "VALIDATION_ERROR");
    assert.throws(() => planRun(input("python", { code: "1", filename: "a.py" })), (e: PetriError) => e.code === "VALIDATION_ERROR");
    assert.throws(() => planRun(input("cobol", { code: "1" })), (e: PetriError) => e.code === "UNKNOWN_LANGUAGE");
    assert.throws(() => planRun(input("python", { code: "1", env: { "A-B": "x" } })), (e: PetriError) => e.code === "VALIDATION_ERROR");
    assert.throws(() => planRun(input("python", { filename: "../x.py" })), (e: PetriError) => e.code === "INVALID_PATH");
    assert.throws(() => planRun(input("python", { code: "1", timeout_ms: config.maxLimits.timeout_ms + 1 })), (e: PetriError) => e.code === "LIMIT_ABOVE_MAXIMUM");
  });

  it("merges env, egress and limits; keeps no code or env values in the request record", () => {
    const plan = planRun(input("python", { code: "print(1)", env: { FOO: "bar" }, secrets: ["api"], allow_hosts: ["x.test"], limits: { memory_mb: 64 } }));
    assert.equal(plan.spec.env.FOO, "bar");
    assert.equal(plan.spec.env.PYTHONDONTWRITEBYTECODE, "1");
    assert.deepEqual(plan.egress, { secrets: ["db", "api"], allowHosts: ["x.test"] });
    assert.equal(plan.spec.limits.memoryBytes, 64 * 1024 * 1024);
    assert.deepEqual(plan.requestRecord.env_names, ["FOO"]);
    assert.equal(plan.requestRecord.code_bytes, 8);
    assert.ok(!JSON.stringify(plan.requestRecord).includes("print"));
    assert.equal(plan.spec.labels["io.jhansi.petri.exec"], "ex_bbbbbbbbbbbbbbbbbbbb");
  });
});
