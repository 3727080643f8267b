import fs from "node:fs";
import path from "node:path";
import type { Config } from "../config.js";
import type { DB } from "../store/db.js";
import { PetriError } from "../errors.js";
import { newId } from "../ids.js";
import type { Sandbox, SandboxService } from "../sandboxes/sandboxes.js";
import type { WorkspaceStore } from "../workspaces/workspaces.js";
import type { RunResult, RunSpec, Runtime } from "../runtimes/types.js";
import type { AuthContext } from "../auth/keys.js";
import type { QuotaService } from "../auth/quotas.js";
import { checkTenantHosts, openBrokerSession, type BrokerSession, type SecretStore } from "../vault/index.js";
import type { AuditEvent } from "../audit/types.js";
import { brokerAuditEvent, runAuditLevel, type RunAuditContext, type RunTrace } from "./audit-events.js";
import type { TracerService } from "../tracing/tracer.js";
import { RunHandle } from "./handle.js";
import { planRun, type RunPlan } from "./plan.js";
import { RunRecorder, buildResult, startFailure } from "./recorder.js";
import { CacheBook, NO_CHANGES, sha256OfFd, type CapturedChanges, type RunWorkspace } from "./capture.js";
import { LABEL_VIEW, ViewPool } from "./views.js";
import type { ExecRequest, ExecResult } from "./types.js";
import type { PreparedDeps } from "../deps/service.js";
import { layerEnv, prepareAgentFiles, prepareDisplayDirs } from "./agent-files.js";
import { BlockedHosts, agentFields } from "./agent-result.js";
import type { ChangeEntry } from "./overlay/changes.js";

export type { ExecRequest, ExecResult, ExecStatus } from "./types.js";
export { RunHandle, type ExecEvents } from "./handle.js";

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
  audit?: {
    append(ev: AuditEvent): unknown; appendMany?(evs: AuditEvent[]): unknown; appendDurable?(evs: AuditEvent[]): Promise<unknown>;
    failMode?: "closed" | "open"; refusesWork?(): boolean;
  };
  /** Told of every finished run (metrics): its result, the runtime's timings, when the runtime was asked. */
  onRunFinished?: (r: { result: ExecResult; timings?: Record<string, number>; runtimeCalledAt: number | null; createdAt: number }) => void;
  /** Host eBPF tracer for runc, crun and bwrap runs (what each run executed, opened, connected to). */
  tracer?: TracerService;
}

/** One run from start() to its result: what execute() and the failure handler work on. */
interface ActiveRun {
  auth: AuthContext;
  sandbox: Sandbox;
  plan: RunPlan;
  handle: RunHandle;
  runtime: Runtime;
  spec: RunSpec;
  auditCtx: RunAuditContext;
  createdAt: number;
  /** The run's own folder in the sandbox's snippet mount (removed when it ends). */
  snippetRunDir: string;
  /** Host folder for the run's brokers (removed when it ends). */
  runDir: string;
  released: boolean;
  /** For agents (agent-result.ts): hosts the broker refused, whether it had network, its display folder. */
  agent: { blocked: BlockedHosts; network: boolean; displayRunDir: string | null };
  runtimeCalledAt: number | null;
  /** The caller's answer of the result has left (ExecService.start's `answered`). */
  answered?: Promise<unknown>;
}

/** The longest the work after a result waits for the caller to answer it. */
const ANSWER_WAIT_MS = 1000;

/**
 * Resolves once `answered` has (at most ANSWER_WAIT_MS), and after the event loop's next poll
 * for I/O: what is ready to be read or written by then (the reply reaching a client on this host,
 * requests that arrived meanwhile) goes before the background work that follows.
 */
export async function afterAnswer(answered: Promise<unknown> | undefined): Promise<void> {
  if (answered) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([answered.catch(() => undefined), new Promise<void>((r) => { timer = setTimeout(r, ANSWER_WAIT_MS); })]);
    clearTimeout(timer);
  }
  // An immediate queued from an immediate runs in the next loop iteration, after its poll phase.
  await new Promise<void>((r) => setImmediate(() => setImmediate(r)));
}

/**
 * Runs code: plans a run (plan.ts), records it (recorder.ts), captures what it does to the
 * workspace (capture.ts) and hands it to a runtime. Every started run ends with a result, a freed
 * quota slot and a resolved handle, whatever throws on the way.
 */
