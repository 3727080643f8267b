import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { DB } from "../store/db.js";
import type { InstalledPackage } from "./installer.js";
import type { Ecosystem } from "./specs.js";

/**
 * Environment directories: `<deps dir>/<tenant>/<env id>/`, one per (image, ecosystem, resolved
 * lock), shared by every sandbox of the tenant and never inside a workspace. An environment
 * only ever appears by an atomic rename of a finished install (its row is written after), so a
 * crash mid-install leaves a `.tmp-*` directory that start-up removes, never a half environment.
 */
export interface EnvRecord {
  id: string;
  tenantId: string;
  ecosystem: Ecosystem;
  image: string;
  lockSha256: string;
  sizeBytes: number;
  packages: InstalledPackage[];
  dir: string;
}

const TOUCH_EVERY_MS = 60_000;

export class EnvStore {
  /** Runs using an environment right now: it is not evicted under them. */
  private readonly inUse = new Map<string, number>();
  private readonly touched = new Map<string, number>();

  constructor(private readonly db: DB, readonly root: string) {
    fs.mkdirSync(root, { recursive: true, mode: 0o755 });
    fs.chmodSync(root, 0o755);
  }

  static envId(image: string, eco: Ecosystem, lock: string): string {
    return createHash("sha256").update(JSON.stringify([image, eco, lock])).digest("hex").slice(0, 32);
  }

