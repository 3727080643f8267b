import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Docker from "dockerode";
import { allPackages, GO_STD_CACHE, recipeRef, type ImageRecipe } from "./catalog.js";
import { INTROSPECT_PY, readManifest, type ImageManifest } from "./manifest.js";
import { fetchOfficialNode, NODE_PACKAGE, type FetchedNode } from "./node-official.js";
import { hostAptSources, hostCodename, suiteSources, toMirrorArgs } from "./sources.js";

export interface BuildOptions {
  /** Where root filesystems are kept (bwrap runs straight from them). */
  imageDir: string;
  docker: Docker;
  /** Rebuild even when the image is present. */
  force?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface BuildResult {
  name: string;
  ref: string;
  rootfs: string;
  built: boolean;
  seconds: number;
  manifest: ImageManifest;
}

export function rootfsDirFor(imageDir: string, image: string): string {
  return path.join(imageDir, image.replace(/[^A-Za-z0-9_.-]/g, "_"), "rootfs");
}

export function manifestFileFor(imageDir: string, image: string): string {
  return path.join(path.dirname(rootfsDirFor(imageDir, image)), "manifest.json");
}

async function imagePresent(docker: Docker, image: string): Promise<boolean> {
  try {
    await docker.getImage(image).inspect();
    return true;
  } catch {
    return false;
  }
}

function run(cmd: string, args: string[], log: (l: string) => void, opts: { stdinFrom?: NodeJS.ReadableStream } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.stdinFrom ? "pipe" : "ignore", "pipe", "pipe"] });
    const onData = (b: Buffer) => { for (const l of b.toString().split("\n")) if (l.trim()) log(l); };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    if (opts.stdinFrom) opts.stdinFrom.pipe(child.stdin!);
    child.on("error", (e) => reject(new Error(`${cmd}: ${e.message}`)));
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}

/** Single-quotes a host path for the shell mmdebstrap runs its hooks in. */
const sq = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

function duBytes(dir: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn("du", ["-sb", dir], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (b) => (out += b));
    child.on("close", () => resolve(Number(out.split(/\s/)[0]) || 0));
  });
}

/**
 * Builds one image from its recipe: mmdebstrap of the recipe's Debian packages from the host's
 * own apt sources (mapped to the recipe's suite) into a directory, the verified official Node
 * build put in as /usr/local/bin/node (Debian's /usr/bin/node diverted to it, so every script
 * finds the same node), the image's contents read by its own python3 into manifest.json, then
 * `docker import` of that directory. The directory is kept: bwrap runs from the very same root
 * filesystem. Skips what is already done.
 */
