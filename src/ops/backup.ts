import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import type { Config } from "../config.js";
import { SCHEMA_VERSION } from "../store/db.js";
import { LOCK_FILE } from "../audit/logfile.js";

export const BACKUP_FORMAT = 1;

export interface BackupManifest {
  format: number;
  created_at: string;
  schema_version: number;
  /** Whether master.key is inside; with PETRI_MASTER_KEY the key lives in the operator's secret manager. */
  master_key: "included" | "from PETRI_MASTER_KEY, not included";
  contents: string[];
  /** Workspace files stored as a hard link to their content-store blob (absent in older backups). */
  linked_files?: number;
}

function emptyOrMissing(dir: string): boolean {
  return !fs.existsSync(dir) || fs.readdirSync(dir).length === 0;
}

/**
 * Copies a tree exactly (names that are not UTF-8, symlinks as symlinks, owners, modes, times).
 * `cp -a` does all of that and never follows a symlink that sandboxed code planted.
 */
function copyTree(src: string, dest: string, exclude: string[] = []): void {
  fs.mkdirSync(dest, { recursive: true, mode: 0o700 });
  if (!fs.existsSync(src)) return;
  for (const name of fs.readdirSync(src)) {
    if (exclude.includes(name)) continue;
    const r = spawnSync("cp", ["-a", "--", path.join(src, name), path.join(dest, name)], { encoding: "utf8" });
    // A file deleted by a run between the listing and the copy is not an error of the backup.
    if (r.status !== 0 && !/No such file or directory/.test(r.stderr)) throw new Error(`copying ${src}/${name}: ${r.stderr.trim()}`);
  }
  const st = fs.statSync(src);
  fs.chmodSync(dest, st.mode & 0o7777);
  fs.chownSync(dest, st.uid, st.gid);
}

