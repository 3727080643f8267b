import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../config.js";
import { PetriError } from "../errors.js";
import { newId } from "../ids.js";
import type { AuditEvent } from "../audit/types.js";
import type { Sandbox } from "../sandboxes/sandboxes.js";
import type { DB } from "../store/db.js";
import type { Mount, RunSpec, Runtime } from "../runtimes/types.js";
import type { SecretStore } from "../vault/index.js";
import { parseHostPattern } from "../vault/hosts.js";
import { detectImports, type SourceReader } from "./detect.js";
import { dirSize, EnvStore, type EnvRecord } from "./envs.js";
import { ENV_TARGETS, runInstall, type InstalledPackage } from "./installer.js";
import { distributionFor } from "./python-names.js";
import { checkRequirement, type Verdict } from "./registry.js";
import {
  ecosystemFor, mergeRequirements, parseDeclared, parseGoMod, parsePackageJson, parsePyproject, parseRequirementsTxt, parseSpec,
  type DeclaredDependencies, type Ecosystem, type Requirement,
} from "./specs.js";

/** What a run result says about dependencies. */
export interface DependencySummary {
  ecosystem: Ecosystem;
  /** Third-party imports auto-detection found in the code and the workspace modules it imports. */
  detected: string[];
  /** Requirements that apply to this run (declared, from workspace manifests, and detected), as installed. */
  requirements: string[];
  /** "installed" (this run installed the environment), "reused" (it existed), "none" (nothing needed). */
  status: "installed" | "reused" | "none";
  environment: string | null;
  /** Packages in the environment (name, version, hash) — what was installed or reused. */
  packages: { name: string; version: string; hash: string }[];
  /** Milliseconds this run waited for installing (0 when reused). */
  install_ms: number;
  /** Detected imports not installed, and why (e.g. not on the registry: probably a local name). */
  skipped: { name: string; reason: string }[];
}

export interface PreparedDeps {
  mounts: Mount[];
  env: Record<string, string>;
  summary: DependencySummary;
  /** Call when the run ends: the environment may be evicted again. */
  release(): void;
}

export interface DependencyRunRequest {
  filename?: string;
  code?: string;
  dependencies?: DeclaredDependencies;
  auto_detect_dependencies?: boolean;
}

export interface DependencyServiceDeps {
  db: DB;
  config: Readonly<Config>;
  runtimes: Map<string, Runtime>;
  vault: SecretStore;
  instanceId: string;
  workspaceDir: (sandboxId: string) => string;
  reader: (sandboxId: string) => SourceReader;
  rootfsFor: (image: string) => string | undefined;
  imageFor: (sandbox: Sandbox) => string;
  audit?: { append(ev: AuditEvent): unknown };
  log: { info: (o: object, m?: string) => void; warn: (o: object, m?: string) => void; error: (o: object, m?: string) => void };
}

interface SandboxSettings {
  declared: DeclaredDependencies;
  autoDetect: boolean | null;
}

const VERDICT_TTL_MS = 10 * 60_000;
const MANIFEST_MAX = 1024 * 1024;

