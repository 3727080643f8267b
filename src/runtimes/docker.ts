import { Duplex } from "node:stream";
import Docker from "dockerode";
import { CappedBuffer, type RunResult, type RunSpec, type Runtime } from "./types.js";
import { detectCgroupLayout, readUsage, removeCgroup, type CgroupLayout } from "./cgroups.js";

export interface DockerRuntimeOptions {
  docker: Docker;
  /** OCI runtime Docker should use: runc, crun, runsc. */
  ociRuntime: string;
  /** Cgroup parent (relative, no leading slash) under which each run gets its own cgroup. */
  cgroupParent?: string;
}

const SIGNALS: Record<number, string> = {
  1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
  10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ", 31: "SIGSYS",
};

let runCounter = 0;

/**
 * Demultiplexes Docker's attach stream (8-byte header: stream type, 3 zero bytes, big-endian
 * length). Hand-written because the framing is trivial and we need per-chunk callbacks with no
 * extra stream plumbing on the hot path.
 */
function demux(stream: NodeJS.ReadableStream, onOut: (b: Buffer) => void, onErr: (b: Buffer) => void): Promise<void> {
  let buf: Buffer = Buffer.alloc(0);
  return new Promise((resolve) => {
    stream.on("data", (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 8) {
        const len = buf.readUInt32BE(4);
        if (buf.length < 8 + len) break;
        const payload = buf.subarray(8, 8 + len);
        if (buf[0] === 2) onErr(payload);
        else onOut(payload);
        buf = buf.subarray(8 + len);
      }
    });
    stream.on("end", () => resolve());
    stream.on("close", () => resolve());
    stream.on("error", () => resolve());
  });
}

export class DockerRuntime implements Runtime {
  readonly name = "docker";
  private readonly docker: Docker;
  private readonly ociRuntime: string;
  private readonly cgroupParent: string;
  private readonly layout: CgroupLayout;

  constructor(opts: DockerRuntimeOptions) {
    this.docker = opts.docker;
    this.ociRuntime = opts.ociRuntime;
    this.cgroupParent = opts.cgroupParent ?? "petri";
    this.layout = detectCgroupLayout();
  }

  get variant(): string {
    return this.ociRuntime;
  }

  async run(spec: RunSpec): Promise<RunResult> {
    const t0 = performance.now();
    const timings: Record<string, number> = {};
    const cgroupRel = `${this.cgroupParent}/run-${process.pid}-${Date.now().toString(36)}-${(runCounter++).toString(36)}`;
    const wantsStdin = spec.stdin !== undefined || spec.stdinStream !== undefined;
    const container = await this.docker.createContainer({
      Image: spec.image,
      Cmd: spec.argv,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      WorkingDir: spec.cwd,
      User: `${spec.uid}:${spec.gid}`,
      Labels: spec.labels,
      AttachStdin: wantsStdin,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: wantsStdin,
      StdinOnce: wantsStdin,
      Tty: false,
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: "none",
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": `rw,exec,nosuid,nodev,size=${spec.limits.tmpfsBytes}` },
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        Memory: spec.limits.memoryBytes,
        MemorySwap: spec.limits.memoryBytes,
        NanoCpus: Math.round(spec.limits.cpus * 1e9),
        PidsLimit: spec.limits.pids,
        Ulimits: [
          { Name: "nofile", Soft: spec.limits.openFiles, Hard: spec.limits.openFiles },
          { Name: "fsize", Soft: spec.limits.fileSizeBytes, Hard: spec.limits.fileSizeBytes },
          { Name: "core", Soft: 0, Hard: 0 },
        ],
        Mounts: spec.mounts.map((m) => ({ Type: "bind" as const, Source: m.source, Target: m.target, ReadOnly: m.readonly })),
        // Output is streamed to us through attach; a logging driver would copy every byte of an
        // output flood to the host disk.
        LogConfig: { Type: "none", Config: {} },
        Runtime: this.ociRuntime,
        CgroupParent: this.layout.kind === "none" ? undefined : `/${cgroupRel}`,
        IpcMode: "private",
        AutoRemove: false,
      },
    });
    timings.create = performance.now() - t0;

