import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { createServer } from "../src/server.js";
import { ScratchPool, WorkspaceView } from "../src/exec/overlay/view.js";
import { startTestServer, createSandbox, putFile, exec, type TestServer } from "./helpers.js";

const RUNTIMES = ["runc", "crun", "runsc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"];
const BAD_NAME = Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0x2e, 0x74, 0x78, 0x74]); // "bad\xff\xfe.txt"
const DEEP = Array.from({ length: 100 }, (_, i) => `d${i}`).join("/");

/** Every regular file under dir, as raw relative names → size (the truth on the host disk). */
function filesOnDisk(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (rel: Buffer) => {
    const absP = rel.length ? Buffer.concat([Buffer.from(dir + "/"), rel]) : Buffer.from(dir);
    for (const n of fs.readdirSync(absP, { encoding: "buffer" })) {
      const r = rel.length ? Buffer.concat([rel, Buffer.from("/"), n]) : n;
      const st = fs.lstatSync(Buffer.concat([Buffer.from(dir + "/"), r]));
      if (st.isDirectory()) walk(r);
      else out.set(r.toString("latin1"), st.size);
    }
  };
  walk(Buffer.alloc(0));
  return out;
}

const latin1 = (s: string) => Buffer.from(s, "utf8").toString("latin1");

async function auditFiles(t: TestServer, execId: string) {
  const recs = (await t.api("GET", `/v1/audit?exec_id=${execId}&limit=1000`)).json.items as { action: string; detail: Record<string, unknown> }[];
  return recs.filter((r) => r.action.startsWith("file.") && r.detail.source === "workspace_diff").map((r) => ({ action: r.action, ...r.detail }) as Record<string, any>);
}

/**
 * Several files at depth 70 under a 1 MiB quota: each stays within the file-size limit
 * (RLIMIT_FSIZE is min(file_size_mb, workspace_mb), so one big file would stop at EFBIG, which
 * proves nothing about the quota); together they pass the quota, and the overlay's scratch
 * filesystem must refuse them with ENOSPC while they are written.
 */
async function quotaIsEnforced(t: TestServer, rt: string): Promise<void> {
  const sb = await createSandbox(t, { language: "python", runtime: rt, limits: { workspace_mb: 1 } });
  const ws = path.join(t.dataDir, "workspaces", sb);
  const deep70 = Array.from({ length: 70 }, (_, i) => `q${i}`).join("/");
  const r = await exec(t, sb, {
    code: [
      "import os",
      `os.makedirs('${deep70}')`,
      "written = 0",
      "try:",
      "    for i in range(8):",
      `        with open(f'${deep70}/part{i}.bin', 'wb') as f:`,
      "            for _ in range(16):",
      "                f.write(b'x' * 65536); f.flush(); written += 65536",
      "except OSError as e:",
      "    print('stopped', e.errno)",
      "print(written)",
    ].join("\n"),
  });
  assert.equal(r.json.workspace_quota_exceeded, true, r.text);
  assert.equal(r.json.error?.code, "WORKSPACE_QUOTA_EXCEEDED");
  assert.match(r.json.stdout, /^stopped 28\n/, `the writes failed with ENOSPC near the quota: ${r.text}`);
  const written = Number(r.json.stdout.split("\n")[1]);
  assert.ok(written > 1024 * 1024 && written < 8 * 1024 * 1024, `${written} bytes were accepted: past the quota, but stopped before all 8 MiB`);
  assert.ok(r.json.files.created.includes(`${deep70}/part0.bin`), "the change set still reports what the run wrote, at depth 70");
  const total = [...filesOnDisk(ws).values()].reduce((a, b) => a + b, 0);
  assert.ok(total <= 1024 * 1024, `${total} bytes landed in a 1 MiB workspace`);
  assert.ok(r.json.workspace_bytes <= 1024 * 1024);
  assert.equal(r.json.committed, false, "a change set over the quota is not committed");
  assert.match(r.json.not_committed_reason, /quota/);
  // /cache is bounded by the same allowance (several files again, each within the file-size limit).
  const c = await exec(t, sb, { code: "try:\n    for i in range(8):\n        open(f'/cache/big{i}', 'wb').write(b'x' * (1 << 20))\nexcept OSError as e:\n    print('cache stopped', e.errno)" });
  assert.match(c.json.stdout, /cache stopped 28/, c.text);
}

