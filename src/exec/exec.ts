import { EventEmitter } from "node:events";
import fs from "node:fs";
import path from "node:path";
import type { Config, Limits } from "../config.js";
import type { DB } from "../store/db.js";
import { PetriError } from "../errors.js";
import { newId } from "../ids.js";
import { CACHE_DIR, LANGUAGES, SNIPPET_DIR, substitute } from "./languages.js";
import { resolveLimits, type Sandbox, type SandboxService } from "../sandboxes/sandboxes.js";
import { diffSnapshots, type FileChanges, type WorkspaceStore } from "../workspaces/workspaces.js";
import { parseRelPath } from "../workspaces/paths.js";
import { EngineLostError, type Mount, type RunResult, type RunSpec, type Runtime } from "../runtimes/types.js";
import type { AuthContext } from "../auth/keys.js";
import type { QuotaService } from "../auth/quotas.js";
import { checkTenantHosts, openBrokerSession, type BrokerSession, type SecretStore } from "../vault/index.js";
import type { AuditEvent } from "../audit/types.js";
import { brokerAuditEvent, runAuditLevel, runFinishEvents, runStartEvent, toAuditSnapshot, type RunAuditContext, type RunTrace } from "./audit-events.js";
import type { TracerService } from "../tracing/tracer.js";
import type { DeclaredDependencies } from "../deps/specs.js";
import type { Artifact } from "./artifacts.js";
import type { ErrorSummary } from "./explain.js";
import { AGENT_MOUNT, DISPLAY_MOUNT, agentEnv, layerEnv, prepareAgentFiles, prepareDisplayDirs } from "./agent-files.js";
import { BlockedHosts, agentFields } from "./agent-result.js";
import { TTY_ENV, ttyArgv } from "./tty.js";
import type { DependencySummary, PreparedDeps } from "../deps/service.js";

export interface ExecRequest {
  filename?: string;
  code?: string;
  args?: string[];
  stdin?: string;
  env?: Record<string, string>;
  timeout_ms?: number;
  limits?: Partial<Limits>;
  /** Vault secrets this run may use, in addition to the sandbox's. */
  secrets?: string[];
  /** Hosts this run may reach through the HTTP broker, in addition to the sandbox's. */
  allow_hosts?: string[];
  /** Packages this run needs, in addition to the sandbox's and the workspace's manifests (src/deps). */
  dependencies?: DeclaredDependencies;
  /** Detect and install what the code imports; default: the sandbox's setting, else the server's. */
  auto_detect_dependencies?: boolean;
  /** Run the program on a pseudo-terminal (stdout and stderr arrive merged on stdout). */
  tty?: boolean;
}

export type ExecStatus = "running" | "completed" | "failed" | "cancelled";

export interface ExecResult {
  id: string;
  sandbox_id: string;
  status: ExecStatus;
  language: string;
  runtime: string;
  entry: string;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  truncated: boolean;
  duration_ms: number;
  timed_out: boolean;
  oom_killed: boolean;
  cancelled: boolean;
  cpu_time_ms: number | null;
  peak_memory_bytes: number | null;
  files: FileChanges;
  workspace_bytes: number;
  workspace_quota_bytes: number;
  workspace_quota_exceeded: boolean;
  /** Names of secrets whose value was found in the output and replaced by [REDACTED:name]. */
  redactions: string[];
  /** What was detected, installed or reused for this run (null: the language has no packages). */
  dependencies: DependencySummary | null;
  error: { code: string; message: string } | null;
  created_at: string;
  finished_at: string | null;
  /** For agents (agent-result.ts): how an abnormal run ended, its error, its images and data files. */
  explanation?: string | null;
  error_summary?: ErrorSummary | null;
  artifacts?: Artifact[];
  stdout_cut_bytes?: number;
  stderr_cut_bytes?: number;
}

export interface ExecEvents {
  stdout: [Buffer];
  stderr: [Buffer];
  done: [ExecResult];
}

/** A run in flight: its output can be followed, stdin written, and it can be cancelled. */
export class RunHandle extends EventEmitter<ExecEvents> {
  readonly abort = new AbortController();
  private readonly stdinQueue: (Buffer | null)[] = [];
  private stdinWake: (() => void) | null = null;
  stdinOpen: boolean;
  result: ExecResult | null = null;
  readonly done: Promise<ExecResult>;
  resolveDone!: (r: ExecResult) => void;
  cancelReason: "cancel" | "quota" | "shutdown" | null = null;
  dependencies: DependencySummary | null = null;
  private redactors: { push(b: Buffer): Buffer; end(): Buffer; redactions: string[] }[] = [];