    const stdout = new CappedBuffer(spec.outputLimitBytes);
    const stderr = new CappedBuffer(spec.outputLimitBytes);
    let timedOut = false;
    let killed = false;
    let timer: NodeJS.Timeout | undefined;
    const kill = () => container.kill({ signal: "SIGKILL" }).catch(() => undefined);
    const onAbort = () => { killed = true; void kill(); };
    let result: RunResult;

    try {
      const stream = (await container.attach({ stream: true, stdin: wantsStdin, stdout: true, stderr: true, hijack: wantsStdin })) as unknown as Duplex;
      const outputDone = demux(stream, (b) => { stdout.push(b); spec.onStdout?.(b); }, (b) => { stderr.push(b); spec.onStderr?.(b); });
      timings.attach = performance.now() - t0;

      const waitP = container.wait({ condition: "next-exit" });
      await container.start();
      const startedAt = performance.now();
      timings.start = startedAt - t0;
      timer = setTimeout(() => { timedOut = true; void kill(); }, spec.timeoutMs);
      if (spec.signal) {
        if (spec.signal.aborted) onAbort();
        else spec.signal.addEventListener("abort", onAbort, { once: true });
      }
      if (wantsStdin) void this.feedStdin(stream, spec);

      const waited = (await waitP) as { StatusCode: number };
      const finishedAt = performance.now();
      clearTimeout(timer);
      timings.wait = finishedAt - t0;
      // Output can trail the exit by a moment; don't let a stuck stream hold the result.
      await Promise.race([outputDone, new Promise((r) => setTimeout(r, 2000))]);
      stream.destroy();

      const info = await container.inspect();
      const exitCode = info.State?.ExitCode ?? waited.StatusCode;
      const oomKilled = Boolean(info.State?.OOMKilled);
      const signal = exitCode > 128 && exitCode < 160 ? (SIGNALS[exitCode - 128] ?? `SIG${exitCode - 128}`) : null;
      result = {
        exitCode: signal ? null : exitCode,
        signal,
        timedOut,
        oomKilled,
        killed: killed && !timedOut,
        stdout: stdout.toBuffer(),
        stderr: stderr.toBuffer(),
        stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated,
        durationMs: Math.round(finishedAt - startedAt),
        cpuTimeMs: null,
        peakMemoryBytes: null,
        timings,
      };
    } finally {
      clearTimeout(timer);
      spec.signal?.removeEventListener("abort", onAbort);
      const tr = performance.now();
      await container.remove({ force: true, v: true }).catch(() => undefined);
      timings.remove = performance.now() - tr;
    }
    // Accounting is read after removal, from the run's parent cgroup (see cgroups.ts).
    const usage = readUsage(this.layout, cgroupRel);
    removeCgroup(this.layout, cgroupRel);
    result.cpuTimeMs = usage.cpuTimeMs;
    result.peakMemoryBytes = usage.peakMemoryBytes;
    return result;
  }

  private async feedStdin(stream: Duplex, spec: RunSpec): Promise<void> {
    try {
      if (spec.stdinStream) {
        for await (const chunk of spec.stdinStream) {
          if (!stream.write(chunk)) await new Promise((r) => stream.once("drain", r));
        }
      } else if (spec.stdin !== undefined && spec.stdin.length > 0) {
        stream.write(spec.stdin);
      }
    } catch {
      /* the run ended before stdin was consumed */
    } finally {
      stream.end();
    }
  }

  async reap(labels: Record<string, string>): Promise<number> {
    const list = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
    await Promise.all(list.map((c) => this.docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
    return list.length;
  }

  async count(labels: Record<string, string>): Promise<number> {
    const list = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
    return list.length;
  }
}
