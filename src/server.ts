import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import Docker from "dockerode";
import pino, { type Logger } from "pino";
import type { FastifyInstance } from "fastify";
import type { Config } from "./config.js";
import { openDatabase, getMeta, setMeta, type DB } from "./store/db.js";
import { KeyService } from "./auth/keys.js";
import { QuotaService } from "./auth/quotas.js";
import { WorkspaceStore } from "./workspaces/workspaces.js";
import { SandboxService } from "./sandboxes/sandboxes.js";
import { ExecService } from "./exec/exec.js";
import { ViewPool } from "./exec/views.js";
import { DockerRuntime } from "./runtimes/docker.js";
import { BwrapRuntime } from "./runtimes/bwrap.js";
import { describeChoice, detectRuntimes, dockerStrategy, gvisorStraceSeesHandover, strategyFor, type RuntimeProbe } from "./runtimes/detect.js";
import { OciRuntime } from "./runtimes/oci.js";
import { directOciKind, isDockerRuntime } from "./config.js";
import type { Runtime } from "./runtimes/types.js";
import { rootfsDirFor } from "./images/build.js";
import { ImageCatalog } from "./images/images.js";
import { imageRoutes } from "./api/routes/images.js";
import { buildApp, type AppDeps } from "./api/app.js";
import { BlobStore } from "./workspaces/sync.js";
import { AuditLog, parseSinkConfig } from "./audit/index.js";
import { SecretStore, loadOrCreateMasterKey, readMasterKeyRing, vaultRoutes } from "./vault/index.js";
import { DependencyService } from "./deps/service.js";
import { dependencyRoutes } from "./deps/routes.js";
import { workspaceReader } from "./deps/workspace-reader.js";
import { initJsScanner, loadFallbackParser } from "./deps/js-imports.js";
import { PetriMetrics } from "./metrics/metrics.js";
import { Readiness } from "./metrics/readiness.js";
import { preflight } from "./ops/preflight.js";
import { runObservation } from "./metrics/observe.js";
import { DockerRuntime as DockerRuntimeClass } from "./runtimes/docker.js";
import { TracerService } from "./tracing/tracer.js";

export interface PetriServer {
  app: FastifyInstance;
  /** The services the HTTP app is built on (MCP over stdio uses them directly). */
  deps: AppDeps;
  db: DB;
  keys: KeyService;
  sandboxes: SandboxService;
  exec: ExecService;
  runtimes: Map<string, Runtime>;
  audit: AuditLog;
  /** The host eBPF tracer (runc, crun, bwrap runs); its status says whether runs are traced. */
  tracer: TracerService;
  vault: SecretStore;
  /** What runtime detection found at start (for `petri doctor` and logs). */
  probes: RuntimeProbe[];
  instanceId: string;
  metrics: PetriMetrics;
  readiness: Readiness;
  /** Where the bootstrap admin key came from (said once at start). */
  bootstrap: { source: string; file?: string };
  reapNow(): Promise<{ expired: number; containers: number }>;
  close(): Promise<void>;
}

/**
 * A promise rejected with nobody listening must not kill a server with runs in flight (Node's
 * default since v15): it is logged, loudly, and the server goes on. Installed once per process
 * by `petri serve`; every run has its own catch (ExecService), so this is the last net.
 */
let guardsInstalled = false;
export function installProcessGuards(log: Pick<Logger, "error">): void {
  if (guardsInstalled) return;
  guardsInstalled = true;
  process.on("unhandledRejection", (reason) => {
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, "unhandled promise rejection (the server keeps running)");
  });
}

export const LABEL_MANAGED = "io.jhansi.petri.managed";
/** Where direct OCI runs keep their bundles and runtime state, per instance (src/runtimes/oci.ts). */
export const OCI_STATE_ROOT = "/run/petri";
export const LABEL_INSTANCE = "io.jhansi.petri.instance";

/**
 * Wires the services together. The instance id (kept in the store) scopes the reaper to this
 * server's own containers, so two Petri servers sharing one Docker engine never reap each other.
 */
