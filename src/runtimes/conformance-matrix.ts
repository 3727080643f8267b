import fs from "node:fs";
import Docker from "dockerode";
import { rootfsDirFor } from "../images/build.js";
import { BUILTIN_IMAGES, recipeRef } from "../images/catalog.js";
import { BwrapRuntime } from "./bwrap.js";
import { runtimeConformanceSuite } from "./conformance.js";
import { sweepDeadConformanceRuns } from "./conformance-sweep.js";
import { warmEquivalenceSuite } from "./warm-conformance.js";
import { bwrapStrategy, dockerStrategy, ociDirectStrategy, type RuntimeProbe } from "./detect.js";
import { DockerRuntime } from "./docker.js";
import { OciRuntime, type OciKind } from "./oci.js";
import type { RunSpec } from "./types.js";

/**
 * The conformance matrix: every runtime this host can offer, on every image the tests use
 * (scripts/setup.sh builds them), in three modes — cold runs ("off"), runs in pre-started units
 * ("on"), and each runtime's warm path against its cold path ("warm"). A runtime or image the
 * host lacks is skipped with the probe's reason (so the output says what to fix), never silently.
 * The matrix is cut into several test files (conformance-*.test.ts) so that each stays well under
 * the runner's per-file time limit on a loaded machine; together they cover all of it.
 */

export const IMAGE_DIR = "/var/lib/petri/images";
export const TESTED_IMAGES = ["standard", "datascience"] as const;
export const UID = 1000;
export const GID = 1000;

export const specFor = (image: string) => (workspaceDir: string): RunSpec => ({
    image,
    rootfs: rootfsDirFor(IMAGE_DIR, image),
    argv: [],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/workspace", LANG: "C.UTF-8" },
    cwd: "/workspace",
    mounts: [{ source: workspaceDir, target: "/workspace", readonly: false }],
    limits: {
      memoryBytes: 256 * 1024 * 1024,
      cpus: 1,
      pids: 128,
      openFiles: 256,
      fileSizeBytes: 64 * 1024 * 1024,
      tmpfsBytes: 16 * 1024 * 1024,
    },
    timeoutMs: 60_000,
    outputLimitBytes: 1024 * 1024,
    uid: UID,
    gid: GID,
    labels: { "io.jhansi.petri": "conformance" },
  });

export const skipReason = (p: RuntimeProbe) => (p.available ? false : `${p.id} unavailable: ${p.reason}`);
// PETRI_TEST_DOCKER_SOCKET: another engine than the shared one (test/helpers.ts says the same).
const DOCKER_SOCKET = process.env.PETRI_TEST_DOCKER_SOCKET || "/var/run/docker.sock";
export const docker = fs.existsSync(DOCKER_SOCKET) ? new Docker({ socketPath: DOCKER_SOCKET }) : undefined;

export type Mode = "off" | "on" | "warm";
export type Family = "docker" | "bwrap" | "direct";
export interface Selection { images: readonly string[]; modes: readonly Mode[]; families: readonly Family[] }

