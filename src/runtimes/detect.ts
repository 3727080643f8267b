import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Docker from "dockerode";
import { BwrapRuntime, hostCgroupPlan } from "./bwrap.js";
import { OciRuntime, findBinary, findInit, type OciKind } from "./oci.js";
import type { RuntimeInfo } from "./types.js";

/**
 * Picks the runtime Petri runs code with, by probing the host with an ordered list of strategies
 * (testcontainers style): each says whether it applies and, when not, why and how to fix it.
 * Probes really run something (a trivial container, a trivial sandbox) because "installed" is
 * not "works": crun, for one, is registered on hybrid-cgroup hosts and then refuses every run.
 *
 * There is no unsandboxed strategy. When nothing is available, `pickRuntime` returns null and
 * the server must refuse to run code.
 */

export interface RuntimeProbe extends RuntimeInfo {
  /** Stable id, e.g. "docker/crun" or "bwrap". */
  id: string;
  /** Shell command(s) or steps that make an unavailable runtime available. */
  fix?: string;
  /** How long the probe took, ms. */
  probeMs?: number;
  /** runsc-direct: whether the test container's run was traced by gVisor's strace, and if not why. */
  trace?: { ok: boolean; reason: string };
}

export interface RuntimeStrategy {
  id: string;
  probe(): Promise<RuntimeProbe>;
}

export interface DetectOptions {
  dockerSocket?: string;
  /** A Docker client to use instead of one on `dockerSocket` (tests). */
  docker?: Docker;
  /** Image the docker probes run (and that must be present). */
  image?: string;
  /** Root filesystem the bwrap probe runs from. */
  rootfs?: string;
  /** OCI runtimes to probe, in order of preference; defaults to crun, runc, runsc. */
  ociRuntimes?: string[];
  /** Put this OCI runtime first (PETRI_OCI_RUNTIME). */
  preferredOciRuntime?: string;
  /** Put this runtime ("docker" or "bwrap") first (PETRI_RUNTIME). */
  preferredRuntime?: string;
  /** Run a trivial container/sandbox to prove each runtime works (default true). */
  verify?: boolean;
  bwrapPath?: string;
  sandboxUid?: number;
  sandboxGid?: number;
  /** Replace the strategies entirely (tests). */
  strategies?: RuntimeStrategy[];
  /** Per-probe time budget, ms (default 30 s: a cold gVisor start can take several seconds). */
  probeTimeoutMs?: number;
}

const DOCKER_INSTALL = "apt-get install -y docker.io && (setsid dockerd >/var/log/dockerd.log 2>&1 &)";

/** Commands that let crun work on a hybrid v1/v2 cgroup host (see docs/runtimes.md). */
export const CRUN_HYBRID_FIX = [
  "# move every controller off the cgroup v2 hierarchy of this hybrid host, each onto a v1 hierarchy of its own",
  "if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then",
  "  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do",
  "    mountpoint -q /sys/fs/cgroup/$c || { mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; }",
  "  done",
  "fi",
].join("\n");

function registerRuntimeFix(oci: string): string {
  const conf = oci === "runsc"
    ? `"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none", "--host-uds=open", "--oci-seccomp"]}`
    : `"${oci}": {"path": "/usr/bin/${oci}"}`;
  return `apt-get install -y ${oci === "runsc" ? "runsc" : oci}; add {"runtimes": {${conf}}} to /etc/docker/daemon.json (scripts/setup.sh does both); then reload dockerd (SIGHUP)`;
}

/**
 * Why a gVisor registration cannot carry Petri's seccomp profile, or null. Docker hands the
 * profile to runsc in the spec, but runsc applies it only with --oci-seccomp; without it the
 * sandboxed program could call io_uring_setup and the rest Petri refuses on every other
 * runtime, so such a registration is refused (fail closed) rather than offered silently weaker.
 */
export function gvisorSeccompGap(ociRuntime: string, runtimes: Record<string, unknown>): string | null {
  if (!ociRuntime.startsWith("runsc")) return null;
  const args = (runtimes[ociRuntime] as { runtimeArgs?: unknown } | undefined)?.runtimeArgs;
  const ok = Array.isArray(args) && args.some((a) => /^--?oci-seccomp(=true)?$/.test(String(a)));
  return ok ? null : `OCI runtime ${ociRuntime} is registered with Docker without --oci-seccomp, so Petri's seccomp profile would not apply inside gVisor`;
}

