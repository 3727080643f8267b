import { petriSeccompProfile, type SeccompProfile } from "./seccomp.js";
import type { RunSpec } from "./types.js";

/**
 * The OCI runtime-spec `config.json` of one direct run (runc, crun or runsc without dockerd):
 * the same hardening the Docker path asks the engine for (src/runtimes/docker.ts), written out
 * the way dockerd would hand it to the OCI runtime. A pure function of the run, so the hardening
 * can be read and unit-tested in one place.
 *
 * - read-only root (the image's root filesystem), a private /tmp tmpfs, /dev a small tmpfs with
 *   the default devices only (device cgroup: deny all but those), /proc and /sys as Docker has
 *   them (masked and read-only paths are Docker's defaults);
 * - new pid, network (loopback only), ipc, uts, mount and cgroup namespaces; no user namespace,
 *   as with Docker: the run's uid is the host uid (65600, no account has it);
 * - every capability dropped, no_new_privs, Petri's seccomp allow-list (seccomp.ts);
 * - rlimits NOFILE, FSIZE, CORE=0;
 * - a minimal init (tini, Docker's docker-init) as pid 1, so the program's own signals take effect
 *   and orphans are reaped;
 * - memory (no swap), CPU and pids limits live on the run's cgroup, which Petri creates above the
 *   container's (`cgroupsPath` is its child), so the counters (peak memory, CPU time, OOM kills)
 *   outlive the container and can be read after it is gone.
 */
export interface OciBundleOptions {
  /** Absolute path of the root filesystem (the image's, with its mount points present). */
  rootfs: string;
  /** Where the init binary is mounted inside the run, or null to run the program as pid 1. */
  initPath: string | null;
  /** Host path of the init binary (bind-mounted read-only at initPath). */
  initSource?: string;
  /** cgroupsPath given to the runtime, e.g. "/petri-crun-direct-x/r-1-a/c". */
  cgroupsPath: string;
  /** Annotations (the run's labels) so the state directory says whose a container is. */
  annotations: Record<string, string>;
  /** Petri's seccomp profile; null for gVisor, whose Sentry implements syscalls itself. */
  seccomp: SeccompProfile | null;
  /**
   * Also hand memory/CPU/pids limits to the runtime for the container's own cgroup. Off for
   * runc and crun: with equal limits on both levels the OOM kill is charged to the container's
   * cgroup, which the runtime removes with the container, so it could not be read afterwards.
   */
  limitsInSpec?: boolean;
  /** The pids limit handed to the runtime when `limitsInSpec` (default: the run's own). */
  specPids?: number;
  /** More rlimits (gVisor: RLIMIT_NPROC, the guest's pids limit enforced by the Sentry). */
  extraRlimits?: { type: string; hard: number; soft: number }[];
  hostname?: string;
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** Docker 20.10's defaults (oci/defaults.go), which the Docker path gets too. */
export const MASKED_PATHS = [
  "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
  "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
];
export const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

const CPU_PERIOD_US = 100_000;

export function ociConfig(spec: RunSpec, opts: OciBundleOptions): Record<string, unknown> {
  const argv = opts.initPath ? [opts.initPath, "--", ...spec.argv] : spec.argv;
  const mounts: OciMount[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", `size=${spec.limits.tmpfsBytes}`] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", `size=${spec.limits.tmpfsBytes}`] },
  ];
  if (opts.initPath && opts.initSource) {
    mounts.push({ destination: opts.initPath, type: "bind", source: opts.initSource, options: ["bind", "ro", "nosuid", "nodev"] });
  }
  for (const m of spec.mounts) {
    mounts.push({ destination: m.target, type: "bind", source: m.source, options: ["rbind", m.readonly ? "ro" : "rw", "nosuid", "nodev", "rprivate"] });
  }
  const quota = Math.max(1000, Math.round(spec.limits.cpus * CPU_PERIOD_US));
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: spec.uid, gid: spec.gid, additionalGids: [] },
      args: argv,
      env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      cwd: spec.cwd,
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [
        { type: "RLIMIT_NOFILE", hard: spec.limits.openFiles, soft: spec.limits.openFiles },
        { type: "RLIMIT_FSIZE", hard: spec.limits.fileSizeBytes, soft: spec.limits.fileSizeBytes },
        { type: "RLIMIT_CORE", hard: 0, soft: 0 },
        ...(opts.extraRlimits ?? []),
      ],
      noNewPrivileges: true,
      oomScoreAdj: 0,
    },
    root: { path: opts.rootfs, readonly: true },
    hostname: opts.hostname ?? "sandbox",
    mounts,
    annotations: opts.annotations,
    linux: {
      cgroupsPath: opts.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        ...(opts.limitsInSpec ? {
          memory: { limit: spec.limits.memoryBytes, swap: spec.limits.memoryBytes },
          cpu: { quota, period: CPU_PERIOD_US },
          pids: { limit: opts.specPids ?? spec.limits.pids },
        } : {}),
      },
      namespaces: [{ type: "pid" }, { type: "network" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }],
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      ...(opts.seccomp ? { seccomp: opts.seccomp } : {}),
    },
  };
}

export { petriSeccompProfile };
