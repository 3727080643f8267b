import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ociDirectStrategy } from "../src/runtimes/detect.js";
import { OciRuntime } from "../src/runtimes/oci.js";
import { IMAGE_DIR, specFor } from "../src/runtimes/conformance-matrix.js";
import { rootfsDirFor } from "../src/images/build.js";
import { BUILTIN_IMAGES, recipeRef } from "../src/images/catalog.js";

/**
 * crun-direct runs crun from one sealed in-memory copy of its binary (oci.ts sealedBinary): crun
 * 1.8 otherwise copies its binary and executes itself again from the copy on every container
 * start (its CVE-2019-5736 guard). Observed from outside: the copy cannot be written, runs work
 * from it, and crun no longer re-executes itself during a run (execveat(2) calls of this process's
 * runtime children, counted in the kernel with bpftrace), where the same runtime run from its
 * installed binary does (so the count can fail).
 */
const STANDARD = recipeRef(BUILTIN_IMAGES.standard);
const probe = await ociDirectStrategy("crun", { image: STANDARD, rootfs: rootfsDirFor(IMAGE_DIR, STANDARD), sandboxUid: 65600, sandboxGid: 65600 }).probe();
const hasBpftrace = fs.existsSync("/usr/bin/bpftrace") || fs.existsSync("/usr/sbin/bpftrace");

/** Counts the execveat(2) calls (a runtime re-executing itself from its copy) of this process's children while `body` runs. */
async function countReExecs(body: () => Promise<void>): Promise<number> {
  const me = process.pid;
  const prog = `tracepoint:syscalls:sys_enter_execveat /curtask->real_parent->tgid == ${me}/ { @n++; }
    BEGIN { @n = 0; printf("ready\\n"); } END { printf("reexecs %d\\n", @n); clear(@n); }`;
  const bt = spawn("bpftrace", ["-e", prog], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  bt.stdout.on("data", (b: Buffer) => { out += b.toString(); });
  bt.stderr.on("data", () => undefined);
  const ended = new Promise<void>((r) => bt.once("exit", () => r()));
  try {
    for (let i = 0; i < 300 && !out.includes("ready"); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(out.includes("ready"), "bpftrace attached");
    await body();
  } finally {
    bt.kill("SIGINT");
    await Promise.race([ended, new Promise((r) => setTimeout(r, 20_000))]);
    if (bt.exitCode === null && bt.signalCode === null) bt.kill("SIGKILL");
  }
  const m = /reexecs (\d+)/.exec(out);
  assert.ok(m, `bpftrace printed its count: ${out}`);
  return Number(m[1]);
}

describe("crun-direct: crun runs from a sealed copy made once", { skip: probe.available ? false : `SKIPPED: crun-direct is not available on this host: ${probe.reason}` }, () => {
  it("the copy cannot be written, a run works from it, and crun no longer re-executes itself per run", { skip: hasBpftrace ? false : "SKIPPED: bpftrace is not installed (scripts/setup.sh installs it)" }, async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "petri-crun-sealed-"));
    fs.chmodSync(work, 0o777);
    const tag = `${process.pid}`;
    const sealed = new OciRuntime({ kind: "crun", stateDir: `/run/petri/test-sealed-${tag}/on`, cgroupParent: `petri-test-sealed-${tag}-on` });
    const plain = new OciRuntime({ kind: "crun", sealedBinary: false, stateDir: `/run/petri/test-sealed-${tag}/off`, cgroupParent: `petri-test-sealed-${tag}-off` });
    try {
      await sealed.binaryReady;
      assert.match(sealed.executable, new RegExp(`^/proc/${process.pid}/fd/\\d+$`), "crun runs from this process's sealed copy");
      assert.equal(plain.executable.startsWith("/proc/"), false);
      const fd = fs.openSync(sealed.executable, "r+");
      try {
        assert.throws(() => fs.writeSync(fd, "x", 0), /EPERM/, "sealed against writes");
      } finally {
        fs.closeSync(fd);
      }
      const spec = { ...specFor(STANDARD)(work), argv: ["/bin/sh", "-c", "echo ran-$(id -u)"] };
      let outSealed = "";
      const withSealed = await countReExecs(async () => {
        const r = await sealed.run(spec);
        assert.equal(r.exitCode, 0, r.stderr.toString());
        outSealed = r.stdout.toString();
      });
      assert.equal(outSealed.trim(), "ran-1000");
      assert.equal(withSealed, 0, "crun did not re-execute itself");
      const withPlain = await countReExecs(async () => {
        const r = await plain.run(spec);
        assert.equal(r.exitCode, 0, r.stderr.toString());
      });
      assert.ok(withPlain >= 1, `crun from its installed binary re-executes itself (${withPlain}): the count sees it`);
    } finally {
      await sealed.close();
      await plain.close();
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
