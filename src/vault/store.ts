import { createHash, randomBytes } from "node:crypto";
import type { Database } from "better-sqlite3";
import { PetriError } from "../errors.js";
import { KEY_LEN, VaultCryptoError, masterKeyId, open, readMasterKeyRing, seal, writeMasterKeyFile } from "./crypto.js";
import { DEFAULT_EGRESS_POLICY, checkTenantHosts, type EgressPolicy } from "./egress.js";
import { formatHostPattern, parseHostPattern } from "./hosts.js";
import { Redactor } from "./redact.js";

export type SecretKind = "generic" | "postgres" | "http";
export const SECRET_KINDS: readonly SecretKind[] = ["generic", "postgres", "http"];

export type PgSslMode = "disable" | "prefer" | "require" | "verify-ca" | "verify-full";
export const PG_SSL_MODES: readonly PgSslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

export interface PostgresConfig {
  host: string;
  /** Default 5432. */
  port: number;
  database: string;
  user: string;
  /** Like libpq's sslmode; default "prefer". verify-ca/verify-full check the server against `ca` (else system CAs). */
  sslmode: PgSslMode;
  /** PEM CA certificate(s) trusted for the upstream server. */
  ca?: string;
}

export interface HttpConfig {
  /** Host patterns (see hosts.ts) the secret is sent to; nowhere else. */
  hosts: string[];
  /** Request header the broker sets, default "Authorization". */
  header: string;
  /** Header value; "{{value}}" is replaced by the secret. Default "Bearer {{value}}". */
  template: string;
  /** PEM CA certificate(s) trusted for these hosts, in addition to the system CAs. */
  upstreamCa?: string;
}

export type SecretConfig = PostgresConfig | HttpConfig | Record<string, never>;

export interface SecretInput {
  value: string;
  kind: SecretKind;
  config?: Record<string, unknown>;
}

/** What any API may show about a secret. Never the value. */
export interface SecretMeta {
  name: string;
  kind: SecretKind;
  version: number;
  /** Where the secret may be used: http hosts, or "host:port/database" for postgres; empty for generic. */
  scope: string[];
  config: SecretConfig;
  createdAt: string;
  updatedAt: string;
}

export interface ResolvedSecret {
  name: string;
  value: string;
  kind: SecretKind;
  config: SecretConfig;
  version: number;
  /**
   * Values this secret had before (newest first, at most HISTORY_KEEP): a rotated credential may
   * still be valid upstream or sit in a workspace file, so it is redacted like the current one.
   */
  previous: string[];
}

/** Older versions of a value kept (encrypted) for redaction after a rotation. */
export const HISTORY_KEEP = 5;

export const SECRET_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
export const SECRET_VALUE_MIN = 6;
export const SECRET_VALUE_MAX = 64 * 1024;
const PEM_MAX = 64 * 1024;

interface SecretRow {
  tenant_id: string;
  name: string;
  kind: SecretKind;
  config_json: string;
  ciphertext: Buffer;
  version: number;
  created_at: string;
  updated_at: string;
}

interface TenantKeyRow {
  tenant_id: string;
  wrapped_key: Buffer;
  master_key_id: string;
}

function dataKeyAad(tenantId: string): Buffer {
  return Buffer.from(`petri/vault/v1/data-key\0${tenantId}`);
}

/**
 * Binds a secret's ciphertext to everything that decides where its value may go: tenant, name,
 * version, kind and config (hosts, upstream). Moving a ciphertext to another row, or editing the
 * row's hosts in the database directly, makes it fail to decrypt rather than leak.
 */
function secretAad(tenantId: string, name: string, version: number, kind: string, configJson: string): Buffer {
  const configHash = createHash("sha256").update(configJson).digest("hex");
  return Buffer.from(`petri/vault/v1/secret\0${tenantId}\0${name}\0${version}\0${kind}\0${configHash}`);
}

function bad(message: string): PetriError {
  return new PetriError("VALIDATION_ERROR", message);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function pem(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v.length > PEM_MAX || !/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(v)) {
    throw bad(`config.${field} must be PEM certificate text`);
  }
  return v;
}

function onlyKeys(cfg: Record<string, unknown>, allowed: string[], kind: string): void {
  for (const k of Object.keys(cfg)) if (!allowed.includes(k)) throw bad(`config.${k} is not a setting of ${kind} secrets (allowed: ${allowed.join(", ")})`);
}