export class ExecService {
  private readonly running = new Map<string, RunHandle>();
  /** Every run's whole course, past its result too (its view is unmounted after the result). */
  private readonly executing = new Map<Promise<void>, string>();
  private readonly recorder: RunRecorder;
  /** Per sandbox: the last run's turn (runs of one sandbox take turns). */
  private readonly turns = new Map<string, Promise<void>>();
  private readonly caches: CacheBook;
  private readonly views: ViewPool;

  constructor(private readonly d: ExecDeps) {
    this.recorder = new RunRecorder({ db: d.db, audit: d.audit, log: d.log });
    this.caches = new CacheBook();
    this.views = new ViewPool({
      root: ExecService.viewRoot(d.config), workspaces: d.workspaces, cacheDirFor: (id) => d.sandboxes.cacheDirFor(id),
      uid: d.config.sandboxUid, gid: d.config.sandboxGid, idleMs: d.config.warmIdleMs, log: d.log,
      labels: { "io.jhansi.petri.instance": d.instanceId },
    });
  }

  /**
   * Picks how runs' writes are bounded (PETRI_RUN_SCRATCH; loop devices, else tmpfs) and says so
   * in the log: once, at start, before any run.
   */
  async probeScratch(): Promise<void> {
    const r = await this.views.probe(this.d.config.runScratch);
    // Ready before the server answers (and mounted before anything can kill it half-made).
    await this.views.keepScratchReady(this.d.config.defaultLimits.workspace_mb * 1024 * 1024);
    if (r.mounter === "helper") this.d.log.info({ mounts: "helper" }, "views' overlays are mounted by a long-lived helper (no process per mount)");
    if (r.kind === "loop") this.d.log.info({ scratch: "loop" }, "runs write into loop-mounted ext4 scratches of their quota's size (kernel-enforced quota)");
    else {
      this.d.log.warn({ scratch: "tmpfs", reason: r.reason },
        "runs write into a tmpfs of their quota's size: the quota is still enforced by the kernel, but what a run writes also counts against its memory limit (loop devices would avoid that; see docs/workspace-changes.md)");
    }
  }

  /** Where runs' workspace views are mounted (overlay/view.ts). */
  static viewRoot(config: Readonly<Config>): string {
    return path.join(config.dataDir, "views");
  }

  /** Per sandbox, so the mounts (and a pre-started container's shape) stay the same from run to run. */
  private displayDirFor(sandboxId: string): string {
    return path.join(this.d.config.dataDir, "display", sandboxId);
  }

  activeCount(): number {
    return this.running.size;
  }

