import { ConnectionError, SandboxNotFoundError, TimeoutError } from "./errors.js";
import { DEFAULT_WAIT_GRACE_MS, ExecHandle, ExecResult, readExecStream, streamError, type OutputCallback, type RunOptions, type StartOptions } from "./exec.js";
import { Files } from "./files.js";
import { ApiClient, type ConnectionOptions, encodeSegment } from "./internal/http.js";
import { syncDirectory, type SyncOptions, type SyncResult } from "./sync.js";
import {
  dependencyReportFromWire, execSummaryFromWire, imageInfoFromWire, limitsToWire, sandboxInfoFromWire,
  type Dependencies, type DependencyReport, type ExecSummary, type ImageInfo, type Language, type Limits, type SandboxInfo,
} from "./types.js";

// Node 20 has no Symbol.asyncDispose; the code TypeScript emits for `await using` looks it up at
// run time, so it must exist before the first sandbox is disposed (and before the class below).
(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol("Symbol.asyncDispose");

export interface SandboxCreateOptions extends ConnectionOptions {
  /** `python`, `node`, `typescript`, `go` or `bash`. */
  language: Language | (string & {});
  /**
   * The image its runs use, by name (server `image`), e.g. `datascience` for pandas, numpy and
   * matplotlib; `Sandbox.images()` says what each holds. Default: the language's default image.
   */
  image?: string;
  /** One of the runtimes the server allows (`GET /v1/runtimes`); default the server's. */
  runtime?: string;
  /** Default wall-clock limit of each run in this sandbox, milliseconds (shorthand for `limits.timeoutMs`). */
  timeoutMs?: number;
  /** Resource limits of the sandbox's runs (capped by the server's maximums). */
  limits?: Limits;
  /** Absolute lifetime of the sandbox, milliseconds (server `ttl_ms`, at least 1000). */
  ttlMs?: number;
  /** The sandbox is destroyed after this long without activity, milliseconds (server `idle_timeout_ms`). */
  idleTimeoutMs?: number;
  /** Up to 32 string labels kept with the sandbox. */
  metadata?: Record<string, string>;
  /** Packages every run of the sandbox gets, from the server's registries (installed in the background, reused by runs). */
  dependencies?: Dependencies;
  /** Detect each run's imports and install what is missing (default: the server's setting). */
  autoDetectDependencies?: boolean;
  /**
   * Hosts the sandbox's runs may reach over HTTP(S), e.g. `["api.github.com", "*.example.com"]`
   * (server `allow_hosts`). Without any there is no network at all.
   */
  allowHosts?: string[];
  /** Vault secrets its runs may use (`PUT /v1/secrets/{name}` first); the code sees placeholders only. */
  secrets?: string[];
  /** Environment of every run; a run's `env` is layered on top (PYTHONPATH, NODE_PATH, PATH are prepended to). */
  env?: Record<string, string>;
}

export interface SandboxListOptions extends ConnectionOptions {
  /** Most sandboxes to return (all pages are followed up to this). Default: all. */
  limit?: number;
}

type WireSandbox = Record<string, unknown>;

/**
 * A sandbox: a workspace that survives between runs, and a language to run code in. Each run
 * gets a fresh, hardened container. Kill it when done, or use `await using`.
 */
export class Sandbox {
  /** `sb_…` */
  readonly id: string;
  /** The sandbox's workspace. */
  readonly files: Files;
  private readonly client: ApiClient;
  private infoCache: SandboxInfo;

  private constructor(client: ApiClient, wire: WireSandbox) {
    this.client = client;
    this.infoCache = sandboxInfoFromWire(wire);
    this.id = this.infoCache.id;
    this.files = new Files(client, this.id);
  }

  /** Creates a sandbox. Starts no container: that happens per run. */
  static async create(opts: SandboxCreateOptions): Promise<Sandbox> {
    const client = new ApiClient(opts);
    const limits = { ...(limitsToWire(opts.limits) ?? {}), ...(opts.timeoutMs !== undefined ? { timeout_ms: opts.timeoutMs } : {}) };
    const body: Record<string, unknown> = { language: opts.language };
    if (opts.image !== undefined) body.image = opts.image;
    if (opts.runtime !== undefined) body.runtime = opts.runtime;
    if (Object.keys(limits).length) body.limits = limits;
    if (opts.ttlMs !== undefined) body.ttl_ms = opts.ttlMs;
    if (opts.idleTimeoutMs !== undefined) body.idle_timeout_ms = opts.idleTimeoutMs;
    if (opts.metadata !== undefined) body.metadata = opts.metadata;
    if (opts.dependencies !== undefined) body.dependencies = opts.dependencies;
    if (opts.autoDetectDependencies !== undefined) body.auto_detect_dependencies = opts.autoDetectDependencies;
    if (opts.allowHosts !== undefined) body.allow_hosts = opts.allowHosts;
    if (opts.secrets !== undefined) body.secrets = opts.secrets;
    if (opts.env !== undefined) body.env = opts.env;
    return new Sandbox(client, await client.json<WireSandbox>("POST", "/v1/sandboxes", { json: body }));
  }

  /** Attaches to an existing sandbox; `SandboxNotFoundError` if there is none with this id for this key. */
  static async connect(sandboxId: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const client = new ApiClient(opts);
    return new Sandbox(client, await client.json<WireSandbox>("GET", `/v1/sandboxes/${encodeSegment(sandboxId)}`));
  }

  /** Lists the sandboxes of the API key's tenant, oldest first. */
  static async list(opts: SandboxListOptions = {}): Promise<SandboxInfo[]> {
    const client = new ApiClient(opts);
    const out: SandboxInfo[] = [];
    const max = opts.limit ?? Infinity;
    let cursor: string | undefined;
    do {
      const page = await client.json<{ items: WireSandbox[]; next_cursor: string | null }>("GET", "/v1/sandboxes", {
        query: { limit: Math.min(1000, max - out.length), cursor },
      });
      out.push(...page.items.map(sandboxInfoFromWire));
      cursor = page.next_cursor ?? undefined;
    } while (cursor && out.length < max);
    return out.slice(0, max);
  }

  /** The images the server offers and what each contains (languages, versions, packages); pass a name as `image` to `create`. */
  static async images(opts: ConnectionOptions = {}): Promise<ImageInfo[]> {
    const client = new ApiClient(opts);
    const r = await client.json<{ images: Record<string, unknown>[] }>("GET", "/v1/images");
    return r.images.map(imageInfoFromWire);
  }

  /** The sandbox's language. */
  get language(): string {
    return this.infoCache.language;
  }

  /** The sandbox as last fetched (see `getInfo()` for a fresh copy). */
  get info(): SandboxInfo {
    return this.infoCache;
  }

  /** Fetches the sandbox's current state. */
  async getInfo(): Promise<SandboxInfo> {
    this.infoCache = sandboxInfoFromWire(await this.client.json<WireSandbox>("GET", `/v1/sandboxes/${encodeSegment(this.id)}`));
    return this.infoCache;
  }

  /** Deletes the sandbox, cancelling its runs. Returns false if it was already gone. */
  async kill(): Promise<boolean> {
    try {
      await this.client.json("DELETE", `/v1/sandboxes/${encodeSegment(this.id)}`, { timeoutMs: this.client.requestTimeoutMs + DEFAULT_WAIT_GRACE_MS });
      return true;
    } catch (e) {
      if (e instanceof SandboxNotFoundError) return false;
      throw e;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  /** Runs a snippet of the sandbox's language and waits for its result. Streams output to `onStdout`/`onStderr` if given. */
  async exec(code: string, opts: RunOptions = {}): Promise<ExecResult> {
    return this.runToEnd({ code }, opts);
  }

  /** Runs a workspace file (e.g. `main.py`) with `args` and waits for its result. */
  async run(filename: string, opts: RunOptions = {}): Promise<ExecResult> {
    return this.runToEnd({ filename }, opts);
  }

  /** Starts a snippet in the background; the handle can `wait()`, `kill()` and `sendStdin()`. */
  async start(code: string, opts: StartOptions = {}): Promise<ExecHandle> {
    return this.startRun({ code }, opts);
  }

  /** Starts a workspace file in the background; see `start`. */
  async startFile(filename: string, opts: StartOptions = {}): Promise<ExecHandle> {
    return this.startRun({ filename }, opts);
  }

  /** A handle on an earlier run of this sandbox, e.g. one started detached by another process. */
  async getExec(execId: string): Promise<ExecHandle> {
    const h = new ExecHandle(this.client, this.id, execId, { defaultWaitMs: this.defaultWaitMs({}) });
    await h.status(); // ExecNotFoundError now rather than at wait()
    return h;
  }

  /**
   * Installs packages now, from the server's configured registries, and keeps them for the
   * sandbox's later runs. Resolves with what was installed or reused; a package the registry
   * lacks, or a spec that is a URL or path, rejects with `DependencyError`.
   */
  async install(dependencies: Dependencies, opts: { timeoutMs?: number } = {}): Promise<DependencyReport> {
    const wire = await this.client.json<Record<string, unknown>>("POST", `/v1/sandboxes/${encodeSegment(this.id)}/dependencies`, {
      json: dependencies, timeoutMs: opts.timeoutMs ?? 10 * 60_000,
    });
    return dependencyReportFromWire(wire)!;
  }

  /** Past runs of the sandbox, newest first. */
  async history(opts: { limit?: number } = {}): Promise<ExecSummary[]> {
    const r = await this.client.json<{ items: Record<string, unknown>[] }>("GET", `/v1/sandboxes/${encodeSegment(this.id)}/exec`, { query: { limit: opts.limit } });
    return r.items.map(execSummaryFromWire);
  }

  /**
   * Makes the workspace match a local directory, sending only files whose content the server
   * lacks; honours `.petriignore` and skips `.git`, `node_modules`, `__pycache__`, `.venv`.
   */
  async sync(localDir: string, opts: SyncOptions = {}): Promise<SyncResult> {
    return syncDirectory(this.client, this.id, localDir, opts);
  }

  private defaultWaitMs(opts: RunOptions): number {
    const runTimeout = opts.timeoutMs ?? opts.limits?.timeoutMs ?? this.infoCache.limits.timeoutMs ?? 0;
    return runTimeout + (opts.waitGraceMs ?? DEFAULT_WAIT_GRACE_MS);
  }

  private body(target: { code?: string; filename?: string }, opts: StartOptions): Record<string, unknown> {
    const body: Record<string, unknown> = { ...target };
    if (opts.args !== undefined) body.args = opts.args;
    if (opts.stdin !== undefined) body.stdin = opts.stdin;
    if (opts.env !== undefined) body.env = opts.env;
    if (opts.timeoutMs !== undefined) body.timeout_ms = opts.timeoutMs;
    const limits = limitsToWire(opts.limits);
    if (limits && Object.keys(limits).length) body.limits = limits;
    if (opts.stdinOpen) body.stdin_open = true;
    if (opts.dependencies !== undefined) body.dependencies = opts.dependencies;
    if (opts.autoDetectDependencies !== undefined) body.auto_detect_dependencies = opts.autoDetectDependencies;
    if (opts.allowHosts !== undefined) body.allow_hosts = opts.allowHosts;
    if (opts.secrets !== undefined) body.secrets = opts.secrets;
    if (opts.tty) body.tty = true;
    return body;
  }

  private get execPath(): string {
    return `/v1/sandboxes/${encodeSegment(this.id)}/exec`;
  }

  private async runToEnd(target: { code?: string; filename?: string }, opts: RunOptions): Promise<ExecResult> {
    const waitMs = this.defaultWaitMs(opts);
    const body = this.body(target, opts);
    if (!opts.onStdout && !opts.onStderr) {
      return new ExecResult(await this.client.json("POST", this.execPath, { json: body, timeoutMs: waitMs }));
    }
    const { handle, streamed } = await this.openStream(body, opts, waitMs);
    try {
      return await streamed;
    } catch (e) {
      if (e instanceof ConnectionError && handle) return handle.wait();
      throw e;
    }
  }

  private async startRun(target: { code?: string; filename?: string }, opts: StartOptions): Promise<ExecHandle> {
    const waitMs = this.defaultWaitMs(opts);
    const body = this.body(target, opts);
    if (opts.onStdout || opts.onStderr) {
      const { handle } = await this.openStream(body, opts, waitMs);
      if (!handle) throw new ConnectionError("the server did not name the run it started", { code: "CONNECTION" });
      return handle;
    }
    const r = await this.client.json<{ id: string }>("POST", this.execPath, { json: { ...body, detach: true } });
    return new ExecHandle(this.client, this.id, r.id, { defaultWaitMs: waitMs });
  }

  /** Starts a streamed run; resolves once the server has answered with the run's id. */
  private async openStream(body: Record<string, unknown>, opts: RunOptions, waitMs: number): Promise<{ handle?: ExecHandle; streamed: Promise<ExecResult> }> {
    const { response, done } = await this.client.open("POST", this.execPath, {
      json: { ...body, stream: true },
      headers: { accept: "application/x-ndjson" },
      timeoutMs: waitMs,
    });
    const execId = response.headers.get("x-petri-exec-id") ?? undefined;
    let userError: { error: unknown } | undefined;
    const guard = (cb?: OutputCallback): OutputCallback | undefined => cb && (async (d: string) => {
      try {
        await cb(d);
      } catch (e) {
        userError = { error: e };
        throw e;
      }
    });
    const handleRef: { h?: ExecHandle } = {};
    const streamed = (async () => {
      try {
        const result = await readExecStream(response, { onStdout: guard(opts.onStdout), onStderr: guard(opts.onStderr) });
        if (!result) throw new ConnectionError(`the output stream of run ${execId ?? "?"} ended before its result`, { code: "CONNECTION" });
        return result;
      } catch (e) {
        if (userError) {
          // The caller's callback failed: stop the run rather than leave it going unobserved.
          await handleRef.h?.kill().catch(() => undefined);
          throw userError.error;
        }
        const err = streamError(e, execId);
        if (err instanceof TimeoutError) throw new TimeoutError(`run ${execId ?? "?"} did not end within ${waitMs} ms`, { code: "TIMEOUT", cause: e });
        throw err;
      } finally {
        done();
        await response.body?.cancel().catch(() => undefined);
      }
    })();
    // Whoever holds `streamed` handles its failure; this keeps an unobserved one from crashing the process.
    streamed.catch(() => undefined);
    const handle = execId ? new ExecHandle(this.client, this.id, execId, { streamed, defaultWaitMs: waitMs }) : undefined;
    handleRef.h = handle;
    return { handle, streamed };
  }
}
