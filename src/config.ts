import fs from "node:fs";
import path from "node:path";
import { parseEgressPolicy, parseTrustedHosts, type EgressPolicy } from "./vault/egress.js";
import { BUILTIN_IMAGES, DEFAULT_IMAGE_NAME, ImagesFileError, parseCustomImages, type ImageRecipe } from "./images/catalog.js";

/** Resource limits of a run. Each has a default and a server maximum; clients may only lower. */
export interface Limits {
  /** Wall-clock timeout of one run, milliseconds. */
  timeout_ms: number;
  /** Memory (no swap), MiB. */
  memory_mb: number;
  /** CPU cores (fractional allowed). */
  cpus: number;
  /** Maximum number of processes/threads. */
  pids: number;
  /** Maximum open file descriptors per process. */
  open_files: number;
  /** Largest single file a run may write, MiB. */
  file_size_mb: number;
  /** Size quota of the sandbox workspace, MiB. */
  workspace_mb: number;
  /** Captured bytes per output stream; beyond this, output is dropped and flagged truncated. */
  output_bytes: number;
}

export const LIMIT_KEYS: readonly (keyof Limits)[] = [
  "timeout_ms", "memory_mb", "cpus", "pids", "open_files", "file_size_mb", "workspace_mb", "output_bytes",
];

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  workspaceRoot: string;
  /** Per-sandbox caches (e.g. Go build cache), kept outside the workspace and its file listing. */
  cacheRoot: string;
  adminToken: string | undefined;
  logLevel: string;
  /**
   * Runtime used when a sandbox does not ask for one: "auto" (probe and pick), "docker" (the
   * best Docker OCI runtime), or a runtime name.
   */
  runtime: string;
  /** Preferred OCI runtime under Docker (runc, crun or runsc); unset: detection order. */
  ociRuntime: string | undefined;
  /** Runtimes this server may offer (each is probed at start; unavailable ones are left out). */
  allowedRuntimes: readonly string[];
  dockerSocket: string;
  /**
   * Default image per language (PETRI_IMAGE / PETRI_IMAGE_<LANG>): the name of an image Petri
   * builds (built-in or from PETRI_IMAGES_FILE), or a Docker reference of an image built elsewhere.
   */
  images: Readonly<Record<string, string>>;
  /** Images Petri builds: the built-in ones plus those declared in PETRI_IMAGES_FILE. */
  imageRecipes: Readonly<Record<string, ImageRecipe>>;
  /** Directory holding image root filesystems built by `petri images build` (used by bwrap). */
  imageDir: string;
  sandboxUid: number;
  sandboxGid: number;
  defaultLimits: Readonly<Limits>;
  maxLimits: Readonly<Limits>;
  tmpfsMb: number;
  maxUploadBytes: number;
  sandboxIdleTimeoutMs: number;
  sandboxTtlMs: number;
  reaperIntervalMs: number;
  /** TenantVault master key (hex or base64) from PETRI_MASTER_KEY; else a 0600 key file. */
  masterKey: string | undefined;
  masterKeyFile: string;
  /** Quotas of a tenant that has none of its own. */
  tenantDefaults: Readonly<{ max_sandboxes: number; max_concurrent_runs: number; max_workspace_mb: number }>;
  /** Audit log directory (hash-chained records, signing key, sink cursors). */
  auditDir: string;
  /** Audit sinks, as PETRI_AUDIT_SINKS says (docs/audit.md); parsed by the audit layer. */
  auditSinks: string;
  /** Signed checkpoint every N records. */
  auditCheckpointEvery: number;
  /**
   * PETRI_AUDIT_TRACE: the host eBPF tracer for runc, crun and bwrap runs. `auto` uses it where
   * the host can (and says loudly when it cannot), `required` refuses to start without it, `off`.
   */
  auditTrace: "auto" | "required" | "off";
  /**
   * PETRI_AUDIT_FAIL: when the audit log cannot be appended, `closed` refuses runs and API calls
   * (503 AUDIT_UNAVAILABLE) until it can again; `open` goes on, and says so (logs, health, audit.gap).
   */
  auditFailMode: "closed" | "open";
  /**
   * PETRI_GVISOR_TRACE_MAX_MB: how much of one run's gVisor strace (runsc, runsc-direct) is read;
   * past it the run's trace is cut (trace_complete false) and the log is emptied as gVisor writes it.
   */
  gvisorTraceMaxBytes: number;
  /** How long a pre-started single-use container waits for a sandbox's next run; 0 disables. */
  warmIdleMs: number;
  /**
   * Where a run's writes land (exec/overlay/view.ts): `loop` a loop-mounted ext4 of the quota's
   * size, `tmpfs` a tmpfs of that size (also counted against the run's memory), `auto` loop when
   * loop devices work (probed at start), else tmpfs. Either way the kernel enforces the quota.
   */
  runScratch: "auto" | "loop" | "tmpfs";
  /**
   * The operator's bounds on runs' network destinations (PETRI_EGRESS_ALLOW_HOSTS,
   * PETRI_EGRESS_PRIVATE_HOSTS; docs/vault.md): tenants' allow_hosts and secret hosts stay inside.
   */
  egress: EgressPolicy;
  /** Dependency detection and installation (src/deps). */
  deps: Readonly<DepsConfig>;
  /** The API key `petri mcp` (stdio) acts as (PETRI_API_KEY); unset: the bootstrap admin key. */
  apiKey: string | undefined;
}

