import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Docker from "dockerode";
import { DEFAULT_IMAGE, IMAGE_PACKAGES } from "./recipe.js";
import { hostAptSources, hostCodename, toMirrorArgs } from "./sources.js";

export interface BuildOptions {
  /** Where root filesystems are kept (bwrap runs straight from them). */
  imageDir: string;
  docker: Docker;
  /** Rebuild even when the image is present. */
  force?: boolean;
  log?: (line: string) => void;
}

export function rootfsDirFor(imageDir: string, image: string): string {
  return path.join(imageDir, image.replace(/[^A-Za-z0-9_.-]/g, "_"), "rootfs");
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

/**
 * Builds Petri's default runtime image from Debian packages: mmdebstrap into a directory using
 * the host's apt sources, then `docker import` of that directory. The directory is kept so the
 * bwrap runtime can use the very same root filesystem. Skips work that is already done.
 */
export async function buildDefaultImage(opts: BuildOptions): Promise<{ image: string; rootfs: string; built: boolean }> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const image = DEFAULT_IMAGE;
  const rootfs = rootfsDirFor(opts.imageDir, image);
  const stamp = path.join(path.dirname(rootfs), "complete");
  const haveRootfs = fs.existsSync(stamp);
  const haveImage = await imagePresent(opts.docker, image);
  if (haveRootfs && haveImage && !opts.force) {
    log(`image ${image} is present; nothing to build`);
    return { image, rootfs, built: false };
  }

  if (!haveRootfs || opts.force) {
    const codename = hostCodename();
    const mirrors = toMirrorArgs(hostAptSources("/etc/apt", codename));
    if (mirrors.length === 0) throw new Error(`no apt source for ${codename} found in /etc/apt; cannot build images`);
    fs.rmSync(path.dirname(rootfs), { recursive: true, force: true });
    fs.mkdirSync(path.dirname(rootfs), { recursive: true });
    const tmp = `${rootfs}.tmp`;
    log(`building root filesystem for ${image} (${IMAGE_PACKAGES.join(", ")}) from the host's apt sources…`);
    await run("mmdebstrap", [
      "--variant=minbase",
      "--mode=root",
      "--format=directory",
      `--include=${IMAGE_PACKAGES.join(",")}`,
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      "--customize-hook=mkdir -p \"$1/workspace\" \"$1/cache\" \"$1/petri\"",
      "--customize-hook=rm -rf \"$1/var/cache/apt\"/*.bin \"$1/var/lib/apt/lists\"/*_Packages",
      codename,
      tmp,
      ...mirrors,
    ], log);
    fs.renameSync(tmp, rootfs);
    fs.writeFileSync(stamp, new Date().toISOString() + "\n");
  }

  log(`importing ${rootfs} into Docker as ${image}…`);
  const tar = spawn("tar", ["-C", rootfs, "--numeric-owner", "-cf", "-", "."], { stdio: ["ignore", "pipe", "inherit"] });
  await run("docker", [
    "import",
    "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--change", "ENV LANG=C.UTF-8",
    "--change", "LABEL io.jhansi.petri.image=runtime",
    "-", image,
  ], log, { stdinFrom: tar.stdout });
  log(`image ${image} ready`);
  return { image, rootfs, built: true };
}
