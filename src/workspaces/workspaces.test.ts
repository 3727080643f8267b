import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { WorkspaceStore } from "./workspaces.js";
import { PetriError } from "../errors.js";
import { deepChain } from "./deep-chain.js";

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

describe("WorkspaceStore", () => {
  let root: string;
  let ws: WorkspaceStore;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "ws-"));
    ws = new WorkspaceStore({ root, uid, gid });
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  const put = async (id: string, files: Record<string, string | Buffer>, quota = 1 << 30) => {
    const staged = [];
    for (const [p, c] of Object.entries(files)) staged.push({ parts: p.split("/"), staged: await ws.stage(Readable.from([Buffer.from(c)]), 1 << 30) });
    return ws.commit(id, staged, quota);
  };

  it("keeps an O(1) byte counter through uploads, replacements, deletes and adjustUsage; reconcile agrees", async () => {
    ws.create("sb_u");
    await put("sb_u", { "a.txt": "12345", "d/b.txt": "123" });
    assert.equal(ws.usage("sb_u"), 8);
    await put("sb_u", { "a.txt": "1" }); // replaces 5 bytes with 1
    assert.equal(ws.usage("sb_u"), 4);
    await ws.remove("sb_u", "d", true);
    assert.equal(ws.usage("sb_u"), 1);
    fs.writeFileSync(path.join(ws.dirFor("sb_u"), "run-output"), Buffer.alloc(100));
    ws.adjustUsage("sb_u", 100);
    assert.equal(ws.usage("sb_u"), 101);
    assert.deepEqual(await ws.reconcile("sb_u"), { bytes: 101, complete: true });
  });

  it("stores all parts of an upload or none, for failures other than the quota too", async () => {
    ws.create("sb_a");
    await put("sb_a", { "keep.txt": "old", "plain": "a file, not a directory" });
    const before = ws.usage("sb_a");
    await assert.rejects(put("sb_a", { "keep.txt": "new content", "fresh/x.txt": "x", "plain/below.txt": "y" }),
      (e) => e instanceof PetriError && e.code === "NOT_A_DIRECTORY");
    assert.equal(fs.readFileSync(path.join(ws.dirFor("sb_a"), "keep.txt"), "utf8"), "old");
    assert.equal(fs.existsSync(path.join(ws.dirFor("sb_a"), "fresh")), false, "directories the failed upload made are gone");
    assert.equal(ws.usage("sb_a"), before);
    await assert.rejects(put("sb_a", { "new.txt": "n", "x": "1", "x/y": "2" }), (e) => e instanceof PetriError && e.code === "CONFLICT");
    assert.equal(fs.existsSync(path.join(ws.dirFor("sb_a"), "new.txt")), false);
    assert.deepEqual(fs.readdirSync(ws.stagingDir), [], "no staged file is left behind");
  });

  it("lists and removes names that are not UTF-8, and destroys such a workspace", async () => {
    ws.create("sb_n");
    const bad = Buffer.from([0x6e, 0xff, 0xfe]);
    const dir = Buffer.concat([Buffer.from(ws.dirFor("sb_n") + "/"), bad]);
    fs.mkdirSync(dir);
    fs.writeFileSync(Buffer.concat([dir, Buffer.from("/f")]), "abc");
    fs.writeFileSync(Buffer.concat([Buffer.from(ws.dirFor("sb_n") + "/"), bad, Buffer.from(".txt")]), "xy");
    assert.deepEqual(await ws.reconcile("sb_n"), { bytes: 5, complete: true });
    const l = await ws.listing("sb_n", "", { recursive: true, hashes: true });
    assert.equal(l.complete, true);
    const file = l.files.find((f) => f.path.endsWith("/f"))!;
    assert.equal(file.path, "n\uFFFD\uFFFD/f");
    assert.equal(Buffer.from(file.path_b64!, "base64").toString("hex"), Buffer.concat([bad, Buffer.from("/f")]).toString("hex"));
    assert.equal(file.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert.equal(ws.usage("sb_n"), 5);
    await ws.remove("sb_n", [Buffer.concat([bad, Buffer.from(".txt")])], false);
    assert.equal(ws.usage("sb_n"), 3);
    await ws.destroy("sb_n");
    assert.equal(ws.exists("sb_n"), false);
  });

  it("removes a 30,000-level directory chain, by path and with the whole workspace", async () => {
    ws.create("sb_deep");
    deepChain(ws.dirFor("sb_deep"), 30_000, { name: "leaf", bytes: 7 });
    fs.writeFileSync(path.join(ws.dirFor("sb_deep"), "top"), "1");
    assert.deepEqual(await ws.reconcile("sb_deep"), { bytes: 8, complete: true });
    await ws.remove("sb_deep", "d", true);
    assert.deepEqual(fs.readdirSync(ws.dirFor("sb_deep")), ["top"]);
    assert.equal(ws.usage("sb_deep"), 1);
    deepChain(ws.dirFor("sb_deep"), 2_000);
    await ws.destroy("sb_deep");
    assert.equal(ws.exists("sb_deep"), false);
    assert.deepEqual(fs.readdirSync(ws.trash.dir), [], "the trash is empty");
  });

  it("a listing past its limit says it is incomplete", async () => {
    ws.create("sb_l");
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(ws.dirFor("sb_l"), `f${i}`), "");
    const l = await ws.listing("sb_l", "", { recursive: true, hashes: false, limit: 10 });
    assert.equal(l.complete, false);
    assert.equal(l.files.length, 10);
    assert.match(l.reason!, /more than 10/);
  });

  it("a trash job a crash left behind is finished by drain()", async () => {
    const job = ws.trash.newJob();
    fs.mkdirSync(path.join(job, "x", "y"), { recursive: true });
    fs.writeFileSync(path.join(job, "x", "y", "z"), "data");
    await ws.trash.drain();
    assert.deepEqual(fs.readdirSync(ws.trash.dir), []);
  });
});