export interface DepsConfig {
  /** Detect imports of the code about to run and install what is missing (per sandbox/run it can be turned off). */
  autoDetect: boolean;
  /** Registries installs may reach (nothing else): a PEP 503 simple index, an npm registry, a GOPROXY. */
  pipIndexUrl: string;
  npmRegistry: string;
  goProxy: string;
  /** More hosts installs may reach: where the registries serve files from (host patterns). */
  extraHosts: readonly string[];
  /** Environment directories, outside every workspace. */
  dir: string;
  installTimeoutMs: number;
  /** Largest single environment, MiB. */
  maxEnvMb: number;
  /** Bytes of environments one tenant may keep, MiB; unused ones are evicted first. */
  tenantQuotaMb: number;
  /** Environments unused this long are removed. */
  evictUnusedMs: number;
}

export class ConfigError extends Error {}

/** Default uid and gid of sandboxed code: an id no account on a usual host has. */
export const DEFAULT_SANDBOX_ID = 65600;

export const LANGUAGES_WITH_IMAGES = ["python", "node", "typescript", "go", "bash"] as const;

type Env = Record<string, string | undefined>;

/**
 * Runtime names a sandbox can ask for: Docker with an OCI runtime, bubblewrap, or an OCI runtime
 * called directly without dockerd (`*-direct`, src/runtimes/oci.ts). In order of preference for
 * `auto`: Docker stays the default where it works.
 */
export const RUNTIME_NAMES = ["runc", "crun", "runsc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"] as const;

/** The OCI runtime a `*-direct` runtime name calls, or null for any other name. */
export function directOciKind(name: string): "runc" | "crun" | "runsc" | null {
  const m = /^(runc|crun|runsc)-direct$/.exec(name);
  return m ? (m[1] as "runc" | "crun" | "runsc") : null;
}

/** Whether a runtime name is Docker with an OCI runtime (what `docker` picks among). */
export function isDockerRuntime(name: string): boolean {
  return name === "runc" || name === "crun" || name === "runsc";
}

function runtimeList(raw: string | undefined): string[] {
  if (!raw || raw.trim() === "" || raw.trim() === "all") return [...RUNTIME_NAMES];
  const out = raw.split(",").map((s) => s.trim()).filter(Boolean).map((s) => (s === "gvisor" ? "runsc" : s));
  for (const r of out) {
    if (!(RUNTIME_NAMES as readonly string[]).includes(r)) throw new ConfigError(`PETRI_RUNTIMES: unknown runtime "${r}"; known: ${RUNTIME_NAMES.join(", ")}`);
  }
  return [...new Set(out)];
}

