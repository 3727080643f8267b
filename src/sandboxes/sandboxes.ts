import fs from "node:fs";
import path from "node:path";
import type { Config, Limits } from "../config.js";
import { LIMIT_KEYS, isDockerRuntime } from "../config.js";
import type { DB } from "../store/db.js";
import { PetriError } from "../errors.js";
import { newId } from "../ids.js";
import { LANGUAGES } from "../exec/languages.js";
import { checkTenantHosts } from "../vault/index.js";
import type { WorkspaceStore } from "../workspaces/workspaces.js";
import { Trash } from "../workspaces/trash.js";
import type { AuthContext } from "../auth/keys.js";
import type { QuotaService } from "../auth/quotas.js";

export interface Sandbox {
  id: string;
  tenant_id: string;
  language: string;
  /** Image its runs use (a name from GET /v1/images). */
  image: string;
  runtime: string;
  status: "ready" | "running";
  limits: Limits;
  metadata: Record<string, string>;
  created_at: string;
  last_active_at: string;
  expires_at: string;
  idle_timeout_ms: number;
  ttl_ms: number;
  /** Vault secrets its runs may use (through brokers; the code sees placeholders). */
  secrets: string[];
  /** Hosts its runs may reach through the HTTP broker. Empty: no network at all. */
  allow_hosts: string[];
  /** Environment of every run (a run's own `env` is layered on top). */
  env: Record<string, string>;
}

export interface CreateSandboxInput {
  secrets?: string[];
  allow_hosts?: string[];
  env?: Record<string, string>;
  language: string;
  /** An image name from GET /v1/images; default: the language's default image. */
  image?: string;
  runtime?: string;
  limits?: Partial<Limits>;
  ttl_ms?: number;
  idle_timeout_ms?: number;
  metadata?: Record<string, string>;
}

interface Row {
  id: string; tenant_id: string; language: string; runtime: string; status: string;
  limits_json: string; metadata_json: string; created_at: number; last_active_at: number;
  idle_timeout_ms: number; ttl_ms: number; expires_at: number; egress_json: string; image: string | null;
}

/** How long a delete request waits for a sandbox's bytes to be removed before it answers "deleting" (the rest goes on in the background). */
export const DELETE_WAIT_MS = 1000;

