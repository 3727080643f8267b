import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/**
 * A long-lived root helper that makes the mount(2)/umount2(2) calls of the runs' workspace views
 * on request, so a run costs no fork: before it, every view cost `sh` + two `mount` and one
 * `umount` processes (~6 ms of CPU per run under 8 clients; issue 15's throughput).
 *
 * Why a helper, and why Python: Node has no mount(2) (nor memfd_create(2)); a native addon would
 * need a compiler on every host (scripts/setup.sh installs none). Debian's python3, which setup.sh
 * already installs, reaches both through ctypes and os with nothing to build. It runs as
 * `/usr/bin/python3 -I -S` (no site, no user paths, no environment) with a fixed program (HELPER
 * below), speaks one JSON line per request and answer on its stdin/stdout, and dies with the
 * server (PR_SET_PDEATHSIG, and at the end of its stdin).
 *
 * What it does is only what the server asks, and only this:
 *   overlay  mount overlays with the fixed options the views use (mounts.ts OVERLAY_FIXED_OPTIONS);
 *            targets, upper and work directories under the roots it was started with;
 *   umount   unmount targets under those roots (detached when still busy; never following a symlink);
 *   seal     a sealed, executable in-memory copy of a binary (memfd), for crun (see sealedCopy).
 * Paths must be absolute, normalised, free of the option separators and of symbolic links.
 *
 * Robustness: a request without an answer within `timeoutMs` fails and the helper is killed (its
 * state is unknown); a helper that died is started again by the next request; requests still
 * waiting when it died fail with the reason. Callers that cannot start it at all fall back to
 * mount(8) (mounts.ts shellMounter).
 */
const HELPER = String.raw`
import ctypes, errno, json, os, signal, stat, sys

def main():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: never outlives the server
    if os.getppid() != int(sys.argv[1]):
        return
    roots = json.loads(sys.argv[2])
    fixed = sys.argv[3]
    MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8

    def err(e, what):
        return OSError(e, "%s: %s" % (what, os.strerror(e)))

    def plain(p):
        if not isinstance(p, str) or not p.startswith("/") or os.path.normpath(p) != p or any(c in p for c in ",:\\\0\n"):
            raise ValueError("unusable path: %r" % (p,))
        return p

    def owned(p):
        plain(p)
        for r in roots:
            if p.startswith(r + "/"):
                # Below its root a path never goes through a symbolic link (the root itself may).
                if os.path.realpath(p) != os.path.realpath(r) + p[len(r):]:
                    raise ValueError("goes through a symbolic link: %s" % p)
                return p
        raise ValueError("not under this helper's roots: %s" % p)

    def overlay(req):
        done = []
        try:
            for m in req["mounts"]:
                lower, upper, work, target = plain(m["lower"]), owned(m["upper"]), owned(m["work"]), owned(m["target"])
                data = ",".join(["lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work] + ([fixed] if fixed else []))
                if libc.mount(b"overlay", target.encode(), b"overlay", 0, data.encode()) != 0:
                    raise err(ctypes.get_errno(), "mount overlay on " + target)
                done.append(target)
        except BaseException:
            for t in reversed(done):
                libc.umount2(t.encode(), MNT_DETACH | UMOUNT_NOFOLLOW)
            raise
        return {}

    def umount(req):
        out = []
        for t in req["targets"]:
            b = owned(t).encode()
            if libc.umount2(b, UMOUNT_NOFOLLOW) == 0:
                out.append("unmounted")
                continue
            e = ctypes.get_errno()
            if e in (errno.EINVAL, errno.ENOENT):
                out.append("not-mounted")
                continue
            if e == errno.EBUSY:
                if libc.umount2(b, MNT_DETACH | UMOUNT_NOFOLLOW) == 0:
                    out.append("detached")
                    continue
                e = ctypes.get_errno()
            raise err(e, "umount " + t)
        return {"results": out}

    sealed = {}
    def seal(req):
        p = plain(req["path"])
        if p in sealed:
            return sealed[p]
        src = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("not a regular file: " + p)
            flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
            try:
                fd = os.memfd_create(os.path.basename(p), flags | 0x10)  # MFD_EXEC (Linux 6.3+)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                fd = os.memfd_create(os.path.basename(p), flags)
            off = 0
            while off < st.st_size:
                n = os.sendfile(fd, src, off, st.st_size - off)
                if n <= 0:
                    raise OSError(errno.EIO, "short copy of " + p)
                off += n
        finally:
            os.close(src)
        want = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE: what crun and runc check for
        import fcntl
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, want)
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) != want:
            raise ValueError("the copy of %s is not sealed as asked" % p)
        sealed[p] = {"fd": fd, "size": st.st_size}
        return sealed[p]

    ops = {"overlay": overlay, "umount": umount, "seal": seal}
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = ops.get(req.get("op"))
            if op is None:
                raise ValueError("unknown request: %r" % (req.get("op"),))
            ans = op(req)
            ans.update(id=rid, ok=True)
        except Exception as e:
            code = errno.errorcode.get(e.errno, "") if isinstance(e, OSError) and e.errno else ""
            ans = {"id": rid, "ok": False, "error": str(e), "code": code}
        out.write(json.dumps(ans) + "\n")
        out.flush()

main()
`;

