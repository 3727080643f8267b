import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { DB } from "../store/db.js";
import { newId } from "../ids.js";
import { PetriError } from "../errors.js";

export interface AuthContext {
  keyId: string;
  tenantId: string;
  isAdmin: boolean;
}

export interface KeyInfo {
  id: string;
  tenant_id: string;
  name: string;
  is_admin: boolean;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface TenantInfo {
  id: string;
  name: string;
  created_at: string;
}

/**
 * API keys are 256-bit random tokens, so a single SHA-256 is enough to store them: there is no
 * low-entropy password to protect against brute force, and lookups stay O(1) by hash.
 */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

function newToken(): string {
  return `pk_${randomBytes(32).toString("base64url")}`;
}

interface KeyRow {
  id: string; tenant_id: string; name: string; hash: string; is_admin: number;
  created_at: number; revoked_at: number | null; last_used_at: number | null;
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function keyInfo(r: KeyRow): KeyInfo {
  return {
    id: r.id, tenant_id: r.tenant_id, name: r.name, is_admin: r.is_admin === 1,
    created_at: iso(r.created_at)!, revoked_at: iso(r.revoked_at), last_used_at: iso(r.last_used_at),
  };
}

export class KeyService {
  private lastUsedWrites = new Map<string, number>();

  constructor(private readonly db: DB) {}

  createTenant(name: string): TenantInfo {
    const id = newId("tn");
    const now = Date.now();
    this.db.prepare("INSERT INTO tenants(id, name, created_at) VALUES (?, ?, ?)").run(id, name, now);
    return { id, name, created_at: new Date(now).toISOString() };
  }

  getTenant(id: string): TenantInfo | undefined {
    const r = this.db.prepare("SELECT id, name, created_at FROM tenants WHERE id = ?").get(id) as { id: string; name: string; created_at: number } | undefined;
    return r && { id: r.id, name: r.name, created_at: new Date(r.created_at).toISOString() };
  }

  listTenants(): TenantInfo[] {
    const rows = this.db.prepare("SELECT id, name, created_at FROM tenants ORDER BY created_at, id").all() as { id: string; name: string; created_at: number }[];
    return rows.map((r) => ({ id: r.id, name: r.name, created_at: new Date(r.created_at).toISOString() }));
  }

  /**
   * Creates a key. Without a tenant, the key gets a tenant of its own, so keys never see each
   * other's sandboxes unless they were deliberately put in one tenant.
   */
  createKey(opts: { name?: string; tenantId?: string; admin?: boolean; token?: string }): { key: KeyInfo; token: string } {
    return this.db.transaction(() => {
      let tenantId = opts.tenantId;
      if (tenantId) {
        if (!this.getTenant(tenantId)) throw new PetriError("TENANT_NOT_FOUND", `tenant ${tenantId} does not exist`);
      } else {
        tenantId = this.createTenant(opts.name ?? "default").id;
      }
      const token = opts.token ?? newToken();
      const id = newId("key");
      const now = Date.now();
      this.db.prepare("INSERT INTO api_keys(id, tenant_id, name, hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .run(id, tenantId, opts.name ?? "key", hashToken(token), opts.admin ? 1 : 0, now);
      return { key: this.getKey(id)!, token };
    })();
  }

  getKey(id: string): KeyInfo | undefined {
    const r = this.db.prepare("SELECT * FROM api_keys WHERE id = ?").get(id) as KeyRow | undefined;
    return r && keyInfo(r);
  }

  listKeys(tenantId?: string): KeyInfo[] {
    const rows = (tenantId
      ? this.db.prepare("SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id").all(tenantId)
      : this.db.prepare("SELECT * FROM api_keys ORDER BY created_at, id").all()) as KeyRow[];
    return rows.map(keyInfo);
  }

  revokeKey(id: string): boolean {
    return this.db.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").run(Date.now(), id).changes > 0;
  }

  /** True when a key with this token exists, revoked or not (a revoked token stays revoked). */
  private tokenKnown(token: string): boolean {
    return this.db.prepare("SELECT 1 FROM api_keys WHERE hash = ?").get(hashToken(token)) !== undefined;
  }

  authenticate(token: string): AuthContext | null {
    if (!token || token.length > 512) return null;
    const hash = hashToken(token);
    const r = this.db.prepare("SELECT * FROM api_keys WHERE hash = ?").get(hash) as KeyRow | undefined;
    if (!r || r.revoked_at !== null) return null;
    // Constant-time compare of the stored hash, even though the lookup was by hash already.
    if (!timingSafeEqual(Buffer.from(r.hash, "hex"), Buffer.from(hash, "hex"))) return null;
    const now = Date.now();
    const last = this.lastUsedWrites.get(r.id) ?? 0;
    if (now - last > 60_000) {
      this.lastUsedWrites.set(r.id, now);
      this.db.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ?").run(now, r.id);
    }
    return { keyId: r.id, tenantId: r.tenant_id, isAdmin: r.is_admin === 1 };
  }

  /**
   * The bootstrap admin key: PETRI_ADMIN_TOKEN if set, else a token generated on first start and
   * written to a 0600 file in the data dir. Returns where it came from so the caller can say it
   * once.
   */
  ensureBootstrapAdmin(opts: { adminToken?: string; dataDir: string }): { source: "env" | "file-created" | "file-existing"; file?: string } {
    const file = path.join(opts.dataDir, "admin.key");
    if (opts.adminToken) {
      if (!this.tokenKnown(opts.adminToken)) this.createKey({ name: "bootstrap-admin", admin: true, token: opts.adminToken });
      return { source: "env" };
    }
    if (fs.existsSync(file)) {
      const token = fs.readFileSync(file, "utf8").trim();
      if (!this.tokenKnown(token)) this.createKey({ name: "bootstrap-admin", admin: true, token });
      return { source: "file-existing", file };
    }
    const { token } = this.createKey({ name: "bootstrap-admin", admin: true });
    fs.writeFileSync(file, token + "\n", { mode: 0o600 });
    fs.chmodSync(file, 0o600);
    return { source: "file-created", file };
  }
}