  /** Validates and starts a run; the returned handle's `done` resolves with the result. */
  start(auth: AuthContext, sandbox: Sandbox, req: ExecRequest, opts: {
    interactiveStdin?: boolean; deps?: PreparedDeps | null;
    /** Resolves once the result has been answered: the work after the result (the view's unmount, the next run's view) waits for it, at most ANSWER_WAIT_MS. */
    answered?: Promise<unknown>;
  } = {}): RunHandle {
    const { config, workspaces } = this.d;
    const id = newId("ex");
    const snippetDir = this.d.sandboxes.snippetDirFor(sandbox.id);
    // The sandbox's image (a catalog name, or a Docker reference built elsewhere).
    const image = this.d.imageRef?.(sandbox.image) ?? sandbox.image;
    const plan = planRun({
      config, sandbox, req, image, execId: id, instanceId: this.d.instanceId,
      workspaceDir: workspaces.dirFor(sandbox.id), cacheDir: this.d.sandboxes.cacheDirFor(sandbox.id), snippetDir,
      agentDir: prepareAgentFiles(config.dataDir), displayDir: this.displayDirFor(sandbox.id),
      rootfs: this.d.rootfsFor(image), interactiveStdin: Boolean(opts.interactiveStdin),
      deps: opts.deps ?? null,
    });
    if (plan.egress.secrets.length || plan.egress.allowHosts.length) {
      if (!this.d.vault) throw new PetriError("RUNTIME_UNAVAILABLE", "this server has no vault: secrets and allowed hosts are not available");
      for (const name of plan.egress.secrets) this.d.vault.get(auth.tenantId, name);
    }
    if (this.d.audit?.refusesWork?.()) throw new PetriError("AUDIT_UNAVAILABLE", "the audit log cannot be written, so no run starts (PETRI_AUDIT_FAIL=closed)");
    const runtime = this.d.runtimes.get(sandbox.runtime);
    if (!runtime) throw new PetriError("RUNTIME_UNAVAILABLE", `runtime "${sandbox.runtime}" is not available on this server`);
    if (!plan.snippet) this.checkEntry(sandbox.id, plan.entry);
    this.prepareMountSources(sandbox.id, snippetDir);

    const createdAt = Date.now();
    this.d.quotas?.runStarting(auth.tenantId);
    try {
      this.recorder.insert({ execId: id, sandboxId: sandbox.id, tenantId: auth.tenantId, request: plan.requestRecord, createdAt });
    } catch (e) {
      this.d.quotas?.runEnded(auth.tenantId);
      throw e;
    }
    const handle = new RunHandle(id, sandbox.id, auth.tenantId, Boolean(opts.interactiveStdin));
    handle.dependencies = opts.deps?.summary ?? null;
    if (opts.deps) void handle.done.then(() => opts.deps!.release());
    this.running.set(id, handle);
    this.d.sandboxes.runStarted(sandbox.id);
    this.d.sandboxes.touch(sandbox.id);

    const spec: RunSpec = {
      ...plan.spec,
      stdinStream: opts.interactiveStdin ? handle.stdinIterator() : undefined,
      signal: handle.abort.signal,
      // Each run has its own workspace view: the next run's unit is pre-started on the next view.
      prestart: false,
      onStdout: (b) => handle.emit("stdout", b),
      onStderr: (b) => handle.emit("stderr", b),
    };
    if (opts.interactiveStdin && req.stdin) handle.writeStdin(Buffer.from(req.stdin));
    const run: ActiveRun = {
      auth, sandbox, plan, handle, runtime, spec, createdAt, released: false,
      snippetRunDir: path.join(snippetDir, id),
      agent: { blocked: new BlockedHosts(), network: false, displayRunDir: null }, runtimeCalledAt: null, answered: opts.answered,
      runDir: path.join(config.dataDir, "runs", id),
      auditCtx: {
        tenant_id: auth.tenantId, key_id: auth.keyId, sandbox_id: sandbox.id, exec_id: id, language: sandbox.language,
        runtime: sandbox.runtime, image: plan.image, argv: spec.argv, entry: plan.entry, code: req.code, envNames: Object.keys(spec.env).sort(), limits: plan.limits,
        auditLevel: runAuditLevel(sandbox.runtime, runtime, this.d.tracer),
        auditFailMode: this.d.audit?.failMode ?? "closed",
      },
    };
    // Nothing a run does may become an unhandled rejection: an unexpected throw fails this run.
    const p = this.execute(run).catch((e: unknown) => this.failUnexpectedly(run, e)).finally(() => this.executing.delete(p));
    this.executing.set(p, sandbox.id);
    return handle;
  }

  /** Refuses early, with a clear error, an entry file the run could not open anyway. */
  private checkEntry(sandboxId: string, entry: string): void {
    try {
      fs.closeSync(this.d.workspaces.openRead(sandboxId, entry).fd);
    } catch (e) {
      if (e instanceof PetriError && e.code === "FILE_NOT_FOUND") {
        throw new PetriError("FILE_NOT_FOUND", `cannot run ${entry}: no such file in the workspace`);
      }
      throw e;
    }
  }

  private prepareMountSources(sandboxId: string, snippetDir: string): void {
    const { config } = this.d;
    const cacheDir = this.d.sandboxes.cacheDirFor(sandboxId);
    fs.mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
    fs.chownSync(cacheDir, config.sandboxUid, config.sandboxGid);
    // Root-owned and read-only to the run: a run cannot plant anything for the next one.
    fs.mkdirSync(snippetDir, { recursive: true, mode: 0o755 });
  }

  /** Runs of one sandbox take turns (README: consistency): each sees the commits of those before it. */
  private async takeTurn(sandboxId: string, handle: RunHandle): Promise<(() => void) | null> {
    const prev = this.turns.get(sandboxId) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.turns.set(sandboxId, chain);
    void chain.then(() => { if (this.turns.get(sandboxId) === chain) this.turns.delete(sandboxId); });
    const aborted = new Promise<void>((r) => handle.abort.signal.addEventListener("abort", () => r(), { once: true }));
    await Promise.race([prev, aborted]);
    if (handle.abort.signal.aborted) {
      // Cancelled while waiting: give the turn on once the runs before have had theirs.
      void prev.then(release);
      return null;
    }
    return release;
  }