/** Merges client limits into a base, refusing anything above the server's maximum. */
export function resolveLimits(base: Readonly<Limits>, max: Readonly<Limits>, req: Partial<Limits> | undefined): Limits {
  const out: Limits = { ...base };
  if (!req) return out;
  for (const k of Object.keys(req) as (keyof Limits)[]) {
    if (!LIMIT_KEYS.includes(k)) throw new PetriError("VALIDATION_ERROR", `unknown limit "${k}"`);
    const v = req[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new PetriError("VALIDATION_ERROR", `limit ${k} must be a positive number`);
    if (k !== "cpus" && !Number.isInteger(v)) throw new PetriError("VALIDATION_ERROR", `limit ${k} must be a whole number, not ${v}`);
    if (v > max[k]) throw new PetriError("LIMIT_ABOVE_MAXIMUM", `limit ${k}=${v} is above the server maximum of ${max[k]}`, { limit: k, maximum: max[k] });
    out[k] = k === "cpus" ? v : Math.floor(v);
  }
  return out;
}

/** Names a run's environment may use (sandbox-level and run-level env alike). */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export class SandboxService {
  /** Sandboxes with runs in flight, so status can say "running" and deletes can cancel them. */
  private readonly active = new Map<string, number>();

  constructor(
    private readonly db: DB,
    private readonly config: Readonly<Config>,
    private readonly workspaces: WorkspaceStore,
    private readonly runtimeNames: () => string[],
    private readonly defaultRuntime: () => string,
    private readonly quotas?: QuotaService,
    /** Throws SECRET_NOT_FOUND when the tenant has no such secret. */
    private readonly secretExists?: (tenantId: string, name: string) => void,
    /** Told when a deletion could not finish now (the janitor retries). */
    private readonly onDeleteError?: (sandboxId: string, err: Error) => void,
    /** The image a new sandbox gets (validates the requested one); images.ts ImageCatalog.forSandbox. */
    private readonly images?: { forSandbox(language: string, requested?: string): string; defaultFor(language: string): string },
  ) {}

  private toApi(r: Row): Sandbox {
    return {
      id: r.id,
      tenant_id: r.tenant_id,
      language: r.language,
      image: r.image ?? this.images?.defaultFor(r.language) ?? this.config.images[r.language] ?? "standard",
      runtime: r.runtime,
      status: (this.active.get(r.id) ?? 0) > 0 ? "running" : "ready",
      limits: JSON.parse(r.limits_json),
      metadata: JSON.parse(r.metadata_json),
      created_at: new Date(r.created_at).toISOString(),
      last_active_at: new Date(r.last_active_at).toISOString(),
      expires_at: new Date(r.expires_at).toISOString(),
      idle_timeout_ms: r.idle_timeout_ms,
      ttl_ms: r.ttl_ms,
      // egress_json holds what every run of the sandbox gets: secrets, hosts and env.
      ...{ env: {}, ...(JSON.parse(r.egress_json) as { secrets: string[]; allow_hosts: string[]; env?: Record<string, string> }) },
    };
  }

  create(auth: AuthContext, input: CreateSandboxInput): Sandbox {
    if (!Object.hasOwn(LANGUAGES, input.language)) {
      throw new PetriError("UNKNOWN_LANGUAGE", `unknown language "${input.language}"; known: ${Object.keys(LANGUAGES).join(", ")}`);
    }
    const names = this.runtimeNames();
    if (names.length === 0) {
      throw new PetriError("RUNTIME_UNAVAILABLE", "no sandbox runtime is available on this server (see `petri doctor`); code is never run unsandboxed");
    }
    let runtime = input.runtime ?? this.defaultRuntime();
    if (runtime === "gvisor") runtime = "runsc";
    if (runtime === "docker") runtime = names.find(isDockerRuntime) ?? runtime;
    if (!names.includes(runtime)) {
      throw new PetriError("UNKNOWN_RUNTIME", `runtime "${runtime}" is not available on this server; available: ${this.runtimeNames().join(", ")}`);
    }
    const limits = resolveLimits(this.config.defaultLimits, this.config.maxLimits, input.limits);
    const image = this.images ? this.images.forSandbox(input.language, input.image) : (input.image ?? this.config.images[input.language]);
    this.quotas?.checkNewSandbox(auth.tenantId);
    const ttl = input.ttl_ms ?? this.config.sandboxTtlMs;
    const idle = input.idle_timeout_ms ?? this.config.sandboxIdleTimeoutMs;
    if (ttl > this.config.sandboxTtlMs) {
      throw new PetriError("LIMIT_ABOVE_MAXIMUM", `ttl_ms=${ttl} is above the server maximum of ${this.config.sandboxTtlMs}`);
    }
    if (idle > this.config.sandboxTtlMs) {
      throw new PetriError("LIMIT_ABOVE_MAXIMUM", `idle_timeout_ms=${idle} is above the server maximum of ${this.config.sandboxTtlMs}`);
    }
    for (const name of input.secrets ?? []) this.secretExists?.(auth.tenantId, name);
    for (const k of Object.keys(input.env ?? {})) {
      if (!ENV_NAME.test(k)) throw new PetriError("VALIDATION_ERROR", `env name "${k}" is not a valid variable name`);
    }
    const egress = {
      secrets: [...new Set(input.secrets ?? [])], allow_hosts: [...new Set(checkTenantHosts(input.allow_hosts ?? [], this.config.egress, "allow_hosts"))],
      env: { ...(input.env ?? {}) },
    };
    const id = newId("sb");
    const now = Date.now();
    const expires = Math.min(now + ttl, now + idle);
    this.workspaces.create(id);
    try {
      this.db.prepare(`INSERT INTO sandboxes(id, tenant_id, language, runtime, status, limits_json, metadata_json,
        created_at, last_active_at, idle_timeout_ms, ttl_ms, expires_at, egress_json, image) VALUES (?, ?, ?, ?, 'ready', ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(id, auth.tenantId, input.language, runtime, JSON.stringify(limits), JSON.stringify(input.metadata ?? {}), now, now, idle, ttl, expires, JSON.stringify(egress), image);
    } catch (e) {
      void this.workspaces.destroy(id).catch(() => undefined);
      throw e;
    }
    return this.get(auth, id);
  }

  /** Another tenant's sandbox is indistinguishable from one that does not exist. */
  get(auth: AuthContext, id: string): Sandbox {
    const r = this.db.prepare("SELECT * FROM sandboxes WHERE id = ? AND tenant_id = ? AND status != 'deleting'").get(id, auth.tenantId) as Row | undefined;
    if (!r) throw new PetriError("SANDBOX_NOT_FOUND", `sandbox ${id} not found`);
    return this.toApi(r);
  }

  list(auth: AuthContext, opts: { limit: number; cursor?: string }): { items: Sandbox[]; next_cursor: string | null } {
    let after: [number, string] = [-1, ""];
    if (opts.cursor) {
      try {
        const [t, id] = JSON.parse(Buffer.from(opts.cursor, "base64url").toString("utf8"));
        if (typeof t !== "number" || typeof id !== "string") throw new Error();
        after = [t, id];
      } catch {
        throw new PetriError("VALIDATION_ERROR", "cursor is not valid");
      }
    }
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE tenant_id = ? AND status != 'deleting' AND (created_at > ? OR (created_at = ? AND id > ?))
      ORDER BY created_at, id LIMIT ?`).all(auth.tenantId, after[0], after[0], after[1], opts.limit + 1) as Row[];
    const more = rows.length > opts.limit;
    const page = rows.slice(0, opts.limit);
    const last = page[page.length - 1];
    return {
      items: page.map((r) => this.toApi(r)),
      next_cursor: more && last ? Buffer.from(JSON.stringify([last.created_at, last.id])).toString("base64url") : null,
    };
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM sandboxes").get() as { n: number }).n;
  }

  /** Activity pushes the idle expiry out, never past the sandbox's absolute TTL. */
  touch(id: string): void {
    const now = Date.now();
    this.db.prepare(`UPDATE sandboxes SET last_active_at = ?, expires_at = MIN(created_at + ttl_ms, ? + idle_timeout_ms) WHERE id = ?`).run(now, now, id);
  }

  runStarted(id: string): void {
    this.active.set(id, (this.active.get(id) ?? 0) + 1);
  }

  runEnded(id: string): void {
    const n = (this.active.get(id) ?? 1) - 1;
    if (n <= 0) this.active.delete(id);
    else this.active.set(id, n);
  }

  hasRunsInFlight(id: string): boolean {
    return (this.active.get(id) ?? 0) > 0;
  }

  cacheDirFor(id: string): string {
    return path.join(this.config.cacheRoot, id);
  }

  /** Host folder mounted read-only at /petri/snippet in the sandbox's runs (one sub-folder per snippet run). */
  snippetDirFor(id: string): string {
    return path.join(this.config.dataDir, "snippets", id);
  }

  /**
   * First step of deletion, durable: the sandbox is invisible to the API from now on (and no run
   * can start in it), and if the process dies before the data is gone the janitor finishes.
   */
  markDeleting(id: string): void {
    this.db.prepare("UPDATE sandboxes SET status = 'deleting' WHERE id = ?").run(id);
  }

  /**
   * Removes the sandbox's workspace, caches and run records; the record goes last, only once the
   * data is gone. The workspace and cache leave at once, before this returns (each one rename
   * into a trash: no run and no API call sees them again); their bytes are removed after that,
   * which for a big workspace takes a while. Resolves true once everything is gone, false (the
   * sandbox stays in state "deleting" for the janitor) when the data could not all be removed,
   * or, with `waitMs`, when the removal is still under way after that long: it then finishes in
   * the background (and a crash meanwhile is finished by the janitor and the trash's drain).
   */
  destroy(id: string, opts: { waitMs?: number } = {}): Promise<boolean> {
    let p = this.destroying.get(id);
    if (!p) {
      p = this.destroyNow(id).finally(() => this.destroying.delete(id));
      this.destroying.set(id, p);
    }
    if (opts.waitMs === undefined) return p;
    const done = p;
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), opts.waitMs);
      void done.then((ok) => { clearTimeout(t); resolve(ok); });
    });
  }

  /** Deletions under way, so the janitor and an API call never remove the same sandbox twice at once. */
  private readonly destroying = new Map<string, Promise<boolean>>();

  /** Resolves once the deletions under way have finished (shutdown waits for them). */
  async settled(): Promise<void> {
    await Promise.all(this.destroying.values());
  }

  private async destroyNow(id: string): Promise<boolean> {
    const tenant = this.tenantOf(id);
    this.markDeleting(id);
    try {
      // Both calls move their directory into a trash before their first await.
      const workspace = this.workspaces.destroy(id);
      const cache = this.cacheTrash().removeJobFor(this.cacheDirFor(id));
      const [w, c] = await Promise.allSettled([workspace, cache]);
      if (w.status === "rejected") throw w.reason;
      if (c.status === "rejected") throw c.reason;
      // Snippet files of finished runs are removed as they end: a few small files at most.
      fs.rmSync(this.snippetDirFor(id), { recursive: true, force: true });
    } catch (e) {
      this.onDeleteError?.(id, e as Error);
      return false;
    }
    try {
      this.db.transaction(() => {
        this.db.prepare("DELETE FROM execs WHERE sandbox_id = ?").run(id);
        this.db.prepare("DELETE FROM sandboxes WHERE id = ?").run(id);
      })();
    } catch (e) {
      this.onDeleteError?.(id, e as Error);
      return false;
    }
    this.quotas?.forget(id);
    if (tenant) {
      try {
        await this.afterDestroy?.(tenant, id);
      } catch (e) {
        this.onDeleteError?.(id, e as Error);
      }
    }
    return true;
  }

  /** Told once a sandbox's data and record are gone (e.g. to release its content-store refs). */
  afterDestroy?: (tenantId: string, sandboxId: string) => void | Promise<void>;

  /** Sandboxes whose deletion started but has not finished (a crash, or an error). */
  pendingDeletions(): string[] {
    return (this.db.prepare("SELECT id FROM sandboxes WHERE status = 'deleting'").all() as { id: string }[]).map((r) => r.id)
      .filter((id) => !this.destroying.has(id));
  }

  private cacheTrash(): Trash {
    this.cacheTrashInstance ??= new Trash(this.config.cacheRoot);
    return this.cacheTrashInstance;
  }
  private cacheTrashInstance?: Trash;

  expired(now = Date.now()): string[] {
    return (this.db.prepare("SELECT id FROM sandboxes WHERE expires_at <= ? AND status != 'deleting'").all(now) as { id: string }[]).map((r) => r.id);
  }

  allIds(): Set<string> {
    return new Set((this.db.prepare("SELECT id FROM sandboxes").all() as { id: string }[]).map((r) => r.id));
  }

  tenantOf(id: string): string | undefined {
    return (this.db.prepare("SELECT tenant_id FROM sandboxes WHERE id = ?").get(id) as { tenant_id: string } | undefined)?.tenant_id;
  }
}
