import type { Config } from "../config.js";
import type { DB } from "../store/db.js";
import { PetriError } from "../errors.js";

/** Per-tenant limits. Unset fields fall back to the server's defaults (PETRI_TENANT_MAX_*). */
export interface TenantQuotas {
  max_sandboxes: number;
  max_concurrent_runs: number;
  max_workspace_mb: number;
}

export const QUOTA_KEYS: readonly (keyof TenantQuotas)[] = ["max_sandboxes", "max_concurrent_runs", "max_workspace_mb"];

/**
 * Enforces tenant quotas: live sandboxes, runs in flight, and bytes across all the tenant's
 * workspaces. Exceeding one is a 429 QUOTA_EXCEEDED naming the quota.
 */
export class QuotaService {
  private readonly runs = new Map<string, number>();
  /** Last known usage per sandbox, updated after uploads and runs. */
  private readonly usage = new Map<string, { tenant: string; bytes: number }>();

  /** `measure` gives a workspace's current size; it is asked once per sandbox after a restart. */
  constructor(private readonly db: DB, private readonly config: Readonly<Config>, private readonly measure: (sandboxId: string) => number) {}

  /** Prepared once: a sync asks for the tenant's quotas once per file it stores. */
  private quotasStmt?: ReturnType<DB["prepare"]>;

  get(tenantId: string): TenantQuotas {
    this.quotasStmt ??= this.db.prepare("SELECT quotas_json FROM tenants WHERE id = ?");
    const row = this.quotasStmt.get(tenantId) as { quotas_json: string } | undefined;
    const set = row ? (JSON.parse(row.quotas_json) as Partial<TenantQuotas>) : {};
    return { ...this.config.tenantDefaults, ...set };
  }

  set(tenantId: string, q: Partial<TenantQuotas>): TenantQuotas {
    const row = this.db.prepare("SELECT quotas_json FROM tenants WHERE id = ?").get(tenantId) as { quotas_json: string } | undefined;
    if (!row) throw new PetriError("TENANT_NOT_FOUND", `tenant ${tenantId} not found`);
    const merged = { ...JSON.parse(row.quotas_json), ...q };
    this.db.prepare("UPDATE tenants SET quotas_json = ? WHERE id = ?").run(JSON.stringify(merged), tenantId);
    return this.get(tenantId);
  }

  checkNewSandbox(tenantId: string): void {
    const q = this.get(tenantId);
    const n = (this.db.prepare("SELECT COUNT(*) AS n FROM sandboxes WHERE tenant_id = ?").get(tenantId) as { n: number }).n;
    if (n >= q.max_sandboxes) {
      throw new PetriError("QUOTA_EXCEEDED", `tenant quota reached: ${q.max_sandboxes} live sandboxes (max_sandboxes)`, { quota: "max_sandboxes", limit: q.max_sandboxes });
    }
  }

  /** Reserves a run slot; the caller must call `runEnded` exactly once. */
  runStarting(tenantId: string): void {
    const q = this.get(tenantId);
    const n = this.runs.get(tenantId) ?? 0;
    if (n >= q.max_concurrent_runs) {
      throw new PetriError("QUOTA_EXCEEDED", `tenant quota reached: ${q.max_concurrent_runs} concurrent runs (max_concurrent_runs)`, { quota: "max_concurrent_runs", limit: q.max_concurrent_runs });
    }
    this.runs.set(tenantId, n + 1);
  }

  runEnded(tenantId: string): void {
    const n = (this.runs.get(tenantId) ?? 1) - 1;
    if (n <= 0) this.runs.delete(tenantId);
    else this.runs.set(tenantId, n);
  }

  recordUsage(tenantId: string, sandboxId: string, bytes: number): void {
    this.usage.set(sandboxId, { tenant: tenantId, bytes });
  }

  /** Bytes across all workspaces as last measured (for metrics; no disk walk). */
  knownUsageBytes(): number {
    let n = 0;
    for (const u of this.usage.values()) n += u.bytes;
    return n;
  }

  forget(sandboxId: string): void {
    this.usage.delete(sandboxId);
  }

  /** Refuses `incoming` more bytes when the tenant's workspaces together would pass the quota. */
  checkWorkspaceBytes(tenantId: string, sandboxId: string, incoming: number): void {
    const q = this.get(tenantId);
    let total = 0;
    const ids = this.db.prepare("SELECT id FROM sandboxes WHERE tenant_id = ?").all(tenantId) as { id: string }[];
    for (const { id } of ids) {
      let u = this.usage.get(id);
      if (!u) {
        u = { tenant: tenantId, bytes: this.measure(id) };
        this.usage.set(id, u);
      }
      total += u.bytes;
    }
    const max = q.max_workspace_mb * 1024 * 1024;
    if (total + incoming > max) {
      throw new PetriError("QUOTA_EXCEEDED", `tenant quota reached: ${q.max_workspace_mb} MiB across all workspaces (max_workspace_mb)`, { quota: "max_workspace_mb", limit: q.max_workspace_mb });
    }
  }
}
