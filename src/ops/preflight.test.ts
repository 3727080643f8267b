import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../config.js";
import { accountOf, firstUntraversable, preflight, StartupError } from "./preflight.js";

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "petri-preflight-")); // 0700, as mktemp -d makes it
}

test("a sandbox uid that is a real account is refused at start, with the fix", async () => {
  const dir = tmp();
  try {
    // nobody (65534) exists on every Debian host.
    assert.equal(accountOf("passwd", 65534), "nobody");
    const cfg = loadConfig({ PETRI_DATA_DIR: dir, PETRI_SANDBOX_UID: "65534", PETRI_RUNTIMES: "runc" });
    await assert.rejects(preflight(cfg), (e: unknown) => e instanceof StartupError && /host account "nobody"/.test(e.message) && /PETRI_SANDBOX_UID/.test(e.fix));
    const ok = loadConfig({ PETRI_DATA_DIR: dir, PETRI_RUNTIMES: "runc" });
    assert.equal(accountOf("passwd", ok.sandboxUid), null, "the default sandbox uid is no account here");
    assert.equal(accountOf("group", ok.sandboxGid), null, "the default sandbox gid is no group here");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a bwrap workspace root inside a 0700 directory fails at start, not at the first run", async () => {
  const dir = tmp();
  try {
    const ws = path.join(dir, "deep", "workspaces");
    assert.equal(firstUntraversable(ws, 65600, 65600), dir);
    const only = loadConfig({ PETRI_DATA_DIR: path.join(os.tmpdir(), `petri-pf-data-${process.pid}`), PETRI_WORKSPACE_ROOT: ws, PETRI_RUNTIMES: "bwrap" });
    await assert.rejects(preflight(only), (e: unknown) => e instanceof StartupError && e.message.includes(dir) && /chmod o\+x|PETRI_WORKSPACE_ROOT/.test(e.fix));
    // With other runtimes allowed, bwrap is left out with the reason instead.
    const many = loadConfig({ PETRI_DATA_DIR: path.join(os.tmpdir(), `petri-pf-data-${process.pid}`), PETRI_WORKSPACE_ROOT: ws, PETRI_RUNTIMES: "runc,bwrap" });
    const r = await preflight(many);
    assert.match(r.excluded.get("bwrap") ?? "", /not searchable/);
    fs.chmodSync(dir, 0o711);
    assert.equal(firstUntraversable(ws, 65600, 65600), null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(path.join(os.tmpdir(), `petri-pf-data-${process.pid}`), { recursive: true, force: true });
  }
});

test("an unwritable data directory fails at start with the fix", async () => {
  const file = path.join(tmp(), "a-file");
  fs.writeFileSync(file, "");
  const cfg = loadConfig({ PETRI_DATA_DIR: path.join(file, "data"), PETRI_RUNTIMES: "runc" });
  await assert.rejects(preflight(cfg), (e: unknown) => e instanceof StartupError && /not writable/.test(e.message) && /PETRI_DATA_DIR/.test(e.fix));
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
});