const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
const FORBIDDEN_HEADERS = new Set(["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "proxy-authorization", "keep-alive", "cookie"]);

export function validateConfig(kind: SecretKind, raw: unknown): SecretConfig {
  const cfg = raw === undefined || raw === null ? {} : raw;
  if (!isPlainObject(cfg)) throw bad("config must be an object");
  if (kind === "generic") {
    onlyKeys(cfg, [], "generic");
    return {};
  }
  if (kind === "postgres") {
    onlyKeys(cfg, ["host", "port", "database", "user", "sslmode", "ca"], "postgres");
    const { host, port, database, user, sslmode } = cfg;
    if (typeof host !== "string" || !/^[A-Za-z0-9.:_\-[\]]{1,253}$/.test(host)) throw bad("config.host must be a host name or IP address");
    const p = port === undefined ? 5432 : port;
    if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 65535) throw bad("config.port must be an integer 1-65535");
    if (typeof database !== "string" || database.length < 1 || database.length > 63 || database.includes("\0")) throw bad("config.database must be 1-63 characters");
    if (typeof user !== "string" || user.length < 1 || user.length > 63 || user.includes("\0")) throw bad("config.user must be 1-63 characters");
    const mode = sslmode === undefined ? "prefer" : sslmode;
    if (typeof mode !== "string" || !PG_SSL_MODES.includes(mode as PgSslMode)) throw bad(`config.sslmode must be one of ${PG_SSL_MODES.join(", ")}`);
    const out: PostgresConfig = { host: host.replace(/^\[|\]$/g, ""), port: p, database, user, sslmode: mode as PgSslMode };
    const ca = pem(cfg.ca, "ca");
    if (ca) out.ca = ca;
    return out;
  }
  onlyKeys(cfg, ["hosts", "header", "template", "upstreamCa"], "http");
  const { hosts, header, template } = cfg;
  if (!Array.isArray(hosts) || hosts.length < 1 || hosts.length > 32) throw bad("config.hosts must list 1-32 host patterns");
  const normHosts = hosts.map((h) => {
    const p = typeof h === "string" ? parseHostPattern(h) : null;
    if (!p) throw bad(`config.hosts: "${String(h).slice(0, 100)}" is not a host pattern (host, host:port or *.domain)`);
    return formatHostPattern(p);
  });
  const hdr = header === undefined ? "Authorization" : header;
  if (typeof hdr !== "string" || !HEADER_TOKEN.test(hdr) || FORBIDDEN_HEADERS.has(hdr.toLowerCase())) throw bad("config.header must be a valid, non-hop-by-hop header name");
  const tpl = template === undefined ? "Bearer {{value}}" : template;
  if (typeof tpl !== "string" || tpl.length > 1024 || !tpl.includes("{{value}}") || /[\r\n\0]/.test(tpl)) throw bad('config.template must contain "{{value}}" and no line breaks');
  const out: HttpConfig = { hosts: [...new Set(normHosts)], header: hdr, template: tpl };
  const ca = pem(cfg.upstreamCa, "upstreamCa");
  if (ca) out.upstreamCa = ca;
  return out;
}

function scopeOf(kind: SecretKind, config: SecretConfig): string[] {
  if (kind === "http") return [...(config as HttpConfig).hosts];
  if (kind === "postgres") {
    const c = config as PostgresConfig;
    return [`${c.host.includes(":") ? `[${c.host}]` : c.host}:${c.port}/${c.database}`];
  }
  return [];
}

/**
 * Secrets at rest. Envelope encryption: each tenant has a random data key; secret values are
 * sealed with AES-256-GCM under it; the data key is sealed under the master key. Rotating the
 * master key re-wraps the (small, few) data keys only, in one transaction, so secrets stay
 * readable throughout.
 */
export interface SecretStoreOptions {
  /**
   * Re-reads the master keys (current first), e.g. `() => readMasterKeyRing(file)`. Called when
   * a data key is wrapped under a key this process does not know and before wrapping a new
   * tenant's data key, so a rotation done by another process (rotateMasterKeyFile) needs no restart.
   */
  reloadKeys?: () => Buffer[];
  /** The operator's egress policy: secrets' hosts must lie inside it. Default: public hosts only. */
  egress?: EgressPolicy;
}

export class SecretStore {
  private masterKey: Buffer;
  private keyId: string;
  /** Every master key this process knows, by id (the current one included). */
  private ring = new Map<string, Buffer>();

  constructor(private readonly db: Database, masterKey: Buffer, private readonly opts: SecretStoreOptions = {}) {
    if (masterKey.length !== KEY_LEN) throw new Error("master key must be 32 bytes");
    this.masterKey = Buffer.from(masterKey);
    this.keyId = masterKeyId(this.masterKey);
    this.ring.set(this.keyId, this.masterKey);
    db.exec(`
      CREATE TABLE IF NOT EXISTS vault_tenant_keys (
        tenant_id TEXT PRIMARY KEY,
        wrapped_key BLOB NOT NULL,
        master_key_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        rotated_at TEXT
      );
      CREATE TABLE IF NOT EXISTS vault_secrets (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        config_json TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name)
      );
      -- Replaced values, sealed as they were (same AAD), kept only to be redacted.
      CREATE TABLE IF NOT EXISTS vault_secret_history (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        config_json TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        retired_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name, version)
      );
    `);
  }

  put(tenantId: string, name: string, input: SecretInput): SecretMeta {
    checkName(name);
    if (!isPlainObject(input)) throw bad("body must be an object with value, kind and config");
    if (!SECRET_KINDS.includes(input.kind)) throw bad(`kind must be one of ${SECRET_KINDS.join(", ")}`);
    const { value } = input;
    // Messages about the value must never include it.
    if (typeof value !== "string") throw bad("value must be a string");
    if (value.length < SECRET_VALUE_MIN || Buffer.byteLength(value) > SECRET_VALUE_MAX) {
      throw bad(`value must be ${SECRET_VALUE_MIN} characters to ${SECRET_VALUE_MAX} bytes (short values would make output redaction destroy ordinary text)`);
    }
    if (/[\0\r\n]/.test(value) && input.kind !== "generic") throw bad("value of a postgres or http secret must not contain NUL or line breaks");
    const config = validateConfig(input.kind, input.config);
    // Where the secret goes is the tenant's choice, inside the operator's egress policy.
    const egress = this.opts.egress ?? DEFAULT_EGRESS_POLICY;
    if (input.kind === "http") checkTenantHosts((config as HttpConfig).hosts, egress, "config.hosts");
    if (input.kind === "postgres") {
      const c = config as PostgresConfig;
      checkTenantHosts([`${c.host.includes(":") ? `[${c.host}]` : c.host}:${c.port}`], egress, "config.host");
    }
    const configJson = JSON.stringify(config);
    const tx = this.db.transaction((): SecretMeta => {
      const dataKey = this.dataKey(tenantId, true)!;
      const prev = this.db.prepare("SELECT * FROM vault_secrets WHERE tenant_id = ? AND name = ?").get(tenantId, name) as SecretRow | undefined;
      const version = (prev?.version ?? 0) + 1;
      const now = new Date().toISOString();
      if (prev) {
        this.db.prepare(`INSERT OR REPLACE INTO vault_secret_history (tenant_id, name, version, kind, config_json, ciphertext, retired_at)
          VALUES (?, ?, ?, ?, ?, ?, ?)`).run(tenantId, name, prev.version, prev.kind, prev.config_json, prev.ciphertext, now);
        this.db.prepare(`DELETE FROM vault_secret_history WHERE tenant_id = ? AND name = ? AND version NOT IN
          (SELECT version FROM vault_secret_history WHERE tenant_id = ? AND name = ? ORDER BY version DESC LIMIT ?)`).run(tenantId, name, tenantId, name, HISTORY_KEEP);
      }
      const ct = seal(dataKey, Buffer.from(value, "utf8"), secretAad(tenantId, name, version, input.kind, configJson));
      dataKey.fill(0);
      this.db
        .prepare(
          `INSERT INTO vault_secrets (tenant_id, name, kind, config_json, ciphertext, version, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (tenant_id, name) DO UPDATE SET kind = excluded.kind, config_json = excluded.config_json,
             ciphertext = excluded.ciphertext, version = excluded.version, updated_at = excluded.updated_at`,
        )
        .run(tenantId, name, input.kind, configJson, ct, version, prev?.created_at ?? now, now);
      return { name, kind: input.kind, version, scope: scopeOf(input.kind, config), config, createdAt: prev?.created_at ?? now, updatedAt: now };
    });
    return tx();
  }

  list(tenantId: string): SecretMeta[] {
    const rows = this.db.prepare("SELECT * FROM vault_secrets WHERE tenant_id = ? ORDER BY name").all(tenantId) as SecretRow[];
    return rows.map(toMeta);
  }

  get(tenantId: string, name: string): SecretMeta {
    return toMeta(this.row(tenantId, name));
  }

  delete(tenantId: string, name: string): void {
    const r = this.db.transaction(() => {
      this.db.prepare("DELETE FROM vault_secret_history WHERE tenant_id = ? AND name = ?").run(tenantId, name);
      return this.db.prepare("DELETE FROM vault_secrets WHERE tenant_id = ? AND name = ?").run(tenantId, name);
    })();
    if (r.changes === 0) throw notFound(name);
  }

  /** Removes every secret of a tenant and its data key (whatever copies of ciphertext remain become unreadable). */
  deleteTenant(tenantId: string): number {
    return this.db.transaction(() => {
      this.db.prepare("DELETE FROM vault_secret_history WHERE tenant_id = ?").run(tenantId);
      const n = this.db.prepare("DELETE FROM vault_secrets WHERE tenant_id = ?").run(tenantId).changes;
      this.db.prepare("DELETE FROM vault_tenant_keys WHERE tenant_id = ?").run(tenantId);
      return n;
    })();
  }

  /** The decrypted secret. Internal only: for brokers and redaction, never for an API response or a log. */
  resolve(tenantId: string, name: string): ResolvedSecret {
    const row = this.row(tenantId, name);
    const dataKey = this.dataKey(tenantId, false);
    if (!dataKey) throw new PetriError("INTERNAL", `vault data key of the tenant is missing; secret ${name} cannot be decrypted`);
    try {
      const value = open(dataKey, row.ciphertext, secretAad(tenantId, name, row.version, row.kind, row.config_json)).toString("utf8");
      const old = this.db.prepare("SELECT * FROM vault_secret_history WHERE tenant_id = ? AND name = ? ORDER BY version DESC LIMIT ?")
        .all(tenantId, name, HISTORY_KEEP) as Array<{ version: number; kind: string; config_json: string; ciphertext: Buffer }>;
      const previous: string[] = [];
      for (const h of old) {
        try {
          previous.push(open(dataKey, h.ciphertext, secretAad(tenantId, name, h.version, h.kind, h.config_json)).toString("utf8"));
        } catch {
          /* an altered history row only loses its redaction, never the current value */
        }
      }
      return { name, value, kind: row.kind, config: JSON.parse(row.config_json) as SecretConfig, version: row.version, previous };
    } catch (e) {
      if (e instanceof VaultCryptoError) throw new PetriError("INTERNAL", `secret ${name} failed to decrypt: it was altered or moved in the database`);
      throw e;
    } finally {
      dataKey.fill(0);
    }
  }

  /** A redactor for some (default: all) of a tenant's secrets, e.g. for files served from a workspace. */
  redactorFor(tenantId: string, names?: string[]): Redactor {
    const list = names ?? this.list(tenantId).map((m) => m.name);
    return new Redactor(list.flatMap((n) => {
      const r = this.resolve(tenantId, n);
      return [r.value, ...r.previous].map((value) => ({ name: n, value }));
    }));
  }

  /**
   * Re-wraps every tenant data key under `newKey` in one transaction, then uses `newKey` from
   * the next call on. Secret ciphertexts are untouched. The caller persists the new key (e.g.
   * writeMasterKeyFile) after this returns; the old key then opens nothing.
   */
  rotateMasterKey(newKey: Buffer, alsoKnown: Buffer[] = []): { rewrapped: number } {
    if (newKey.length !== KEY_LEN) throw new Error("master key must be 32 bytes");
    for (const k of alsoKnown) if (!this.ring.has(masterKeyId(k))) this.ring.set(masterKeyId(k), Buffer.from(k));
    const newId = masterKeyId(newKey);
    const rows = this.db.prepare("SELECT tenant_id, wrapped_key, master_key_id FROM vault_tenant_keys").all() as TenantKeyRow[];
    const now = new Date().toISOString();
    const update = this.db.prepare("UPDATE vault_tenant_keys SET wrapped_key = ?, master_key_id = ?, rotated_at = ? WHERE tenant_id = ?");
    const tx = this.db.transaction(() => {
      for (const r of rows) {
        if (r.master_key_id === newId) continue;
        const dk = this.unwrap(r);
        update.run(seal(newKey, dk, dataKeyAad(r.tenant_id)), newId, now, r.tenant_id);
        dk.fill(0);
      }
    });
    tx();
    for (const k of this.ring.values()) k.fill(0);
    this.masterKey = Buffer.from(newKey);
    this.keyId = newId;
    this.ring = new Map([[newId, this.masterKey]]);
    return { rewrapped: rows.filter((r) => r.master_key_id !== newId).length };
  }

  /** Tenants whose data key is wrapped under a key other than the current master key (0 when healthy). */
  keysNotUnderCurrentMaster(): number {
    const r = this.db.prepare("SELECT COUNT(*) AS n FROM vault_tenant_keys WHERE master_key_id != ?").get(this.keyId) as { n: number };
    return r.n;
  }

  private row(tenantId: string, name: string): SecretRow {
    if (typeof name !== "string" || !SECRET_NAME_RE.test(name)) throw notFound(String(name).slice(0, 64));
    const row = this.db.prepare("SELECT * FROM vault_secrets WHERE tenant_id = ? AND name = ?").get(tenantId, name) as SecretRow | undefined;
    if (!row) throw notFound(name);
    return row;
  }

  private reload(): void {
    if (!this.opts.reloadKeys) return;
    let keys: Buffer[];
    try {
      keys = this.opts.reloadKeys();
    } catch {
      return; // keep working with the keys we have
    }
    if (keys.length === 0) return;
    for (const k of keys) this.ring.set(masterKeyId(k), Buffer.from(k));
    this.keyId = masterKeyId(keys[0]);
    this.masterKey = this.ring.get(this.keyId)!;
  }

  private unwrap(r: TenantKeyRow): Buffer {
    let key = this.ring.get(r.master_key_id);
    if (!key) {
      this.reload();
      key = this.ring.get(r.master_key_id);
    }
    if (!key) {
      throw new PetriError("INTERNAL", "the vault master key does not match the key the secrets were stored under (check PETRI_MASTER_KEY / the key file)");
    }
    try {
      return open(key, r.wrapped_key, dataKeyAad(r.tenant_id));
    } catch {
      throw new PetriError("INTERNAL", "a tenant data key failed to unwrap: it was altered or moved in the database");
    }
  }

  private dataKey(tenantId: string, create: boolean): Buffer | null {
    const r = this.db.prepare("SELECT tenant_id, wrapped_key, master_key_id FROM vault_tenant_keys WHERE tenant_id = ?").get(tenantId) as
      | TenantKeyRow
      | undefined;
    if (r) return this.unwrap(r);
    if (!create) return null;
    // Another process may be rotating: wrap new data keys under the newest key.
    this.reload();
    const dk = randomBytes(KEY_LEN);
    this.db
      .prepare("INSERT INTO vault_tenant_keys (tenant_id, wrapped_key, master_key_id, created_at) VALUES (?, ?, ?, ?)")
      .run(tenantId, seal(this.masterKey, dk, dataKeyAad(tenantId)), this.keyId, new Date().toISOString());
    return dk;
  }
}

function checkName(name: string): void {
  if (typeof name !== "string" || !SECRET_NAME_RE.test(name)) {
    throw bad("secret name must start with a letter and contain only letters, digits, '_' and '-' (at most 64)");
  }
}

function notFound(name: string): PetriError {
  return new PetriError("SECRET_NOT_FOUND", `secret ${name} not found`);
}

function toMeta(r: SecretRow): SecretMeta {
  const config = JSON.parse(r.config_json) as SecretConfig;
  return { name: r.name, kind: r.kind, version: r.version, scope: scopeOf(r.kind, config), config, createdAt: r.created_at, updatedAt: r.updated_at };
}

/**
 * Rotates the master key kept in a key file while servers keep running on the same database:
 * 1. the file gets [new, old] — servers that re-read it can open both and wrap new data keys
 *    under the new one; 2. every data key is re-wrapped under the new key; after a pause, any
 *    data key a server created meanwhile under the old key is re-wrapped too; 3. the file gets
 *    [new] only. `store` must be opened with the current (old) key.
 */
export async function rotateMasterKeyFile(store: SecretStore, file: string, newKey: Buffer, settleMs = 1000): Promise<{ rewrapped: number }> {
  const old = readMasterKeyRing(file);
  writeMasterKeyFile(file, [newKey, ...old]);
  const first = store.rotateMasterKey(newKey, old);
  await new Promise((r) => setTimeout(r, settleMs));
  const second = store.rotateMasterKey(newKey, old);
  writeMasterKeyFile(file, [newKey]);
  return { rewrapped: first.rewrapped + second.rewrapped };
}