  trackRedactors(out: RunHandle["redactors"][number], err: RunHandle["redactors"][number]): void {
    this.redactors = [out, err];
  }

  /** Flushes what stream redaction held back (a possible secret prefix) and names what it hid. */
  get streamRedactions(): string[] {
    const [out, err] = this.redactors;
    if (out) { const t = out.end(); if (t.length) this.emit("stdout", t); }
    if (err) { const t = err.end(); if (t.length) this.emit("stderr", t); }
    return this.redactors.flatMap((r) => r.redactions);
  }

  constructor(readonly id: string, readonly sandboxId: string, readonly tenantId: string, interactiveStdin: boolean) {
    super();
    this.stdinOpen = interactiveStdin;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  writeStdin(data: Buffer): void {
    if (!this.stdinOpen) throw new PetriError("EXEC_NOT_RUNNING", "stdin of this run is closed");
    this.stdinQueue.push(data);
    this.stdinWake?.();
  }

  closeStdin(): void {
    if (!this.stdinOpen) return;
    this.stdinOpen = false;
    this.stdinQueue.push(null);
    this.stdinWake?.();
  }

  async *stdinIterator(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.stdinQueue.length) {
        const c = this.stdinQueue.shift()!;
        if (c === null) return;
        yield c;
      }
      await new Promise<void>((r) => (this.stdinWake = r));
      this.stdinWake = null;
    }
  }

  cancel(reason: "cancel" | "quota" | "shutdown"): void {
    this.cancelReason ??= reason;
    this.abort.abort();
  }
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", TMPDIR: "/tmp" };

export interface ExecDeps {
  db: DB;
  config: Readonly<Config>;
  sandboxes: SandboxService;
  workspaces: WorkspaceStore;
  runtimes: Map<string, Runtime>;
  instanceId: string;
  /** Resolves the rootfs directory of an image, for runtimes that run from one. */
  rootfsFor: (image: string) => string | undefined;
  /** Docker reference of a sandbox's image name (images.ts ImageCatalog.ref). */
  imageRef?: (name: string) => string;
  log: { info: (o: object, m?: string) => void; warn: (o: object, m?: string) => void; error: (o: object, m?: string) => void };
  quotas?: QuotaService;
  /** TenantVault: secrets runs may use through brokers, never read. */
  vault?: SecretStore;
  /** The audit log: every run is recorded (what ran, what it touched, how it ended). */
  audit?: { append(ev: AuditEvent): unknown; failMode?: "closed" | "open"; refusesWork?(): boolean };
  /** Told of every finished run (metrics): its result, the runtime's timings, when the runtime was asked. */
  onRunFinished?: (r: { result: ExecResult; timings?: Record<string, number>; runtimeCalledAt: number | null; createdAt: number }) => void;
  /** Host eBPF tracer for runc, crun and bwrap runs (what each run executed, opened, connected to). */
  tracer?: TracerService;
}

export class ExecService {
  private readonly running = new Map<string, RunHandle>();

  constructor(private readonly d: ExecDeps) {}

  activeCount(): number {
    return this.running.size;
  }

  /** Per sandbox, so the mounts (and a pre-started container's shape) stay the same from run to run. */
  private displayDirFor(sandboxId: string): string {
    return path.join(this.d.config.dataDir, "display", sandboxId);
  }

