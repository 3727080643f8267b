import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Sandbox } from "jhansi";
import { startServer, tmpDir, writeTree, type LiveServer } from "./helpers.js";

let server: LiveServer;
let sb: Sandbox;
let dir: string;

before(async () => {
  server = await startServer();
  sb = await Sandbox.create({ language: "python", ...server.conn });
  dir = tmpDir("jhansi-ts-sync-");
});

after(async () => {
  await sb?.kill().catch(() => undefined);
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function workspacePaths(s: Sandbox): Promise<string[]> {
  return (await s.files.list("", { hashes: false })).filter((f) => f.type === "file").map((f) => f.path).sort();
}

test("sync: first sync uploads everything, then only what changed, and deletions propagate", async () => {
  writeTree(dir, {
    "main.py": "from lib.util import X\nprint(X)\n",
    "lib/__init__.py": "",
    "lib/util.py": "X = 1\n",
    "data/big.bin": Buffer.alloc(200_000, 7),
    "run.sh": "#!/bin/sh\necho ok\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    "node_modules/dep/index.js": "module.exports = 1\n",
    "lib/__pycache__/util.cpython-311.pyc": "junk",
    ".venv/bin/python": "junk",
    "out/result.txt": "ignored by .petriignore\n",
    "notes.tmp": "ignored\n",
    "keep.tmp": "re-included\n",
    ".petriignore": "# local artefacts\n/out/\n*.tmp\n!keep.tmp\n",
  });
  fs.chmodSync(path.join(dir, "run.sh"), 0o755);
  const expected = [".petriignore", "data/big.bin", "keep.tmp", "lib/__init__.py", "lib/util.py", "main.py", "run.sh"];
  const total = expected.reduce((n, p) => n + fs.statSync(path.join(dir, p)).size, 0);

  const first = await sb.sync(dir);
  assert.equal(first.uploaded + first.reused, expected.length);
  assert.equal(first.bytesSent, total);
  assert.deepEqual(await workspacePaths(sb), expected);
  assert.equal((await sb.run("main.py")).stdout, "1\n");
  const sh = await sb.exec("import os; print(os.access('run.sh', os.X_OK))");
  assert.equal(sh.stdout, "True\n", "the executable bit travels with the file");

  const again = await sb.sync(dir);
  assert.equal(again.bytesSent, 0, "a no-change sync sends no file bytes");
  assert.equal(again.uploaded, 0);
  assert.equal(again.deleted, 0);
  assert.equal(again.unchanged, expected.length);

  fs.writeFileSync(path.join(dir, "lib/util.py"), "X = 2\n");
  const one = await sb.sync(dir);
  assert.deepEqual(one.uploadedPaths, ["lib/util.py"]);
  assert.equal(one.bytesSent, "X = 2\n".length);
  assert.equal((await sb.run("main.py")).stdout, "2\n");

  fs.rmSync(path.join(dir, "data"), { recursive: true });
  fs.rmSync(path.join(dir, "keep.tmp"));
  const kept = await sb.sync(dir);
  assert.equal(kept.deleted, 0, "deleting is off by default");
  const del = await sb.sync(dir, { deleteExtraneous: true });
  assert.equal(del.bytesSent, 0);
  assert.deepEqual([...del.deletedPaths].sort(), ["data/big.bin", "keep.tmp"]);
  assert.equal(del.deleted, 2);
  assert.deepEqual(await workspacePaths(sb), [".petriignore", "lib/__init__.py", "lib/util.py", "main.py", "run.sh"]);

  // Files a run creates are not in the local directory: a re-sync keeps them unless asked.
  await sb.exec("open('made.txt', 'w').write('x')");
  const keep = await sb.sync(dir);
  assert.equal(keep.deleted, 0);
  assert.ok((await workspacePaths(sb)).includes("made.txt"));
  await sb.sync(dir, { deleteExtraneous: true });
  assert.ok(!(await workspacePaths(sb)).includes("made.txt"));
});

test("sync: into a target folder; files.upload's files are known to the next sync", async () => {
  const proj = tmpDir("jhansi-ts-target-");
  const other = await Sandbox.create({ language: "python", ...server.conn });
  try {
    writeTree(proj, { "main.py": "print('hi')\n", "lib/a.py": "A = 1\n", "lib/b.py": "B = 2\n" });
    await other.files.upload(proj, { remoteDir: "app" });
    await other.files.write("app/output.csv", "x\n");
    fs.writeFileSync(path.join(proj, "lib/b.py"), "B = 3\n");
    const r = await other.sync(proj, { target: "app" });
    assert.deepEqual(r.uploadedPaths, ["lib/b.py"], "only the changed file is sent");
    assert.equal(r.unchanged, 2);
    assert.equal(r.deleted, 0);
    assert.equal(await other.files.read("app/lib/b.py"), "B = 3\n");
    assert.equal(await other.files.read("app/output.csv"), "x\n", "a file the project does not have survives");
    assert.equal((await other.run("app/main.py")).stdout, "hi\n");
    const d = await other.sync(proj, { target: "app", deleteExtraneous: true });
    assert.deepEqual(d.deletedPaths, ["output.csv"]);
  } finally {
    await other.kill();
    fs.rmSync(proj, { recursive: true, force: true });
  }
});

test("sync: an unchanged project is checked by its manifest's digest alone; changes made in the sandbox (write, run, delete) are still put right", async () => {
  const proj = tmpDir("jhansi-ts-quick-");
  const other = await Sandbox.create({ language: "python", ...server.conn });
  /** The server's count of quick checks that found the workspace up to date (no manifest sent, no walk). */
  const quickHits = async () => Number(/^petri_sync_plans_total\{kind="quick_hit"\} (\d+)/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? 0);
  try {
    writeTree(proj, { "main.py": "print('v1')\n", "lib/a.py": "A = 1\n" });
    await other.sync(proj);
    const h0 = await quickHits();
    const again = await other.sync(proj);
    assert.deepEqual([again.uploaded, again.reused, again.unchanged, again.deleted], [0, 0, 2, 0]);
    assert.equal(await quickHits(), h0 + 1, "the re-sync was answered by the quick check (the SDK's digest is the server's)");

    await other.files.write("main.py", "print('edited')\n");
    let r = await other.sync(proj);
    assert.equal(r.uploaded + r.reused, 1, "a file written in the sandbox is put back");
    assert.equal(await other.files.read("main.py"), "print('v1')\n");
    assert.equal((await other.exec("open('lib/a.py', 'w').write('A = 99\\n')")).exitCode, 0);
    assert.equal(await other.files.read("lib/a.py"), "A = 99\n");
    r = await other.sync(proj);
    assert.equal(r.uploaded + r.reused, 1, "a file a run changed is put back");
    assert.equal(await other.files.read("lib/a.py"), "A = 1\n");
    await other.files.remove("lib/a.py");
    r = await other.sync(proj);
    assert.equal(r.uploaded + r.reused, 1, "a file deleted in the sandbox is put back");
    assert.equal(await other.files.read("lib/a.py"), "A = 1\n");
    const h1 = await quickHits();
    r = await other.sync(proj);
    assert.deepEqual([r.uploaded, r.reused, r.unchanged], [0, 0, 2]);
    assert.equal(await quickHits(), h1 + 1);
  } finally {
    await other.kill();
    fs.rmSync(proj, { recursive: true, force: true });
  }
});

test("sync: content the key owner already uploaded is reused, not sent again", async () => {
  const other = await Sandbox.create({ language: "python", ...server.conn });
  try {
    const r = await other.sync(dir);
    assert.equal(r.bytesSent, 0);
    assert.equal(r.uploaded, 0);
    assert.ok(r.reused > 0);
    assert.deepEqual(await workspacePaths(other), await workspacePaths(sb));
    assert.equal((await other.run("main.py")).stdout, "2\n");
  } finally {
    await other.kill();
  }
});

test("sync: more files than one request may carry are sent in batches", async () => {
  const many = tmpDir("jhansi-ts-many-");
  const other = await Sandbox.create({ language: "bash", ...server.conn });
  try {
    // One request carries at most 10,000 files (BATCH_MAX_FILES × 20).
    const n = 10_100;
    const files: Record<string, string> = {};
    for (let i = 0; i < n; i++) files[`d${i % 7}/f${i}.txt`] = `${i}\n`;
    writeTree(many, files);
    const r = await other.sync(many);
    assert.equal(r.uploaded, n);
    assert.equal((await workspacePaths(other)).length, n);
    const hits = async () => Number(/^petri_sync_plans_total\{kind="quick_hit"\} (\d+)/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? 0);
    const h0 = await hits();
    const again = await other.sync(many);
    assert.equal(again.bytesSent, 0);
    assert.equal(again.unchanged, n);
    assert.equal(await hits(), h0 + 1, "after a sync in batches, the next one is a quick check (the whole manifest was marked)");
  } finally {
    await other.kill();
    fs.rmSync(many, { recursive: true, force: true });
  }
});

test("sync: names with spaces, quotes and non-ASCII letters", async () => {
  const odd = tmpDir("jhansi-ts-odd-");
  const other = await Sandbox.create({ language: "bash", ...server.conn });
  try {
    writeTree(odd, { "ünï/é.txt": "é\n", "sp ace/a'b.txt": "ab\n", 'q"uote.txt': "q\n" });
    const r = await other.sync(odd);
    assert.equal(r.uploaded + r.reused, 3);
    assert.deepEqual(await workspacePaths(other), ['q"uote.txt', "sp ace/a'b.txt", "ünï/é.txt"]);
    assert.equal(await other.files.read("ünï/é.txt"), "é\n");
    assert.equal((await other.sync(odd)).bytesSent, 0);
  } finally {
    await other.kill();
    fs.rmSync(odd, { recursive: true, force: true });
  }
});