export const HELPER_PYTHON = "/usr/bin/python3";

export interface OverlayMount { lower: string; upper: string; work: string; target: string }
export type UnmountResult = "unmounted" | "not-mounted" | "detached";

/** A failure the helper reported (the syscall's errno name in `code`, e.g. "EBUSY"). */
export class MountHelperError extends Error {
  override name = "MountHelperError";
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/** After a helper failed to start, how long requests go without one before another is tried. */
const RETRY_START_MS = 10_000;

/** The helper died before answering (the request may or may not have been carried out). */
export class MountHelperExited extends Error {
  override name = "MountHelperExited";
}

interface Pending { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; proc: ChildProcess }

export class MountHelper {
  private proc: ChildProcess | null = null;
  private starting: Promise<ChildProcess> | null = null;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private closed = false;
  private failed: { at: number; error: Error } | null = null;
  /** Helpers started so far (1 = never restarted). */
  started = 0;
  /** Pid of the helper running now, if any. */
  pid: number | null = null;

  constructor(private readonly o: {
    /** Only targets (and upper/work directories) under these are mounted or unmounted. */
    roots: string[];
    /** The overlay options after lowerdir/upperdir/workdir. */
    overlayOptions?: string;
    /** How long a request may take before it fails and the helper is killed (default 30 s). */
    timeoutMs?: number;
    python?: string;
  }) {}

  /** Starts the helper now (or resolves when it runs); throws when it cannot be started. */
  async start(): Promise<void> {
    await this.ensure();
  }

  private ensure(): Promise<ChildProcess> {
    if (this.closed) return Promise.reject(new Error("the mount helper is closed"));
    if (this.proc) return Promise.resolve(this.proc);
    // One that cannot start (no python3 here) is not tried again on every request.
    if (this.failed && Date.now() - this.failed.at < RETRY_START_MS) return Promise.reject(this.failed.error);
    this.starting ??= this.spawn().then((p) => {
      this.failed = null;
      return p;
    }, (e: Error) => {
      this.failed = { at: Date.now(), error: e };
      throw e;
    }).finally(() => { this.starting = null; });
    return this.starting;
  }

