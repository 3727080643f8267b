import { randomBytes } from "node:crypto";
import fs from "node:fs";
import type { WorkspaceStore } from "../workspaces/workspaces.js";
import type { RunSpec, Runtime } from "../runtimes/types.js";
import { RunWorkspace, writeMargin } from "./capture.js";
import { OVERLAY_FIXED_OPTIONS, helperMounter, unmountAllUnder } from "./overlay/mounts.js";
import { MountHelper } from "./overlay/mount-helper.js";
import { Scratch, ScratchPool, type ScratchKind } from "./overlay/view.js";

/** Label on a run's container naming its workspace view (part of a pre-started unit's shape). */
export const LABEL_VIEW = "io.jhansi.petri.view";

interface Ready {
  ws: RunWorkspace;
  runtime: Runtime;
  generation: number;
  quotaBytes: number;
  timer: NodeJS.Timeout;
}

/**
 * Workspace views of the sandboxes' runs, and the one made ready ahead for each sandbox's next
 * run (with a pre-started container on it). A ready view is only used when nothing changed the
 * workspace since it was mounted (the workspace's generation is the same): an overlay's lower
 * layer must not change under it. Otherwise it is dropped, and the run gets a fresh one.
 */
export class ViewPool {
  private readonly ready = new Map<string, Ready>();
  /** Views being made ready, per sandbox: a run arriving meanwhile waits for it (it is nearer than a new one). */
  private readonly preparing = new Map<string, Promise<void>>();
  private readonly closing = new Set<Promise<void>>();
  private closed = false;
  private readonly scratches: ScratchPool;

  constructor(private readonly d: {
    root: string;
    workspaces: WorkspaceStore;
    cacheDirFor: (sandboxId: string) => string;
    uid: number;
    gid: number;
    /** How long a ready view waits for a run; 0: none is made ahead. */
    idleMs: number;
    log: { warn: (o: object, m?: string) => void };
    /** Labels of this server's units (to remove a pre-started one whose view is dropped). */
    labels: Record<string, string>;
  }) {
    // Two emptied scratches per allowance, kept a minute: enough for a sandbox's next run and
    // its ready view, without holding loop devices for idle sandboxes.
    this.scratches = new ScratchPool(d.root, {
      keep: 2, idleMs: 60_000, log: (e) => d.log.warn({ err: String(e) }, "could not make a run scratch ahead"),
    });
    // The views' overlays are mounted by one long-lived helper (no process per mount), restricted
    // to this root; mount(8) when it cannot run.
    let warned = false;
    this.scratches.mounter = helperMounter(new MountHelper({ roots: [d.root], overlayOptions: OVERLAY_FIXED_OPTIONS }), {
      onFallback: (e) => {
        if (warned) return;
        warned = true;
        d.log.warn({ err: String(e) }, "the mount helper cannot run: views are mounted with mount(8), a process per mount");
      },
    });
  }

  /**
   * Finds which scratch filesystem bounds runs' writes here (loop devices, else tmpfs) and uses
   * it from now on. Throws when none works.
   */
  async probe(want: "auto" | ScratchKind): Promise<{ kind: ScratchKind; reason: string | null; mounter: string }> {
    const r = await Scratch.probe(this.d.root, { uid: this.d.uid, gid: this.d.gid }, want);
    this.scratches.kind = r.kind;
    // Started now rather than by the first run (which would wait for python3 to start).
    await this.scratches.mounter.ready();
    return { ...r, mounter: this.scratches.mounter.kind };
  }

  /**
   * Keeps one scratch for runs of this workspace quota (the default one) made ahead, so a cold
   * run (a fresh sandbox's, a one-request run's) only mounts its overlays.
   */
  keepScratchReady(quotaBytes: number): Promise<void> {
    this.scratches.keepReady(quotaBytes + writeMargin(quotaBytes), { uid: this.d.uid, gid: this.d.gid });
    return this.scratches.settled();
  }

  /** Removes views a previous process left (crash): unmounts them, deepest first. */
  static async cleanup(root: string): Promise<number> {
    const n = await unmountAllUnder(root);
    fs.rmSync(root, { recursive: true, force: true });
    return n;
  }