  private async execute(run: ActiveRun): Promise<void> {
    const { handle, plan, sandbox } = run;
    const quotaBytes = plan.limits.workspace_mb * 1024 * 1024;
    const endTurn = await this.takeTurn(sandbox.id, handle);
    if (!endTurn) {
      await this.finishRun(run, { raw: null, error: null, changes: { ...NO_CHANGES, usage: this.d.workspaces.usage(sandbox.id) }, broker: null, quotaBytes });
      return;
    }
    let ws: RunWorkspace | null = null;
    // The run's audit records, appended once the tracer has caught up with its end (after the result).
    let recorded: Promise<void> | undefined;
    try {
      if (plan.snippet) {
        fs.mkdirSync(run.snippetRunDir, { mode: 0o755 });
        fs.writeFileSync(path.join(run.snippetRunDir, plan.snippet.filename), plan.snippet.code, { mode: 0o644 });
      }
      run.agent.displayRunDir = prepareDisplayDirs(this.displayDirFor(sandbox.id), handle.id, this.d.config.sandboxUid, this.d.config.sandboxGid);
      // /cache is bounded like the workspace: past the workspace quota it is emptied (it is only a cache).
      this.caches.prepare(sandbox.id, this.d.sandboxes.cacheDirFor(sandbox.id), { uid: this.d.config.sandboxUid, gid: this.d.config.sandboxGid, maxBytes: quotaBytes });
      const usageBefore = this.d.workspaces.usage(sandbox.id);
      const viewing = this.views.take(sandbox.id, quotaBytes);
      viewing.catch(() => undefined); // awaited below; not unhandled meanwhile
      if (plan.entry !== "<snippet>" && this.recorder.auditing) run.auditCtx.entrySha256 = this.entrySha256(sandbox.id, plan.entry);
      // The sandbox's previous run may still be waiting for its trace: its records come first.
      await this.recorder.recordedFor(sandbox.id);
      // exec.start is durable before the program starts; its sync (a group commit off the event
      // loop) overlaps the view's mount instead of following it.
      const started = this.recorder.started(run.auditCtx);
      ws = await viewing;
      run.spec.mounts = ws.mounts(run.spec.mounts);
      run.spec.labels = { ...run.spec.labels, [LABEL_VIEW]: ws.view.opts.id };
      await started;

      let raw: RunResult | null = null;
      let error: ExecResult["error"] = null;
      let broker: BrokerSession | null = null;
      let wantsNext = false;
      // runc and crun run Docker's image layers; bwrap and the direct OCI runtimes the root filesystem.
      const via = sandbox.runtime === "runc" || sandbox.runtime === "crun" ? "layers" as const : "rootfs" as const;
      const traceSession = run.auditCtx.auditLevel.level === "ebpf" ? this.d.tracer?.begin(run.auditCtx.argv, { image: run.spec.image, via }) ?? null : null;
      let tracing: Promise<RunTrace> | undefined;
      try {
        if (plan.egress.secrets.length || plan.egress.allowHosts.length) broker = await this.openBroker(run);
        // The pre-start policy counts runs as they start (as a runtime that pre-starts by itself does):
        // a unit for the next run follows this one when the sandbox runs again within the warm period.
        wantsNext = run.runtime.wantsPrestartAfter?.(run.spec) ?? false;
        run.runtimeCalledAt = Date.now();
        if (traceSession) run.spec.tracer = traceSession;
        run.spec.auditArgv = run.auditCtx.argv;
        raw = await run.runtime.run(run.spec);
      } catch (e) {
        this.d.log.error({ err: (e as Error)?.message ?? String(e), exec: handle.id }, "run failed to start");
        error = startFailure(e, run.spec.image);
      } finally {
        // The tracer's catching up (its barriers and the drain of the kernel's open counts) overlaps
        // reading the change set, and the result does not wait for it: only the audit records do.
        tracing = traceSession?.finish().catch((e: Error) => ({ summary: null, complete: false, reason: e.message }));
        await broker?.close().catch(() => undefined);
        handle.closeStdin();
        this.removeRunFiles(run);
      }
      const ok = raw !== null && raw.exitCode === 0 && !raw.timedOut && !raw.killed && !raw.oomKilled && !error;
      const commit = plan.commit === "always" ? raw !== null : plan.commit === "on_success" ? ok : false;
      const whyNot = plan.commit === "never" ? "the run asked for commit: never" : raw === null ? "the run did not start" : "the run did not succeed (commit: on_success)";
      const changes = await ws.finish({ commit, whyNot, usageBefore });
      this.caches.add(sandbox.id, changes.cacheDelta);
      // The workspace's byte counter learns the commit's delta: no walk.
      if (changes.committed) this.d.workspaces.adjustUsage(sandbox.id, changes.usage - usageBefore);
      if (changes.tooDeep) error = { code: "CHANGES_NOT_COMMITTED", message: `${changes.notCommitted}; nothing of this run was committed` };
      if (changes.quotaHit) {
        error = {
          code: "WORKSPACE_QUOTA_EXCEEDED",
          message: changes.notCommitted && changes.committed === false && commit
            ? `${changes.notCommitted}; they were not committed`
            : `the run reached its write allowance (the workspace quota of ${quotaBytes} bytes plus a margin): writes beyond it failed with "no space left"`,
        };
      }
      // The result does not wait for the view's unmount (the sandbox's next run does).
      recorded = this.finishRun(run, { raw, error, changes, broker, quotaBytes, trace: tracing ?? (raw?.trace ? { gvisor: raw.trace } : undefined) });
      // The answer first: the result's waiters (the HTTP reply, which waits for its audit record's
      // group commit) go before the unmount, whose spawn blocks the event loop until the helper
      // has exec'd (1–2 ms on a quiet host, 10+ ms on a loaded one) and whose scratch reset is
      // sync I/O; and before the next run's view and pre-started unit (more spawns).
      await afterAnswer(run.answered);
      await ws.close();
      ws = null;
      // The next run of this sandbox will find its view, and perhaps a container, ready.
      this.views.prepareNext(sandbox.id, run.runtime, run.spec, quotaBytes, { wanted: wantsNext });
    } finally {
      endTurn();
      if (ws) await ws.close().catch((e: unknown) => this.d.log.error({ err: String(e), exec: handle.id }, "could not remove a run's workspace view"));
    }
    // The run stays in `executing` until its records are written: shutdown and sandbox deletion wait for them.
    await recorded;
  }

