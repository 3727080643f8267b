import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";

export type DB = Database.Database;

/**
 * Schema migrations, applied in order and recorded in `user_version`. Append only: a released
 * migration is never edited.
 */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    quotas_json TEXT NOT NULL DEFAULT '{}'
  );
  CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
  );
  CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    language TEXT NOT NULL,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    limits_json TEXT NOT NULL,
    metadata_json TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    idle_timeout_ms INTEGER NOT NULL,
    ttl_ms INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX sandboxes_tenant ON sandboxes(tenant_id, created_at, id);
  CREATE INDEX sandboxes_expiry ON sandboxes(expires_at);
  CREATE TABLE execs (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    request_json TEXT NOT NULL,
    result_json TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX execs_sandbox ON execs(sandbox_id, created_at);
  CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );
  `,
  // Which vault secrets a sandbox's runs may use, and which hosts they may reach via the broker.
  `
  ALTER TABLE sandboxes ADD COLUMN egress_json TEXT NOT NULL DEFAULT '{"secrets":[],"allow_hosts":[]}';
  `,
  // Dependency environments (src/deps): one directory per (image, ecosystem, resolved lock) and
  // tenant; requests map a requirement set to the environment it resolved to; sandboxes keep
  // their declared dependencies and whether imports are detected.
  `
  CREATE TABLE dep_envs (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    ecosystem TEXT NOT NULL,
    image TEXT NOT NULL,
    lock_sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    packages_json TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
  );
  CREATE TABLE dep_requests (
    tenant_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    env_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, request_key)
  );
  CREATE TABLE sandbox_deps (
    sandbox_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    declared_json TEXT NOT NULL DEFAULT '{}',
    auto_detect INTEGER
  );
  `,
  // The image a sandbox runs in (an image name, GET /v1/images); NULL: its language's default.
  `
  ALTER TABLE sandboxes ADD COLUMN image TEXT;
  `,
  // A run's change set (every created, modified, deleted entry with sizes and hashes).
  `
  ALTER TABLE execs ADD COLUMN changes_json TEXT;
  `,
  // The sha256 of workspace files by inode, valid while size, mtime and ctime (ns) match
  // (src/workspaces/hash-cache.ts): a sync plan after a restart reads no unchanged file.
  `
  CREATE TABLE file_hashes (
    sandbox_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    stat TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, file_id)
  ) WITHOUT ROWID;
  `,
];

/** The schema version this code writes; a store at a higher one was written by a newer Petri. */
export const SCHEMA_VERSION = MIGRATIONS.length;

export class SchemaTooNewError extends Error {}

/**
 * Opens (creating if needed) the store and brings its schema up to date. Every tenant's run
 * output is in it, so the file and its WAL/SHM companions are 0600. Before migrating a store
 * that already holds data, a copy is kept beside it (`petri.db.v<N>.bak`, made with VACUUM INTO,
 * which is consistent even while other processes write), so an upgrade can be undone by
 * putting the old binary and that copy back. A store newer than this code is refused rather
 * than half-understood.
 */
export function openDatabase(dataDir: string, opts: { readonly?: boolean } = {}): DB {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, "petri.db");
  if (!opts.readonly) {
    fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_RDWR, 0o600));
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      try { fs.chmodSync(f, 0o600); } catch { /* not there yet */ }
    }
  }
  // SQLite creates -wal and -shm with the main file's mode, so they are 0600 too.
  const db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
  if (!opts.readonly) db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
  const current = db.pragma("user_version", { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    db.close();
    throw new SchemaTooNewError(`${file} has schema version ${current}, newer than this Petri knows (${MIGRATIONS.length}): it was written by a newer release; run that release, or restore a backup taken before the upgrade (docs/operations.md)`);
  }
  if (opts.readonly) return db;
  if (current > 0 && current < MIGRATIONS.length) {
    const copy = `${file}.v${current}.bak`;
    if (!fs.existsSync(copy)) {
      db.prepare("VACUUM INTO ?").run(copy);
      fs.chmodSync(copy, 0o600);
    }
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}

export function getMeta(db: DB, key: string): string | undefined {
  const row = db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined;
  return row?.value;
}

export function setMeta(db: DB, key: string, value: string): void {
  db.prepare("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
}