export async function createServer(config: Readonly<Config>, opts: { logger?: Logger } = {}): Promise<PetriServer> {
  const logger = opts.logger ?? pino({ level: config.logLevel, redact: { paths: ["req.headers.authorization"], censor: "[REDACTED]" } });
  const docker = new Docker({ socketPath: config.dockerSocket });
  // Fails with the fix (StartupError) instead of at the first run.
  const checked = await preflight(config, { docker });
  for (const w of checked.warnings) logger.warn(w);
  protectDataDir(config, !checked.excluded.has("bwrap"));
  const db = openDatabase(config.dataDir);
  let instanceId = getMeta(db, "instance_id");
  if (!instanceId) {
    instanceId = randomBytes(8).toString("hex");
    setMeta(db, "instance_id", instanceId);
  }
  // The audit log is opened first and closed last: everything in between is recorded.
  const audit = AuditLog.open({
    dir: config.auditDir, sinks: parseSinkConfig(config.auditSinks), log: logger,
    checkpointEvery: config.auditCheckpointEvery, productVersion: "0.1.0", failMode: config.auditFailMode,
  });
  const metricsRef: { m?: PetriMetrics } = {};
  {
    // Every event passes the metrics on its way in (counts by kind; broker connections come from
    // the brokers' own events), whichever service appended it.
    // append() goes through appendMany(), so these two see every event once.
    const appendMany = audit.appendMany.bind(audit);
    audit.appendMany = (evs) => {
      const recs = appendMany(evs);
      for (const ev of evs) metricsRef.m?.auditAppended(ev);
      return recs;
    };
    const appendDurable = audit.appendDurable.bind(audit);
    audit.appendDurable = (evs) => appendDurable(evs).then((recs) => {
      for (const ev of evs) metricsRef.m?.auditAppended(ev);
      return recs;
    });
  }
  const keys = new KeyService(db);
  const bootstrap = keys.ensureBootstrapAdmin({ adminToken: config.adminToken, dataDir: config.dataDir });
  const workspaces = new WorkspaceStore({ root: config.workspaceRoot, uid: config.sandboxUid, gid: config.sandboxGid, db });
  fs.mkdirSync(config.cacheRoot, { recursive: true, mode: 0o711 });

  const metrics = new PetriMetrics();
  const images = new ImageCatalog(config.imageRecipes, config.imageDir, config.images);
  const { runtimes, defaultRuntime, probes } = await setupRuntimes(config, docker, instanceId, logger, { excluded: checked.excluded, metrics, images });
  const tracer = await startTracer(config, runtimes, logger, { docker, images });
  const quotas = new QuotaService(db, config, (id) => workspaces.usage(id));
  const vault = new SecretStore(db, loadOrCreateMasterKey({ env: config.masterKey, file: config.masterKeyFile }),
    { egress: config.egress, ...(config.masterKey ? {} : { reloadKeys: () => readMasterKeyRing(config.masterKeyFile) }) });
  const sandboxes = new SandboxService(db, config, workspaces, () => [...runtimes.keys()], () => defaultRuntime ?? "none", quotas,
    (tenantId, name) => { vault.get(tenantId, name); },
    (id, err) => logger.error({ sandbox: id, err: err.message }, "sandbox deletion not finished; the janitor retries"),
    images);
  // The delta-sync content store is a cache bounded like the tenant's workspaces together.
  const blobs = new BlobStore(path.join(config.dataDir, "blobs"), (tenantId) => quotas.get(tenantId).max_workspace_mb * 1024 * 1024);
  sandboxes.afterDestroy = (tenantId, id) => blobs.dropSandbox(tenantId, id);
  const exec = new ExecService({
    db, config, sandboxes, workspaces, runtimes, instanceId,
    rootfsFor: (image) => {
      const dir = rootfsDirFor(config.imageDir, image);
      return fs.existsSync(dir) ? dir : undefined;
    },
    imageRef: (name) => images.ref(name),
    log: logger,
    audit,
    quotas,
    vault,
    onRunFinished: (r) => metricsRef.m?.runFinished(runObservation(r)),
    tracer,
  });

  await Promise.all([initJsScanner(), loadFallbackParser()]);
  const dependencies = new DependencyService({
    db, config, runtimes, vault, instanceId, audit, log: logger,
    workspaceDir: (id) => workspaces.dirFor(id),
    reader: (id) => workspaceReader(workspaces.dirFor(id)),
    rootfsFor: (image) => {
      const dir = rootfsDirFor(config.imageDir, image);
      return fs.existsSync(dir) ? dir : undefined;
    },
    imageFor: (sb) => images.ref(sb.image),
  });
  dependencies.startMaintenance();

  const mine = { [LABEL_MANAGED]: "true", [LABEL_INSTANCE]: instanceId };
  // Whatever a previous process of this instance left running is an orphan now.
  let startupReaped = 0;
  for (const rt of runtimes.values()) startupReaped += await rt.reap(mine).catch(() => 0);
  const interrupted = exec.recoverInterrupted();
  // Workspace views (overlay mounts) a crash left behind: unmounted before anything runs.
  const leftoverViews = await ViewPool.cleanup(ExecService.viewRoot(config)).catch((e: unknown) => {
    logger.error({ err: String(e) }, "could not remove leftover workspace views");
    return 0;
  });
  if (leftoverViews) logger.warn({ mounts: leftoverViews }, "unmounted workspace views left by an unclean stop");
  await exec.probeScratch();
  fs.rmSync(path.join(config.dataDir, "runs"), { recursive: true, force: true });
  // Deletions a crash interrupted are finished before anything else sees the disk; then every
  // workspace's byte counter is measured once (asynchronously: the walk never blocks the loop).
  await workspaces.trash.drain().catch((e) => logger.error({ err: (e as Error).message }, "could not empty the workspace trash"));
  for (const id of sandboxes.pendingDeletions()) {
    if (await sandboxes.destroy(id)) logger.info({ sandbox: id }, "finished an interrupted sandbox deletion");
  }
  await workspaces.reconcileAll();
  if (startupReaped || interrupted) logger.warn({ containers: startupReaped, runs: interrupted }, "cleaned up after an unclean stop");

  metricsRef.m = metrics;
  metrics.attach({
    activeRuns: () => exec.activeCount(),
    sandboxes: () => (db.prepare("SELECT COUNT(*) AS n FROM sandboxes").get() as { n: number }).n,
    workspaceBytes: () => quotas.knownUsageBytes(),
    prestart: () => [...runtimes.entries()].map(([name, rt]) => ({ runtime: name, ...(rt.prestartStats?.() ?? { ready: 0, hits: 0, misses: 0 }) })),
    auditHeadSeq: () => audit.head().seq,
    sinks: () => audit.sinkStatus().map((s) => ({ name: s.name, lag: s.lag, failures: s.consecutive_failures })),
    filesHashed: () => workspaces.filesHashed,
  });
  const dockerOffered = [...runtimes.values()].some((r) => r instanceof DockerRuntimeClass);
  const readiness = new Readiness({
    db, dataDir: config.dataDir, docker: dockerOffered ? docker : undefined,
    runtimes: () => [...runtimes.keys()], defaultRuntime,
    // The languages' default images (config.images holds image names; the catalog gives references).
    dockerImages: dockerOffered ? [...new Set(Object.values(config.images).map((n) => images.ref(n)))] : [],
    rootfsDirs: runtimes.has("bwrap") ? [...new Set(Object.values(config.images).filter((n) => images.recipe(n)).map((n) => rootfsDirFor(config.imageDir, images.ref(n))))] : [],
    sinks: () => audit.sinkStatus(),
    auditLog: () => audit.health(),
    auditTrace: () => ({ ...tracer.status(), required: config.auditTrace === "required" }),
  });
  const deps: AppDeps = { keys, sandboxes, workspaces, blobs, exec, runtimes, defaultRuntime: defaultRuntime ?? "none", logger, audit, quotas, vault, dependencies, images,
    plugins: [(scoped) => vaultRoutes(scoped, { store: vault }), (scoped) => dependencyRoutes(scoped, { deps: dependencies, sandboxes }), imageRoutes(images)], metrics, readiness };
  const app = await buildApp(config, deps);

  let reaping: Promise<{ expired: number; containers: number }> | null = null;
  const reapNow = async () => {
    if (reaping) return reaping;
    reaping = (async () => {
      let expired = 0;
      for (const id of sandboxes.expired()) {
        // Idle expiry never takes a sandbox with a run in flight; the run's end renews it.
        if (sandboxes.hasRunsInFlight(id)) continue;
        try {
          sandboxes.markDeleting(id);
          await exec.cancelSandbox(id);
          if (await sandboxes.destroy(id)) {
            dependencies.forgetSandbox(id);
            expired++;
            logger.info({ sandbox: id }, "sandbox expired and was destroyed");
          }
        } catch (e) {
          logger.error({ sandbox: id, err: (e as Error).message }, "could not destroy expired sandbox");
        }
      }
      // The janitor: deletions a crash or an error left half done are finished here.
      for (const id of sandboxes.pendingDeletions()) {
        await exec.cancelSandbox(id).catch(() => undefined);
        if (await sandboxes.destroy(id)) logger.info({ sandbox: id }, "finished an interrupted sandbox deletion");
      }
      await workspaces.trash.drain().catch((e) => logger.error({ err: (e as Error).message }, "could not empty the workspace trash"));
      // Containers the engine kept after a fault (a run's container whose removal failed while
      // the engine was down, a pre-started one that died with it) are removed here too, not
      // only at the next start.
      let containers = 0;
      for (const rt of runtimes.values()) containers += await rt.reapOrphans?.(mine).catch(() => 0) ?? 0;
      if (containers) logger.warn({ containers }, "removed containers left behind by an engine fault");
      return { expired, containers };
    })().finally(() => { reaping = null; });
    return reaping;
  };
  const timer = setInterval(() => { void reapNow(); }, config.reaperIntervalMs);
  timer.unref();

  return {
    app, deps, db, keys, sandboxes, exec, runtimes, audit, tracer, vault, probes, instanceId, bootstrap, reapNow, metrics, readiness,
    async close() {
      clearInterval(timer);
      dependencies.stop();
      await app.close();
      await exec.shutdown();
      // Deletions answered early (202) finish before the database closes.
      await sandboxes.settled();
      for (const rt of runtimes.values()) await rt.close?.();
      await tracer.close();
      workspaces.flush();
      db.close();
      await audit.close();
    },
  };
}