  private entrySha256(sandboxId: string, entry: string): string | undefined {
    try {
      const { fd } = this.d.workspaces.openRead(sandboxId, entry);
      return sha256OfFd(fd);
    } catch {
      return undefined;
    }
  }

  /** Redacts the output, builds and records the result, frees the run's slot, settles the handle. */
  private finishRun(run: ActiveRun, o: { raw: RunResult | null; error: ExecResult["error"]; changes: CapturedChanges; broker: BrokerSession | null; quotaBytes: number; trace?: RunTrace | Promise<RunTrace> }): Promise<void> {
    const { handle, sandbox, plan } = run;
    // Redaction is the backstop: a secret value that reached the output never leaves Petri.
    const redactions = new Set<string>();
    const clean = (b: Buffer | undefined): Buffer => {
      if (!b || !o.broker) return b ?? Buffer.alloc(0);
      const r = o.broker.redactor.redactBuffer(b);
      for (const n of r.redactions) redactions.add(n);
      return r.data;
    };
    const stdout = clean(o.raw?.stdout);
    const stderr = clean(o.raw?.stderr);
    for (const n of handle.streamRedactions) redactions.add(n);
    const result = buildResult({
      execId: handle.id, sandboxId: sandbox.id, language: sandbox.language, runtime: sandbox.runtime, entry: plan.entry,
      raw: o.raw, cancelled: handle.cancelReason === "cancel" || handle.cancelReason === "shutdown",
      stdout, stderr, redactions: [...redactions], changes: o.changes, commit: plan.commit, dependencies: handle.dependencies,
      quotaBytes: o.quotaBytes, error: o.error, createdAt: run.createdAt, finishedAt: Date.now(),
    });
    Object.assign(result, agentFields({
      language: sandbox.language, raw: o.raw, error: o.error, stdout: result.stdout, stderr: result.stderr, limits: plan.limits, cancelReason: handle.cancelReason, quotaHit: o.changes.quotaHit,
      networkAllowed: run.agent.network, blocked: run.agent.blocked, workspaces: this.d.workspaces, sandboxId: sandbox.id,
      changed: [...result.files.created, ...result.files.modified], displayDir: run.agent.displayRunDir ?? this.displayDirFor(sandbox.id),
      redact: o.broker ? (b) => o.broker!.redactor.redactBuffer(b).data : undefined,
    }));
    if (run.agent.displayRunDir) fs.rmSync(run.agent.displayRunDir, { recursive: true, force: true });
    const recorded = this.recorder.finished(result, o.changes.entries, { ctx: run.auditCtx, stdout, stderr, trace: o.trace });
    try {
      this.d.onRunFinished?.({ result, timings: o.raw?.timings, runtimeCalledAt: run.runtimeCalledAt, createdAt: run.createdAt });
    } catch { /* metrics never fail a run */ }
    this.release(run, o.changes.usage);
    handle.settle(result);
    return recorded;
  }