export class DependencyService {
  readonly envs: EnvStore;
  private readonly inflight = new Map<string, Promise<{ env: EnvRecord; installMs: number }>>();
  private readonly verdicts = new Map<string, { v: Verdict; at: number }>();
  private readonly provided = new Map<string, Promise<Set<string>>>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly d: DependencyServiceDeps) {
    this.envs = new EnvStore(d.db, d.config.deps.dir);
    const swept = this.envs.sweepTemps();
    if (swept) d.log.warn({ count: swept }, "removed unfinished dependency installs left by an unclean stop");
  }

  /** Periodic eviction of environments unused for PETRI_DEPS_EVICT_UNUSED_MS. */
  startMaintenance(intervalMs = 60 * 60_000): void {
    const tick = () => {
      for (const e of this.envs.evictUnused(Date.now() - this.d.config.deps.evictUnusedMs)) {
        this.audit({ kind: "exec", action: "dependency.evict", outcome: "success", tenant_id: e.tenantId, detail: { environment_id: e.id, reason: "unused" } });
      }
    };
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  get quotaBytes(): number {
    return this.d.config.deps.tenantQuotaMb * 1024 * 1024;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  // ---- sandbox settings --------------------------------------------------------------------

  /** Validates a sandbox's `dependencies` for its language (400 on anything but registry names). */
  validateForLanguage(language: string, deps: unknown): Partial<Record<Ecosystem, Requirement[]>> {
    const parsed = parseDeclared(deps);
    const eco = ecosystemFor(language);
    for (const k of Object.keys(parsed) as Ecosystem[]) {
      if (k !== eco) throw new PetriError("VALIDATION_ERROR", `dependencies.${k}: a ${language} sandbox installs ${eco ?? "no"} packages`);
    }
    return parsed;
  }

  saveSandboxSettings(sandboxId: string, tenantId: string, s: { dependencies?: DeclaredDependencies; auto_detect_dependencies?: boolean }): void {
    const prev = this.settings(sandboxId);
    const declared: DeclaredDependencies = { ...prev.declared };
    for (const [k, v] of Object.entries(s.dependencies ?? {}) as [Ecosystem, string[]][]) {
      const merged = mergeRequirements((declared[k] ?? []).map((x) => parseSpec(k, x)), v.map((x) => parseSpec(k, x)));
      declared[k] = merged.map((r) => r.spec);
    }
    const auto = s.auto_detect_dependencies ?? prev.autoDetect;
    this.d.db.prepare(`INSERT INTO sandbox_deps(sandbox_id, tenant_id, declared_json, auto_detect) VALUES (?, ?, ?, ?)
      ON CONFLICT(sandbox_id) DO UPDATE SET declared_json = excluded.declared_json, auto_detect = excluded.auto_detect`)
      .run(sandboxId, tenantId, JSON.stringify(declared), auto === null ? null : auto ? 1 : 0);
  }

  settings(sandboxId: string): SandboxSettings {
    const row = this.d.db.prepare("SELECT declared_json, auto_detect FROM sandbox_deps WHERE sandbox_id = ?").get(sandboxId) as { declared_json: string; auto_detect: number | null } | undefined;
    return { declared: row ? (JSON.parse(row.declared_json) as DeclaredDependencies) : {}, autoDetect: row?.auto_detect === null || row?.auto_detect === undefined ? null : row.auto_detect === 1 };
  }

  forgetSandbox(sandboxId: string): void {
    this.d.db.prepare("DELETE FROM sandbox_deps WHERE sandbox_id = ?").run(sandboxId);
  }

  // ---- runs --------------------------------------------------------------------------------

  /**
   * Everything a run needs from its dependencies, before it starts: bad specs, missing packages
   * and failed installs throw (400) so the code never runs half-equipped. Null when the run
   * needs nothing (the common case costs a settings lookup and a scan of the entry).
   */
  async prepare(tenantId: string, sandbox: Sandbox, req: DependencyRunRequest): Promise<PreparedDeps | null> {
    const eco = ecosystemFor(sandbox.language);
    const runDeclared = this.validateForLanguage(sandbox.language, req.dependencies);
    if (!eco) return null;
    const settings = this.settings(sandbox.id);
    const reader = this.d.reader(sandbox.id);
    const { requirements: manifestReqs, extraFiles } = this.workspaceManifests(eco, reader);
    const declared = mergeRequirements(
      manifestReqs,
      (settings.declared[eco] ?? []).map((s) => parseSpec(eco, s)),
      runDeclared[eco] ?? [],
    );
    const auto = req.auto_detect_dependencies ?? settings.autoDetect ?? this.d.config.deps.autoDetect;
    let detected: string[] = [];
    const image = this.d.imageFor(sandbox);
    let detectedReqs: Requirement[] = [];
    if (auto) {
      const entry = typeof req.filename === "string" ? { file: req.filename } : { file: null, code: req.code ?? "" };
      detected = detectImports(eco, reader, entry).imports;
      if (detected.length) {
        const declaredNames = new Set(declared.map((r) => r.name));
        const provided = await this.imageProvides(eco, image, sandbox);
        detectedReqs = detected
          .filter((m) => !provided.has(m))
          .map((m) => detectedRequirement(eco, m))
          .filter((r): r is Requirement => r !== null && !declaredNames.has(r.name));
      }
    }
    if (!declared.length && !detectedReqs.length) {
      return detected.length ? emptyPrepared(eco, detected) : null;
    }
    const regUrl = eco === "python" ? this.d.config.deps.pipIndexUrl : eco === "node" ? this.d.config.deps.npmRegistry : this.d.config.deps.goProxy;
    const keyOf = (reqs: Requirement[]) => requestKey(image, eco, regUrl, reqs, extraFiles);
    const all = mergeRequirements(declared, detectedReqs);
    const firstKey = keyOf(all);
    let env = this.envs.lookupRequest(tenantId, firstKey);
    let installMs = 0;
    let status: DependencySummary["status"] = "reused";

    const skipped: DependencySummary["skipped"] = [];
    if (!env) {
      // Declared requirements must exist; detected names that the registry lacks are most likely
      // local or optional imports (try: import ujson / except ImportError), so they are skipped.
      const verdicts = await Promise.all(all.map((r) => this.verdict(eco, r, regUrl)));
      const declaredNames = new Set(declared.map((r) => r.name));
      const keep: Requirement[] = [];
      all.forEach((r, i) => {
        const v = verdicts[i];
        if (v.ok === true) return keep.push(r);
        const message = v.ok === false ? v.message : `the registry ${regUrl} could not be reached (${v.reason})`;
        if (declaredNames.has(r.name)) {
          if (v.ok === false) throw new PetriError(v.code, message, { package: r.name, ecosystem: eco });
          throw new PetriError("REGISTRY_UNAVAILABLE", message, { package: r.name, ecosystem: eco });
        }
        skipped.push({ name: r.name, reason: message });
      });
      const installed = await this.installSet(tenantId, sandbox, eco, image, keep, declaredNames, extraFiles, keyOf, skipped);
      if (!installed) {
        const empty = emptyPrepared(eco, detected);
        return { ...empty, summary: { ...empty.summary, skipped } };
      }
      ({ env, installMs } = installed);
      status = installMs > 0 ? "installed" : "reused";
      this.envs.mapRequest(tenantId, firstKey, env.id);
    }
    const release = this.envs.acquire(env);
    return {
      mounts: runMounts(eco, env),
      env: runEnv(eco),
      release,
      summary: {
        ecosystem: eco, detected, requirements: all.filter((r) => !skipped.some((s) => s.name === r.name)).map((r) => r.spec), status,
        environment: env.id, packages: env.packages.map(({ name, version, hash }) => ({ name, version, hash })), install_ms: installMs, skipped,
      },
    };
  }

  /**
   * Installs a requirement set (or reuses its environment). When the install fails and the set
   * holds detected requirements, the run is not refused for a guess: the detected ones are
   * listed as skipped (with the reason) and the declared ones alone are installed. Declared
   * requirements that cannot be installed are the caller's error.
   */
  private async installSet(tenantId: string, sandbox: Sandbox, eco: Ecosystem, image: string, keep: Requirement[], declaredNames: Set<string>,
    extraFiles: Record<string, string>, keyOf: (r: Requirement[]) => string, skipped: DependencySummary["skipped"]): Promise<{ env: EnvRecord; installMs: number } | null> {
    if (!keep.length) return null;
    const key = keyOf(keep);
    const cached = this.envs.lookupRequest(tenantId, key);
    if (cached) return { env: cached, installMs: 0 };
    try {
      return await this.ensure(tenantId, sandbox, eco, image, keep, extraFiles, key);
    } catch (e) {
      const detectedOnes = keep.filter((r) => !declaredNames.has(r.name));
      if (!(e instanceof PetriError) || !detectedOnes.length || e.code === "DEPENDENCY_QUOTA_EXCEEDED") throw e;
      for (const r of detectedOnes) skipped.push({ name: r.name, reason: `${e.code}: ${e.message}` });
      return this.installSet(tenantId, sandbox, eco, image, keep.filter((r) => declaredNames.has(r.name)), declaredNames, extraFiles, keyOf, skipped);
    }
  }

  /** POST /v1/sandboxes/{id}/dependencies: installs now and adds them to the sandbox's declared list. */
  async install(tenantId: string, sandbox: Sandbox, deps: DeclaredDependencies): Promise<DependencySummary> {
    const parsed = this.validateForLanguage(sandbox.language, deps);
    const eco = ecosystemFor(sandbox.language);
    if (!eco) throw new PetriError("DEPENDENCIES_UNSUPPORTED", `${sandbox.language} sandboxes have no package registry`);
    if (!(parsed[eco] ?? []).length) throw new PetriError("VALIDATION_ERROR", `give at least one ${eco} package`);
    const prepared = await this.prepare(tenantId, sandbox, { dependencies: deps, auto_detect_dependencies: false, code: "" });
    prepared?.release();
    this.saveSandboxSettings(sandbox.id, tenantId, { dependencies: deps });
    return prepared!.summary;
  }

  /** Installs the sandbox's declared dependencies ahead of its first run (errors show on that run). */
  warm(tenantId: string, sandbox: Sandbox): void {
    void this.prepare(tenantId, sandbox, { code: "", auto_detect_dependencies: false })
      .then((p) => p?.release())
      .catch((e: unknown) => this.d.log.warn({ sandbox: sandbox.id, err: (e as Error).message }, "installing declared dependencies failed; the first run will say why"));
  }

  private workspaceManifests(eco: Ecosystem, reader: SourceReader): { requirements: Requirement[]; extraFiles: Record<string, string> } {
    const extraFiles: Record<string, string> = {};
    const read = (p: string) => reader.read(p, MANIFEST_MAX);
    if (eco === "python") {
      const reqs: Requirement[] = [];
      const txt = read("requirements.txt");
      if (txt !== null) reqs.push(...parseRequirementsTxt(txt));
      const toml = read("pyproject.toml");
      if (toml !== null) reqs.push(...parsePyproject(toml));
      return { requirements: reqs, extraFiles };
    }
    if (eco === "node") {
      const pkg = read("package.json");
      if (pkg === null) return { requirements: [], extraFiles };
      // node_modules uploaded with the project: the workspace brings its own packages.
      if (reader.isDir("node_modules")) return { requirements: [], extraFiles };
      const reqs = parsePackageJson(pkg);
      // The project's lock pins what it was tested with: npm keeps every locked version that still
      // satisfies the ranges (and it is part of the environment's key, so a new lock is a new env).
      const lock = read("package-lock.json");
      if (lock !== null) extraFiles["package-lock.json"] = lock;
      return { requirements: reqs, extraFiles };
    }
    const mod = read("go.mod");
    if (mod === null) return { requirements: [], extraFiles };
    const sum = read("go.sum");
    if (sum !== null) extraFiles["go.sum"] = sum;
    return { requirements: parseGoMod(mod), extraFiles };
  }

  private async verdict(eco: Ecosystem, r: Requirement, regUrl: string): Promise<Verdict> {
    const k = `${eco} ${regUrl} ${r.spec}`;
    const hit = this.verdicts.get(k);
    if (hit && Date.now() - hit.at < VERDICT_TTL_MS) return hit.v;
    const v = await checkRequirement(eco, r, this.d.config.deps);
    if (v.ok !== null) this.verdicts.set(k, { v, at: Date.now() });
    return v;
  }

  /** One install per (tenant, request) at a time: concurrent runs wait for the same install. */
  private ensure(tenantId: string, sandbox: Sandbox, eco: Ecosystem, image: string, reqs: Requirement[], extraFiles: Record<string, string>, key: string): Promise<{ env: EnvRecord; installMs: number }> {
    const k = `${tenantId} ${key}`;
    let p = this.inflight.get(k);
    if (!p) {
      p = this.installNow(tenantId, sandbox, eco, image, reqs, extraFiles, key).finally(() => this.inflight.delete(k));
      this.inflight.set(k, p);
    }
    return p;
  }

  private async installNow(tenantId: string, sandbox: Sandbox, eco: Ecosystem, image: string, reqs: Requirement[], extraFiles: Record<string, string>, key: string): Promise<{ env: EnvRecord; installMs: number }> {
    const { config } = this.d;
    const runtime = this.d.runtimes.get(sandbox.runtime);
    if (!runtime) throw new PetriError("RUNTIME_UNAVAILABLE", `runtime "${sandbox.runtime}" is not available on this server`);
    // The install's only way out is the broker's Unix socket; a runtime that cannot reach it fails closed, with the fix.
    const noSockets = await runtime.hostSockets?.();
    if (noSockets) throw new PetriError("RUNTIME_UNAVAILABLE", `dependencies cannot be installed on ${sandbox.runtime}: ${noSockets}`);
    const quota = config.deps.tenantQuotaMb * 1024 * 1024;
    const maxEnv = config.deps.maxEnvMb * 1024 * 1024;
    const installId = newId("dep");
    const tmp = this.envs.makeTemp(tenantId);
    const runDir = path.join(config.dataDir, "runs", installId);
    const registry = eco === "python" ? config.deps.pipIndexUrl : eco === "node" ? config.deps.npmRegistry : config.deps.goProxy;
    const abort = new AbortController();
    let tooLarge = false;
    const watch = setInterval(() => {
      if (dirSize(tmp) > maxEnv) {
        tooLarge = true;
        abort.abort();
      }
    }, 1000);
    const limits = sandbox.limits;
    try {
      const out = await runInstall({
        eco, requirements: reqs, extraFiles, targetDir: tmp, runDir, image, rootfs: this.d.rootfsFor(image), runtime,
        workspaceDir: this.d.workspaceDir(sandbox.id),
        limits: {
          memoryBytes: limits.memory_mb * 1024 * 1024, cpus: limits.cpus, pids: limits.pids, openFiles: limits.open_files,
          fileSizeBytes: maxEnv, tmpfsBytes: config.tmpfsMb * 1024 * 1024,
        } satisfies RunSpec["limits"],
        timeoutMs: config.deps.installTimeoutMs,
        uid: config.sandboxUid, gid: config.sandboxGid,
        labels: {
          "io.jhansi.petri.managed": "true", "io.jhansi.petri.instance": this.d.instanceId,
          "io.jhansi.petri.sandbox": sandbox.id, "io.jhansi.petri.install": installId,
        },
        registries: config.deps,
        registryHosts: registryHosts(config.deps), egress: config.egress,
        vault: this.d.vault, tenantId, sandboxId: sandbox.id, installId,
        onBrokerEvent: (ev) => this.audit({ kind: ev.kind, action: ev.action, outcome: ev.outcome, tenant_id: tenantId, sandbox_id: sandbox.id, detail: { ...ev.detail, install_id: installId } }),
        signal: abort.signal,
      });
      clearInterval(watch);
      const requested = reqs.map((r) => r.spec);
      if (!out.ok) {
        // RLIMIT_FSIZE (set to the environment's size limit) stops a single oversized file with EFBIG.
        if (out.reason === "failed" && /File too large|EFBIG|Errno 27\b/.test(out.message)) tooLarge = true;
        const code = tooLarge ? "DEPENDENCY_TOO_LARGE" : ({
          not_found: "DEPENDENCY_NOT_FOUND", unresolvable: "DEPENDENCY_UNRESOLVABLE", egress_blocked: "DEPENDENCY_EGRESS_BLOCKED",
          timeout: "DEPENDENCY_INSTALL_TIMEOUT", no_installer: "DEPENDENCIES_UNSUPPORTED", failed: "DEPENDENCY_INSTALL_FAILED", aborted: "DEPENDENCY_INSTALL_FAILED",
        } as const)[out.reason];
        const message = tooLarge ? `the environment grew beyond ${config.deps.maxEnvMb} MiB (PETRI_DEPS_MAX_ENV_MB); the install was stopped` : out.message;
        this.audit({ kind: "exec", action: "dependency.install", outcome: out.reason === "egress_blocked" ? "denied" : "failure", tenant_id: tenantId, sandbox_id: sandbox.id, error_code: code,
          detail: { install_id: installId, ecosystem: eco, registry, requested, reason: message, blocked_hosts: out.blockedHosts, duration_ms: out.durationMs } });
        throw new PetriError(code, message, { ecosystem: eco, requested, ...(out.blockedHosts.length ? { blocked_hosts: out.blockedHosts } : {}) });
      }
      const size = dirSize(tmp);
      if (size > maxEnv) throw new PetriError("DEPENDENCY_TOO_LARGE", `the environment is ${size} bytes, beyond ${config.deps.maxEnvMb} MiB (PETRI_DEPS_MAX_ENV_MB)`);
      const id = EnvStore.envId(image, eco, out.lock);
      const env = this.envs.commit(tenantId, tmp, {
        id, ecosystem: eco, image, lockSha256: createHash("sha256").update(out.lock).digest("hex"), sizeBytes: size, packages: out.packages,
      }, out.lock);
      this.envs.mapRequest(tenantId, key, env.id);
      for (const p of out.packages) this.audit(installRecord(tenantId, sandbox.id, installId, eco, registry, env.id, p));
      const evicted = this.envs.evictToFit(tenantId, quota, env.id);
      for (const e of evicted) this.audit({ kind: "exec", action: "dependency.evict", outcome: "success", tenant_id: tenantId, detail: { environment_id: e, reason: "tenant_quota" } });
      if (this.envs.tenantUsage(tenantId) > quota) {
        this.envs.remove(tenantId, env.id);
        throw new PetriError("DEPENDENCY_QUOTA_EXCEEDED", `the tenant's dependency environments would exceed ${config.deps.tenantQuotaMb} MiB (PETRI_DEPS_TENANT_QUOTA_MB), and the others are in use`);
      }
      return { env, installMs: out.durationMs };
    } finally {
      clearInterval(watch);
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  }

  /**
   * Top-level modules the image already has (Python: importable names), read once per image by
   * a sandboxed probe run and kept on disk.
   */
  private imageProvides(eco: Ecosystem, image: string, sandbox: Sandbox): Promise<Set<string>> {
    // Node: the image's global modules (Debian's /usr/share/nodejs) are reached through NODE_PATH,
    // which ESM `import` ignores, so they do not count as provided. Go: nothing is preinstalled.
    if (eco !== "python") return Promise.resolve(new Set());
    const k = `${eco} ${image}`;
    let p = this.provided.get(k);
    if (!p) {
      p = this.probe(eco, image, sandbox).catch((e: unknown) => {
        this.provided.delete(k);
        this.d.log.warn({ image, err: (e as Error).message }, "could not list what the image provides; detected packages are installed");
        return new Set<string>();
      });
      this.provided.set(k, p);
    }
    return p;
  }

  private async probe(eco: Ecosystem, image: string, sandbox: Sandbox): Promise<Set<string>> {
    const cacheFile = path.join(this.envs.root, "probes", `${createHash("sha256").update(`${eco} ${image}`).digest("hex").slice(0, 24)}.json`);
    try {
      return new Set(JSON.parse(fs.readFileSync(cacheFile, "utf8")) as string[]);
    } catch {
      /* not probed yet */
    }
    const runtime = this.d.runtimes.get(sandbox.runtime);
    if (!runtime) throw new Error(`runtime ${sandbox.runtime} unavailable`);
    const argv = ["python3", "-c", "import json,pkgutil,sys; print(json.dumps(sorted({m.name for m in pkgutil.iter_modules()} | set(sys.builtin_module_names))))"];
    const { config } = this.d;
    const raw = await runtime.run({
      image, rootfs: this.d.rootfsFor(image), argv, env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8" }, cwd: "/tmp", mounts: [],
      limits: { memoryBytes: 256 * 1024 * 1024, cpus: 1, pids: 64, openFiles: 256, fileSizeBytes: 1024 * 1024, tmpfsBytes: 16 * 1024 * 1024 },
      timeoutMs: 30_000, outputLimitBytes: 4 * 1024 * 1024, uid: config.sandboxUid, gid: config.sandboxGid,
      labels: { "io.jhansi.petri.managed": "true", "io.jhansi.petri.instance": this.d.instanceId, "io.jhansi.petri.probe": "deps" },
    });
    if (raw.exitCode !== 0) throw new Error(`probe exited ${raw.exitCode}: ${raw.stderr.toString().slice(0, 300)}`);
    const out = raw.stdout.toString("utf8");
    const names = JSON.parse(out) as string[];
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true, mode: 0o755 });
    fs.writeFileSync(cacheFile, JSON.stringify(names));
    return new Set(names);
  }

  private audit(ev: AuditEvent): void {
    try {
      this.d.audit?.append(ev);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, action: ev.action }, "audit append failed");
    }
  }
}