function int(env: Env, name: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return def;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const v = Number(raw.trim());
  if (v < min || v > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

function num(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return def;
  const v = Number(raw.trim());
  if (!Number.isFinite(v) || v < min || v > max) throw new ConfigError(`${name} must be a number between ${min} and ${max}, got "${raw}"`);
  return v;
}

function registryUrl(env: Env, name: string, def: string): string {
  const raw = (env[name] || def).trim();
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an http(s) URL, got "${raw}"`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new ConfigError(`${name} must be an http(s) URL, got "${raw}"`);
  // Install runs see the registry URL, so a credential in it would reach untrusted install scripts.
  if (u.username || u.password) throw new ConfigError(`${name} must not carry credentials`);
  if (u.search || u.hash) throw new ConfigError(`${name} must not have a query or fragment`);
  return u.toString().replace(/\/+$/, "");
}

function registryHosts(raw: string): string[] {
  const hosts = raw.split(",").map((h) => h.trim()).filter(Boolean);
  try {
    parseTrustedHosts(hosts);
  } catch (e) {
    throw new ConfigError(`PETRI_DEPS_REGISTRY_HOSTS: ${(e as Error).message}`);
  }
  return hosts;
}

function bool(env: Env, name: string, def: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return def;
  if (/^(1|true|yes|on)$/i.test(raw.trim())) return true;
  if (/^(0|false|no|off)$/i.test(raw.trim())) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function oneOf(env: Env, name: string, def: string, allowed: string[]): string {
  const v = env[name] || def;
  if (!allowed.includes(v)) throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got "${v}"`);
  return v;
}

/**
 * Reads and validates every PETRI_* variable once. Nothing else in Petri reads process.env:
 * the frozen result is passed down.
 */
function egressPolicy(env: Env): EgressPolicy {
  try {
    return parseEgressPolicy({ allowHosts: env.PETRI_EGRESS_ALLOW_HOSTS, privateHosts: env.PETRI_EGRESS_PRIVATE_HOSTS });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Readonly<Config> {
  const dataDir = path.resolve(cwd, env.PETRI_DATA_DIR || ".petri");
  const workspaceRoot = path.resolve(cwd, env.PETRI_WORKSPACE_ROOT || path.join(dataDir, "workspaces"));

  const defaultLimits: Limits = {
    timeout_ms: int(env, "PETRI_DEFAULT_TIMEOUT_MS", 30_000, 100),
    memory_mb: int(env, "PETRI_DEFAULT_MEMORY_MB", 512, 16),
    cpus: num(env, "PETRI_DEFAULT_CPUS", 1, 0.01, 1024),
    pids: int(env, "PETRI_DEFAULT_PIDS", 128, 8),
    open_files: int(env, "PETRI_DEFAULT_OPEN_FILES", 1024, 16),
    file_size_mb: int(env, "PETRI_DEFAULT_FILE_SIZE_MB", 100, 1),
    workspace_mb: int(env, "PETRI_DEFAULT_WORKSPACE_MB", 512, 1),
    output_bytes: int(env, "PETRI_DEFAULT_OUTPUT_BYTES", 1024 * 1024, 1024),
  };
  const maxLimits: Limits = {
    timeout_ms: int(env, "PETRI_MAX_TIMEOUT_MS", 600_000, 100),
    memory_mb: int(env, "PETRI_MAX_MEMORY_MB", 4096, 16),
    cpus: num(env, "PETRI_MAX_CPUS", 2, 0.01, 1024),
    pids: int(env, "PETRI_MAX_PIDS", 1024, 8),
    open_files: int(env, "PETRI_MAX_OPEN_FILES", 4096, 16),
    file_size_mb: int(env, "PETRI_MAX_FILE_SIZE_MB", 1024, 1),
    workspace_mb: int(env, "PETRI_MAX_WORKSPACE_MB", 4096, 1),
    output_bytes: int(env, "PETRI_MAX_OUTPUT_BYTES", 16 * 1024 * 1024, 1024),
  };
  for (const k of LIMIT_KEYS) {
    if (defaultLimits[k] > maxLimits[k]) {
      throw new ConfigError(`default ${k} (${defaultLimits[k]}) is above its maximum (${maxLimits[k]})`);
    }
  }

  let custom: Record<string, ImageRecipe> = {};
  if (env.PETRI_IMAGES_FILE) {
    const file = path.resolve(cwd, env.PETRI_IMAGES_FILE);
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      throw new ConfigError(`PETRI_IMAGES_FILE: cannot read ${file}: ${(e as Error).message}`);
    }
    try {
      custom = parseCustomImages(text, `PETRI_IMAGES_FILE (${file})`);
    } catch (e) {
      if (e instanceof ImagesFileError) throw new ConfigError(e.message);
      throw e;
    }
  }
  const imageRecipes = Object.freeze({ ...BUILTIN_IMAGES, ...custom });
  const imageName = (name: string, value: string) => {
    // A Docker reference (has ":" or "/") names an image built elsewhere; a bare word must be one Petri builds.
    if (!/[:/]/.test(value) && !Object.hasOwn(imageRecipes, value)) {
      throw new ConfigError(`${name}: no image "${value}"; known: ${Object.keys(imageRecipes).join(", ")} (or a Docker reference such as python:3.13-slim)`);
    }
    return value;
  };
  const baseImage = imageName("PETRI_IMAGE", env.PETRI_IMAGE || DEFAULT_IMAGE_NAME);
  const images: Record<string, string> = {};
  for (const lang of LANGUAGES_WITH_IMAGES) {
    const v = `PETRI_IMAGE_${lang.toUpperCase()}`;
    images[lang] = env[v] ? imageName(v, env[v]!) : baseImage;
  }

  const cfg: Config = {
    host: env.PETRI_HOST || "127.0.0.1",
    port: int(env, "PETRI_PORT", 8080, 0, 65535),
    dataDir,
    workspaceRoot,
    cacheRoot: path.join(dataDir, "cache"),
    adminToken: env.PETRI_ADMIN_TOKEN || undefined,
    logLevel: oneOf(env, "PETRI_LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    runtime: oneOf(env, "PETRI_RUNTIME", "auto", ["auto", "docker", ...RUNTIME_NAMES, "gvisor"]),
    ociRuntime: env.PETRI_OCI_RUNTIME ? oneOf(env, "PETRI_OCI_RUNTIME", "runc", ["runc", "crun", "runsc"]) : undefined,
    allowedRuntimes: Object.freeze(runtimeList(env.PETRI_RUNTIMES)),
    dockerSocket: env.PETRI_DOCKER_SOCKET || "/var/run/docker.sock",
    images: Object.freeze(images),
    imageRecipes,
    imageDir: path.resolve(cwd, env.PETRI_IMAGE_DIR || "/var/lib/petri/images"),
    // Outside the login-account range (1000–59999), Debian's reserved 60000–64999, systemd's
    // dynamic users (61184–65519), nobody (65534) and the subordinate-id ranges from 100000, so
    // no host account shares it; start-up refuses an id that a real account has.
    sandboxUid: int(env, "PETRI_SANDBOX_UID", DEFAULT_SANDBOX_ID, 1, 2 ** 31),
    sandboxGid: int(env, "PETRI_SANDBOX_GID", DEFAULT_SANDBOX_ID, 1, 2 ** 31),
    defaultLimits: Object.freeze(defaultLimits),
    maxLimits: Object.freeze(maxLimits),
    tmpfsMb: int(env, "PETRI_TMPFS_MB", 64, 1),
    maxUploadBytes: int(env, "PETRI_MAX_UPLOAD_MB", 100, 1) * 1024 * 1024,
    sandboxIdleTimeoutMs: int(env, "PETRI_SANDBOX_IDLE_TIMEOUT_MS", 60 * 60 * 1000, 1000),
    sandboxTtlMs: int(env, "PETRI_SANDBOX_TTL_MS", 24 * 60 * 60 * 1000, 1000),
    reaperIntervalMs: int(env, "PETRI_REAPER_INTERVAL_MS", 30_000, 100),
    warmIdleMs: int(env, "PETRI_WARM_IDLE_MS", 60_000, 0),
    runScratch: oneOf(env, "PETRI_RUN_SCRATCH", "auto", ["auto", "loop", "tmpfs"]) as Config["runScratch"],
    apiKey: env.PETRI_API_KEY || undefined,
    masterKey: env.PETRI_MASTER_KEY || undefined,
    masterKeyFile: path.resolve(cwd, env.PETRI_MASTER_KEY_FILE || path.join(dataDir, "master.key")),
    tenantDefaults: Object.freeze({
      max_sandboxes: int(env, "PETRI_TENANT_MAX_SANDBOXES", 20_000, 1),
      max_concurrent_runs: int(env, "PETRI_TENANT_MAX_CONCURRENT_RUNS", 64, 1),
      max_workspace_mb: int(env, "PETRI_TENANT_MAX_WORKSPACE_MB", 100 * 1024, 1),
    }),
    auditDir: path.resolve(cwd, env.PETRI_AUDIT_DIR || path.join(dataDir, "audit")),
    auditSinks: env.PETRI_AUDIT_SINKS ?? "",
    auditCheckpointEvery: int(env, "PETRI_AUDIT_CHECKPOINT_EVERY", 1000, 1),
    egress: egressPolicy(env),
    deps: Object.freeze({
      autoDetect: bool(env, "PETRI_DEPS_AUTO_DETECT", true),
      // The public registries are the product's defaults; operators point these at their mirrors.
      pipIndexUrl: registryUrl(env, "PETRI_PIP_INDEX_URL", "https://pypi.org/simple"),
      npmRegistry: registryUrl(env, "PETRI_NPM_REGISTRY", "https://registry.npmjs.org"),
      goProxy: registryUrl(env, "PETRI_GOPROXY", "https://proxy.golang.org"),
      // PyPI's index links to files on its own file host; a mirror serves both itself.
      extraHosts: Object.freeze(registryHosts(env.PETRI_DEPS_REGISTRY_HOSTS ?? (env.PETRI_PIP_INDEX_URL ? "" : "files.pythonhosted.org"))),
      dir: path.resolve(cwd, env.PETRI_DEPS_DIR || path.join(dataDir, "deps")),
      installTimeoutMs: int(env, "PETRI_DEPS_INSTALL_TIMEOUT_MS", 300_000, 1000),
      maxEnvMb: int(env, "PETRI_DEPS_MAX_ENV_MB", 2048, 1),
      tenantQuotaMb: int(env, "PETRI_DEPS_TENANT_QUOTA_MB", 10_240, 1),
      evictUnusedMs: int(env, "PETRI_DEPS_EVICT_UNUSED_MS", 7 * 24 * 3600 * 1000, 1000),
    }),
    auditFailMode: oneOf(env, "PETRI_AUDIT_FAIL", "closed", ["closed", "open"]) as "closed" | "open",
    auditTrace: oneOf(env, "PETRI_AUDIT_TRACE", "auto", ["auto", "required", "off"]) as "auto" | "required" | "off",
    gvisorTraceMaxBytes: int(env, "PETRI_GVISOR_TRACE_MAX_MB", 64, 1, 64 * 1024) * 1024 * 1024,
  };
  return Object.freeze(cfg);
}