  /** Validates and starts a run; the returned handle's `done` resolves with the result. */
  start(auth: AuthContext, sandbox: Sandbox, req: ExecRequest, opts: { interactiveStdin?: boolean; deps?: PreparedDeps | null } = {}): RunHandle {
    const { config, workspaces } = this.d;
    const lang = LANGUAGES[sandbox.language];
    if (!lang) throw new PetriError("UNKNOWN_LANGUAGE", `unknown language "${sandbox.language}"`);
    const hasFile = typeof req.filename === "string";
    const hasCode = typeof req.code === "string";
    if (hasFile === hasCode) throw new PetriError("VALIDATION_ERROR", "give exactly one of `filename` or `code`");
    const limits = resolveLimits(sandbox.limits, config.maxLimits, { ...(req.limits ?? {}), ...(req.timeout_ms !== undefined ? { timeout_ms: req.timeout_ms } : {}) });
    for (const k of Object.keys(req.env ?? {})) {
      if (!ENV_NAME.test(k)) throw new PetriError("VALIDATION_ERROR", `env name "${k}" is not a valid variable name`);
    }
    const egress = {
      secrets: [...new Set([...sandbox.secrets, ...(req.secrets ?? [])])],
      allowHosts: [...new Set([...sandbox.allow_hosts, ...checkTenantHosts(req.allow_hosts ?? [], config.egress, "allow_hosts")])],
    };
    if (egress.secrets.length || egress.allowHosts.length) {
      if (!this.d.vault) throw new PetriError("RUNTIME_UNAVAILABLE", "this server has no vault: secrets and allowed hosts are not available");
      for (const name of egress.secrets) this.d.vault.get(auth.tenantId, name);
    }
    if (this.d.audit?.refusesWork?.()) throw new PetriError("AUDIT_UNAVAILABLE", "the audit log cannot be written, so no run starts (PETRI_AUDIT_FAIL=closed)");
    const runtime = this.d.runtimes.get(sandbox.runtime);
    if (!runtime) throw new PetriError("RUNTIME_UNAVAILABLE", `runtime "${sandbox.runtime}" is not available on this server`);

    const id = newId("ex");
    const runDir = path.join(config.dataDir, "runs", id);
    const mounts: Mount[] = [{ source: workspaces.dirFor(sandbox.id), target: "/workspace", readonly: false }];
    let argv: string[];
    let entry: string;
    if (hasFile) {
      const parts = parseRelPath(req.filename);
      entry = parts.join("/");
      // Refuse early, with a clear error, what the run could not open anyway.
      const { fd } = (() => {
        try {
          return workspaces.openRead(sandbox.id, entry);
        } catch (e) {
          if (e instanceof PetriError && e.code === "FILE_NOT_FOUND") {
            throw new PetriError("FILE_NOT_FOUND", `cannot run ${entry}: no such file in the workspace`);
          }
          throw e;
        }
      })();
      fs.closeSync(fd);
      argv = substitute(lang.file, { file: entry });
    } else {
      entry = "<snippet>";
      if ("filename" in lang.snippet) {
        fs.mkdirSync(path.join(runDir, "snippet"), { recursive: true, mode: 0o755 });
        fs.writeFileSync(path.join(runDir, "snippet", lang.snippet.filename), req.code!, { mode: 0o644 });
        mounts.push({ source: path.join(runDir, "snippet"), target: SNIPPET_DIR, readonly: true });
        argv = substitute(lang.snippet.argv, { file: `${SNIPPET_DIR}/${lang.snippet.filename}` });
      } else {
        argv = substitute(lang.snippet.argv, { code: req.code! });
      }
    }
    argv = [...argv, ...(req.args ?? [])];
    if (req.tty) argv = ttyArgv(argv);

    const cacheDir = this.d.sandboxes.cacheDirFor(sandbox.id);
    fs.mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
    fs.chownSync(cacheDir, config.sandboxUid, config.sandboxGid);
    mounts.push({ source: cacheDir, target: CACHE_DIR, readonly: false });
    // Helpers for agents (agent-files.ts) and the per-sandbox display mount (same shape every run).
    mounts.push({ source: prepareAgentFiles(config.dataDir), target: AGENT_MOUNT, readonly: true });
    mounts.push({ source: this.displayDirFor(sandbox.id), target: DISPLAY_MOUNT, readonly: false });

    const image = this.d.imageRef?.(sandbox.image) ?? sandbox.image;
    const now = Date.now();
    const requestRecord = { filename: req.filename ?? null, code_bytes: req.code?.length ?? null, args: req.args ?? [], env_names: Object.keys(req.env ?? {}), limits, ...(req.tty ? { tty: true } : {}) };
    this.d.quotas?.runStarting(auth.tenantId);
    try {
      this.d.db.prepare("INSERT INTO execs(id, sandbox_id, tenant_id, status, request_json, created_at) VALUES (?, ?, ?, 'running', ?, ?)")
        .run(id, sandbox.id, auth.tenantId, JSON.stringify(requestRecord), now);
    } catch (e) {
      this.d.quotas?.runEnded(auth.tenantId);
      throw e;
    }

    const handle = new RunHandle(id, sandbox.id, auth.tenantId, Boolean(opts.interactiveStdin));
    this.running.set(id, handle);
    this.d.sandboxes.runStarted(sandbox.id);
    this.d.sandboxes.touch(sandbox.id);

    const spec: RunSpec = {
      image,
      rootfs: this.d.rootfsFor(image),
      argv,
      // A run's env adds to list variables (PYTHONPATH, NODE_PATH…) rather than replacing them.
      env: layerEnv(BASE_ENV, agentEnv(id), lang.env, sandbox.env, opts.deps?.env, req.tty ? TTY_ENV : undefined, req.env),
      cwd: "/workspace",
      mounts: [...mounts, ...(opts.deps?.mounts ?? [])],
      limits: {
        memoryBytes: limits.memory_mb * 1024 * 1024,
        cpus: limits.cpus,
        pids: limits.pids,
        openFiles: limits.open_files,
        fileSizeBytes: Math.min(limits.file_size_mb, limits.workspace_mb) * 1024 * 1024,
        tmpfsBytes: config.tmpfsMb * 1024 * 1024,
      },
      timeoutMs: limits.timeout_ms,
      stdin: opts.interactiveStdin ? undefined : req.stdin ?? undefined,
      stdinStream: opts.interactiveStdin ? handle.stdinIterator() : undefined,
      outputLimitBytes: limits.output_bytes,
      uid: config.sandboxUid,
      gid: config.sandboxGid,
      labels: {
        "io.jhansi.petri.managed": "true",
        "io.jhansi.petri.instance": this.d.instanceId,
        "io.jhansi.petri.sandbox": sandbox.id,
        "io.jhansi.petri.exec": id,
      },
      signal: handle.abort.signal,
      onStdout: (b) => handle.emit("stdout", b),
      onStderr: (b) => handle.emit("stderr", b),
    };
    if (opts.interactiveStdin && req.stdin) handle.writeStdin(Buffer.from(req.stdin));

    const auditCtx: RunAuditContext = {
      tenant_id: auth.tenantId, key_id: auth.keyId, sandbox_id: sandbox.id, exec_id: id, language: sandbox.language,
      runtime: sandbox.runtime, image, argv, entry, code: req.code, envNames: Object.keys(spec.env).sort(), limits,
      auditLevel: runAuditLevel(sandbox.runtime, runtime, this.d.tracer),
      auditFailMode: this.d.audit?.failMode ?? "closed",
    };
    if (opts.deps) void handle.done.then(() => opts.deps!.release());
    handle.dependencies = opts.deps?.summary ?? null;
    void this.execute(auth, sandbox, req, handle, runtime, spec, limits, entry, runDir, now, auditCtx, egress);
    return handle;
  }