export async function conformanceMatrix(sel: Selection): Promise<void> {
  const want = (mode: Mode, family: Family) => sel.modes.includes(mode) && sel.families.includes(family);
  const swept = await sweepDeadConformanceRuns();
  if (swept > 0) console.log(`# conformance: killed ${swept} processes left by a conformance file that was killed before its clean-up`);
  for (const name of sel.images) {
    const image = recipeRef(BUILTIN_IMAGES[name]);
    const spec = specFor(image);
    const probeOpts = { image, rootfs: rootfsDirFor(IMAGE_DIR, image), sandboxUid: UID, sandboxGid: GID };
    const p = {
      runc: await dockerStrategy("runc", { ...probeOpts, docker }).probe(),
      crun: await dockerStrategy("crun", { ...probeOpts, docker }).probe(),
      runsc: await dockerStrategy("runsc", { ...probeOpts, docker }).probe(),
      bwrap: await bwrapStrategy(probeOpts).probe(),
    };

    if (want("off", "docker")) for (const oci of ["runc", "crun", "runsc"] as const) {
      runtimeConformanceSuite(
        `docker/${oci} [${name}]`,
        async () => ({ runtime: new DockerRuntime({ docker: docker!, ociRuntime: oci }), baseSpec: spec }),
        {
          skip: skipReason(p[oci]),
          // gVisor's pid 1 does take self-sent signals; runc and crun follow the kernel's pid 1 rules.
          knownGaps: {},
          slowCases: name === "standard",
        },
      );
    }

    if (want("off", "bwrap")) runtimeConformanceSuite(`bwrap [${name}]`, async () => ({ runtime: new BwrapRuntime(), baseSpec: spec }), { skip: skipReason(p.bwrap), slowCases: name === "standard" });

    // The OCI runtimes called directly, without dockerd (src/runtimes/oci.ts).
    const direct = {} as Record<OciKind, RuntimeProbe>;
    for (const kind of ["runc", "crun", "runsc"] as OciKind[]) {
      const probe = (direct[kind] = await ociDirectStrategy(kind, probeOpts).probe());
      const tag = `${process.pid}-${kind}-${name}`;
      if (want("off", "direct")) runtimeConformanceSuite(
        `${kind}-direct [${name}]`,
        async () => {
          const runtime = new OciRuntime({ kind, stateDir: `/run/petri/conformance-${tag}/${kind}-direct`, cgroupParent: `petri-conformance-${tag}` });
          // crun from its sealed copy, as the server runs it, for every case.
          await runtime.binaryReady;
          return { runtime, baseSpec: spec };
        },
        { skip: skipReason(probe), slowCases: name === "standard" },
      );
    }

    // Pre-starting on, as in production (issue 9), on every runtime and image: every run is made to
    // start in a pre-started unit and checked to have done so, and every Python run to have run in
    // that unit's warm interpreter (conformance.ts).
    if (sel.modes.includes("on")) {
      const warm = { idleMs: 60_000, images: new Set([image]) };
      const on = { prestart: true, slowCases: false, dataStack: name === "datascience" };
      if (want("on", "docker")) for (const oci of ["runc", "crun", "runsc"] as const) {
        runtimeConformanceSuite(`docker/${oci} [${name}], pre-start on`,
          async () => ({ runtime: new DockerRuntime({ docker: docker!, ociRuntime: oci, warm }), baseSpec: spec }),
          { ...on, skip: skipReason(p[oci]), warmInterpreters: true });
      }
      if (want("on", "bwrap")) runtimeConformanceSuite(`bwrap [${name}], pre-start on`, async () => ({ runtime: new BwrapRuntime({ warm }), baseSpec: spec }),
        { ...on, skip: skipReason(p.bwrap), warmInterpreters: true });
      if (want("on", "direct")) for (const kind of ["runc", "crun", "runsc"] as OciKind[]) {
        const tag = `${process.pid}-${kind}-${name}-prestart`;
        runtimeConformanceSuite(`${kind}-direct [${name}], pre-start on`,
          async () => {
            const runtime = new OciRuntime({ kind, warm, stateDir: `/run/petri/conformance-${tag}/${kind}-direct`, cgroupParent: `petri-conformance-${tag}` });
            await runtime.binaryReady;
            return { runtime, baseSpec: spec };
          },
          { ...on, skip: skipReason(direct[kind]), warmInterpreters: true });
      }
    }

    // Warm interpreters: each runtime's warm path against its cold path (docs/warm.md).
    const warm = { idleMs: 120_000, images: new Set([image]) };
    const datascience = name === "datascience";
    if (want("warm", "docker")) for (const oci of ["runc", "crun", "runsc"] as const) {
      warmEquivalenceSuite(`docker/${oci} [${name}]`, async () => ({
        warm: new DockerRuntime({ docker: docker!, ociRuntime: oci, warm }),
        cold: new DockerRuntime({ docker: docker!, ociRuntime: oci }),
        baseSpec: spec,
      }), { skip: skipReason(p[oci]), datascience });
    }
    if (want("warm", "bwrap")) warmEquivalenceSuite(`bwrap [${name}]`, async () => ({ warm: new BwrapRuntime({ warm }), cold: new BwrapRuntime(), baseSpec: spec }), { skip: skipReason(p.bwrap), datascience });
    if (want("warm", "direct")) for (const kind of ["runc", "crun", "runsc"] as OciKind[]) {
      const tag = `${process.pid}-${kind}-warm-${name}`;
      warmEquivalenceSuite(`${kind}-direct [${name}]`, async () => ({
        warm: new OciRuntime({ kind, warm, stateDir: `/run/petri/conformance-${tag}/warm/${kind}-direct`, cgroupParent: `petri-conformance-${tag}-w` }),
        cold: new OciRuntime({ kind, stateDir: `/run/petri/conformance-${tag}/cold/${kind}-direct`, cgroupParent: `petri-conformance-${tag}-c` }),
        baseSpec: spec,
      }), { skip: skipReason(direct[kind]), datascience });
    }
  }
}

/** The probe of Docker's runsc on the standard image (for tests beside the matrix). */
export async function standardRunscProbe(): Promise<{ probe: RuntimeProbe; baseSpec: (workspaceDir: string) => RunSpec }> {
  const image = recipeRef(BUILTIN_IMAGES.standard);
  const probeOpts = { image, rootfs: rootfsDirFor(IMAGE_DIR, image), sandboxUid: UID, sandboxGid: GID };
  return { probe: await dockerStrategy("runsc", { ...probeOpts, docker }).probe(), baseSpec: specFor(image) };
}

/** Said in the test output, not as a test (it has nothing to check): which suites run in which mode. */
export function sayModes(): void {
  console.log(`pre-start modes: on and off for docker/runc, docker/crun, docker/runsc, bwrap, runc-direct, crun-direct, runsc-direct on ${TESTED_IMAGES.join(", ")}; `
    + "with pre-start on, every run must start in a pre-started unit and every Python run in its warm interpreter; "
    + `on ${TESTED_IMAGES.slice(1).join(", ")} the pre-start-on pass runs the Python cases only (programs import numpy, so they run in the interpreter that pre-imported the data stack), the rest of its cases being the first image's`);
}