function detectedRequirement(eco: Ecosystem, name: string): Requirement | null {
  try {
    return parseSpec(eco, eco === "python" ? distributionFor(name) : name);
  } catch {
    return null; // a detected name that is not a valid registry name is not installed
  }
}

function emptyPrepared(eco: Ecosystem, detected: string[]): PreparedDeps {
  return {
    mounts: [], env: {}, release: () => undefined,
    summary: { ecosystem: eco, detected, requirements: [], status: "none", environment: null, packages: [], install_ms: 0, skipped: [] },
  };
}

function requestKey(image: string, eco: Ecosystem, registry: string, reqs: Requirement[], extra: Record<string, string>): string {
  return createHash("sha256").update(JSON.stringify([image, eco, registry, reqs.map((r) => r.spec).sort(), Object.entries(extra).sort()])).digest("hex");
}

/** Where a run sees an environment: read-only, at the path it was installed at. */
function runMounts(eco: Ecosystem, env: EnvRecord): Mount[] {
  // Node resolves bare imports (require and ESM import alike) by walking up from the importing
  // file: /workspace/node_modules, then /node_modules. NODE_PATH is ignored by ESM.
  if (eco === "node") return [{ source: path.join(env.dir, "node_modules"), target: "/node_modules", readonly: true }];
  return [{ source: env.dir, target: ENV_TARGETS[eco], readonly: true }];
}

