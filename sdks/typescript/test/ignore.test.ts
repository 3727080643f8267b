import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { IgnoreMatcher, listLocalFiles } from "jhansi";
import { TESTDATA_DIR, tmpDir, writeTree } from "./helpers.js";

interface Case { patterns: string[]; path: string; dir?: boolean; ignored: boolean }

// The same table drives the Python SDK's tests, so both matchers agree.
const cases = JSON.parse(fs.readFileSync(path.join(TESTDATA_DIR, "ignore-cases.json"), "utf8")) as { cases: Case[] };

test("gitignore matcher agrees with the shared table", () => {
  for (const c of cases.cases) {
    const m = new IgnoreMatcher(c.patterns);
    assert.equal(m.ignoresPath(c.path, c.dir ?? false), c.ignored, `${JSON.stringify(c.patterns)} on ${c.path}${c.dir ? "/" : ""}`);
  }
});

test("walk skips default directories, honours .petriignore, and never descends into ignored directories", () => {
  const root = tmpDir();
  try {
    writeTree(root, {
      "main.py": "print(1)\n",
      "lib/util.py": "x = 1\n",
      ".git/config": "[core]\n",
      "node_modules/a/index.js": "",
      "src/__pycache__/m.pyc": "",
      ".venv/bin/python": "",
      "build/out.bin": "0",
      "logs/a.log": "",
      "logs/keep.log": "",
      "secret.env": "K=V",
      "docs/secret.env": "K=V",
      ".petriignore": "# build output\n/build/\n*.log\n!logs/keep.log\nsecret.env\n",
    });
    const paths = listLocalFiles(root).map((f) => f.path);
    assert.deepEqual(paths, [".petriignore", "lib/util.py", "logs/keep.log", "main.py"]);
    const all = listLocalFiles(root, { defaultIgnores: false, ignore: ["!secret.env"] }).map((f) => f.path);
    assert.ok(all.includes(".git/config") && all.includes("node_modules/a/index.js") && all.includes("secret.env"));
    assert.ok(!all.includes("build/out.bin"));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