  private spawn(): Promise<ChildProcess> {
    const roots = this.o.roots.map((r) => path.resolve(r));
    const proc = spawn(this.o.python ?? HELPER_PYTHON, ["-I", "-S", "-c", HELPER, String(process.pid), JSON.stringify(roots), this.o.overlayOptions ?? ""], {
      stdio: ["pipe", "pipe", "pipe"], env: {},
    });
    this.started++;
    return new Promise<ChildProcess>((resolve, reject) => {
      let ready = false;
      let buf = "";
      let stderr = "";
      const fail = (why: string) => {
        if (!ready) reject(new Error(`the mount helper did not start: ${why}`));
      };
      const timer = setTimeout(() => {
        fail(`no answer within ${this.timeoutMs} ms`);
        proc.kill("SIGKILL");
      }, this.timeoutMs);
      proc.stdin!.on("error", () => undefined);
      proc.stderr!.on("data", (b: Buffer) => { if (stderr.length < 4096) stderr += b.toString(); });
      proc.stdout!.on("data", (b: Buffer) => {
        buf += b.toString();
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!ready) {
            if (msg.ready === true) {
              ready = true;
              clearTimeout(timer);
              this.proc = proc;
              this.pid = proc.pid ?? null;
              resolve(proc);
            }
            continue;
          }
          const p = this.pending.get(msg.id as number);
          if (!p) continue;
          this.pending.delete(msg.id as number);
          clearTimeout(p.timer);
          if (msg.ok === true) p.resolve(msg);
          else p.reject(new MountHelperError(`mount helper: ${String(msg.error)}`, String(msg.code ?? "")));
        }
      });
      proc.once("error", (e) => { clearTimeout(timer); fail(e.message); });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        fail(`exited (${signal ?? `code ${code}`}): ${stderr.trim().slice(-500)}`);
        if (this.proc === proc) {
          this.proc = null;
          this.pid = null;
        }
        const why = new MountHelperExited(`the mount helper exited (${signal ?? `code ${code}`}) before answering${stderr.trim() ? `: ${stderr.trim().slice(-300)}` : ""}`);
        for (const [id, p] of this.pending) {
          if (p.proc !== proc) continue;
          clearTimeout(p.timer);
          this.pending.delete(id);
          p.reject(why);
        }
      });
      // The helper only waits for requests: it never keeps the server's event loop alive.
      proc.unref();
      (proc.stdout as unknown as { unref?: () => void }).unref?.();
      (proc.stderr as unknown as { unref?: () => void }).unref?.();
      (proc.stdin as unknown as { unref?: () => void }).unref?.();
    });
  }

  private get timeoutMs(): number {
    return this.o.timeoutMs ?? 30_000;
  }

  private async request(op: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    let proc = await this.ensure();
    // Died since (its exit not handled yet): the next one.
    if (proc.exitCode !== null || proc.signalCode !== null) {
      if (this.proc === proc) this.proc = null;
      proc = await this.ensure();
    }
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.pending.delete(id)) return;
        reject(new Error(`the mount helper did not answer ${op} within ${this.timeoutMs} ms (killed; the next request starts another)`));
        // Its state is unknown (a mount stuck in the kernel?): the next request gets a new one.
        if (this.proc === proc) {
          this.proc = null;
          this.pid = null;
        }
        proc.kill("SIGKILL");
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer, proc });
      proc.stdin!.write(JSON.stringify({ ...body, id, op }) + "\n");
    });
  }

  /**
   * Mounts the overlays in order; on a failure none of them stays mounted. A helper that died
   * before answering is replaced and asked once more (whatever it had mounted unmounted first).
   */
  async overlay(mounts: OverlayMount[]): Promise<void> {
    try {
      await this.request("overlay", { mounts });
    } catch (e) {
      if (!(e instanceof MountHelperExited)) throw e;
      await this.request("umount", { targets: mounts.map((m) => m.target) });
      await this.request("overlay", { mounts });
    }
  }

  /** Unmounts each target (detached when busy); says per target what was done. Asked twice if the helper died. */
  async unmount(targets: string[]): Promise<UnmountResult[]> {
    const r = await this.request("umount", { targets }).catch((e: unknown) => {
      if (!(e instanceof MountHelperExited)) throw e;
      return this.request("umount", { targets });
    });
    return r.results as UnmountResult[];
  }

  /** The helper's fd of a sealed in-memory copy of `file` (see sealedCopy). */
  async seal(file: string): Promise<{ fd: number; size: number }> {
    const r = await this.request("seal", { path: file });
    return { fd: r.fd as number, size: r.size as number };
  }

  /** Kills the helper (requests still waiting fail) and starts no other. */
  close(): void {
    this.closed = true;
    const p = this.proc;
    this.proc = null;
    this.pid = null;
    p?.stdin?.end();
    p?.kill("SIGKILL");
  }

  /** Test hook: kills the running helper as a crash would. */
  killForTest(): void {
    this.proc?.kill("SIGKILL");
  }
}

/**
 * A sealed, in-memory copy of `binary` that this process holds for its lifetime, as a path to
 * execute it by (`/proc/<pid>/fd/<n>`), or null when none can be made here.
 *
 * For the OCI runtimes that copy and re-execute themselves on every container start (CVE-2019-5736's
 * guard: crun here) and skip it when already running from a sealed memfd (oci.ts sealedBinary):
 * the helper makes the sealed copy once; this process opens it through /proc (the helper can then
 * go) and runs the runtime from it.
 */
export async function sealedCopy(binary: string, o: { verifyArgs: string[]; python?: string; timeoutMs?: number }): Promise<string | null> {
  const h = new MountHelper({ roots: [], python: o.python, timeoutMs: o.timeoutMs ?? 20_000 });
  let mine: number | null = null;
  try {
    const { fd, size } = await h.seal(binary);
    mine = fs.openSync(`/proc/${h.pid}/fd/${fd}`, "r");
    if (fs.fstatSync(mine).size !== size) throw new Error("not the whole binary");
    const exe = `/proc/${process.pid}/fd/${mine}`;
    // Executable from there (a host may forbid executing memfds: vm.memfd_noexec).
    const ok = await new Promise<boolean>((resolve) => {
      const c = spawn(exe, o.verifyArgs, { stdio: "ignore", env: {}, timeout: o.timeoutMs ?? 20_000 });
      c.once("error", () => resolve(false));
      c.once("exit", (code) => resolve(code === 0));
    });
    if (!ok) throw new Error("not executable");
    return exe;
  } catch {
    if (mine !== null) fs.closeSync(mine);
    return null;
  } finally {
    h.close();
  }
}
