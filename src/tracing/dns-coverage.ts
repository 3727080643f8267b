import fs from "node:fs";

/**
 * Which images' libc the host tracer's getaddrinfo uprobes cover. The probes are compiled into
 * the one bpftrace program at start, which cannot take new ones: an image built (or rebuilt)
 * while the server runs is probed from the next start on, and each of its runs says so meanwhile.
 * An uprobe is on a file (device and inode), not a path: a rebuilt image's libc is another file.
 */
export class DnsCoverage {
  /** "<image ref> rootfs|layers" → the libc files probed for it, with their identity at start. */
  private readonly files = new Map<string, { path: string; id: string }[]>();

  /** Records the libc files found for an image at start (an empty list: none found). */
  record(image: string, via: Via, libcs: string[]): void {
    this.files.set(`${image} ${via}`, libcs.map((p) => ({ path: p, id: fileId(p) })));
  }

  /** Why getaddrinfo names of a run of `image` would not be seen, or null when its libc is probed. */
  gap(image: string, via: Via): string | null {
    const files = this.files.get(`${image} ${via}`);
    const restart = "restart the server to probe its libc";
    if (!files) return `DNS names asked are not traced: image ${image} was not there when the tracer started (built while the server runs); ${restart}`;
    if (files.length === 0) {
      return `DNS names asked are not traced: no glibc libc.so.6 was found in image ${image}'s ${via === "layers" ? "Docker layers" : "root filesystem"} when the tracer started`;
    }
    for (const f of files) {
      if (fileId(f.path) !== f.id) return `DNS names asked are not traced: image ${image} was rebuilt after the tracer started (its libc is another file now); ${restart}`;
    }
    return null;
  }
}

/** Runs of runc and crun use Docker's image layers; bwrap and the direct OCI runtimes the root filesystem. */
export type Via = "rootfs" | "layers";

function fileId(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  } catch {
    return "missing";
  }
}