/**
 * A run's changes, captured through its overlay: the result's `files`, the audit's per-file
 * records and GET …/changes are compared with what the program did, on every runtime.
 */
for (const warm of ["0", "60000"]) {
  describe(`run changes (PETRI_WARM_IDLE_MS=${warm})`, () => {
    let t: TestServer;
    let names: string[];
    before(async () => {
      t = await startTestServer({ PETRI_RUNTIMES: "all", PETRI_RUNTIME: "auto", PETRI_WARM_IDLE_MS: warm });
      names = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
    });
    after(async () => {
      await t.close();
      // Nothing of any view stays mounted.
      assert.deepEqual(fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), []);
    });

    for (const rt of RUNTIMES) {
      it(`${rt}: files, audit records and the change set match what the program did`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        const sb = await createSandbox(t, { language: "python", runtime: rt });
        const ws = path.join(t.dataDir, "workspaces", sb);
        await putFile(t, sb, "keep.txt", "unchanged");
        await putFile(t, sb, "mod.txt", "before");
        await putFile(t, sb, "del.txt", "to delete");
        await putFile(t, sb, "old/name.txt", "moved content");
        await putFile(t, sb, "gone/a.txt", "a");
        await putFile(t, sb, "gone/sub/b.txt", "bb");
        await putFile(t, sb, "same.txt", "same");
        const r = await exec(t, sb, {
          code: [
            "import os, shutil",
            "open('new.txt', 'w').write('created')",
            "open('mod.txt', 'a').write(' and after')",
            "os.remove('del.txt')",
            "os.makedirs('new', exist_ok=True)",
            "os.rename('old/name.txt', 'new/name.txt')",
            "shutil.rmtree('gone')",
            "open('same.txt', 'w').write('same')  # rewritten with the same content: no change",
            `os.makedirs('${DEEP}')`,
            `open('${DEEP}/deep.txt', 'w').write('deep')`,
            `open(b'${[...BAD_NAME].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}', 'w').write('bad')`,
          ].join("\n"),
        });
        assert.equal(r.json.exit_code, 0, r.text);
        assert.equal(r.json.committed, true);
        const badDisplay = BAD_NAME.toString("utf8");
        assert.deepEqual(r.json.files, {
          created: [`${DEEP}/deep.txt`, badDisplay, "new.txt", "new/name.txt"].sort(),
          modified: ["mod.txt"],
          deleted: ["del.txt", "gone/a.txt", "gone/sub/b.txt", "old/name.txt"],
          // The exact bytes of the name that is not UTF-8.
          non_utf8: [{ change: "created", path: badDisplay, path_b64: BAD_NAME.toString("base64") }],
        });
        // The workspace on disk is what the program left.
        const disk = filesOnDisk(ws);
        assert.deepEqual([...disk.keys()].sort(), [
          latin1(`${DEEP}/deep.txt`), BAD_NAME.toString("latin1"), "keep.txt", "mod.txt", "new.txt", "new/name.txt", "same.txt",
        ].sort());
        assert.equal(fs.readFileSync(path.join(ws, "mod.txt"), "utf8"), "before and after");
        assert.equal(fs.readFileSync(Buffer.concat([Buffer.from(ws + "/"), BAD_NAME]), "utf8"), "bad");
        assert.ok(!fs.existsSync(path.join(ws, "gone")) && fs.existsSync(path.join(ws, "old")));
        assert.equal(fs.statSync(path.join(ws, "new.txt")).uid, loadConfig({}, "/srv").sandboxUid, "committed files belong to the sandbox user");

        // The change set, with sizes and hashes; the non-UTF-8 name carried exactly.
        const cs = (await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}/changes`)).json;
        assert.equal(cs.committed, true);
        const bad = cs.changes.find((c: { path_b64?: string }) => c.path_b64);
        assert.equal(Buffer.from(bad.path_b64, "base64").toString("hex"), BAD_NAME.toString("hex"));
        assert.equal(bad.action, "created");
        assert.equal(bad.size, 3);
        const mod = cs.changes.find((c: { path: string }) => c.path === "mod.txt");
        assert.equal(mod.action, "modified");
        assert.equal(mod.size, 16);
        assert.match(mod.sha256, /^[0-9a-f]{64}$/);
        assert.notEqual(mod.sha256, mod.before_sha256);
        assert.ok(cs.changes.some((c: { path: string; type: string; action: string }) => c.path === "gone/sub" && c.type === "dir" && c.action === "deleted"));
        assert.ok(cs.changes.every((c: { path_b64?: string; path: string }) => c.path_b64 || !c.path.includes("\ufffd")));

        // The audit: one record per change, the move as a rename.
        const recs = await auditFiles(t, r.json.id);
        const of = (a: string) => recs.filter((x) => x.action === a).map((x) => x.path).sort();
        assert.deepEqual(recs.filter((x) => x.action === "file.rename").map((x) => [x.path, x.new_path]), [["old/name.txt", "new/name.txt"]]);
        assert.deepEqual(of("file.modify"), ["mod.txt"]);
        assert.deepEqual(of("file.delete"), ["del.txt", "gone", "gone/a.txt", "gone/sub", "gone/sub/b.txt"]);
        assert.ok(of("file.create").includes(`${DEEP}/deep.txt`) && of("file.create").includes("new"));
        const badRec = recs.find((x) => x.path_b64);
        assert.equal(badRec?.path_b64, BAD_NAME.toString("base64"));
        assert.equal(badRec?.sha256, cs.changes.find((c: { path_b64?: string }) => c.path_b64).sha256);

        // A run that changes nothing reports nothing.
        const idle = await exec(t, sb, { code: "open('keep.txt').read()" });
        assert.deepEqual(idle.json.files, { created: [], modified: [], deleted: [] });
        assert.deepEqual((await auditFiles(t, idle.json.id)), []);
      });

      it(`${rt}: at depth 100 and under names that are not UTF-8, modifications, renames and deletions are exact`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        // How a run's unit started does not change how its writes are captured: one mode is enough.
        if (warm !== "0") return ctx.skip("run with pre-starting off only (capture does not depend on it)");
        const sb = await createSandbox(t, { language: "python", runtime: rt });
        const ws = path.join(t.dataDir, "workspaces", sb);
        const raw = (prefix: string) => Buffer.concat([Buffer.from(prefix), BAD_NAME]);
        const py = (prefix: string) => `b'${[...raw(prefix)].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}'`;
        const shown = (prefix: string) => raw(prefix).toString("utf8");
        // What the files are before the run under test (made by a run: such names cannot be uploaded).
        const setup = await exec(t, sb, {
          code: [
            "import os",
            `os.makedirs('${DEEP}')`,
            `for n in ('mod', 'ren', 'del'): open('${DEEP}/' + n + '.txt', 'w').write(n)`,
            `for p, c in ((${py("mod-")}, 'mod'), (${py("ren-")}, 'ren'), (${py("del-")}, 'del')): open(p, 'w').write(c)`,
          ].join("\n"),
        });
        assert.equal(setup.json.exit_code, 0, setup.text);
        const r = await exec(t, sb, {
          code: [
            "import os",
            `open('${DEEP}/mod.txt', 'a').write('+more')`,
            `os.rename('${DEEP}/ren.txt', '${DEEP}/renamed.txt')`,
            `os.remove('${DEEP}/del.txt')`,
            `open(${py("mod-")}, 'a').write('+more')`,
            `os.rename(${py("ren-")}, ${py("moved-")})`,
            `os.remove(${py("del-")})`,
          ].join("\n"),
        });
        assert.equal(r.json.exit_code, 0, r.text);
        assert.equal(r.json.committed, true);
        const sorted = (a: string[]) => [...a].sort();
        assert.deepEqual(sorted(r.json.files.created), sorted([`${DEEP}/renamed.txt`, shown("moved-")]));
        assert.deepEqual(sorted(r.json.files.modified), sorted([`${DEEP}/mod.txt`, shown("mod-")]));
        assert.deepEqual(sorted(r.json.files.deleted), sorted([`${DEEP}/del.txt`, `${DEEP}/ren.txt`, shown("del-"), shown("ren-")]));
        assert.deepEqual(
          sorted(r.json.files.non_utf8.map((x: { change: string; path_b64: string }) => `${x.change} ${Buffer.from(x.path_b64, "base64").toString("hex")}`)),
          sorted([["created", "moved-"], ["modified", "mod-"], ["deleted", "del-"], ["deleted", "ren-"]].map(([c, p]) => `${c} ${raw(p).toString("hex")}`)),
        );
        // The workspace on disk is what the program left.
        assert.deepEqual([...filesOnDisk(ws).keys()].sort(), [
          latin1(`${DEEP}/mod.txt`), latin1(`${DEEP}/renamed.txt`), raw("mod-").toString("latin1"), raw("moved-").toString("latin1"),
        ].sort());
        assert.equal(fs.readFileSync(path.join(ws, DEEP, "mod.txt"), "utf8"), "mod+more");
        assert.equal(fs.readFileSync(Buffer.concat([Buffer.from(ws + "/"), raw("mod-")]), "utf8"), "mod+more");
        assert.equal(fs.readFileSync(Buffer.concat([Buffer.from(ws + "/"), raw("moved-")]), "utf8"), "ren");

        // The audit: the moves as renames (exact bytes for the name that is not UTF-8), the rest one record each.
        const recs = await auditFiles(t, r.json.id);
        const hexOf = (x: Record<string, any>, k: "path" | "new_path") => x[`${k}_b64`] ? Buffer.from(x[`${k}_b64`], "base64").toString("hex") : Buffer.from(x[k]).toString("hex");
        assert.deepEqual(sorted(recs.map((x) => `${x.action} ${hexOf(x, "path")}${x.new_path ? ` ${hexOf(x, "new_path")}` : ""}`)), sorted([
          `file.rename ${Buffer.from(`${DEEP}/ren.txt`).toString("hex")} ${Buffer.from(`${DEEP}/renamed.txt`).toString("hex")}`,
          `file.rename ${raw("ren-").toString("hex")} ${raw("moved-").toString("hex")}`,
          `file.modify ${Buffer.from(`${DEEP}/mod.txt`).toString("hex")}`,
          `file.modify ${raw("mod-").toString("hex")}`,
          `file.delete ${Buffer.from(`${DEEP}/del.txt`).toString("hex")}`,
          `file.delete ${raw("del-").toString("hex")}`,
        ]));
        // The change set agrees, with the sizes the program left.
        const cs = (await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}/changes`)).json;
        const mod = cs.changes.find((c: { path_b64?: string }) => c.path_b64 && Buffer.from(c.path_b64, "base64").equals(raw("mod-")));
        assert.equal(mod.action, "modified");
        assert.equal(mod.size, "mod+more".length);
        assert.equal(cs.changes.find((c: { path: string }) => c.path === `${DEEP}/mod.txt`).size, "mod+more".length);
      });

      it(`${rt}: commit always, on_success and never`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        const sb = await createSandbox(t, { language: "bash", runtime: rt });
        const ws = path.join(t.dataDir, "workspaces", sb);
        const dry = await exec(t, sb, { code: "echo x > dry.txt", commit: "never" });
        assert.equal(dry.json.committed, false);
        assert.match(dry.json.not_committed_reason, /never/);
        assert.deepEqual(dry.json.files.created, ["dry.txt"]);
        assert.ok(!fs.existsSync(path.join(ws, "dry.txt")));
        const failed = await exec(t, sb, { code: "echo x > fail.txt; exit 3", commit: "on_success" });
        assert.equal(failed.json.exit_code, 3);
        assert.equal(failed.json.committed, false);
        assert.ok(!fs.existsSync(path.join(ws, "fail.txt")));
        const okRun = await exec(t, sb, { code: "echo x > ok.txt; cat dry.txt 2>/dev/null || echo nodry", commit: "on_success" });
        assert.equal(okRun.json.stdout, "nodry\n");
        assert.equal(okRun.json.committed, true);
        assert.ok(fs.existsSync(path.join(ws, "ok.txt")));
        const always = await exec(t, sb, { code: "echo y > always.txt; exit 1" });
        assert.equal(always.json.commit, "always");
        assert.equal(always.json.committed, true);
        assert.equal(fs.readFileSync(path.join(ws, "always.txt"), "utf8"), "y\n");
        const bad = await exec(t, sb, { code: "true", commit: "sometimes" });
        assert.equal(bad.status, 400);
      });

      it(`${rt}: the quota is enforced while writing, at any depth`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        await quotaIsEnforced(t, rt);
      });

      it(`${rt}: a run killed mid-write reports exactly what it left`, async (ctx) => {
        if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
        const sb = await createSandbox(t, { language: "python", runtime: rt });
        const ws = path.join(t.dataDir, "workspaces", sb);
        await putFile(t, sb, "old.txt", "old");
        await putFile(t, sb, "gone.txt", "gone");
        await putFile(t, sb, "grow.txt", "start");
        // A move, a deletion, then two files written in turn until the timeout kills the program.
        const r = await exec(t, sb, {
          code: [
            "import os, time",
            "os.rename('old.txt', 'new.txt')",
            "os.remove('gone.txt')",
            "g = open('grow.txt', 'a')",
            "f = open('partial.bin', 'wb')",
            "print('go', flush=True)",
            "while True:",
            "    f.write(b'y' * 4096); f.flush(); g.write('z'); g.flush(); time.sleep(0.001)",
          ].join("\n"),
          timeout_ms: 1500,
        });
        assert.equal(r.json.timed_out, true, r.text);
        assert.deepEqual(r.json.files, { created: ["new.txt", "partial.bin"], modified: ["grow.txt"], deleted: ["gone.txt", "old.txt"] });
        const partial = fs.readFileSync(path.join(ws, "partial.bin"));
        const chunks = partial.length / 4096;
        assert.ok(Number.isInteger(chunks) && chunks > 0 && partial.every((b) => b === 0x79), `whole 4 KiB writes of 'y' only: ${partial.length} bytes`);
        // Killed between the two writes or after both: one 'z' per chunk, or one fewer.
        const grow = fs.readFileSync(path.join(ws, "grow.txt"), "utf8");
        assert.match(grow, /^startz*$/);
        assert.ok([chunks - 1, chunks].includes(grow.length - 5), `${grow.length - 5} z for ${chunks} chunks`);
        assert.equal(fs.readFileSync(path.join(ws, "new.txt"), "utf8"), "old");
        assert.deepEqual([...filesOnDisk(ws).keys()].sort(), ["grow.txt", "new.txt", "partial.bin"]);
        const cs = (await t.api("GET", `/v1/sandboxes/${sb}/exec/${r.json.id}/changes`)).json;
        const sizeOf = (p: string) => cs.changes.find((c: { path: string }) => c.path === p)?.size;
        assert.equal(sizeOf("partial.bin"), partial.length);
        assert.equal(sizeOf("grow.txt"), grow.length);
        const recs = await auditFiles(t, r.json.id);
        assert.deepEqual(recs.map((x) => [x.action, x.path, x.new_path ?? null, x.action === "file.delete" ? null : x.size ?? null]).sort(), [
          ["file.create", "partial.bin", null, partial.length],
          ["file.delete", "gone.txt", null, null],
          ["file.modify", "grow.txt", null, grow.length],
          ["file.rename", "old.txt", "new.txt", 3],
        ]);
      });
    }

    it("two runs of one sandbox take turns; an upload during a run wins over the run's write", async (ctx) => {
      if (!names.includes("bwrap")) return ctx.skip("bwrap not available on this host");
      const sb = await createSandbox(t, { language: "bash", runtime: "bwrap" });
      const ws = path.join(t.dataDir, "workspaces", sb);
      await putFile(t, sb, "log.txt", "");
      const both = await Promise.all([1, 2].map((i) => exec(t, sb, { code: `v=$(cat log.txt); sleep 0.5; printf '%s%s' "$v" ${i} > log.txt` })));
      for (const b of both) assert.equal(b.json.committed, true, b.text);
      assert.ok(["12", "21"].includes(fs.readFileSync(path.join(ws, "log.txt"), "utf8")), "neither run's write was lost");

      const running = await exec(t, sb, { code: "sleep 2; echo run > up.txt; echo run > mine.txt", detach: true });
      await new Promise((r) => setTimeout(r, 700));
      await putFile(t, sb, "up.txt", "upload");
      let res;
      for (;;) {
        res = await t.api("GET", `/v1/sandboxes/${sb}/exec/${running.json.id}`);
        if (res.json.status !== "running") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(res.json.conflicts, ["up.txt"], res.text);
      assert.equal(fs.readFileSync(path.join(ws, "up.txt"), "utf8"), "upload");
      assert.equal(fs.readFileSync(path.join(ws, "mine.txt"), "utf8"), "run\n");
    });

    it("each run sees the workspace as the previous run and uploads left it", async (ctx) => {
      const rts = ["runc", "bwrap"].filter((rt) => names.includes(rt));
      if (rts.length === 0) return ctx.skip("neither runc nor bwrap is available on this host");
      for (const rt of rts) {
        const sb = await createSandbox(t, { language: "bash", runtime: rt });
        for (let i = 0; i < 3; i++) {
          const r = await exec(t, sb, { code: `cat n.txt 2>/dev/null; echo ${i} > n.txt` });
          assert.equal(r.json.stdout, i === 0 ? "" : `${i - 1}\n`, `${rt} run ${i}: ${r.text}`);
          await putFile(t, sb, `u${i}.txt`, "u");
          const seen = await exec(t, sb, { code: `ls u${i}.txt` });
          assert.equal(seen.json.stdout, `u${i}.txt\n`, `${rt}: an upload between runs is seen by the next run`);
        }
      }
    });
  });
}