/**
 * Whether a gVisor registration's strace records access() and faccessat(): a warm Python
 * interpreter marks its hand-over with a refused access() (warm-python.ts), so only then can a
 * traced run be served by a pre-started interpreter and still be recorded from its program's
 * first call on (gvisor-trace.ts, warmMark). `--strace` without a list traces every call.
 */
export function gvisorStraceSeesHandover(ociRuntime: string, runtimes: Record<string, unknown>): boolean {
  const args = (runtimes[ociRuntime] as { runtimeArgs?: unknown } | undefined)?.runtimeArgs;
  if (!Array.isArray(args) || !args.some((a) => /^--?strace(=true)?$/.test(String(a)))) return false;
  const list = args.map(String).find((a) => /^--?strace-syscalls=/.test(a));
  if (list === undefined) return true;
  const calls = list.slice(list.indexOf("=") + 1).split(",");
  return calls.includes("access") && calls.includes("faccessat");
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms); }),
  ]);
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/^\(HTTP code \d+\) [a-z ]+ - /, "").split("\n")[0].trim();
}

/** Probes Docker with one OCI runtime: engine reachable, runtime registered, image present, a container runs. */
export function dockerStrategy(ociRuntime: string, opts: DetectOptions = {}): RuntimeStrategy {
  const id = `docker/${ociRuntime}`;
  const socket = opts.dockerSocket ?? "/var/run/docker.sock";
  const budget = opts.probeTimeoutMs ?? 30_000;
  return {
    id,
    async probe(): Promise<RuntimeProbe> {
      const t0 = performance.now();
      const base = { id, name: "docker", variant: ociRuntime };
      const no = (reason: string, fix?: string): RuntimeProbe => ({ ...base, available: false, reason, fix, probeMs: Math.round(performance.now() - t0) });
      if (!opts.docker && !fs.existsSync(socket)) return no(`no Docker engine: ${socket} does not exist`, DOCKER_INSTALL);
      const docker = opts.docker ?? new Docker({ socketPath: socket });
      let info: { ServerVersion?: string; Runtimes?: Record<string, unknown>; CgroupVersion?: string };
      try {
        info = await withTimeout(docker.info() as Promise<typeof info>, 5000, "Docker");
      } catch (e) {
        return no(`Docker engine at ${socket} is not reachable: ${firstLine(e)}`, "start it: (setsid dockerd >/var/log/dockerd.log 2>&1 &)");
      }
      if (!info.Runtimes || !(ociRuntime in info.Runtimes)) {
        return no(`OCI runtime ${ociRuntime} is not registered with Docker ${info.ServerVersion ?? ""}`.trim(), registerRuntimeFix(ociRuntime));
      }
      const seccompGap = gvisorSeccompGap(ociRuntime, info.Runtimes);
      if (seccompGap) return no(seccompGap, "re-run scripts/setup.sh: it registers runsc with --oci-seccomp in /etc/docker/daemon.json and reloads dockerd (SIGHUP)");
      if (opts.image) {
        try {
          await docker.getImage(opts.image).inspect();
        } catch {
          return no(`image ${opts.image} is not in Docker`, "petri images build");
        }
      }
      const where = `Docker ${info.ServerVersion ?? "?"}, cgroup v${info.CgroupVersion ?? "?"}`;
      if (opts.verify === false || !opts.image) {
        return { ...base, available: true, reason: `${where}; ${ociRuntime} registered (not test-run)`, probeMs: Math.round(performance.now() - t0) };
      }
      const tr = performance.now();
      let container: Docker.Container | undefined;
      try {
        container = await docker.createContainer({
          Image: opts.image,
          Cmd: ["true"],
          Labels: { "io.jhansi.petri.probe": "1" },
          NetworkDisabled: true,
          HostConfig: { Runtime: ociRuntime, NetworkMode: "none", ReadonlyRootfs: true, CapDrop: ["ALL"], LogConfig: { Type: "none", Config: {} } },
        });
        await withTimeout(container.start(), budget, `${ociRuntime} container start`);
        const w = (await withTimeout(container.wait(), budget, `${ociRuntime} container`)) as { StatusCode: number };
        if (w.StatusCode !== 0) return no(`a test container under ${ociRuntime} exited with ${w.StatusCode}`);
      } catch (e) {
        const msg = firstLine(e);
        const fix = /hybrid mode not supported/.test(msg) ? CRUN_HYBRID_FIX : undefined;
        return no(`a test container under ${ociRuntime} failed: ${msg}`, fix);
      } finally {
        await container?.remove({ force: true }).catch(() => undefined);
      }
      return { ...base, available: true, reason: `${where}; test container ran in ${Math.round(performance.now() - tr)} ms`, probeMs: Math.round(performance.now() - t0) };
    },
  };
}

