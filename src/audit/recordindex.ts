import Database from "better-sqlite3";
import type { AuditRecord } from "./types.js";

export interface IndexedPosition {
  seq: number;
  offset: number;
  length: number;
  hash: string;
}

export interface QueryFilter {
  tenant_id?: string;
  sandbox_id?: string;
  exec_id?: string;
  action?: string;
  kind?: string;
  since?: string;
  until?: string;
  limit?: number;
  after_seq?: number;
  before_seq?: number;
  order?: "asc" | "desc";
}

/**
 * A query index over the log file. It is not the evidence: the log file is. The index holds byte
 * positions plus the columns callers filter on, is written without fsync, and is rebuilt from the
 * log whenever it is missing, behind, or disagrees with it.
 */
export class RecordIndex {
  private readonly db: Database.Database;
  private readonly insertStmt: Database.Statement;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = OFF");
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        tenant_id TEXT,
        sandbox_id TEXT,
        exec_id TEXT,
        byte_offset INTEGER NOT NULL,
        byte_length INTEGER NOT NULL,
        hash TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS records_tenant ON records (tenant_id, seq);
      CREATE INDEX IF NOT EXISTS records_sandbox ON records (sandbox_id, seq);
      CREATE INDEX IF NOT EXISTS records_exec ON records (exec_id, seq);
      CREATE INDEX IF NOT EXISTS records_action ON records (action, seq);
      CREATE INDEX IF NOT EXISTS records_time ON records (time);
      CREATE INDEX IF NOT EXISTS records_kind ON records (kind, seq);
    `);
    this.insertStmt = this.db.prepare(
      `INSERT OR REPLACE INTO records (seq, id, time, kind, action, outcome, tenant_id, sandbox_id, exec_id, byte_offset, byte_length, hash)
       VALUES (@seq, @id, @time, @kind, @action, @outcome, @tenant_id, @sandbox_id, @exec_id, @offset, @length, @hash)`,
    );
  }

  insert(r: AuditRecord, offset: number, length: number): void {
    this.insertStmt.run({
      seq: r.seq, id: r.id, time: r.time, kind: r.kind, action: r.action, outcome: r.outcome,
      tenant_id: r.tenant_id, sandbox_id: r.sandbox_id, exec_id: r.exec_id, offset, length, hash: r.hash,
    });
  }

  insertMany(rows: { record: AuditRecord; offset: number; length: number }[]): void {
    this.db.transaction(() => {
      for (const row of rows) this.insert(row.record, row.offset, row.length);
    })();
  }

  last(): IndexedPosition | undefined {
    return this.db.prepare("SELECT seq, byte_offset AS offset, byte_length AS length, hash FROM records ORDER BY seq DESC LIMIT 1").get() as IndexedPosition | undefined;
  }

  position(seq: number): IndexedPosition | undefined {
    return this.db.prepare("SELECT seq, byte_offset AS offset, byte_length AS length, hash FROM records WHERE seq = ?").get(seq) as IndexedPosition | undefined;
  }

  lastOfKind(kind: string): number {
    const row = this.db.prepare("SELECT MAX(seq) AS seq FROM records WHERE kind = ?").get(kind) as { seq: number | null };
    return row.seq ?? 0;
  }

  clear(): void {
    this.db.exec("DELETE FROM records");
  }

  find(f: QueryFilter, limit: number): { offset: number; length: number }[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const eq = (col: string, v: string | undefined) => {
      if (v !== undefined) {
        where.push(`${col} = ?`);
        args.push(v);
      }
    };
    eq("tenant_id", f.tenant_id);
    eq("sandbox_id", f.sandbox_id);
    eq("exec_id", f.exec_id);
    eq("action", f.action);
    eq("kind", f.kind);
    if (f.since !== undefined) {
      where.push("time >= ?");
      args.push(f.since);
    }
    if (f.until !== undefined) {
      where.push("time < ?");
      args.push(f.until);
    }
    if (f.after_seq !== undefined) {
      where.push("seq > ?");
      args.push(f.after_seq);
    }
    if (f.before_seq !== undefined) {
      where.push("seq < ?");
      args.push(f.before_seq);
    }
    const sql = `SELECT byte_offset AS offset, byte_length AS length FROM records ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
                 ORDER BY seq ${f.order === "desc" ? "DESC" : "ASC"} LIMIT ?`;
    return this.db.prepare(sql).all(...args, limit) as { offset: number; length: number }[];
  }

  close(): void {
    this.db.close();
  }
}