function runEnv(eco: Ecosystem): Record<string, string> {
  if (eco === "python") return { PATH: `${ENV_TARGETS.python}/bin:/usr/local/bin:/usr/bin:/bin`, VIRTUAL_ENV: ENV_TARGETS.python };
  if (eco === "go") return { GOMODCACHE: `${ENV_TARGETS.go}/mod`, GOFLAGS: "-mod=mod -buildvcs=false", GOPROXY: "off", GOSUMDB: "off" };
  return {};
}

/** Host patterns of the registries: what an install may reach, and nothing else. */
export function registryHosts(r: { pipIndexUrl: string; npmRegistry: string; goProxy: string; extraHosts: readonly string[] }): string[] {
  const out = new Set<string>();
  for (const u of [r.pipIndexUrl, r.npmRegistry, r.goProxy]) {
    const url = new URL(u);
    const pattern = url.port ? url.host : url.hostname;
    if (parseHostPattern(pattern)) out.add(pattern);
  }
  for (const h of r.extraHosts) out.add(h);
  return [...out];
}

function installRecord(tenantId: string, sandboxId: string, installId: string, eco: Ecosystem, registry: string, envId: string, p: InstalledPackage): AuditEvent {
  return {
    kind: "exec", action: "dependency.install", outcome: "success", tenant_id: tenantId, sandbox_id: sandboxId,
    detail: { install_id: installId, ecosystem: eco, package: p.name, version: p.version, hash: p.hash, registry, source: p.source, environment_id: envId },
  };
}
