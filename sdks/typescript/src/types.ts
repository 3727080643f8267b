/** Resource limits of a sandbox or of one run. Every field is optional; the server fills defaults and caps them. */
export interface Limits {
  /** Wall-clock limit of one run, milliseconds (server field `timeout_ms`). */
  timeoutMs?: number;
  /** Memory, MiB, no swap (`memory_mb`). */
  memoryMb?: number;
  /** CPU cores, may be fractional (`cpus`). */
  cpus?: number;
  /** Max processes and threads (`pids`). */
  pids?: number;
  /** Max open files per process (`open_files`). */
  openFiles?: number;
  /** Largest file a run may write, MiB (`file_size_mb`). */
  fileSizeMb?: number;
  /** Workspace size quota, MiB (`workspace_mb`). */
  workspaceMb?: number;
  /** Bytes of each output stream kept in the result (`output_bytes`). */
  outputBytes?: number;
}

export type Language = "python" | "node" | "typescript" | "go" | "bash";

/**
 * Packages from the server's configured registries, per ecosystem, e.g.
 * `{ python: ["pandas>=2"], node: ["lodash@4"], go: ["github.com/google/uuid@v1.6.0"] }`.
 * Names only: URLs, paths and installer options are refused (`DependencyError`).
 */
export interface Dependencies {
  python?: string[];
  node?: string[];
  go?: string[];
}

