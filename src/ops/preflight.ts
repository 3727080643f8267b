import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import type Docker from "dockerode";
import type { Config } from "../config.js";
import { isDockerRuntime } from "../config.js";
import { imageRefOf } from "../images/catalog.js";

/** A start-up check that failed: what is wrong and the command or setting that fixes it. */
export class StartupError extends Error {
  constructor(message: string, readonly fix: string) {
    super(message);
    this.name = "StartupError";
  }
}

/** The account (or group) that already owns this id on the host, via NSS (files, LDAP, sssd…). */
export function accountOf(db: "passwd" | "group", id: number): string | null {
  const r = spawnSync("getent", [db, String(id)], { encoding: "utf8", timeout: 5000 });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.split(":")[0] ?? null;
  if (r.error) {
    // No getent (a minimal image): the local files are what there is.
    try {
      const line = fs.readFileSync(`/etc/${db}`, "utf8").split("\n").find((l) => l.split(":")[2] === String(id));
      return line ? line.split(":")[0] : null;
    } catch {
      return null;
    }
  }
  return null;
}

/** Whether `uid`/`gid` (no supplementary groups) may search directory `dir`. */
function searchable(st: fs.Stats, uid: number, gid: number): boolean {
  if (st.uid === uid) return (st.mode & 0o100) !== 0;
  if (st.gid === gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/**
 * The first directory on the way to `target` (itself included, once it exists) that the sandbox
 * user cannot search, or null. bwrap runs as that user and opens its mount sources as it.
 */
export function firstUntraversable(target: string, uid: number, gid: number): string | null {
  const parts = path.resolve(target).split(path.sep).filter(Boolean);
  let cur: string = path.sep;
  for (let i = 0; i <= parts.length; i++) {
    let st: fs.Stats;
    try {
      st = fs.statSync(cur);
    } catch {
      return null; // created later by the server, with modes it chooses
    }
    if (!searchable(st, uid, gid)) return cur;
    if (i < parts.length) cur = path.join(cur, parts[i]);
  }
  return null;
}

function writable(dir: string): string | null {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const probe = path.join(dir, `.petri-write-check-${process.pid}`);
    fs.writeFileSync(probe, "");
    fs.rmSync(probe);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Checks run before serving, each failing with the fix rather than at the first run:
 * an unwritable data directory, a sandbox uid/gid that is a real account, images the engine does
 * not have. Returns runtimes that cannot work with this layout (bwrap behind an untraversable
 * workspace root) so they are left out with the reason; throws when the configured default
 * runtime is one of them.
 */
export async function preflight(config: Readonly<Config>, opts: { docker?: Docker } = {}): Promise<{ excluded: Map<string, string>; warnings: string[] }> {
  const excluded = new Map<string, string>();
  const warnings: string[] = [];

  const bad = writable(config.dataDir);
  if (bad) {
    throw new StartupError(`the data directory ${config.dataDir} is not writable: ${bad}`,
      `create it writable for the user Petri runs as (root), e.g. \`install -d -m 0700 ${config.dataDir}\`, or set PETRI_DATA_DIR to a writable path`);
  }

  const user = accountOf("passwd", config.sandboxUid);
  if (user) {
    throw new StartupError(`PETRI_SANDBOX_UID=${config.sandboxUid} is the host account "${user}": sandboxed code would run as that user, own files under its uid and share its limits`,
      "set PETRI_SANDBOX_UID (and PETRI_SANDBOX_GID) to an id no account uses, e.g. 65600 (the default): `getent passwd 65600` must print nothing");
  }
  const group = accountOf("group", config.sandboxGid);
  if (group) {
    throw new StartupError(`PETRI_SANDBOX_GID=${config.sandboxGid} is the host group "${group}": its members could reach sandbox files, and sandboxed code would share the group's access`,
      "set PETRI_SANDBOX_GID to a gid no group uses, e.g. 65600 (the default): `getent group 65600` must print nothing");
  }

  if (config.allowedRuntimes.includes("bwrap")) {
    for (const [what, dir] of [["PETRI_WORKSPACE_ROOT", config.workspaceRoot], ["the cache directory", config.cacheRoot], ["the data directory's runs/", path.join(config.dataDir, "runs")]] as const) {
      // The data directory itself is made group-searchable by the sandbox gid at start.
      const blocked = firstUntraversable(dir, config.sandboxUid, config.sandboxGid);
      if (blocked && blocked !== config.dataDir) {
        const reason = `${what} (${dir}) is not reachable by the sandbox user ${config.sandboxUid}: ${blocked} is not searchable by it, and bwrap runs as that user`;
        excluded.set("bwrap", reason);
        break;
      }
    }
    const reason = excluded.get("bwrap");
    const wanted = config.runtime === "bwrap" || (config.allowedRuntimes.length === 1);
    if (reason && wanted) {
      throw new StartupError(reason, `move PETRI_WORKSPACE_ROOT below a directory others may search (e.g. /var/lib/petri/workspaces), or \`chmod o+x ${firstUntraversable(config.workspaceRoot, config.sandboxUid, config.sandboxGid) ?? "<dir>"}\``);
    }
    if (reason) warnings.push(`bwrap is not offered: ${reason}`);
  }

  const dockerRuntimes = config.allowedRuntimes.filter(isDockerRuntime);
  if (opts.docker && dockerRuntimes.length) {
    const reachable = await Promise.race([
      opts.docker.ping().then(() => true, () => false),
      new Promise<boolean>((r) => setTimeout(() => r(false), 3000).unref()),
    ]);
    if (!reachable) {
      warnings.push(`the Docker engine at ${config.dockerSocket} does not answer; Docker runtimes (${dockerRuntimes.join(", ")}) are not offered until Petri restarts with the engine up`);
    } else {
      const missing: string[] = [];
      // config.images holds image names; the ones Petri builds are tagged by their recipe's hash.
      const refs = Object.values(config.images).map((n) => imageRefOf(n, config.imageRecipes));
      for (const image of new Set(refs)) {
        try {
          await opts.docker.getImage(image).inspect();
        } catch (e) {
          if ((e as { statusCode?: number }).statusCode === 404) missing.push(image);
        }
      }
      if (missing.length) {
        throw new StartupError(`the Docker engine has no image ${missing.join(", ")}`,
          "build it with `petri images build` (no registry needed; `petri images list` names them), or point PETRI_IMAGE / PETRI_IMAGE_<LANG> at an image the engine has");
      }
    }
  }
  return { excluded, warnings };
}