  private open(sandboxId: string, quotaBytes: number): Promise<RunWorkspace> {
    return RunWorkspace.open({
      root: this.d.root, id: `vw_${randomBytes(10).toString("hex")}`, workspaces: this.d.workspaces, sandboxId,
      cacheDir: this.d.cacheDirFor(sandboxId), uid: this.d.uid, gid: this.d.gid, quotaBytes, pool: this.scratches,
    });
  }

  /** The view for a run starting now: the ready one if still current, else a fresh one. */
  async take(sandboxId: string, quotaBytes: number): Promise<RunWorkspace> {
    const r = await this.claimReady(sandboxId);
    if (r) {
      if (r.generation === this.d.workspaces.generation(sandboxId) && r.quotaBytes === quotaBytes) return r.ws;
      this.drop(r.ws, r.runtime);
    }
    return this.open(sandboxId, quotaBytes);
  }

  /**
   * Takes a sandbox's ready view out of the pool (its expiry cancelled), once a view being made
   * ready for it now has settled — otherwise that one would become ready (with a unit on it) after.
   */
  private async claimReady(sandboxId: string) {
    const pending = this.preparing.get(sandboxId);
    if (pending) await pending;
    const r = this.ready.get(sandboxId);
    if (r) {
      this.ready.delete(sandboxId);
      clearTimeout(r.timer);
    }
    return r;
  }

  /**
   * After a run has committed: mounts the next run's view and asks the runtime to pre-start a
   * container of the finished run's shape on it. Never throws; never delays the result.
   */
  prepareNext(sandboxId: string, runtime: Runtime, spec: RunSpec, quotaBytes: number, o: { wanted: boolean }): void {
    // `wanted`: the pre-start policy's answer, asked when the run started (Runtime.wantsPrestartAfter
    // records the run; a sandbox used once gets no unit, so no view is mounted for it either).
    const wanted = o.wanted;
    if (!wanted || this.d.idleMs <= 0 || !runtime.prestart || this.closed || this.ready.has(sandboxId) || this.preparing.has(sandboxId)) return;
    const generation = this.d.workspaces.generation(sandboxId);
    const p = (async () => {
      const ws = await this.open(sandboxId, quotaBytes);
      if (this.closed || this.ready.has(sandboxId) || generation !== this.d.workspaces.generation(sandboxId)) {
        this.drop(ws);
        return;
      }
      const timer = setTimeout(() => {
        if (this.ready.get(sandboxId)?.ws !== ws) return;
        this.ready.delete(sandboxId);
        this.drop(ws, runtime);
      }, this.d.idleMs);
      timer.unref();
      this.ready.set(sandboxId, { ws, runtime, generation, quotaBytes, timer });
      runtime.prestart!({
        ...spec, mounts: ws.mounts(spec.mounts), labels: { ...spec.labels, [LABEL_VIEW]: ws.view.opts.id },
        signal: undefined, stdinStream: undefined, onStdout: undefined, onStderr: undefined, tracer: undefined,
      });
    })().catch((e: unknown) => this.d.log.warn({ err: String(e), sandbox: sandboxId }, "could not prepare the next run's workspace view"))
      .finally(() => { if (this.preparing.get(sandboxId) === p) this.preparing.delete(sandboxId); });
    this.preparing.set(sandboxId, p);
  }

  /** A view no run will use: its pre-started unit removed, then unmounted, in the background. */
  private drop(ws: RunWorkspace, runtime?: Runtime): void {
    const p = (runtime ? runtime.reap({ ...this.d.labels, [LABEL_VIEW]: ws.view.opts.id }).catch(() => 0) : Promise.resolve(0))
      .then(() => ws.close())
      .catch((e: unknown) => this.d.log.warn({ err: String(e) }, "could not remove a workspace view"))
      .finally(() => this.closing.delete(p));
    this.closing.add(p);
  }

  /** Resolves once no view is being made ready or removed (background work after results). */
  async settled(): Promise<void> {
    while (this.preparing.size || this.closing.size) await Promise.all([...this.preparing.values(), ...this.closing]);
    await this.scratches.settled();
  }

  /** Drops a sandbox's ready view (before the sandbox is deleted). */
  async forget(sandboxId: string): Promise<void> {
    const r = await this.claimReady(sandboxId);
    if (r) this.drop(r.ws, r.runtime);
    await Promise.all(this.closing);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.preparing.values());
    for (const id of [...this.ready.keys()]) await this.forget(id);
    await Promise.all(this.closing);
    await this.scratches.close();
    this.scratches.mounter.close();
  }
}