/** What a run (or `install()`) got: detected imports, the requirements, and the environment used. */
export interface DependencyReport {
  /** `python`, `node` or `go`. */
  ecosystem: string;
  /** Third-party imports detected in the code and the workspace modules it imports. */
  detected: string[];
  /** Requirements that applied (declared, from workspace manifests, detected). */
  requirements: string[];
  /** `installed` (this call installed the environment), `reused`, or `none` (nothing was needed). */
  status: "installed" | "reused" | "none";
  /** Id of the environment mounted into the run, or null. */
  environment: string | null;
  /** Packages in that environment. `hash` is `sha256:…` (wheels), `sha512-…` (npm) or `h1:…` (Go). */
  packages: { name: string; version: string; hash: string }[];
  /** Time spent installing for this call, ms (0 when reused). */
  installMs: number;
  /** Detected imports that were not installed, and why. */
  skipped: { name: string; reason: string }[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function dependencyReportFromWire(w: Record<string, any> | null | undefined): DependencyReport | null {
  if (!w) return null;
  return {
    ecosystem: w.ecosystem, detected: w.detected ?? [], requirements: w.requirements ?? [], status: w.status ?? "none",
    environment: w.environment ?? null, packages: w.packages ?? [], installMs: w.install_ms ?? 0, skipped: w.skipped ?? [],
  };
}

export interface SandboxInfo {
  /** `sb_…` */
  id: string;
  tenantId: string;
  language: string;
  /** The image its runs use (`datascience`, `standard`, …; see `Sandbox.images()`). */
  image: string;
  runtime: string;
  /** `ready` (idle, no container) or `running` (a run is in flight). */
  status: string;
  limits: Required<Limits>;
  metadata: Record<string, string>;
  createdAt: Date;
  lastActiveAt: Date;
  expiresAt: Date;
  /** Destroyed after this long without activity, ms. */
  idleTimeoutMs: number;
  /** Absolute lifetime, ms. */
  ttlMs: number;
  /** Hosts its runs may reach over HTTP(S) through Petri's broker; empty: no network at all. */
  allowHosts: string[];
  /** Vault secrets its runs may use (the code sees placeholders, never values). */
  secrets: string[];
  /** Environment of every run (a run's `env` is layered on top). */
  env: Record<string, string>;
}

/** An image or data file a run produced, returned inline (PNG/JPEG/SVG/CSV/JSON, within size caps). */
export interface Artifact {
  /** Workspace path, or `display/figure-N.png` for a figure shown with plt.show()/display(). */
  path: string;
  /** e.g. `image/png`, `text/csv`. */
  mimeType: string;
  /** Size in bytes. */
  size: number;
  /** The content (decoded), or null when it was too large to return inline (see `omitted`). */
  data: Uint8Array | null;
  /** Why the content is not inline, e.g. over the size cap. */
  omitted: string | null;
  /** The content as text (CSV, JSON, SVG); null for binary or omitted content. */
  text: string | null;
}

/** The error a failed run's traceback ends with (Python, Node, Go). */
export interface ErrorSummary {
  /** e.g. `ZeroDivisionError`, `TypeError`, `panic`, `compile error`. */
  type: string;
  message: string;
  /** Workspace-relative path, e.g. `main.py`, or null. */
  file: string | null;
  line: number | null;
}

export function artifactFromWire(w: Wire): Artifact {
  const data = typeof w.data === "string" ? (w.encoding === "base64" ? new Uint8Array(Buffer.from(w.data, "base64")) : new TextEncoder().encode(w.data)) : null;
  return {
    path: w.path, mimeType: w.mime_type, size: w.size, data, omitted: w.omitted ?? null,
    text: typeof w.data === "string" && w.encoding === "utf8" ? w.data : null,
  };
}

export interface FileInfo {
  /** Path inside the workspace, `/`-separated. */
  path: string;
  /** `file`, `directory`, `symlink` or `other`. */
  type: string;
  /** Size in bytes. */
  size: number;
  /** Hex sha256 of a file's content, when asked for. */
  sha256?: string;
  mtime: Date;
}

/** Workspace paths a run created, modified and deleted. */
export interface FileChanges {
  created: string[];
  modified: string[];
  deleted: string[];
}

/** One line of a sandbox's run history. */
export interface ExecSummary {
  /** `ex_…` */
  id: string;
  status: ExecStatus;
  /** The file that ran, or `<snippet>`. */
  entry: string;
  exitCode: number | null;
  timedOut: boolean;
  oomKilled: boolean;
  durationMs: number | null;
  createdAt: Date;
  finishedAt: Date | null;
}

export type ExecStatus = "running" | "completed" | "failed" | "cancelled";

export function limitsToWire(l: Limits | undefined): Record<string, number> | undefined {
  if (!l) return undefined;
  const map: [keyof Limits, string][] = [
    ["timeoutMs", "timeout_ms"], ["memoryMb", "memory_mb"], ["cpus", "cpus"], ["pids", "pids"],
    ["openFiles", "open_files"], ["fileSizeMb", "file_size_mb"], ["workspaceMb", "workspace_mb"], ["outputBytes", "output_bytes"],
  ];
  const out: Record<string, number> = {};
  for (const [k, w] of map) if (l[k] !== undefined) out[w] = l[k]!;
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Wire = Record<string, any>;

export function limitsFromWire(w: Wire): Required<Limits> {
  return {
    timeoutMs: w.timeout_ms, memoryMb: w.memory_mb, cpus: w.cpus, pids: w.pids,
    openFiles: w.open_files, fileSizeMb: w.file_size_mb, workspaceMb: w.workspace_mb, outputBytes: w.output_bytes,
  };
}

export function sandboxInfoFromWire(w: Wire): SandboxInfo {
  return {
    id: w.id, tenantId: w.tenant_id, language: w.language, image: w.image ?? "", runtime: w.runtime, status: w.status,
    limits: limitsFromWire(w.limits ?? {}), metadata: w.metadata ?? {},
    createdAt: new Date(w.created_at), lastActiveAt: new Date(w.last_active_at), expiresAt: new Date(w.expires_at),
    idleTimeoutMs: w.idle_timeout_ms, ttlMs: w.ttl_ms,
    allowHosts: w.allow_hosts ?? [], secrets: w.secrets ?? [], env: w.env ?? {},
  };
}

export function fileInfoFromWire(w: Wire): FileInfo {
  return { path: w.path, type: w.type, size: w.size, ...(w.sha256 ? { sha256: w.sha256 } : {}), mtime: new Date(w.mtime) };
}

export function execSummaryFromWire(w: Wire): ExecSummary {
  return {
    id: w.id, status: w.status, entry: w.entry, exitCode: w.exit_code ?? null, timedOut: Boolean(w.timed_out),
    oomKilled: Boolean(w.oom_killed), durationMs: w.duration_ms ?? null,
    createdAt: new Date(w.created_at), finishedAt: w.finished_at ? new Date(w.finished_at) : null,
  };
}

/** An image the server offers (`GET /v1/images`): what a sandbox created with `image: name` can use without installing. */
export interface ImageInfo {
  /** What `Sandbox.create({ image })` takes, e.g. `datascience`. */
  name: string;
  /** Docker reference; its tag is a hash of the recipe. */
  ref: string;
  description: string;
  /** Usable on this server now (otherwise the operator runs `petri images build NAME`). */
  built: boolean;
  /** Declared by the operator (`PETRI_IMAGES_FILE`). */
  custom: boolean;
  /** A Docker reference Petri did not build: its contents are unknown. */
  external: boolean;
  /** Languages that get this image when a sandbox names none. */
  defaultFor: string[];
  /** Language → toolchain version, e.g. `{ python: "3.13.5", node: "24.11.1" }`. */
  languages: Record<string, string>;
  /** Tool → version (pip, npm, esbuild, tsc …). */
  tools: Record<string, string>;
  /** Importable without installing: Python distribution → version. */
  pythonPackages: Record<string, string>;
  /** Resolvable without installing: Node module → version. */
  nodePackages: Record<string, string>;
  /** Bytes on disk, or null when unknown (not built, external). */
  sizeBytes: number | null;
  builtAt: Date | null;
}

export function imageInfoFromWire(w: Wire): ImageInfo {
  return {
    name: w.name, ref: w.ref, description: w.description ?? "", built: Boolean(w.built), custom: Boolean(w.custom), external: Boolean(w.external),
    defaultFor: w.default_for ?? [], languages: w.languages ?? {}, tools: w.tools ?? {},
    pythonPackages: w.python_packages ?? {}, nodePackages: w.node_packages ?? {},
    sizeBytes: w.size_bytes ?? null, builtAt: w.built_at ? new Date(w.built_at) : null,
  };
}
