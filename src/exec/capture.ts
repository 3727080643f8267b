import { diffSnapshots, type FileChanges, type Snapshot, type WorkspaceStore } from "../workspaces/workspaces.js";
import type { WorkspaceSnapshot } from "../audit/workspace-diff.js";
import { toAuditSnapshot } from "./audit-events.js";

/** What a run did to its workspace, once it is over. */
export interface CapturedChanges {
  files: FileChanges;
  /** Workspace bytes after the run. */
  usage: number;
  /** The run grew the workspace past its quota (it was stopped if it was still running). */
  quotaHit: boolean;
  /** Hashed listings for the audit (null when the audit is off). */
  auditBefore: WorkspaceSnapshot | null;
  auditAfter: WorkspaceSnapshot | null;
}

/**
 * Captures a run's workspace changes and enforces the workspace quota while it runs: snapshots
 * before and after, and a watchdog that stops the run once the workspace grows past its quota.
 * A workspace already over quota (uploads refused) may still be cleaned up by a run, so only
 * growth beyond max(quota, usage at start) counts.
 */
export class WorkspaceCapture {
  private stopped = false;
  private wake: (() => void) | null = null;
  private sleepTimer: NodeJS.Timeout | undefined;
  private watch: Promise<void> = Promise.resolve();
  private quotaHit = false;

  private constructor(
    private readonly workspaces: WorkspaceStore,
    private readonly sandboxId: string,
    private readonly limitBytes: number,
    private readonly before: Snapshot,
    readonly auditBefore: WorkspaceSnapshot | null,
    private readonly withAudit: boolean,
  ) {}

  static async begin(workspaces: WorkspaceStore, sandboxId: string, opts: { quotaBytes: number; audit: boolean }): Promise<WorkspaceCapture> {
    const auditBefore = opts.audit ? toAuditSnapshot(await workspaces.list(sandboxId, "", { recursive: true, hashes: true })) : null;
    const before = await workspaces.snapshot(sandboxId);
    const startUsage = [...before.values()].reduce((a, e) => a + (e.type === "file" ? e.size : 0), 0);
    return new WorkspaceCapture(workspaces, sandboxId, Math.max(opts.quotaBytes, startUsage), before, auditBefore, opts.audit);
  }

  /** SHA-256 of a workspace file as it was when the run started (audit only). */
  sha256Before(rel: string): string | undefined {
    return this.auditBefore?.files.get(rel)?.sha256;
  }

  /** Starts the quota watchdog; `onExceeded` stops the run. The poll interval adapts to a walk's cost. */
  watchQuota(onExceeded: () => void): void {
    const nap = (ms: number) => new Promise<void>((r) => { this.wake = r; this.sleepTimer = setTimeout(r, ms); });
    this.watch = (async () => {
      let interval = 50;
      while (!this.stopped) {
        await nap(interval);
        if (this.stopped) return;
        const t0 = performance.now();
        // A walk that raced the run's own renames may be incomplete: only its bytes count here.
        if ((await this.workspaces.reconcile(this.sandboxId)).bytes > this.limitBytes) {
          this.quotaHit = true;
          onExceeded();
          return;
        }
        interval = Math.max(50, (performance.now() - t0) * 10);
      }
    })();
  }

  /** Stops the watchdog without waiting out its current nap (that would add a poll interval to every run). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sleepTimer);
    this.wake?.();
    await this.watch;
  }

  async finish(): Promise<CapturedChanges> {
    await this.stop();
    const after = await this.workspaces.snapshot(this.sandboxId);
    // The run may have written anywhere: re-measure (a walk that could not see everything
    // counts as over quota, so nothing hides below a deep or odd path).
    const measured = await this.workspaces.reconcile(this.sandboxId);
    const usage = measured.bytes;
    const quotaHit = this.quotaHit || usage > this.limitBytes || !measured.complete;
    const auditAfter = this.withAudit ? toAuditSnapshot(await this.workspaces.list(this.sandboxId, "", { recursive: true, hashes: true })) : null;
    return { files: diffSnapshots(this.before, after), usage, quotaHit, auditBefore: this.auditBefore, auditAfter };
  }
}