export async function buildImage(recipe: ImageRecipe, opts: BuildOptions): Promise<BuildResult> {
  const t0 = Date.now();
  const ref = recipeRef(recipe);
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s`;
  const out = opts.log ?? ((l: string) => console.log(l));
  const log = (l: string) => out(`[${recipe.name} ${elapsed()}] ${l}`);
  const rootfs = rootfsDirFor(opts.imageDir, ref);
  const dir = path.dirname(rootfs);
  const stamp = path.join(dir, "complete");
  const manifestFile = manifestFileFor(opts.imageDir, ref);
  const haveRootfs = fs.existsSync(stamp) && readManifest(manifestFile) !== null;
  const haveImage = await imagePresent(opts.docker, ref);
  if (haveRootfs && haveImage && !opts.force) {
    log(`${ref} is present; nothing to build`);
    return { name: recipe.name, ref, rootfs, built: false, seconds: 0, manifest: readManifest(manifestFile)! };
  }

  if (!haveRootfs || opts.force) {
    const host = hostCodename();
    const mirrors = toMirrorArgs(suiteSources(hostAptSources("/etc/apt", host), host, recipe.suite));
    if (mirrors.length === 0) throw new Error(`no apt source for ${host} found in /etc/apt; cannot build images`);
    const packages = allPackages(recipe);
    log(`step 1/4: ${recipe.node ? `official Node ${recipe.node.version}` : "no official Node build"}`);
    let node: FetchedNode | null = null;
    if (recipe.node) node = await fetchOfficialNode(recipe.node, path.join(opts.imageDir, ".cache"), log);

    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${rootfs}.tmp`;
    const script = path.join(dir, "introspect.py");
    fs.writeFileSync(script, INTROSPECT_PY);
    const found = path.join(dir, "found.json");
    log(`step 2/4: mmdebstrap ${recipe.suite}, ${packages.length} packages (and their dependencies) from the host's apt sources`);
    const hooks: string[] = ["mkdir -p \"$1/workspace\" \"$1/cache\" \"$1/petri\""];
    if (node) {
      hooks.push(`install -m 0755 ${sq(node.binary)} "$1/usr/local/bin/node"`);
      // One node for every script: Debian's packages (npm, tsc) run on the official build too.
      hooks.push(`if [ -e "$1/usr/bin/node" ] || [ -L "$1/usr/bin/node" ]; then chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/bin/node.debian --add /usr/bin/node; fi; ln -sf /usr/local/bin/node "$1/usr/bin/node"`);
    }
    if (packages.includes("golang-go")) {
      // Go ≥ 1.20 ships no compiled standard library: every sandbox's first run would compile it
      // (~10 s of CPU, more than the default memory and /tmp allow). Build it once here, with the
      // settings runs use (languages.ts), into a read-only cache that runs link into their own.
      hooks.push(`chroot "$1" env HOME=/tmp PATH=/usr/bin:/bin GOCACHE=${GO_STD_CACHE} GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build std && chmod -R a+rX "$1${GO_STD_CACHE}"`);
    }
    hooks.push(`cp ${sq(script)} "$1/tmp/petri-introspect.py" && chroot "$1" env PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp python3 -I /tmp/petri-introspect.py > ${sq(found)}; rc=$?; rm -rf "$1/tmp/"* "$1/tmp/".[!.]*; exit $rc`);
    hooks.push("rm -rf \"$1/var/cache/apt\"/*.bin \"$1/var/lib/apt/lists\"/*_Packages \"$1/root/.npm\"");
    await run("mmdebstrap", [
      "--variant=minbase",
      "--mode=root",
      "--format=directory",
      `--include=${packages.join(",")}`,
      "--aptopt=Acquire::Languages \"none\"",
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      ...hooks.map((h) => `--customize-hook=${h}`),
      recipe.suite,
      tmp,
      ...mirrors,
    ], (l) => log(`  ${l}`));
    fs.renameSync(tmp, rootfs);
    log("step 3/4: reading what the image contains");
    const inside = JSON.parse(fs.readFileSync(found, "utf8")) as Partial<ImageManifest>;
    fs.rmSync(found, { force: true });
    fs.rmSync(script, { force: true });
    const manifest: ImageManifest = {
      format: 1, name: recipe.name, ref, suite: recipe.suite, built_at: new Date().toISOString(), build_seconds: 0,
      size_bytes: await duBytes(rootfs),
      languages: inside.languages ?? {}, tools: inside.tools ?? {},
      node_build: node ? { package: NODE_PACKAGE, version: node.version, integrity: node.integrity } : null,
      python_packages: inside.python_packages ?? {}, python_modules: inside.python_modules ?? [], python_stdlib: inside.python_stdlib ?? [],
      node_packages: inside.node_packages ?? {}, node_builtins: inside.node_builtins ?? [], debian_packages: inside.debian_packages ?? {},
    };
    fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 1) + "\n");
    fs.writeFileSync(stamp, new Date().toISOString() + "\n");
  }

  log(`step 4/4: docker import as ${ref}`);
  const tar = spawn("tar", ["-C", rootfs, "--numeric-owner", "-cf", "-", "."], { stdio: ["ignore", "pipe", "inherit"] });
  await run("docker", [
    "import",
    "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--change", "ENV LANG=C.UTF-8",
    "--change", "LABEL io.jhansi.petri.image=" + recipe.name,
    "-", ref,
  ], (l) => log(`  ${l}`), { stdinFrom: tar.stdout });
  const manifest = readManifest(manifestFile)!;
  const seconds = Math.round((Date.now() - t0) / 100) / 10;
  if (!haveRootfs || opts.force) {
    manifest.build_seconds = seconds;
    fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 1) + "\n");
  }
  const langs = Object.entries(manifest.languages).map(([k, v]) => `${k} ${v}`).join(", ");
  log(`${ref} ready in ${seconds}s: ${(manifest.size_bytes / 1e6).toFixed(0)} MB; ${langs}`);
  return { name: recipe.name, ref, rootfs, built: true, seconds, manifest };
}