/** Visits every entry below `root` (names as bytes, any depth, symlinks not followed); `skipTop`: top-level names left out. */
function walkBytes(root: Buffer, visit: (rel: Buffer, st: fs.Stats) => void, skipTop: string[] = []): void {
  const stack: Buffer[] = [Buffer.alloc(0)];
  const SLASH = Buffer.from("/");
  while (stack.length) {
    const rel = stack.pop()!;
    let names: Buffer[];
    try {
      names = fs.readdirSync(rel.length ? Buffer.concat([root, SLASH, rel]) : root, { encoding: "buffer" });
    } catch {
      continue; // gone, or past PATH_MAX: its files stay separate copies
    }
    for (const n of names) {
      if (!rel.length && skipTop.includes(n.toString("latin1"))) continue;
      const r = rel.length ? Buffer.concat([rel, SLASH, n]) : n;
      const st = fs.lstatSync(Buffer.concat([root, SLASH, r]), { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) stack.push(r);
      else visit(r, st);
    }
  }
}

/**
 * A synced file is its content-store blob hard-linked into the workspace (src/workspaces/blobs.ts).
 * `cp -a` keeps hard links only among the files of one invocation, and the blobs and the
 * workspaces are copied apart, so each such file would be stored twice. This links the copies
 * again: a workspace file whose source shares its inode with a blob becomes a link to that blob's
 * copy (blobs never change in place, so the blob's copy holds what the file holds). Returns how
 * many files were linked. Anything that does not line up (a file gone, a size that differs) stays
 * a separate copy: correct, only larger.
 */
export function relinkBlobs(src: { blobs: string; workspaces: string }, dest: { blobs: string; workspaces: string }): number {
  const blobOf = new Map<string, Buffer>();
  if (!fs.existsSync(src.blobs)) return 0;
  walkBytes(Buffer.from(src.blobs), (rel, st) => { if (st.isFile() && st.nlink > 1) blobOf.set(`${st.dev}:${st.ino}`, rel); });
  if (blobOf.size === 0) return 0;
  const SLASH = Buffer.from("/");
  let linked = 0;
  walkBytes(Buffer.from(src.workspaces), (rel, st) => {
    if (!st.isFile() || st.nlink < 2) return;
    const blob = blobOf.get(`${st.dev}:${st.ino}`);
    if (!blob) return;
    const from = Buffer.concat([Buffer.from(dest.blobs), SLASH, blob]);
    const to = Buffer.concat([Buffer.from(dest.workspaces), SLASH, rel]);
    const fst = fs.lstatSync(from, { throwIfNoEntry: false });
    const tst = fs.lstatSync(to, { throwIfNoEntry: false });
    if (!fst?.isFile() || !tst?.isFile() || fst.size !== tst.size || fst.ino === tst.ino) return;
    const tmp = Buffer.concat([to, Buffer.from(`.petri-link-${randomBytes(6).toString("hex")}`)]);
    try {
      fs.linkSync(from, tmp);
      fs.renameSync(tmp, to);
      linked++;
    } catch {
      try { fs.rmSync(tmp, { force: true }); } catch { /* a name too long to link beside: stays a copy */ }
    }
  }, [".staging", ".trash"]);
  return linked;
}

/** Copies a JSON Lines file up to its last complete line (the writer may be mid-append). */
function copyWholeLines(src: string, dest: string): void {
  const buf = fs.readFileSync(src);
  const end = buf.lastIndexOf(0x0a) + 1;
  fs.writeFileSync(dest, buf.subarray(0, end), { mode: 0o600 });
}

/**
 * An online backup, consistent while the server serves: the store through SQLite's backup API
 * (a consistent snapshot while others write), then keys, the audit log (whole records only),
 * the content store (blobs) and the workspaces. The store is copied first, so every sandbox it
 * names has its workspace in the backup; a workspace that a run is writing is copied as it is
 * at that moment. Caches are left out (they are rebuilt).
 */
export async function backup(config: Readonly<Config>, dir: string): Promise<BackupManifest> {
  const dbFile = path.join(config.dataDir, "petri.db");
  if (!fs.existsSync(dbFile)) throw new Error(`no Petri store at ${dbFile} (PETRI_DATA_DIR=${config.dataDir})`);
  if (!emptyOrMissing(dir)) throw new Error(`${dir} is not empty; a backup goes into a new or empty directory`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const contents: string[] = [];

  const src = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    src.pragma("busy_timeout = 5000");
    await src.backup(path.join(dir, "petri.db"));
  } finally {
    src.close();
  }
  fs.chmodSync(path.join(dir, "petri.db"), 0o600);
  contents.push("petri.db");

  for (const [name, file] of [["master.key", config.masterKeyFile], ["admin.key", path.join(config.dataDir, "admin.key")]] as const) {
    if (fs.existsSync(file)) {
      fs.copyFileSync(file, path.join(dir, name));
      fs.chmodSync(path.join(dir, name), 0o600);
      contents.push(name);
    }
  }

  const auditOut = path.join(dir, "audit");
  fs.mkdirSync(auditOut, { recursive: true, mode: 0o700 });
  if (fs.existsSync(config.auditDir)) {
    for (const e of fs.readdirSync(config.auditDir, { withFileTypes: true })) {
      // The writer's lock names the serving process; a restored server takes its own.
      if (e.name === LOCK_FILE) continue;
      const from = path.join(config.auditDir, e.name);
      if (e.isDirectory()) copyTree(from, path.join(auditOut, e.name));
      else if (e.name.endsWith(".jsonl")) copyWholeLines(from, path.join(auditOut, e.name));
      else if (e.isFile()) fs.copyFileSync(from, path.join(auditOut, e.name));
    }
    contents.push("audit");
  }

  copyTree(path.join(config.dataDir, "blobs"), path.join(dir, "blobs"));
  contents.push("blobs");
  copyTree(config.workspaceRoot, path.join(dir, "workspaces"), [".staging", ".trash"]);
  contents.push("workspaces");
  const linked = relinkBlobs({ blobs: path.join(config.dataDir, "blobs"), workspaces: config.workspaceRoot }, { blobs: path.join(dir, "blobs"), workspaces: path.join(dir, "workspaces") });

  const manifest: BackupManifest = {
    format: BACKUP_FORMAT,
    created_at: new Date().toISOString(),
    schema_version: (() => {
      const db = new Database(path.join(dir, "petri.db"), { readonly: true });
      try { return db.pragma("user_version", { simple: true }) as number; } finally { db.close(); }
    })(),
    master_key: contents.includes("master.key") ? "included" : "from PETRI_MASTER_KEY, not included",
    contents,
    linked_files: linked,
  };
  fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n", { mode: 0o600 });
  return manifest;
}

/**
 * Restores a backup into an empty data directory (and workspace root). Never overwrites: a
 * server's data is replaced only by moving it away first. The restored server gets a new
 * instance id, so it never reaps containers of the server the backup came from (they may share
 * an engine). Runs that were in flight at backup time are closed as failed when it starts.
 */
export function restore(config: Readonly<Config>, dir: string): BackupManifest {
  const mf = path.join(dir, "manifest.json");
  if (!fs.existsSync(mf)) throw new Error(`${dir} is not a Petri backup (no manifest.json)`);
  const manifest = JSON.parse(fs.readFileSync(mf, "utf8")) as BackupManifest;
  if (manifest.format !== BACKUP_FORMAT) throw new Error(`backup format ${manifest.format} is not known to this Petri (${BACKUP_FORMAT})`);
  if (manifest.schema_version > SCHEMA_VERSION) {
    throw new Error(`the backup's store has schema ${manifest.schema_version}, newer than this Petri (${SCHEMA_VERSION}): restore it with the release that made it`);
  }
  if (!emptyOrMissing(config.dataDir)) throw new Error(`${config.dataDir} is not empty; restore into an empty PETRI_DATA_DIR (move the old one away first)`);
  if (!emptyOrMissing(config.workspaceRoot)) throw new Error(`${config.workspaceRoot} is not empty; restore into an empty PETRI_WORKSPACE_ROOT`);
  if (manifest.master_key !== "included" && !config.masterKey) {
    throw new Error("the backup has no master.key (it was made with PETRI_MASTER_KEY): set PETRI_MASTER_KEY to that key before restoring, or secrets cannot be decrypted");
  }
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  fs.copyFileSync(path.join(dir, "petri.db"), path.join(config.dataDir, "petri.db"));
  fs.chmodSync(path.join(config.dataDir, "petri.db"), 0o600);
  const db = new Database(path.join(config.dataDir, "petri.db"));
  try {
    db.prepare("DELETE FROM meta WHERE key = 'instance_id'").run();
    // Restored files are new inodes with new ctimes, so no remembered hash could match them anyway.
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'file_hashes'").get()) db.prepare("DELETE FROM file_hashes").run();
  } finally {
    db.close();
  }
  if (manifest.contents.includes("master.key")) {
    fs.mkdirSync(path.dirname(config.masterKeyFile), { recursive: true, mode: 0o700 });
    fs.copyFileSync(path.join(dir, "master.key"), config.masterKeyFile);
    fs.chmodSync(config.masterKeyFile, 0o600);
  }
  if (manifest.contents.includes("admin.key")) {
    fs.copyFileSync(path.join(dir, "admin.key"), path.join(config.dataDir, "admin.key"));
    fs.chmodSync(path.join(config.dataDir, "admin.key"), 0o600);
  }
  copyTree(path.join(dir, "audit"), config.auditDir);
  fs.chmodSync(config.auditDir, 0o700);
  copyTree(path.join(dir, "blobs"), path.join(config.dataDir, "blobs"));
  copyTree(path.join(dir, "workspaces"), config.workspaceRoot);
  fs.chmodSync(config.workspaceRoot, 0o711);
  relinkBlobs({ blobs: path.join(dir, "blobs"), workspaces: path.join(dir, "workspaces") }, { blobs: path.join(config.dataDir, "blobs"), workspaces: config.workspaceRoot });
  return manifest;
}
