import { Type, type TSchema } from "@sinclair/typebox";

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String({ description: "Stable error code from the error table" }),
    message: Type.String(),
    details: Type.Optional(Type.Object({}, { additionalProperties: true })),
  }),
}, { $id: "Error" });

/**
 * Strings that end up in argv, the environment or a snippet file can never hold a NUL byte (the
 * kernel's strings end there): refused up front with a clear message instead of failing the run.
 */
export const NO_NUL_PATTERN = "^[^\\u0000]*$";
const NoNul = (opts: Parameters<typeof Type.String>[0] = {}) => Type.String({ ...opts, pattern: NO_NUL_PATTERN });

/** Counts are integers: 1.5 processes is a client bug, refused here rather than rounded or failed later. */
export const LimitsSchema = Type.Object({
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1, description: "Wall-clock timeout of one run, ms" })),
  memory_mb: Type.Optional(Type.Integer({ minimum: 1, description: "Memory, MiB (no swap)" })),
  cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: "CPU cores (fractions allowed)" })),
  pids: Type.Optional(Type.Integer({ minimum: 1, description: "Max processes/threads" })),
  open_files: Type.Optional(Type.Integer({ minimum: 1, description: "Max open files per process" })),
  file_size_mb: Type.Optional(Type.Integer({ minimum: 1, description: "Largest file a run may write, MiB" })),
  workspace_mb: Type.Optional(Type.Integer({ minimum: 1, description: "Workspace size quota, MiB" })),
  output_bytes: Type.Optional(Type.Integer({ minimum: 1, description: "Captured bytes per output stream" })),
}, { additionalProperties: false });

const FullLimits = Type.Object({
  timeout_ms: Type.Number(), memory_mb: Type.Number(), cpus: Type.Number(), pids: Type.Number(),
  open_files: Type.Number(), file_size_mb: Type.Number(), workspace_mb: Type.Number(), output_bytes: Type.Number(),
});

const Dependencies = Type.Object({
  python: Type.Optional(Type.Array(Type.String({ maxLength: 300 }), { maxItems: 256 })),
  node: Type.Optional(Type.Array(Type.String({ maxLength: 300 }), { maxItems: 256 })),
  go: Type.Optional(Type.Array(Type.String({ maxLength: 300 }), { maxItems: 256 })),
}, { additionalProperties: false, description: "packages from the configured registries, e.g. {\"python\": [\"pandas>=2\"], \"node\": [\"lodash@4\"]}" });
export const DependenciesSchema = Dependencies;
const AutoDetect = Type.Boolean({ description: "detect the code's imports and install what is missing (default: the server's PETRI_DEPS_AUTO_DETECT)" });

export const SandboxSchema = Type.Object({
  id: Type.String({ description: "sb_…" }),
  tenant_id: Type.String(),
  language: Type.String(),
  image: Type.String({ description: "the image its runs use (GET /v1/images)" }),
  runtime: Type.String(),
  status: Type.String({ description: "ready (idle, no container) or running (a run is in flight)" }),
  limits: FullLimits,
  metadata: Type.Record(Type.String(), Type.String()),
  created_at: Type.String({ format: "date-time" }),
  last_active_at: Type.String({ format: "date-time" }),
  expires_at: Type.String({ format: "date-time" }),
  idle_timeout_ms: Type.Number(),
  ttl_ms: Type.Number(),
  secrets: Type.Array(Type.String(), { description: "vault secrets its runs may use (code sees placeholders)" }),
  allow_hosts: Type.Array(Type.String(), { description: "hosts reachable through the HTTP broker; empty: no network" }),
  env: Type.Record(Type.String(), Type.String(), { description: "environment of every run; a run's env is layered on top (PYTHONPATH, NODE_PATH, PATH, NODE_OPTIONS are prepended to, not replaced)" }),
  dependencies: Type.Optional(Dependencies),
  auto_detect_dependencies: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
});

const SecretNames = Type.Array(Type.String({ pattern: "^[A-Za-z][A-Za-z0-9_-]{0,63}$" }), { maxItems: 64 });
const HostPatterns = Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { maxItems: 256 });

export const CreateSandboxBody = Type.Object({
  language: Type.String({ description: "python, node, typescript, go, bash" }),
  image: Type.Optional(Type.String({ maxLength: 256, description: "an image from GET /v1/images, e.g. datascience; default: the language's default image" })),
  runtime: Type.Optional(Type.String({ description: "one of the runtimes the server allows (GET /v1/runtimes)" })),
  limits: Type.Optional(LimitsSchema),
  ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, description: "Absolute lifetime, ms" })),
  idle_timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, description: "Destroyed after this long without activity, ms" })),
  metadata: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 256 }), { maxProperties: 32 })),
  secrets: Type.Optional(SecretNames),
  allow_hosts: Type.Optional(HostPatterns),
  env: Type.Optional(Type.Record(Type.String({ maxLength: 128 }), Type.String({ maxLength: 32768 }), { maxProperties: 256 })),
  dependencies: Type.Optional(Dependencies),
  auto_detect_dependencies: Type.Optional(AutoDetect),
}, { additionalProperties: false });

export const FileEntrySchema = Type.Object({
  path: Type.String({ description: "for display: bytes that are not UTF-8 show as U+FFFD" }),
  path_b64: Type.Optional(Type.String({ description: "base64 of the raw name, present only when it is not valid UTF-8" })),
  type: Type.String({ description: "file, directory, symlink or other" }),
  size: Type.Number(),
  mode: Type.Optional(Type.Integer({ description: "permission bits, e.g. 420 (0o644)" })),
  sha256: Type.Optional(Type.String()),
  mtime: Type.String({ format: "date-time" }),
});

