import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { detectImports } from "./detect.js";
import { workspaceReader } from "./workspace-reader.js";

test("detection reads workspace files without following planted symlinks or opening FIFOs", () => {
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), "petri-outside-"));
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), "petri-ws-"));
  try {
    fs.writeFileSync(path.join(outside, "secret.py"), "import leaked_name\n");
    fs.mkdirSync(path.join(outside, "pkg"));
    fs.writeFileSync(path.join(outside, "pkg", "__init__.py"), "import leaked_too\n");
    fs.writeFileSync(path.join(ws, "main.py"), "import sneaky\nimport linkeddir\nimport fifo\nimport real\n");
    fs.symlinkSync(path.join(outside, "secret.py"), path.join(ws, "sneaky.py"));
    fs.symlinkSync(path.join(outside, "pkg"), path.join(ws, "linkeddir"));
    execFileSync("mkfifo", [path.join(ws, "fifo.py")]);
    const reader = workspaceReader(ws);
    assert.equal(reader.read("sneaky.py", 1 << 20), null);
    assert.equal(reader.isDir("linkeddir"), false);
    assert.equal(reader.read("fifo.py", 1 << 20), null);
    assert.equal(reader.read("../" + path.basename(outside) + "/secret.py", 1 << 20), null);
    const r = detectImports("python", reader, { file: "main.py" });
    assert.deepEqual(r.imports, ["fifo", "linkeddir", "real", "sneaky"]);
  } finally {
    fs.rmSync(ws, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  }
});