/**
 * Starts the host tracer when a runtime it serves (runc, crun, bwrap, runc-direct, crun-direct) is offered. When the host
 * cannot trace, the server says so at start, and each run's record says it was not traced.
 */
async function startTracer(config: Readonly<Config>, runtimes: Map<string, Runtime>, logger: Logger,
  o: { docker: Docker; images: ImageCatalog }): Promise<TracerService> {
  // getaddrinfo is traced in the images' own libc: bwrap's root filesystems and Docker's layers.
  // Both are keyed by the image's Docker reference (petri/standard:<hash>), not its catalog name.
  const refs = [...new Set(o.images.names().map((n) => o.images.ref(n)))];
  const images: { ref: string; rootfs: string[]; layers: string[] }[] = [];
  for (const ref of refs) {
    const info = await o.docker.getImage(ref).inspect().catch(() => null);
    const data = (info?.GraphDriver?.Data ?? {}) as Record<string, string | undefined>;
    images.push({ ref, rootfs: [rootfsDirFor(config.imageDir, ref)], layers: [data.UpperDir, ...(data.LowerDir ?? "").split(":")].filter((d): d is string => Boolean(d)) });
  }
  const tracer = new TracerService({ log: logger, images });
  const served = [...runtimes.keys()].filter((r) => r !== "runsc" && r !== "runsc-direct");
  if (config.auditTrace === "off") tracer.markOff("PETRI_AUDIT_TRACE=off");
  else if (served.length === 0) tracer.markOff("no runtime it traces (runc, crun, bwrap, runc-direct, crun-direct) is offered");
  if (config.auditTrace === "off" || served.length === 0) return tracer;
  // Compiling the probes takes a second or more; runs that start meanwhile say they were not traced.
  const started = tracer.start().then((st) => {
    if (st.state === "active") {
      logger.info({ runtimes: served, probes: st.probes }, "audit: runs are traced with eBPF (programs, files, network attempts)");
    } else {
      logger.error({ runtimes: served, reason: st.reason },
        `audit: runs are NOT traced (${st.reason}); their records hold only workspace changes. See \`petri doctor\``);
    }
    return st;
  });
  if (config.auditTrace === "required") {
    const st = await started;
    if (st.state !== "active") throw new Error(`PETRI_AUDIT_TRACE=required but the host cannot trace runs: ${st.reason}`);
  }
  return tracer;
}