export const ExecBody = Type.Object({
  filename: Type.Optional(NoNul({ description: "Workspace file to run" })),
  code: Type.Optional(NoNul({ description: "Snippet to run (instead of filename); no NUL bytes" })),
  args: Type.Optional(Type.Array(NoNul(), { maxItems: 1000, description: "no NUL bytes" })),
  stdin: Type.Optional(Type.String({ description: "bytes for standard input (any, NUL included)" })),
  env: Type.Optional(Type.Record(Type.String(), NoNul(), { description: "values without NUL bytes (names are checked as variable names)" })),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1 })),
  limits: Type.Optional(LimitsSchema),
  stream: Type.Optional(Type.Boolean({ description: "Stream output as NDJSON events while the run lives" })),
  detach: Type.Optional(Type.Boolean({ description: "Return 202 at once; fetch the result with GET …/exec/{exec_id}" })),
  secrets: Type.Optional(SecretNames),
  allow_hosts: Type.Optional(HostPatterns),
  tty: Type.Optional(Type.Boolean({ description: "Run on a pseudo-terminal (stdout and stderr arrive merged on stdout)" })),
  dependencies: Type.Optional(Dependencies),
  auto_detect_dependencies: Type.Optional(AutoDetect),
  commit: Type.Optional(Type.Union([Type.Literal("always"), Type.Literal("on_success"), Type.Literal("never")], {
    description: "When the run's workspace changes are kept: always (default), on_success (exit 0), never (dry run)",
  })),
}, { additionalProperties: false });

export const ChangeSetSchema = Type.Object({
  id: Type.String(),
  status: Type.String(),
  committed: Type.Union([Type.Boolean(), Type.Null()]),
  changes: Type.Union([Type.Array(Type.Object({
    path: Type.String(),
    path_b64: Type.Optional(Type.String()),
    action: Type.String({ description: "created, modified, deleted" }),
    type: Type.String({ description: "file, dir, symlink, other" }),
    size: Type.Number(),
    sha256: Type.Optional(Type.String()),
    before_size: Type.Optional(Type.Number()),
    before_sha256: Type.Optional(Type.String()),
    before_type: Type.Optional(Type.String()),
    conflict: Type.Optional(Type.Boolean()),
  })), Type.Null()]),
});

const FileChangesSchema = Type.Object({
  created: Type.Array(Type.String()),
  modified: Type.Array(Type.String()),
  deleted: Type.Array(Type.String()),
  non_utf8: Type.Optional(Type.Array(Type.Object({ change: Type.String(), path: Type.String(), path_b64: Type.String() }), {
    description: "changed names that are not UTF-8 (shown above with U+FFFD): their exact bytes, for …/files/?path_b64=",
  })),
});

export const ExecResultSchema = Type.Object({
  id: Type.String({ description: "ex_…" }),
  sandbox_id: Type.String(),
  status: Type.String({ description: "running, completed, failed, cancelled" }),
  language: Type.Optional(Type.String()),
  runtime: Type.Optional(Type.String()),
  entry: Type.Optional(Type.String()),
  exit_code: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  signal: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  stdout: Type.Optional(Type.String()),
  stderr: Type.Optional(Type.String()),
  stdout_truncated: Type.Optional(Type.Boolean()),
  stderr_truncated: Type.Optional(Type.Boolean()),
  truncated: Type.Optional(Type.Boolean()),
  duration_ms: Type.Optional(Type.Number()),
  timed_out: Type.Optional(Type.Boolean()),
  oom_killed: Type.Optional(Type.Boolean()),
  cancelled: Type.Optional(Type.Boolean()),
  cpu_time_ms: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
  peak_memory_bytes: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
  files: Type.Optional(FileChangesSchema),
  commit: Type.Optional(Type.String({ description: "always, on_success, never" })),
  committed: Type.Optional(Type.Boolean({ description: "whether the run's changes are now in the workspace" })),
  not_committed_reason: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  conflicts: Type.Optional(Type.Array(Type.String(), { description: "paths an upload changed during the run (the upload's version stays)" })),
  workspace_bytes: Type.Optional(Type.Number()),
  workspace_quota_bytes: Type.Optional(Type.Number()),
  workspace_quota_exceeded: Type.Optional(Type.Boolean()),
  redactions: Type.Optional(Type.Array(Type.String(), { description: "secrets whose value was redacted from the output" })),
  error: Type.Optional(Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()])),
  created_at: Type.Optional(Type.String()),
  finished_at: Type.Optional(Type.Union([Type.String(), Type.Null()])),
}, { additionalProperties: true });

export const SandboxParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const s of statuses) out[s] = Type.Ref("Error");
  return out;
}

export const InlineFileSchema = Type.Object({
  path: NoNul({ maxLength: 4096, description: "Path relative to the workspace" }),
  content: Type.String({ description: "File content, as text or base64 (see encoding)" }),
  encoding: Type.Optional(Type.Union([Type.Literal("utf8"), Type.Literal("base64")], { default: "utf8" })),
}, { additionalProperties: false });

/** POST /v1/run: a sandbox's creation fields that matter for one run, the run's fields, and the files. */
export const OneShotBody = Type.Composite([
  Type.Omit(ExecBody, ["stream", "detach"]),
  Type.Object({
    language: Type.String({ description: "python, node, typescript, go, bash" }),
    image: Type.Optional(Type.String({ maxLength: 256, description: "an image from GET /v1/images, e.g. datascience; default: the language's default image" })),
    runtime: Type.Optional(Type.String({ description: "one of the runtimes the server allows (GET /v1/runtimes)" })),
    files: Type.Optional(Type.Array(InlineFileSchema, { maxItems: 1000, description: "Written to the workspace before the run; without filename and code, the first file runs" })),
  }),
], { additionalProperties: false });