  /**
   * The last resort for a throw nothing else caught: the run is stopped and fails with a clear
   * error, its slot is freed and its followers get a result. Never throws.
   */
  private failUnexpectedly(run: ActiveRun, e: unknown): void {
    const { handle, sandbox, plan } = run;
    try {
      this.d.log.error({ err: (e as Error)?.stack ?? String(e), exec: handle.id }, "run failed unexpectedly");
      handle.abort.abort();
      this.removeRunFiles(run);
      const error = { code: "INTERNAL", message: "Petri failed while handling this run; it was stopped (the server log has details under this run's id)" };
      const result = buildResult({
        execId: handle.id, sandboxId: sandbox.id, language: sandbox.language, runtime: sandbox.runtime, entry: plan.entry,
        raw: null, cancelled: false, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), redactions: [],
        changes: { ...NO_CHANGES, notCommitted: "Petri failed while handling this run" }, commit: plan.commit, dependencies: handle.dependencies,
        quotaBytes: plan.limits.workspace_mb * 1024 * 1024, error, createdAt: run.createdAt, finishedAt: Date.now(),
      });
      // Whatever happened to the workspace, its size is measured again (in the background).
      this.d.workspaces.bumpGeneration(sandbox.id);
      void this.d.workspaces.reconcile(sandbox.id).catch(() => undefined);
      if (handle.result) return;
      void this.recorder.finished(result, [], null);
      this.recorder.append({
        kind: "exec", action: "exec.finish", outcome: "failure", error_code: "INTERNAL",
        tenant_id: run.auth.tenantId, key_id: run.auth.keyId, sandbox_id: sandbox.id, exec_id: handle.id,
        detail: { language: sandbox.language, runtime: sandbox.runtime, entry: plan.entry, status: "failed" },
      });
      handle.settle(result);
    } catch (e2) {
      this.d.log.error({ err: String(e2), exec: handle.id }, "could not record an unexpected run failure");
    } finally {
      this.release(run, null);
      if (!handle.result) handle.settle({ id: handle.id, sandbox_id: sandbox.id, status: "failed", error: { code: "INTERNAL", message: "Petri failed while handling this run" } } as ExecResult);
    }
  }

  /** Frees what a run holds (once): its entry, its quota slot, its sandbox's run count. */
  private release(run: ActiveRun, usage: number | null): void {
    if (run.released) return;
    run.released = true;
    const { auth, sandbox, handle } = run;
    this.running.delete(handle.id);
    this.d.quotas?.runEnded(auth.tenantId);
    if (usage !== null) this.d.quotas?.recordUsage(auth.tenantId, sandbox.id, usage);
    this.d.sandboxes.runEnded(sandbox.id);
    this.d.sandboxes.touch(sandbox.id);
  }

  private removeRunFiles(run: ActiveRun): void {
    fs.rmSync(run.runDir, { recursive: true, force: true });
    fs.rmSync(run.snippetRunDir, { recursive: true, force: true });
  }

  /**
   * Starts the run's credential brokers and points the run at them: placeholders in env, the
   * broker directory mounted read-only, the in-sandbox proxy forwarder, and redaction of what is
   * streamed. Broker events (every connection, query and request, allowed or denied) are audited.
   */
  private async openBroker(run: ActiveRun): Promise<BrokerSession> {
    const { auth, sandbox, handle, spec, runDir } = run;
    const noSockets = await run.runtime.hostSockets?.();
    if (noSockets) throw new PetriError("RUNTIME_UNAVAILABLE", noSockets);
    const egress = run.plan.egress;
    const session = await openBrokerSession({
      store: this.d.vault!, tenantId: auth.tenantId, sandboxId: sandbox.id, execId: handle.id,
      secrets: egress.secrets, allowHosts: egress.allowHosts, egress: this.d.config.egress, runDir: path.join(runDir, "broker"),
      onEvent: (ev) => {
        run.agent.blocked.observe(ev);
        this.recorder.append(brokerAuditEvent(ev, { tenant_id: auth.tenantId, key_id: auth.keyId, sandbox_id: sandbox.id, exec_id: handle.id }));
      },
    });
    run.agent.network = Boolean(session.env.HTTP_PROXY);
    // layerEnv keeps the helpers' NODE_OPTIONS preload next to the broker's.
    spec.env = layerEnv(spec.env, session.env, run.agent.network ? { PETRI_NETWORK: "proxy" } : undefined);
    spec.mounts = [...spec.mounts, session.mount];
    spec.argv = session.wrapArgv(spec.argv);
    const outR = session.redactor.stream();
    const errR = session.redactor.stream();
    handle.trackRedactors(outR, errR);
    spec.onStdout = (b) => { const c = outR.push(b); if (c.length) handle.emit("stdout", c); };
    spec.onStderr = (b) => { const c = errR.push(b); if (c.length) handle.emit("stderr", c); };
    return session;
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
   * container kept for it (used before deleting it). `runtime`: the sandbox's runtime, when the
   * caller knows it — its units only ever run there, so only that runtime is asked (a Docker
   * runtime's reap is an engine API call, a direct runtime's a scan of its bundles); without it,
   * every runtime is.
   */
  async cancelSandbox(sandboxId: string, opts: { runtime?: string } = {}): Promise<void> {
    const hs = [...this.running.values()].filter((h) => h.sandboxId === sandboxId);
    for (const h of hs) h.cancel("cancel");
    await Promise.all(hs.map((h) => h.done));
    fs.rmSync(this.displayDirFor(sandboxId), { recursive: true, force: true });
    // Their views are unmounted after their results: wait for that too.
    await Promise.all([...this.executing].filter(([, sb]) => sb === sandboxId).map(([p]) => p));
    // The next run's view (and the unit pre-started on it) first, then whatever else is left.
    await this.views.forget(sandboxId);
    const own = opts.runtime !== undefined ? this.d.runtimes.get(opts.runtime) : undefined;
    for (const rt of own ? [own] : this.d.runtimes.values()) {
      await rt.reap({ "io.jhansi.petri.instance": this.d.instanceId, "io.jhansi.petri.sandbox": sandboxId }).catch(() => 0);
    }
    this.caches.forget(sandboxId);
  }

  /**
   * Resolves once the work that follows runs' results is done: their views unmounted, the next
   * runs' views mounted and their units asked for (a benchmark's "the user came back later").
   */
  async settled(): Promise<void> {
    await Promise.all(this.executing.keys());
    await this.views.settled();
  }

  /**
   * Resolves once every run that has a result has its audit records written (they follow the
   * result by the tracer's catching up): reading the audit after a result sees its run.
   */
  auditRecorded(): Promise<void> {
    return this.recorder.recordsSettled();
  }

  /** A run's change set: every entry it created, modified or deleted, with sizes and hashes. */
  changes(auth: AuthContext, sandboxId: string, execId: string): { id: string; status: string; committed: boolean | null; changes: ChangeEntry[] | null } {
    const row = this.d.db.prepare("SELECT status, result_json, changes_json FROM execs WHERE id = ? AND sandbox_id = ? AND tenant_id = ?").get(execId, sandboxId, auth.tenantId) as
      { status: string; result_json: string | null; changes_json: string | null } | undefined;
    if (!row) throw new PetriError("EXEC_NOT_FOUND", `run ${execId} not found`);
    const res = row.result_json ? (JSON.parse(row.result_json) as Partial<ExecResult>) : null;
    return { id: execId, status: row.status, committed: res?.committed ?? null, changes: row.changes_json ? (JSON.parse(row.changes_json) as ChangeEntry[]) : null };
  }

  async shutdown(): Promise<void> {
    const hs = [...this.running.values()];
    for (const h of hs) h.cancel("shutdown");
    await Promise.all(hs.map((h) => h.done));
    await Promise.all(this.executing.keys());
    await this.views.close();
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