function commandOk(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? r.error.message : ""}`.trim() };
}

function readSysctl(file: string): string | null {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    return null;
  }
}

/** Probes bubblewrap: binary and helpers present, rootfs built, cgroups usable, user namespaces allowed, a sandbox runs. */
export function bwrapStrategy(opts: DetectOptions = {}): RuntimeStrategy {
  const bwrap = opts.bwrapPath ?? "/usr/bin/bwrap";
  const uid = opts.sandboxUid ?? 1000;
  const gid = opts.sandboxGid ?? 1000;
  return {
    id: "bwrap",
    async probe(): Promise<RuntimeProbe> {
      const t0 = performance.now();
      const base = { id: "bwrap", name: "bwrap" };
      const no = (reason: string, fix?: string): RuntimeProbe => ({ ...base, available: false, reason, fix, probeMs: Math.round(performance.now() - t0) });
      if (!fs.existsSync(bwrap)) return no(`bubblewrap is not installed (${bwrap})`, "apt-get install -y bubblewrap");
      const version = commandOk(bwrap, ["--version"]);
      const m = /(\d+)\.(\d+)(?:\.\d+)?/.exec(version.out);
      if (!m || Number(m[1]) * 1000 + Number(m[2]) < 8) {
        return no(`bubblewrap ${m ? m[0] : "?"} is too old: --disable-userns needs 0.8 or later`, "apt-get install -y bubblewrap (Debian 12 ships 0.8)");
      }
      for (const tool of ["setpriv", "prlimit"]) {
        if (!commandOk("sh", ["-c", `command -v ${tool}`]).ok) return no(`${tool} is missing`, "apt-get install -y util-linux");
      }
      if (process.getuid?.() !== 0) return no("Petri is not running as root: the bwrap runtime creates a cgroup per run", "run the Petri server as root");
      const plan = hostCgroupPlan();
      if (plan.missing.includes("memory") || plan.missing.includes("pids")) {
        return no(`cgroup controllers missing: ${plan.missing.join(", ")}`, "enable the memory and pids cgroup controllers (kernel cmdline: cgroup_enable=memory; mount them)");
      }
      const maxNs = readSysctl("/proc/sys/user/max_user_namespaces");
      if (maxNs === "0") return no("user namespaces are disabled (user.max_user_namespaces = 0)", "sysctl -w user.max_user_namespaces=15000");
      if (readSysctl("/proc/sys/kernel/unprivileged_userns_clone") === "0") {
        return no("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)", "sysctl -w kernel.unprivileged_userns_clone=1");
      }
      if (readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") === "1") {
        return no("AppArmor restricts unprivileged user namespaces", "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for /usr/bin/bwrap)");
      }
      if (!opts.rootfs || !fs.existsSync(path.join(opts.rootfs, "usr", "bin"))) {
        return no(`no root filesystem${opts.rootfs ? ` at ${opts.rootfs}` : ""}`, "petri images build");
      }
      const layout = [...new Set(plan.hierarchies.map((h) => `v${h.version}`))].join("+");
      const where = `bubblewrap ${m[0]}, cgroup ${layout}`;
      if (opts.verify === false) return { ...base, variant: layout, available: true, reason: `${where} (not test-run)`, probeMs: Math.round(performance.now() - t0) };
      const tr = performance.now();
      try {
        const rt = new BwrapRuntime({ bwrapPath: bwrap, cgroupPlan: plan });
        const r = await rt.run({
          image: "probe",
          rootfs: opts.rootfs,
          argv: ["true"],
          env: { PATH: "/usr/bin:/bin" },
          cwd: "/",
          mounts: [],
          limits: { memoryBytes: 64 << 20, cpus: 1, pids: 16, openFiles: 64, fileSizeBytes: 1 << 20, tmpfsBytes: 1 << 20 },
          timeoutMs: 10_000,
          outputLimitBytes: 4096,
          uid,
          gid,
          labels: { "io.jhansi.petri.probe": "1" },
        });
        if (r.exitCode !== 0) return no(`a test sandbox exited with ${r.exitCode ?? r.signal}: ${r.stderr.toString().trim()}`);
      } catch (e) {
        return no(`a test sandbox failed: ${firstLine(e)}`);
      }
      return { ...base, variant: layout, available: true, reason: `${where}; test sandbox ran in ${Math.round(performance.now() - tr)} ms`, probeMs: Math.round(performance.now() - t0) };
    },
  };
}

/**
 * Probes an OCI runtime called directly, without dockerd (runc-direct, crun-direct,
 * runsc-direct): binary, init, root filesystem and cgroups present, and a test container runs.
 */
export function ociDirectStrategy(kind: OciKind, opts: DetectOptions = {}): RuntimeStrategy {
  const id = `${kind}-direct`;
  return {
    id,
    async probe(): Promise<RuntimeProbe> {
      const t0 = performance.now();
      const base = { id, name: id, variant: id };
      const no = (reason: string, fix?: string): RuntimeProbe => ({ ...base, available: false, reason, fix, probeMs: Math.round(performance.now() - t0) });
      const bin = findBinary(kind);
      if (!bin) return no(`${kind} is not installed`, `apt-get install -y ${kind}`);
      if (!findInit()) return no("no init binary for pid 1 (docker-init / tini-static)", "apt-get install -y tini");
      if (process.getuid?.() !== 0) return no("Petri is not running as root: calling an OCI runtime directly needs root", "run the Petri server as root");
      const plan = hostCgroupPlan();
      if (plan.missing.includes("memory") || plan.missing.includes("pids")) {
        return no(`cgroup controllers missing: ${plan.missing.join(", ")}`, "enable the memory and pids cgroup controllers");
      }
      if (!opts.rootfs || !fs.existsSync(path.join(opts.rootfs, "usr", "bin"))) {
        return no(`no root filesystem${opts.rootfs ? ` at ${opts.rootfs}` : ""}`, "petri images build");
      }
      const version = commandOk(bin, ["--version"]).out.split("\n")[0];
      if (opts.verify === false) return { ...base, available: true, reason: `${version} (not test-run)`, probeMs: Math.round(performance.now() - t0) };
      const tr = performance.now();
      const tag = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
      let rt: OciRuntime | undefined;
      let trace: RuntimeProbe["trace"];
      try {
        rt = new OciRuntime({ kind, name: id, stateDir: `/run/petri/probe-${tag}/${id}`, cgroupParent: `petri-probe-${tag}`, cgroupPlan: plan });
        const r = await withTimeout(rt.run({
          image: "probe",
          rootfs: opts.rootfs,
          argv: ["true"],
          env: { PATH: "/usr/bin:/bin" },
          cwd: "/",
          mounts: [],
          limits: { memoryBytes: 256 << 20, cpus: 1, pids: 64, openFiles: 64, fileSizeBytes: 1 << 20, tmpfsBytes: 1 << 20 },
          timeoutMs: 20_000,
          outputLimitBytes: 4096,
          uid: opts.sandboxUid ?? 65600,
          gid: opts.sandboxGid ?? 65600,
          labels: { "io.jhansi.petri.probe": "1" },
          auditArgv: ["true"],
        }), opts.probeTimeoutMs ?? 30_000, `${kind} test container`);
        if (r.exitCode !== 0) return no(`a test container under ${kind} exited with ${r.exitCode ?? r.signal}: ${r.stderr.toString().trim().slice(0, 300)}`);
        // The audit's claim for runsc-direct rests on this: the test run's own exec was in its strace.
        if (rt.gvisorTrace) {
          trace = r.trace?.execs.some((e) => e.argv[0] === "true")
            ? { ok: true, reason: "gVisor's strace recorded the test container's program" }
            : { ok: false, reason: r.trace ? "gVisor's strace of the test container did not show its program" : "the test container left no gVisor strace log" };
        }
      } catch (e) {
        const msg = firstLine(e);
        return no(`a test container under ${kind} failed: ${msg}`, /hybrid mode not supported/.test(msg) ? CRUN_HYBRID_FIX : undefined);
      } finally {
        await rt?.close().catch(() => undefined);
        fs.rmSync(`/run/petri/probe-${tag}`, { recursive: true, force: true });
      }
      return { ...base, available: true, reason: `${version}, no dockerd; test container ran in ${Math.round(performance.now() - tr)} ms`, probeMs: Math.round(performance.now() - t0), ...(trace ? { trace } : {}) };
    },
  };
}

/** The strategy that probes the runtime a name stands for (runc, crun, runsc: Docker; bwrap; *-direct). */
export function strategyFor(name: string, opts: DetectOptions = {}): RuntimeStrategy {
  if (name === "bwrap") return bwrapStrategy(opts);
  const m = /^(runc|crun|runsc)-direct$/.exec(name);
  if (m) return ociDirectStrategy(m[1] as OciKind, opts);
  return dockerStrategy(name, opts);
}

/** The default order: Docker (crun, runc, runsc), then bubblewrap, with the configured preferences first. */
export function defaultStrategies(opts: DetectOptions = {}): RuntimeStrategy[] {
  let oci = opts.ociRuntimes ?? ["crun", "runc", "runsc"];
  if (opts.preferredOciRuntime) oci = [opts.preferredOciRuntime, ...oci.filter((o) => o !== opts.preferredOciRuntime)];
  const docker = oci.map((o) => dockerStrategy(o, opts));
  const bwrap = bwrapStrategy(opts);
  return opts.preferredRuntime === "bwrap" ? [bwrap, ...docker] : [...docker, bwrap];
}

/** Probes every strategy, in order (one at a time: probes start containers). */
export async function detectRuntimes(opts: DetectOptions = {}): Promise<RuntimeProbe[]> {
  const out: RuntimeProbe[] = [];
  for (const s of opts.strategies ?? defaultStrategies(opts)) {
    try {
      out.push(await s.probe());
    } catch (e) {
      out.push({ id: s.id, name: s.id.split("/")[0], available: false, reason: `probe failed: ${firstLine(e)}` });
    }
  }
  return out;
}

/** The first available runtime, or null: then Petri must not run code at all. */
export function pickRuntime(probes: RuntimeProbe[]): RuntimeProbe | null {
  return probes.find((p) => p.available) ?? null;
}

/** One log line naming the winner and why the ones before it did not apply. */
export function describeChoice(probes: RuntimeProbe[]): string {
  const winner = pickRuntime(probes);
  const skipped = probes.slice(0, winner ? probes.indexOf(winner) : probes.length).map((p) => `${p.id}: ${p.reason}`);
  const head = winner ? `runtime ${winner.id} (${winner.reason})` : "no sandbox runtime is available; refusing to run code";
  return skipped.length ? `${head}; skipped ${skipped.join("; ")}` : head;
}

/** The text `petri doctor` prints. */
export function doctorText(probes: RuntimeProbe[]): string {
  const lines = ["Petri sandbox runtimes (in order of preference; the first available one is the default):", ""];
  const width = Math.max(...probes.map((p) => p.id.length), 5);
  for (const p of probes) {
    lines.push(`  ${p.available ? "[ok]     " : "[missing]"} ${p.id.padEnd(width)}  ${p.reason ?? ""}`);
    if (!p.available && p.fix) {
      const [first, ...rest] = p.fix.split("\n");
      lines.push(`  ${" ".repeat(9)} ${" ".repeat(width)}  fix: ${first}`);
      for (const l of rest) lines.push(`  ${" ".repeat(9)} ${" ".repeat(width)}       ${l}`);
    }
  }
  lines.push("");
  const winner = pickRuntime(probes);
  lines.push(winner
    ? `Default runtime: ${winner.id}. Set PETRI_RUNTIME / PETRI_OCI_RUNTIME to choose another available one.`
    : "No sandbox runtime is available: Petri will refuse to run code (it never runs code unsandboxed).");
  return lines.join("\n");
}