/**
 * Probes the runtimes the configuration allows (each really runs something) and registers the
 * ones that work under their names: runc, crun, runsc (Docker with that OCI runtime) and bwrap.
 * The default is PETRI_RUNTIME, or with "auto" the first that works in order of preference.
 * When none works, no runtime is registered and runs are refused: code never runs unsandboxed.
 */
export async function setupRuntimes(config: Readonly<Config>, docker: Docker, instanceId: string, logger: Logger,
  extra: { excluded?: Map<string, string>; metrics?: PetriMetrics; images?: ImageCatalog } = {}):
  Promise<{ runtimes: Map<string, Runtime>; defaultRuntime: string | null; probes: RuntimeProbe[] }> {
  const images = extra.images ?? new ImageCatalog(config.imageRecipes, config.imageDir, config.images);
  // Probed with the default image of Python (the conformance language); pre-started with any image Petri builds.
  const probeImage = images.ref(images.defaultFor("python"));
  const rootfs = rootfsDirFor(config.imageDir, probeImage);
  const warmImages = new Set(images.builtRefs());
  const opts = { docker, image: probeImage, rootfs, sandboxUid: config.sandboxUid, sandboxGid: config.sandboxGid };
  let order = config.allowedRuntimes.filter((r) => !extra.excluded?.has(r));
  const prefer = (name: string) => { if (order.includes(name)) order = [name, ...order.filter((r) => r !== name)]; };
  if (config.ociRuntime) prefer(config.ociRuntime);
  const wanted = config.runtime === "gvisor" ? "runsc" : config.runtime;
  if (wanted !== "auto" && wanted !== "docker") prefer(wanted);
  const probes = await detectRuntimes({ strategies: order.map((r) => strategyFor(r, opts)) });
  const runtimes = new Map<string, Runtime>();
  for (const p of probes) {
    if (!p.available) continue;
    const direct = directOciKind(p.id);
    if (p.id === "bwrap") {
      runtimes.set("bwrap", new BwrapRuntime({
        cgroupParent: `petri-bwrap-${instanceId}`,
        warm: { idleMs: config.warmIdleMs, images: warmImages },
      }));
    } else if (direct) {
      // State (bundles, runtime state, root overlays) under /run: none of it survives a reboot,
      // and neither do the containers it describes. Per instance, so the reaper takes only ours.
      // runsc-direct: traced by gVisor's strace when the probe's test run showed it works.
      const gvisorTrace = direct === "runsc" && Boolean(p.trace?.ok);
      if (direct === "runsc") {
        if (gvisorTrace) logger.info("audit: runsc-direct runs are traced by gVisor's strace (programs, files opened, connects)");
        else logger.error({ reason: p.trace?.reason }, "audit: gVisor's strace did not work with runsc-direct, so its runs are NOT traced (their records hold only workspace changes)");
      }
      const rt = new OciRuntime({
        kind: direct, name: p.id, stateDir: path.join(OCI_STATE_ROOT, instanceId, p.id), cgroupParent: `petri-${p.id}-${instanceId}`,
        warm: { idleMs: config.warmIdleMs, images: warmImages }, gvisorTrace, traceMaxBytes: config.gvisorTraceMaxBytes,
      });
      // crun's sealed copy (oci.ts sealedBinary) is made before the first run, not raced by it.
      await rt.binaryReady;
      if (direct === "crun") {
        if (!rt.executable.startsWith("/proc/")) logger.warn("crun-direct: no sealed copy of crun could be made here; crun copies and re-executes itself on every run (CVE-2019-5736 guard)");
        else logger.info("crun-direct: crun runs from a sealed in-memory copy made once (it does not copy and re-execute itself per run)");
      }
      runtimes.set(p.id, rt);
    } else {
      const oci = p.variant ?? p.id.split("/")[1];
      // gVisor with its strace on (runsc-trace) when that is registered and works, still named runsc.
      const traceProbe = oci === "runsc" ? await dockerStrategy("runsc-trace", opts).probe() : null;
      const trace = Boolean(traceProbe?.available);
      if (traceProbe && !trace) {
        logger.error({ reason: traceProbe.reason },
          "audit: runsc-trace did not work, so gVisor runs use plain runsc and are NOT traced (their records hold only workspace changes)");
      }
      // Warm interpreters under runsc-trace need its strace to record their hand-over mark.
      const info = trace ? (await docker.info().catch(() => null)) as { Runtimes?: Record<string, unknown> } | null : null;
      const traceSeesHandover = trace && gvisorStraceSeesHandover("runsc-trace", info?.Runtimes ?? {});
      if (trace && !traceSeesHandover) {
        logger.warn("runsc-trace's registration does not trace access(): gVisor runs under Docker get no warm interpreters (re-run scripts/setup.sh, which registers it and reloads dockerd)");
      }
      runtimes.set(oci, new DockerRuntime({
        docker, ociRuntime: trace ? "runsc-trace" : oci, trace, traceSeesHandover, traceMaxBytes: config.gvisorTraceMaxBytes, cgroupParent: `petri-${instanceId}`,
        warm: { idleMs: config.warmIdleMs, images: warmImages },
        onEngineFault: (kind: string) => extra.metrics?.engineFault(oci, kind),
      }));
    }
  }
  let defaultRuntime: string | null;
  if (wanted === "auto") defaultRuntime = [...runtimes.keys()][0] ?? null;
  else if (wanted === "docker") defaultRuntime = [...runtimes.keys()].find(isDockerRuntime) ?? null;
  else defaultRuntime = runtimes.has(wanted) ? wanted : null;
  const line = describeChoice(probes);
  if (defaultRuntime) {
    logger.info({ runtime: defaultRuntime, available: [...runtimes.keys()] }, line);
  } else {
    logger.error({ wanted, probes: probes.map((p) => ({ id: p.id, reason: p.reason })) },
      `runtime "${wanted}" is not available; runs will be refused (see \`petri doctor\`). ${line}`);
  }
  return { runtimes, defaultRuntime, probes };
}

/**
 * Nobody but Petri reads the data directory: 0700, or 0710 with the sandbox gid as its group
 * when bwrap is offered (bwrap runs as the sandbox user and must pass through to the workspaces
 * and caches below; that gid is checked at start to be no real group, so no host user gains
 * access). Files inside keep their own 0600 modes.
 */
function protectDataDir(config: Readonly<Config>, bwrap: boolean): void {
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  if (bwrap && config.allowedRuntimes.includes("bwrap")) {
    fs.chownSync(config.dataDir, process.getuid?.() ?? 0, config.sandboxGid);
    fs.chmodSync(config.dataDir, 0o710);
  } else {
    fs.chmodSync(config.dataDir, 0o700);
  }
}