  tenantDir(tenantId: string): string {
    // Tenant ids are server-made (tn_…), but a path component is never trusted blindly.
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(tenantId)) throw new Error(`unexpected tenant id ${tenantId}`);
    const dir = path.join(this.root, tenantId);
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    return dir;
  }

  /** A fresh, empty directory to install into, on the same filesystem as the environments. */
  makeTemp(tenantId: string): string {
    const dir = path.join(this.tenantDir(tenantId), `.tmp-${randomBytes(8).toString("hex")}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    return dir;
  }

  /** Removes leftovers of installs a crash interrupted. */
  sweepTemps(): number {
    let n = 0;
    for (const t of safeReaddir(this.root)) {
      for (const e of safeReaddir(path.join(this.root, t))) {
        if (e.startsWith(".tmp-")) {
          fs.rmSync(path.join(this.root, t, e), { recursive: true, force: true });
          n++;
        }
      }
    }
    return n;
  }

  lookupRequest(tenantId: string, key: string): EnvRecord | null {
    const row = this.db.prepare("SELECT env_id FROM dep_requests WHERE tenant_id = ? AND request_key = ?").get(tenantId, key) as { env_id: string } | undefined;
    return row ? this.get(tenantId, row.env_id) : null;
  }

  get(tenantId: string, id: string): EnvRecord | null {
    const row = this.db.prepare("SELECT * FROM dep_envs WHERE tenant_id = ? AND id = ?").get(tenantId, id) as Row | undefined;
    if (!row) return null;
    const rec = toRecord(row, path.join(this.root, tenantId, id));
    // A row whose directory is gone (removed by hand, disk trouble) is not an environment.
    if (!fs.existsSync(path.join(rec.dir, "petri-lock.json"))) {
      this.forget(tenantId, id);
      return null;
    }
    return rec;
  }

  mapRequest(tenantId: string, key: string, envId: string): void {
    this.db.prepare("INSERT INTO dep_requests(tenant_id, request_key, env_id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(tenant_id, request_key) DO UPDATE SET env_id = excluded.env_id")
      .run(tenantId, key, envId, Date.now());
  }

  /**
   * Publishes a finished install: renames the temp directory to the environment's address, or,
   * when that environment already exists (another request resolved to the same lock), drops it.
   */
  commit(tenantId: string, tmp: string, rec: Omit<EnvRecord, "dir" | "tenantId">, lock: string): EnvRecord {
    const dir = path.join(this.tenantDir(tenantId), rec.id);
    const existing = this.get(tenantId, rec.id);
    if (existing) {
      fs.rmSync(tmp, { recursive: true, force: true });
      return existing;
    }
    fs.writeFileSync(path.join(tmp, "petri-lock.json"), JSON.stringify({ ecosystem: rec.ecosystem, image: rec.image, lock, packages: rec.packages }, null, 2) + "\n", { mode: 0o644 });
    fs.rmSync(dir, { recursive: true, force: true }); // a directory without a row is an unfinished leftover
    fs.renameSync(tmp, dir);
    const now = Date.now();
    this.db.prepare(`INSERT INTO dep_envs(tenant_id, id, ecosystem, image, lock_sha256, size_bytes, packages_json, created_at, last_used_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(tenantId, rec.id, rec.ecosystem, rec.image, rec.lockSha256, rec.sizeBytes, JSON.stringify(rec.packages), now, now);
    return { ...rec, tenantId, dir };
  }

  acquire(rec: EnvRecord): () => void {
    const k = `${rec.tenantId}/${rec.id}`;
    this.inUse.set(k, (this.inUse.get(k) ?? 0) + 1);
    const now = Date.now();
    if (now - (this.touched.get(k) ?? 0) > TOUCH_EVERY_MS) {
      this.touched.set(k, now);
      this.db.prepare("UPDATE dep_envs SET last_used_at = ? WHERE tenant_id = ? AND id = ?").run(now, rec.tenantId, rec.id);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.inUse.get(k) ?? 1) - 1;
      if (n <= 0) this.inUse.delete(k);
      else this.inUse.set(k, n);
    };
  }

  tenantUsage(tenantId: string): number {
    const row = this.db.prepare("SELECT COALESCE(SUM(size_bytes), 0) AS n FROM dep_envs WHERE tenant_id = ?").get(tenantId) as { n: number };
    return row.n;
  }

  list(tenantId: string): EnvRecord[] {
    const rows = this.db.prepare("SELECT * FROM dep_envs WHERE tenant_id = ? ORDER BY last_used_at DESC").all(tenantId) as Row[];
    return rows.map((r) => toRecord(r, path.join(this.root, tenantId, r.id)));
  }

  /**
   * Removes least recently used environments no run is using until the tenant's environments
   * fit in `quotaBytes` (keeping `keep`). Returns the ids removed.
   */
  evictToFit(tenantId: string, quotaBytes: number, keep: string): string[] {
    const rows = this.db.prepare("SELECT id, size_bytes FROM dep_envs WHERE tenant_id = ? ORDER BY last_used_at ASC").all(tenantId) as { id: string; size_bytes: number }[];
    let total = rows.reduce((a, r) => a + r.size_bytes, 0);
    const removed: string[] = [];
    for (const r of rows) {
      if (total <= quotaBytes) break;
      if (r.id === keep || this.inUse.has(`${tenantId}/${r.id}`)) continue;
      this.remove(tenantId, r.id);
      total -= r.size_bytes;
      removed.push(r.id);
    }
    return removed;
  }

  /** Removes environments unused since `before` that no run is using. */
  evictUnused(before: number): { tenantId: string; id: string }[] {
    const rows = this.db.prepare("SELECT tenant_id, id FROM dep_envs WHERE last_used_at < ?").all(before) as { tenant_id: string; id: string }[];
    const out: { tenantId: string; id: string }[] = [];
    for (const r of rows) {
      if (this.inUse.has(`${r.tenant_id}/${r.id}`)) continue;
      this.remove(r.tenant_id, r.id);
      out.push({ tenantId: r.tenant_id, id: r.id });
    }
    return out;
  }

  /** Forgets first (no new run can pick it), then deletes the directory. */
  remove(tenantId: string, id: string): void {
    this.forget(tenantId, id);
    fs.rmSync(path.join(this.root, tenantId, id), { recursive: true, force: true });
  }

  private forget(tenantId: string, id: string): void {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM dep_requests WHERE tenant_id = ? AND env_id = ?").run(tenantId, id);
      this.db.prepare("DELETE FROM dep_envs WHERE tenant_id = ? AND id = ?").run(tenantId, id);
    })();
  }
}

interface Row {
  tenant_id: string;
  id: string;
  ecosystem: string;
  image: string;
  lock_sha256: string;
  size_bytes: number;
  packages_json: string;
}

function toRecord(r: Row, dir: string): EnvRecord {
  return {
    id: r.id, tenantId: r.tenant_id, ecosystem: r.ecosystem as Ecosystem, image: r.image, lockSha256: r.lock_sha256,
    sizeBytes: r.size_bytes, packages: JSON.parse(r.packages_json) as InstalledPackage[], dir,
  };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Bytes under a directory (symlinks counted as links, never followed). */
export function dirSize(dir: string): number {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else {
        try {
          total += fs.lstatSync(p).size;
        } catch {
          /* vanished meanwhile */
        }
      }
    }
  }
  return total;
}