/**
 * Where loop devices do not work, runs write into a tmpfs of the quota's size: the quota is still
 * enforced by the kernel while the run writes (PETRI_RUN_SCRATCH=tmpfs forces that mode here).
 */
describe("run changes with the tmpfs scratch (no loop devices)", () => {
  let t: TestServer;
  let names: string[];
  before(async () => {
    t = await startTestServer({ PETRI_RUNTIMES: "runc,bwrap", PETRI_RUNTIME: "auto", PETRI_WARM_IDLE_MS: "0", PETRI_RUN_SCRATCH: "tmpfs" });
    names = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((x: { name: string }) => x.name);
  });
  after(async () => {
    await t.close();
    assert.deepEqual(fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), []);
  });
  for (const rt of ["runc", "bwrap"]) {
    it(`${rt}: the scratch is a tmpfs, changes are committed, the quota is enforced while writing`, async (ctx) => {
      if (!names.includes(rt)) return ctx.skip(`${rt} not available on this host`);
      const sb = await createSandbox(t, { language: "bash", runtime: rt });
      const r = await exec(t, sb, { code: "echo hi > a.txt; grep ' /workspace ' /proc/self/mountinfo | head -1" });
      assert.deepEqual(r.json.files.created, ["a.txt"], r.text);
      assert.equal(fs.readFileSync(path.join(t.dataDir, "workspaces", sb, "a.txt"), "utf8"), "hi\n");
      // The run's scratch is kept mounted (emptied) for the sandbox's next run: it is a tmpfs.
      const scratches = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.split(" ")[4]?.includes(`${t.dataDir}/views/scratch/`));
      assert.ok(scratches.length > 0 && scratches.every((l) => / - tmpfs /.test(l)), scratches.join("\n"));
      await quotaIsEnforced(t, rt);
    });
  }
});

