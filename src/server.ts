import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import Docker from "dockerode";
import pino, { type Logger } from "pino";
import type { FastifyInstance } from "fastify";
import type { Config } from "./config.js";
import { openDatabase, getMeta, setMeta, type DB } from "./store/db.js";
import { KeyService } from "./auth/keys.js";
import { WorkspaceStore } from "./workspaces/workspaces.js";
import { SandboxService } from "./sandboxes/sandboxes.js";
import { ExecService } from "./exec/exec.js";
import { DockerRuntime } from "./runtimes/docker.js";
import type { Runtime } from "./runtimes/types.js";
import { rootfsDirFor } from "./images/build.js";
import { buildApp, type AppDeps } from "./api/app.js";
import { BlobStore } from "./workspaces/sync.js";

export interface PetriServer {
  app: FastifyInstance;
  db: DB;
  keys: KeyService;
  sandboxes: SandboxService;
  exec: ExecService;
  runtimes: Map<string, Runtime>;
  instanceId: string;
  /** Where the bootstrap admin key came from (said once at start). */
  bootstrap: { source: string; file?: string };
  reapNow(): Promise<{ expired: number; containers: number }>;
  close(): Promise<void>;
}

export const LABEL_MANAGED = "io.jhansi.petri.managed";
export const LABEL_INSTANCE = "io.jhansi.petri.instance";

/**
 * Wires the services together. The instance id (kept in the store) scopes the reaper to this
 * server's own containers, so two Petri servers sharing one Docker engine never reap each other.
 */
export async function createServer(config: Readonly<Config>, opts: { logger?: Logger } = {}): Promise<PetriServer> {
  const logger = opts.logger ?? pino({ level: config.logLevel, redact: { paths: ["req.headers.authorization"], censor: "[REDACTED]" } });
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = openDatabase(config.dataDir);
  let instanceId = getMeta(db, "instance_id");
  if (!instanceId) {
    instanceId = randomBytes(8).toString("hex");
    setMeta(db, "instance_id", instanceId);
  }
  const keys = new KeyService(db);
  const bootstrap = keys.ensureBootstrapAdmin({ adminToken: config.adminToken, dataDir: config.dataDir });
  const workspaces = new WorkspaceStore({ root: config.workspaceRoot, uid: config.sandboxUid, gid: config.sandboxGid });
  fs.mkdirSync(config.cacheRoot, { recursive: true, mode: 0o711 });

  const docker = new Docker({ socketPath: config.dockerSocket });
  const runtimes = new Map<string, Runtime>();
  runtimes.set("docker", new DockerRuntime({ docker, ociRuntime: config.ociRuntime, cgroupParent: `petri-${instanceId}` }));
  const defaultRuntime = "docker";

  const sandboxes = new SandboxService(db, config, workspaces, () => [...runtimes.keys()], () => defaultRuntime);
  const exec = new ExecService({
    db, config, sandboxes, workspaces, runtimes, instanceId,
    rootfsFor: (image) => {
      const dir = rootfsDirFor(config.imageDir, image);
      return fs.existsSync(dir) ? dir : undefined;
    },
    log: logger,
  });

  const mine = { [LABEL_MANAGED]: "true", [LABEL_INSTANCE]: instanceId };
  // Whatever a previous process of this instance left running is an orphan now.
  let startupReaped = 0;
  for (const rt of runtimes.values()) startupReaped += await rt.reap(mine).catch(() => 0);
  const interrupted = exec.recoverInterrupted();
  fs.rmSync(path.join(config.dataDir, "runs"), { recursive: true, force: true });
  if (startupReaped || interrupted) logger.warn({ containers: startupReaped, runs: interrupted }, "cleaned up after an unclean stop");

  const blobs = new BlobStore(path.join(config.dataDir, "blobs"));
  const deps: AppDeps = { keys, sandboxes, workspaces, blobs, exec, runtimes, defaultRuntime, logger };
  const app = await buildApp(config, deps);

  let reaping: Promise<{ expired: number; containers: number }> | null = null;
  const reapNow = async () => {
    if (reaping) return reaping;
    reaping = (async () => {
      let expired = 0;
      for (const id of sandboxes.expired()) {
        try {
          await exec.cancelSandbox(id);
          sandboxes.destroy(id);
          expired++;
          logger.info({ sandbox: id }, "sandbox expired and was destroyed");
        } catch (e) {
          logger.error({ sandbox: id, err: (e as Error).message }, "could not destroy expired sandbox");
        }
      }
      return { expired, containers: 0 };
    })().finally(() => { reaping = null; });
    return reaping;
  };
  const timer = setInterval(() => { void reapNow(); }, config.reaperIntervalMs);
  timer.unref();

  return {
    app, db, keys, sandboxes, exec, runtimes, instanceId, bootstrap, reapNow,
    async close() {
      clearInterval(timer);
      await app.close();
      await exec.shutdown();
      for (const rt of runtimes.values()) await rt.close?.();
      db.close();
    },
  };
}
