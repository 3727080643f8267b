import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { ociConfig, MASKED_PATHS, READONLY_PATHS } from "./oci-spec.js";
import { ensureInRoot } from "./oci-rootfs.js";
import { DENIED_BY_PETRI, petriSeccompProfile } from "./seccomp.js";
import type { RunSpec } from "./types.js";

const spec: RunSpec = {
  image: "img", rootfs: "/img", argv: ["python3", "-c", "print(1)"], env: { PATH: "/usr/bin", A: "b=c" }, cwd: "/workspace",
  mounts: [{ source: "/ws", target: "/workspace", readonly: false }, { source: "/broker", target: "/petri/broker", readonly: true }],
  limits: { memoryBytes: 1 << 28, cpus: 0.5, pids: 64, openFiles: 100, fileSizeBytes: 1 << 20, tmpfsBytes: 1 << 24 },
  timeoutMs: 1000, outputLimitBytes: 1000, uid: 65600, gid: 65600, labels: { "io.jhansi.petri.sandbox": "sb_1" },
};

type Cfg = {
  process: { user: { uid: number; gid: number; additionalGids: number[] }; args: string[]; env: string[]; capabilities: Record<string, string[]>; noNewPrivileges: boolean; rlimits: { type: string; hard: number }[] };
  root: { readonly: boolean; path: string };
  mounts: { destination: string; type: string; source: string; options: string[] }[];
  annotations: Record<string, string>;
  linux: { namespaces: { type: string; path?: string }[]; seccomp?: { syscalls: { names: string[]; action: string }[] }; maskedPaths: string[]; readonlyPaths: string[]; cgroupsPath: string; resources: Record<string, unknown> };
};

const make = (seccomp = true, limitsInSpec = false) => ociConfig(spec, {
  rootfs: "/layer/merged", initPath: "/sbin/docker-init", initSource: "/usr/bin/tini-static", cgroupsPath: "/petri-x/r-1/c",
  annotations: spec.labels, seccomp: seccomp ? petriSeccompProfile() : null, limitsInSpec,
}) as unknown as Cfg;

test("the bundle's config carries the Docker path's hardening", () => {
  const c = make();
  assert.equal(c.root.readonly, true);
  assert.equal(c.root.path, "/layer/merged");
  assert.deepEqual(c.process.user, { uid: 65600, gid: 65600, additionalGids: [] });
  for (const set of Object.values(c.process.capabilities)) assert.deepEqual(set, []);
  assert.equal(c.process.noNewPrivileges, true);
  assert.deepEqual(c.process.args, ["/sbin/docker-init", "--", "python3", "-c", "print(1)"]);
  assert.deepEqual(c.process.env, ["PATH=/usr/bin", "A=b=c"]);
  const rl = Object.fromEntries(c.process.rlimits.map((r) => [r.type, r.hard]));
  assert.deepEqual(rl, { RLIMIT_NOFILE: 100, RLIMIT_FSIZE: 1 << 20, RLIMIT_CORE: 0 });
  // A new network namespace (no path): only loopback. No user namespace: uid 65600 is the host's.
  const ns = c.linux.namespaces.map((n) => n.type).sort();
  assert.deepEqual(ns, ["cgroup", "ipc", "mount", "network", "pid", "uts"]);
  assert.ok(c.linux.namespaces.every((n) => n.path === undefined));
  assert.deepEqual(c.linux.maskedPaths, MASKED_PATHS);
  assert.deepEqual(c.linux.readonlyPaths, READONLY_PATHS);
  assert.ok(c.linux.maskedPaths.includes("/proc/kcore"));
  assert.equal(c.linux.cgroupsPath, "/petri-x/r-1/c");
  assert.deepEqual(c.annotations, { "io.jhansi.petri.sandbox": "sb_1" });
  const allowed = new Set(c.linux.seccomp!.syscalls.filter((s) => s.action === "SCMP_ACT_ALLOW").flatMap((s) => s.names));
  for (const denied of DENIED_BY_PETRI.filter((d) => d !== "clone3")) assert.ok(!allowed.has(denied), `${denied} allowed`);
  // Limits live on Petri's run cgroup above the container's, not in the container's own.
  assert.equal(c.linux.resources.memory, undefined);
  assert.deepEqual(make(true, true).linux.resources.pids, { limit: 64 });
  assert.equal(make(false).linux.seccomp, undefined);
});

test("mounts: /tmp a sized tmpfs, binds nosuid and nodev, the read-only ones ro, init read-only", () => {
  const c = make();
  const by = Object.fromEntries(c.mounts.map((m) => [m.destination, m]));
  assert.equal(by["/tmp"].type, "tmpfs");
  assert.ok(by["/tmp"].options.includes(`size=${1 << 24}`));
  assert.ok(by["/sys"].options.includes("ro"));
  assert.deepEqual(by["/workspace"].options.filter((o) => ["rw", "ro", "nosuid", "nodev"].includes(o)), ["rw", "nosuid", "nodev"]);
  assert.deepEqual(by["/petri/broker"].options.filter((o) => ["rw", "ro", "nosuid", "nodev"].includes(o)), ["ro", "nosuid", "nodev"]);
  assert.equal(by["/sbin/docker-init"].source, "/usr/bin/tini-static");
  assert.ok(by["/sbin/docker-init"].options.includes("ro"));
});

test("mount points are made inside the root, following the image's symlinks only inside it", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-oci-root-"));
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), "petri-oci-outside-"));
  try {
    fs.mkdirSync(path.join(root, "usr/sbin"), { recursive: true });
    fs.symlinkSync("usr/sbin", path.join(root, "sbin"));
    fs.symlinkSync(outside, path.join(root, "escape")); // absolute: means <root><outside>, never the host's
    ensureInRoot(root, "/sbin/docker-init", "file");
    assert.ok(fs.statSync(path.join(root, "usr/sbin/docker-init")).isFile());
    ensureInRoot(root, "/petri/broker", "dir");
    assert.ok(fs.statSync(path.join(root, "petri/broker")).isDirectory());
    ensureInRoot(root, "/escape/x", "dir");
    assert.deepEqual(fs.readdirSync(outside), [], "nothing was made outside the root");
    assert.ok(fs.statSync(path.join(root, outside, "x")).isDirectory());
    assert.throws(() => ensureInRoot(root, "/a/../b", "dir"));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  }
});
