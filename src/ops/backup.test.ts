import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { relinkBlobs } from "./backup.js";

const sha = (b: string) => createHash("sha256").update(b).digest("hex");

/** A data dir whose blob `content` is linked into each of `links` (sandbox, name as bytes), then copied the way a backup copies it (cp -a per tenant and per sandbox). */
function fixture(content: string, links: { sb: string; name: Buffer }[]) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "petri-relink-"));
  const from = { blobs: path.join(tmp, "src", "blobs"), workspaces: path.join(tmp, "src", "workspaces") };
  const to = { blobs: path.join(tmp, "dst", "blobs"), workspaces: path.join(tmp, "dst", "workspaces") };
  const blob = path.join(from.blobs, "t1", sha(content).slice(0, 2), sha(content));
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.writeFileSync(blob, content);
  for (const l of links) {
    fs.mkdirSync(path.join(from.workspaces, l.sb), { recursive: true });
    fs.linkSync(blob, Buffer.concat([Buffer.from(path.join(from.workspaces, l.sb) + "/"), l.name]));
  }
  fs.mkdirSync(path.join(tmp, "dst"));
  assert.equal(spawnSync("cp", ["-a", from.blobs, to.blobs]).status, 0);
  fs.mkdirSync(to.workspaces);
  for (const sb of fs.readdirSync(from.workspaces)) assert.equal(spawnSync("cp", ["-a", path.join(from.workspaces, sb), path.join(to.workspaces, sb)]).status, 0);
  const copyOf = (l: { sb: string; name: Buffer }) => Buffer.concat([Buffer.from(path.join(to.workspaces, l.sb) + "/"), l.name]);
  const blobCopy = path.join(to.blobs, "t1", sha(content).slice(0, 2), sha(content));
  return { tmp, from, to, copyOf, blobCopy, done: () => fs.rmSync(tmp, { recursive: true, force: true }) };
}

test("a workspace file that is its blob is copied as a link to the blob's copy, whatever its name's bytes", () => {
  const l = { sb: "sb_1", name: Buffer.from([0x66, 0xff, 0x2e, 0x70, 0x79]) }; // "f\xff.py", not UTF-8
  const f = fixture("print(1)\n", [l]);
  try {
    assert.notEqual(fs.statSync(f.copyOf(l)).ino, fs.statSync(f.blobCopy).ino, "cp -a alone stores it twice");
    assert.equal(relinkBlobs(f.from, f.to), 1);
    assert.equal(fs.statSync(f.copyOf(l)).ino, fs.statSync(f.blobCopy).ino);
    assert.equal(fs.statSync(f.blobCopy).nlink, 2);
    assert.equal(fs.readFileSync(f.copyOf(l), "utf8"), "print(1)\n");
    assert.deepEqual(fs.readdirSync(path.join(f.to.workspaces, "sb_1")).length, 1, "no temporary name left behind");
  } finally {
    f.done();
  }
});