  private async execute(auth: AuthContext, sandbox: Sandbox, req: ExecRequest, handle: RunHandle, runtime: Runtime, spec: RunSpec,
    limits: Limits, entry: string, runDir: string, createdAt: number, auditCtx: RunAuditContext,
    egress: { secrets: string[]; allowHosts: string[] }): Promise<void> {
    const { workspaces, config } = this.d;
    const quotaBytes = limits.workspace_mb * 1024 * 1024;
    let result: ExecResult;
    let raw: RunResult | null = null;
    let error: ExecResult["error"] = null;
    let quotaHit = false;
    const audit = this.d.audit;
    const auditBefore = audit ? toAuditSnapshot(await workspaces.list(sandbox.id, "", { recursive: true, hashes: true })) : null;
    if (audit && auditBefore) {
      if (entry !== "<snippet>") auditCtx.entrySha256 = auditBefore.files.get(entry)?.sha256;
      this.safeAppend(runStartEvent(auditCtx, auditBefore));
    }
    const agent = { blocked: new BlockedHosts(), network: false, displayRunDir: prepareDisplayDirs(this.displayDirFor(sandbox.id), handle.id, config.sandboxUid, config.sandboxGid) };
    const before = await workspaces.snapshot(sandbox.id);
    const startUsage = [...before.values()].reduce((a, e) => a + (e.type === "file" ? e.size : 0), 0);
    // Disk quota watchdog: a run that grows the workspace past its quota is stopped. A workspace
    // already over quota (uploads refused) may still be cleaned up by a run, so only growth
    // beyond max(quota, usage at start) counts. The poll interval adapts to the cost of a walk.
    const limitBytes = Math.max(quotaBytes, startUsage);
    let stopWatch = false;
    let wake: (() => void) | null = null;
    let sleepTimer: NodeJS.Timeout | undefined;
    const nap = (ms: number) => new Promise<void>((r) => { wake = r; sleepTimer = setTimeout(r, ms); });
    const watch = (async () => {
      let interval = 50;
      while (!stopWatch) {
        await nap(interval);
        if (stopWatch) return;
        const t0 = performance.now();
        // A walk that raced the run's own renames may be incomplete: only its bytes count here.
        if ((await workspaces.reconcile(sandbox.id)).bytes > limitBytes) {
          quotaHit = true;
          handle.cancel("quota");
          return;
        }
        interval = Math.max(50, (performance.now() - t0) * 10);
      }
    })();
    // Stopping must not wait out the current nap: that would add up to a poll interval to every run.
    const stopWatching = async () => {
      stopWatch = true;
      clearTimeout(sleepTimer);
      (wake as (() => void) | null)?.();
      await watch;
    };
    let broker: BrokerSession | null = null;
    let runtimeCalledAt: number | null = null;
    const traceSession = auditCtx.auditLevel.level === "ebpf" ? this.d.tracer?.begin(auditCtx.argv) ?? null : null;
    let trace: RunTrace | undefined;
    try {
      if (egress.secrets.length || egress.allowHosts.length) {
        broker = await this.openBroker(auth, sandbox, handle, spec, runDir, egress, agent);
      }
      runtimeCalledAt = Date.now();
      if (traceSession) spec.tracer = traceSession;
      spec.auditArgv = auditCtx.argv;
      raw = await runtime.run(spec);
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      this.d.log.error({ err: msg, exec: handle.id }, "run failed to start");
      // A run lost to the engine says so, with its own code: it is neither the program's exit
      // nor a start-up failure.
      error = e instanceof EngineLostError || e instanceof PetriError ? { code: e.code, message: e.message } : /No such image|not found/i.test(msg)
        ? { code: "IMAGE_MISSING", message: `image ${spec.image} is not available; run \`petri images build\`` }
        // The real cause, on one line: the agent (or person) reading the result can often fix it.
        : { code: "RUNTIME_UNAVAILABLE", message: `the runtime could not start this run: ${msg.replace(/\s+/g, " ").trim().slice(0, 500)}` };
    } finally {
      await stopWatching();
      trace = traceSession ? await traceSession.finish().catch((e: Error) => ({ summary: null, complete: false, reason: e.message })) : undefined;
      await broker?.close().catch(() => undefined);
      handle.closeStdin();
      fs.rmSync(runDir, { recursive: true, force: true });
    }
    const after = await workspaces.snapshot(sandbox.id);
    // The run may have written anywhere: re-measure (a walk that could not see everything
    // counts as over quota, so nothing hides below a deep or odd path).
    const measured = await workspaces.reconcile(sandbox.id);
    const usage = measured.bytes;
    if (usage > limitBytes || !measured.complete) quotaHit = true;
    if (quotaHit) {
      error = { code: "WORKSPACE_QUOTA_EXCEEDED", message: `the run grew the workspace to ${usage} bytes, beyond its quota of ${quotaBytes} bytes${handle.cancelReason === "quota" ? "; the run was stopped" : ""}` };
    }
    const cancelled = handle.cancelReason === "cancel" || handle.cancelReason === "shutdown";
    // Redaction is the backstop: a secret value that reached the output never leaves Petri.
    const redactions = new Set<string>();
    const clean = (b: Buffer | undefined): Buffer => {
      if (!b || !broker) return b ?? Buffer.alloc(0);
      const r = broker.redactor.redactBuffer(b);
      for (const n of r.redactions) redactions.add(n);
      return r.data;
    };
    const outBuf = clean(raw?.stdout);
    const errBuf = clean(raw?.stderr);
    for (const n of handle.streamRedactions) redactions.add(n);
    const stdout = outBuf.toString("utf8");
    const stderr = errBuf.toString("utf8");
    result = {
      id: handle.id,
      sandbox_id: sandbox.id,
      status: raw === null ? "failed" : cancelled ? "cancelled" : "completed",
      language: sandbox.language,
      runtime: sandbox.runtime,
      entry,
      exit_code: raw?.exitCode ?? null,
      signal: raw?.signal ?? null,
      stdout,
      stderr,
      stdout_truncated: raw?.stdoutTruncated ?? false,
      stderr_truncated: raw?.stderrTruncated ?? false,
      truncated: Boolean(raw?.stdoutTruncated || raw?.stderrTruncated),
      duration_ms: raw?.durationMs ?? 0,
      timed_out: raw?.timedOut ?? false,
      oom_killed: raw?.oomKilled ?? false,
      cancelled,
      cpu_time_ms: raw?.cpuTimeMs ?? null,
      peak_memory_bytes: raw?.peakMemoryBytes ?? null,
      files: diffSnapshots(before, after),
      workspace_bytes: usage,
      workspace_quota_bytes: quotaBytes,
      workspace_quota_exceeded: quotaHit,
      redactions: [...redactions].sort(),
      dependencies: handle.dependencies,
      error,
      created_at: new Date(createdAt).toISOString(),
      finished_at: new Date().toISOString(),
    };
    Object.assign(result, agentFields({
      language: sandbox.language, raw, error, stdout, stderr, limits, cancelReason: handle.cancelReason, quotaHit,
      networkAllowed: agent.network, blocked: agent.blocked, workspaces, sandboxId: sandbox.id,
      changed: [...result.files.created, ...result.files.modified], displayDir: agent.displayRunDir,
      redact: broker ? (b) => broker!.redactor.redactBuffer(b).data : undefined,
    }));
    fs.rmSync(agent.displayRunDir, { recursive: true, force: true });
    try {
      this.d.db.prepare("UPDATE execs SET status = ?, result_json = ?, finished_at = ? WHERE id = ?")
        .run(result.status, JSON.stringify(result), Date.now(), handle.id);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, exec: handle.id }, "could not record run result");
    }
    this.running.delete(handle.id);
    this.d.quotas?.runEnded(auth.tenantId);
    this.d.quotas?.recordUsage(auth.tenantId, sandbox.id, usage);
    this.d.sandboxes.runEnded(sandbox.id);
    this.d.sandboxes.touch(sandbox.id);
    if (audit && auditBefore) {
      try {
        const auditAfter = toAuditSnapshot(await workspaces.list(sandbox.id, "", { recursive: true, hashes: true }));
        for (const ev of runFinishEvents(auditCtx, auditBefore, auditAfter, {
          ...result, stdout: outBuf, stderr: errBuf,
        }, trace ?? (raw?.trace ? { gvisor: raw.trace } : undefined))) this.safeAppend(ev);
      } catch (e) {
        this.d.log.error({ err: (e as Error).message, exec: handle.id }, "could not record the run in the audit log");
      }
    }
    try {
      this.d.onRunFinished?.({ result, timings: raw?.timings, runtimeCalledAt, createdAt });
    } catch { /* metrics never fail a run */ }
    handle.result = result;
    handle.resolveDone(result);
    handle.emit("done", result);
  }

  /**
   * Starts the run's credential brokers and points the run at them: placeholders in env, the
   * broker directory mounted read-only, the in-sandbox proxy forwarder, and redaction of what is
   * streamed. Broker events (every connection, query and request, allowed or denied) are audited.
   */
  private async openBroker(auth: AuthContext, sandbox: Sandbox, handle: RunHandle, spec: RunSpec, runDir: string,
    egress: { secrets: string[]; allowHosts: string[] }, agent: { blocked: BlockedHosts; network: boolean }): Promise<BrokerSession> {
    const noSockets = await this.d.runtimes.get(sandbox.runtime)?.hostSockets?.();
    if (noSockets) throw new PetriError("RUNTIME_UNAVAILABLE", noSockets);
    const session = await openBrokerSession({
      store: this.d.vault!, tenantId: auth.tenantId, sandboxId: sandbox.id, execId: handle.id,
      secrets: egress.secrets, allowHosts: egress.allowHosts, egress: this.d.config.egress, runDir: path.join(runDir, "broker"),
      onEvent: (ev) => {
        agent.blocked.observe(ev);
        this.safeAppend(brokerAuditEvent(ev, { tenant_id: auth.tenantId, key_id: auth.keyId, sandbox_id: sandbox.id, exec_id: handle.id }));
      },
    });
    agent.network = Boolean(session.env.HTTP_PROXY);
    // layerEnv keeps the helpers' NODE_OPTIONS preload next to the broker's.
    spec.env = layerEnv(spec.env, session.env, agent.network ? { PETRI_NETWORK: "proxy" } : undefined);
    spec.mounts = [...spec.mounts, session.mount];
    spec.argv = session.wrapArgv(spec.argv);
    const outR = session.redactor.stream();
    const errR = session.redactor.stream();
    handle.trackRedactors(outR, errR);
    spec.onStdout = (b) => { const c = outR.push(b); if (c.length) handle.emit("stdout", c); };
    spec.onStderr = (b) => { const c = errR.push(b); if (c.length) handle.emit("stderr", c); };
    return session;
  }

  private safeAppend(ev: AuditEvent): void {
    try {
      this.d.audit?.append(ev);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, action: ev.action }, "audit append failed");
    }
  }

  getHandle(tenantId: string, sandboxId: string, execId: string): RunHandle | undefined {
    const h = this.running.get(execId);
    return h && h.tenantId === tenantId && h.sandboxId === sandboxId ? h : undefined;
  }

  get(auth: AuthContext, sandboxId: string, execId: string): ExecResult | { id: string; sandbox_id: string; status: "running"; created_at: string } {
    const row = this.d.db.prepare("SELECT * FROM execs WHERE id = ? AND sandbox_id = ? AND tenant_id = ?").get(execId, sandboxId, auth.tenantId) as
      { id: string; status: string; result_json: string | null; created_at: number } | undefined;
    if (!row) throw new PetriError("EXEC_NOT_FOUND", `run ${execId} not found`);
    if (row.result_json) return JSON.parse(row.result_json) as ExecResult;
    return { id: row.id, sandbox_id: sandboxId, status: "running", created_at: new Date(row.created_at).toISOString() };
  }

  history(auth: AuthContext, sandboxId: string, opts: { limit: number }): object[] {
    const rows = this.d.db.prepare("SELECT id, status, result_json, created_at, finished_at, request_json FROM execs WHERE sandbox_id = ? AND tenant_id = ? ORDER BY created_at DESC, id LIMIT ?")
      .all(sandboxId, auth.tenantId, opts.limit) as { id: string; status: string; result_json: string | null; created_at: number; finished_at: number | null; request_json: string }[];
    return rows.map((r) => {
      const res = r.result_json ? (JSON.parse(r.result_json) as ExecResult) : null;
      const req = JSON.parse(r.request_json) as { filename: string | null };
      return {
        id: r.id,
        status: r.status,
        entry: req.filename ?? "<snippet>",
        exit_code: res?.exit_code ?? null,
        timed_out: res?.timed_out ?? false,
        oom_killed: res?.oom_killed ?? false,
        duration_ms: res?.duration_ms ?? null,
        created_at: new Date(r.created_at).toISOString(),
        finished_at: r.finished_at ? new Date(r.finished_at).toISOString() : null,
      };
    });
  }

  /**
   * Cancels every run of a sandbox, waits for them to end, and removes any pre-started
   * container kept for it (used before deleting it).
   */
  async cancelSandbox(sandboxId: string): Promise<void> {
    const hs = [...this.running.values()].filter((h) => h.sandboxId === sandboxId);
    for (const h of hs) h.cancel("cancel");
    await Promise.all(hs.map((h) => h.done));
    fs.rmSync(this.displayDirFor(sandboxId), { recursive: true, force: true });
    for (const rt of this.d.runtimes.values()) {
      await rt.reap({ "io.jhansi.petri.instance": this.d.instanceId, "io.jhansi.petri.sandbox": sandboxId }).catch(() => 0);
    }
  }

  async shutdown(): Promise<void> {
    const hs = [...this.running.values()];
    for (const h of hs) h.cancel("shutdown");
    await Promise.all(hs.map((h) => h.done));
  }

  /** Runs left "running" by a crash are closed with a clear status, never silently dropped. */
  recoverInterrupted(): number {
    const rows = this.d.db.prepare("SELECT id, sandbox_id, created_at FROM execs WHERE status = 'running'").all() as { id: string; sandbox_id: string; created_at: number }[];
    for (const r of rows) {
      const result = {
        id: r.id, sandbox_id: r.sandbox_id, status: "failed", exit_code: null, signal: null, stdout: "", stderr: "",
        error: { code: "INTERNAL", message: "the server stopped while this run was in progress; its container was removed" },
        created_at: new Date(r.created_at).toISOString(), finished_at: new Date().toISOString(),
      };
      this.d.db.prepare("UPDATE execs SET status = 'failed', result_json = ?, finished_at = ? WHERE id = ?").run(JSON.stringify(result), Date.now(), r.id);
    }
    return rows.length;
  }
}
