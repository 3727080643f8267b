import type { Config, Limits } from "../config.js";
import { PetriError } from "../errors.js";
import { parseRelPath } from "../workspaces/paths.js";
import { resolveLimits, type Sandbox } from "../sandboxes/sandboxes.js";
import { checkTenantHosts } from "../vault/index.js";
import { AGENT_MOUNT, DISPLAY_MOUNT, agentEnv, layerEnv } from "./agent-files.js";
import { TTY_ENV, ttyArgv } from "./tty.js";
import type { Mount, RunSpec } from "../runtimes/types.js";
import { CACHE_DIR, LANGUAGES, SNIPPET_DIR, substitute, type Language } from "./languages.js";
import type { ExecRequest } from "./types.js";

/**
 * The pure part of starting a run: validation and the RunSpec, from the sandbox, the request
 * and where things live on the host. No I/O happens here, so every rule about argv, env, mounts
 * and limits can be unit-tested, and later steps (dependency mounts, tracing…) extend a plan by
 * adding mounts or env before the run starts.
 */
export interface PlanInput {
  config: Readonly<Config>;
  sandbox: Sandbox;
  req: ExecRequest;
  /** Docker reference of the sandbox's image. */
  image: string;
  /** The new run's id (ex_…). */
  execId: string;
  instanceId: string;
  /** Host directory mounted read-write at /workspace. */
  workspaceDir: string;
  /** Host directory mounted read-write at /cache. */
  cacheDir: string;
  /** Host directory mounted read-only at /petri/snippet (per sandbox: a stable pre-start shape). */
  snippetDir: string;
  /** Root filesystem directory of the image, for runtimes that run from one. */
  rootfs: string | undefined;
  interactiveStdin: boolean;
  /** Dependency environments prepared for the run (src/deps): mounts and env added to the spec. */
  deps?: { env: Record<string, string>; mounts: Mount[] } | null;
  /** Helpers for agents, mounted read-only (agent-files.ts), and the sandbox's display folder. */
  agentDir: string;
  displayDir: string;
}

export interface RunPlan {
  execId: string;
  language: Language;
  limits: Limits;
  /** Workspace path of the file run, or "<snippet>". */
  entry: string;
  commit: "always" | "on_success" | "never";
  image: string;
  /** A snippet is written to `snippetDir/<execId>/<filename>` before the run, never put in argv. */
  snippet: { filename: string; code: string } | null;
  /** Secrets and hosts of the vault this run uses (sandbox's plus the request's). */
  egress: { secrets: string[]; allowHosts: string[] };
  /** What the DB keeps of the request (no code, no env values). */
  requestRecord: { filename: string | null; code_bytes: number | null; args: string[]; env_names: string[]; limits: Limits; tty?: boolean; commit: string };
  /** The run as the runtime receives it, less the per-run callbacks the orchestrator adds. */
  spec: Omit<RunSpec, "signal" | "onStdout" | "onStderr" | "stdinStream">;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const BASE_ENV = Object.freeze({ PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", TMPDIR: "/tmp" });

export function planRun(p: PlanInput): RunPlan {
  const { config, sandbox, req } = p;
  const lang = LANGUAGES[sandbox.language];
  if (!lang) throw new PetriError("UNKNOWN_LANGUAGE", `unknown language "${sandbox.language}"`);
  const hasFile = typeof req.filename === "string";
  const hasCode = typeof req.code === "string";
  if (hasFile === hasCode) throw new PetriError("VALIDATION_ERROR", "give exactly one of `filename` or `code`");
  const limits = resolveLimits(sandbox.limits, config.maxLimits, { ...(req.limits ?? {}), ...(req.timeout_ms !== undefined ? { timeout_ms: req.timeout_ms } : {}) });
  for (const k of Object.keys(req.env ?? {})) {
    if (!ENV_NAME.test(k)) throw new PetriError("VALIDATION_ERROR", `env name "${k}" is not a valid variable name`);
  }
  const commit = req.commit ?? "always";
  if (!["always", "on_success", "never"].includes(commit)) {
    throw new PetriError("VALIDATION_ERROR", 'commit must be one of "always", "on_success", "never"');
  }
  const egress = {
    secrets: [...new Set([...sandbox.secrets, ...(req.secrets ?? [])])],
    allowHosts: [...new Set([...sandbox.allow_hosts, ...checkTenantHosts(req.allow_hosts ?? [], config.egress, "allow_hosts")])],
  };

  let argv: string[];
  let entry: string;
  let snippet: RunPlan["snippet"] = null;
  if (hasFile) {
    entry = parseRelPath(req.filename).join("/");
    argv = substitute(lang.file, { file: entry });
  } else {
    entry = "<snippet>";
    // By file, never in argv: argv is visible to every local user (ps, /proc/*/cmdline).
    // One folder per run inside a per-sandbox mount, so the mounts (and so a pre-started
    // container's shape) stay the same from run to run, and concurrent runs never collide.
    snippet = { filename: lang.snippet.filename, code: req.code! };
    argv = substitute(lang.snippet.argv, { file: `${SNIPPET_DIR}/${p.execId}/${lang.snippet.filename}` });
  }
  argv = [...argv, ...(req.args ?? [])];
  if (req.tty) argv = ttyArgv(argv);

  const mounts: Mount[] = [
    { source: p.workspaceDir, target: "/workspace", readonly: false },
    { source: p.snippetDir, target: SNIPPET_DIR, readonly: true },
    { source: p.cacheDir, target: CACHE_DIR, readonly: false },
    // Helpers for agents and the per-sandbox display mount (same shape every run).
    { source: p.agentDir, target: AGENT_MOUNT, readonly: true },
    { source: p.displayDir, target: DISPLAY_MOUNT, readonly: false },
    ...(p.deps?.mounts ?? []),
  ];
  const image = p.image;
  return {
    execId: p.execId,
    language: lang,
    limits,
    entry,
    commit,
    image,
    snippet,
    egress,
    requestRecord: { filename: req.filename ?? null, code_bytes: req.code?.length ?? null, args: req.args ?? [], env_names: Object.keys(req.env ?? {}), limits, ...(req.tty ? { tty: true } : {}), commit },
    spec: {
      image,
      rootfs: p.rootfs,
      argv,
      // A run's env adds to list variables (PYTHONPATH, NODE_PATH…) rather than replacing them.
      env: layerEnv(BASE_ENV, agentEnv(p.execId), lang.env, sandbox.env, p.deps?.env, req.tty ? TTY_ENV : undefined, req.env),
      cwd: "/workspace",
      mounts,
      limits: {
        memoryBytes: limits.memory_mb * 1024 * 1024,
        cpus: limits.cpus,
        pids: limits.pids,
        openFiles: limits.open_files,
        fileSizeBytes: Math.min(limits.file_size_mb, limits.workspace_mb) * 1024 * 1024,
        tmpfsBytes: config.tmpfsMb * 1024 * 1024,
      },
      timeoutMs: limits.timeout_ms,
      // Pre-started units may start this interpreter ahead (docs/warm.md).
      interpreter: lang.warm,
      stdin: p.interactiveStdin ? undefined : req.stdin ?? undefined,
      outputLimitBytes: limits.output_bytes,
      uid: config.sandboxUid,
      gid: config.sandboxGid,
      labels: {
        "io.jhansi.petri.managed": "true",
        "io.jhansi.petri.instance": p.instanceId,
        "io.jhansi.petri.sandbox": sandbox.id,
        "io.jhansi.petri.exec": p.execId,
      },
    },
  };
}