describe("workspace views after a crash", () => {
  it("views a crash left mounted are unmounted at start-up, the workspace untouched", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-crash-"));
    const mounted = () => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(dataDir)).length;
    try {
      const lower = path.join(dataDir, "lower");
      fs.mkdirSync(lower);
      fs.writeFileSync(path.join(lower, "keep.txt"), "kept");
      const root = path.join(dataDir, "views");
      const pool = new ScratchPool(root, { keep: 1, idleMs: 1000 });
      const v = await WorkspaceView.open({ root, id: "vw_crashed", lowerWorkspace: lower, lowerCache: lower, limitBytes: 1 << 20, uid: 1000, gid: 1000 }, pool);
      fs.writeFileSync(path.join(v.workspace, "new.txt"), "x");
      assert.equal(mounted(), 3, "scratch, workspace and cache overlays are mounted");
      // The crashed view's own mounts (the new server keeps a fresh scratch made ahead beside them).
      const crashedMounts = [v.workspace, v.cache, v.scratch.fs];
      const crashedMounted = () => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => crashedMounts.includes(l.split(" ")[4] ?? "")).length;
      assert.equal(crashedMounted(), 3);
      // The process "dies" here: nothing unmounts. A new server on the same data directory:
      const config = loadConfig({ PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: "pk_test_crash_0123456789", PETRI_PORT: "0", PETRI_LOG_LEVEL: "silent", PETRI_RUNTIMES: "bwrap" });
      const server = await createServer(config, { logger: pino({ level: "silent" }) });
      try {
        assert.equal(crashedMounted(), 0);
        assert.ok(!fs.existsSync(path.join(root, "vw_crashed")), "the crashed view is gone");
        assert.deepEqual(fs.readdirSync(lower), ["keep.txt"]);
      } finally {
        await server.close();
      }
      assert.equal(mounted(), 0, "nothing of the server's (its scratch made ahead included) is left mounted after close");
    } finally {
      for (let i = 0; i < 3 && mounted() > 0; i++) await new Promise((r) => setTimeout(r, 100));
      if (mounted() === 0) fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
