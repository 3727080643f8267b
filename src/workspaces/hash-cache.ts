import type fs from "node:fs";
import type { DB } from "../store/db.js";

interface Known {
  /** `size:mtime_ns:ctime_ns` of the file when it was hashed. */
  stat: string;
  sha256: string;
}

/** Entries held in memory across all sandboxes; past it, the least recently used sandboxes are dropped from memory (not from the store). */
const MEMORY_MAX = 250_000;

const fileId = (st: fs.BigIntStats) => `${st.dev}:${st.ino}`;
const statOf = (st: fs.BigIntStats) => `${st.size}:${st.mtimeNs}:${st.ctimeNs}`;

/**
 * The sha256 of workspace files, remembered per sandbox by inode and checked against size, mtime
 * and ctime to the nanosecond: nothing but the server sets a ctime, so a file changed in any way
 * (also while the server was down, or restored from a backup) never matches. A sync plan of an
 * unchanged 50,000-file workspace reads no file.
 *
 * Kept in the server's SQLite store (`file_hashes`), so the first plan after a restart does not
 * re-read every file (50,000 files took 49 s under load, past the SDKs' 30 s timeout): a sandbox's
 * entries are loaded in one query when it is first looked at, and new ones are written behind, in
 * one transaction per event-loop turn. Losing unwritten entries (a crash) only costs a re-hash.
 * One row per inode, replaced when the file is hashed again; rows of inodes a complete walk of
 * the workspace no longer saw are pruned, and a deleted sandbox's rows go with it.
 */
export class HashCache {
  private readonly bySandbox = new Map<string, Map<string, Known>>();
  private inMemory = 0;
  private queue: ({ op: "put"; sandbox: string; id: string; k: Known } | { op: "del"; sandbox: string; id?: string })[] = [];
  private flushScheduled = false;
  private stmts?: { load: import("better-sqlite3").Statement; put: import("better-sqlite3").Statement; del: import("better-sqlite3").Statement; delAll: import("better-sqlite3").Statement };
  /** Files whose content was read to hash them (cache misses), since start: the metric `petri_workspace_files_hashed_total`. */
  filesHashed = 0;

  constructor(private readonly db?: DB) {
    if (db) {
      this.stmts = {
        load: db.prepare("SELECT file_id, stat, sha256 FROM file_hashes WHERE sandbox_id = ?"),
        put: db.prepare("INSERT INTO file_hashes(sandbox_id, file_id, stat, sha256) VALUES (?, ?, ?, ?) ON CONFLICT(sandbox_id, file_id) DO UPDATE SET stat = excluded.stat, sha256 = excluded.sha256"),
        del: db.prepare("DELETE FROM file_hashes WHERE sandbox_id = ? AND file_id = ?"),
        delAll: db.prepare("DELETE FROM file_hashes WHERE sandbox_id = ?"),
      };
      // Sandboxes deleted while their rows were still being written (or by an older release).
      db.prepare("DELETE FROM file_hashes WHERE sandbox_id NOT IN (SELECT id FROM sandboxes)").run();
    }
  }

  private mapOf(sandboxId: string): Map<string, Known> {
    let m = this.bySandbox.get(sandboxId);
    if (m) {
      // Most recently used last (eviction takes the first).
      this.bySandbox.delete(sandboxId);
      this.bySandbox.set(sandboxId, m);
      return m;
    }
    m = new Map();
    if (this.stmts) {
      this.flush(); // rows of this sandbox still queued
      for (const r of this.stmts.load.iterate(sandboxId) as Iterable<{ file_id: string; stat: string; sha256: string }>) m.set(r.file_id, { stat: r.stat, sha256: r.sha256 });
    }
    this.bySandbox.set(sandboxId, m);
    this.inMemory += m.size;
    this.evict(sandboxId);
    return m;
  }

  private evict(keep: string): void {
    for (const [id, m] of this.bySandbox) {
      if (this.inMemory <= MEMORY_MAX) return;
      if (id === keep) continue;
      if (!this.stmts) {
        // Nothing behind memory: drop a tenth of this sandbox's entries rather than all of them.
        let n = Math.ceil(m.size / 10);
        for (const k of m.keys()) {
          m.delete(k);
          this.inMemory--;
          if (--n <= 0) break;
        }
        continue;
      }
      this.inMemory -= m.size;
      this.bySandbox.delete(id);
    }
  }

  /** The remembered sha256 of the file with these stats, or undefined. */
  get(sandboxId: string, st: fs.BigIntStats): string | undefined {
    const k = this.mapOf(sandboxId).get(fileId(st));
    return k && k.stat === statOf(st) ? k.sha256 : undefined;
  }

  /** Looks up many files of one sandbox (one map lookup for the sandbox). */
  lookup(sandboxId: string): (st: fs.BigIntStats) => string | undefined {
    const m = this.mapOf(sandboxId);
    return (st) => {
      const k = m.get(fileId(st));
      return k && k.stat === statOf(st) ? k.sha256 : undefined;
    };
  }

  set(sandboxId: string, st: fs.BigIntStats, sha256: string): void {
    const m = this.mapOf(sandboxId);
    const id = fileId(st);
    const k = { stat: statOf(st), sha256 };
    if (!m.has(id)) this.inMemory++;
    m.set(id, k);
    this.enqueue({ op: "put", sandbox: sandboxId, id, k });
    if (this.inMemory > MEMORY_MAX) this.evict(sandboxId);
  }

  /** After a complete walk of the whole workspace: forgets the inodes it did not see. */
  prune(sandboxId: string, seen: Set<string>): void {
    const m = this.mapOf(sandboxId);
    for (const id of m.keys()) {
      if (seen.has(id)) continue;
      m.delete(id);
      this.inMemory--;
      this.enqueue({ op: "del", sandbox: sandboxId, id });
    }
  }

  static fileId = fileId;

  /** A deleted sandbox: its entries go. */
  drop(sandboxId: string): void {
    const m = this.bySandbox.get(sandboxId);
    if (m) {
      this.inMemory -= m.size;
      this.bySandbox.delete(sandboxId);
    }
    this.enqueue({ op: "del", sandbox: sandboxId });
  }

  private enqueue(op: HashCache["queue"][number]): void {
    if (!this.stmts) return;
    this.queue.push(op);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /** Writes queued changes in one transaction (also called before the store closes). */
  flush(): void {
    this.flushScheduled = false;
    if (!this.stmts || this.queue.length === 0 || !this.db?.open) return;
    const ops = this.queue;
    this.queue = [];
    const { put, del, delAll } = this.stmts;
    this.db.transaction(() => {
      for (const o of ops) {
        if (o.op === "put") put.run(o.sandbox, o.id, o.k.stat, o.k.sha256);
        else if (o.id !== undefined) del.run(o.sandbox, o.id);
        else delAll.run(o.sandbox);
      }
    })();
  }
}
