import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { detectImports, directoryReader } from "./detect.js";
import { initJsScanner } from "./js-imports.js";
import { distributionFor, isPythonStdlib } from "./python-names.js";

function workspace(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-detect-"));
  for (const [p, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), c);
  }
  return dir;
}

test("Python: follows workspace modules, skips the stdlib and local packages", () => {
  const dir = workspace({
    "main.py": "import os, json\nimport lib.util\nfrom helpers import x\nimport pandas as pd\n",
    "lib/__init__.py": "import yaml\n",
    "lib/util.py": "from . import sibling\nimport requests\n",
    "lib/sibling.py": "from sklearn import svm\n",
    "helpers.py": "import bs4\nimport PIL.Image\n",
    "unused.py": "import never_imported\n",
  });
  try {
    const r = detectImports("python", directoryReader(dir), { file: "main.py" });
    assert.deepEqual(r.imports, ["PIL", "bs4", "pandas", "requests", "sklearn", "yaml"]);
    assert.ok(r.files.includes("lib/sibling.py"));
    assert.deepEqual(r.imports.map(distributionFor), ["pillow", "beautifulsoup4", "pandas", "requests", "scikit-learn", "pyyaml"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("Python snippets: the workspace root is on the path", () => {
  const dir = workspace({ "mylib.py": "import cv2\n" });
  try {
    const r = detectImports("python", directoryReader(dir), { file: null, code: "import mylib, dateutil.parser, asyncio\n" });
    assert.deepEqual(r.imports, ["cv2", "dateutil"]);
    assert.deepEqual(r.imports.map(distributionFor), ["opencv-python", "python-dateutil"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("stdlib detection covers 3.11 and 3.13 modules", () => {
  for (const m of ["os", "asyncio", "tomllib", "distutils", "imp", "__future__", "zoneinfo"]) assert.equal(isPythonStdlib(m), true, m);
  for (const m of ["numpy", "requests"]) assert.equal(isPythonStdlib(m), false, m);
});

test("JS/TS: follows relative modules, skips the workspace's own node_modules", async () => {
  await initJsScanner();
  const dir = workspace({
    "main.ts": 'import { helper } from "./lib/helper.js";\nimport _ from "lodash/fp";\nimport fs from "node:fs";\n',
    "lib/helper.ts": 'export const helper = require("@scope/pkg/sub");\nimport "vendored";\n',
    "node_modules/vendored/index.js": "",
  });
  try {
    const r = detectImports("node", directoryReader(dir), { file: "main.ts" });
    assert.deepEqual(r.imports, ["@scope/pkg", "lodash"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("Go: third-party imports, not the workspace's own module", () => {
  const dir = workspace({
    "go.mod": "module example.com/me\n\ngo 1.22\n",
    "main.go": 'package main\nimport (\n"fmt"\n"example.com/me/internal"\n"github.com/google/uuid"\n)\n',
  });
  try {
    assert.deepEqual(detectImports("go", directoryReader(dir), { file: "main.go" }).imports, ["github.com/google/uuid"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a symlink in the workspace is never followed", () => {
  const outside = workspace({ "secret.py": "import leaked_name\n" });
  const dir = workspace({ "main.py": "import sneaky\n" });
  try {
    fs.symlinkSync(path.join(outside, "secret.py"), path.join(dir, "sneaky.py"));
    const r = detectImports("python", directoryReader(dir), { file: "main.py" });
    assert.deepEqual(r.imports, ["sneaky"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  }
});
