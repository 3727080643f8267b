import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { NO_NETWORK } from "./explain.js";
import { TS_LOADER } from "./typescript-loader.js";
import { NODE_BOOT, NODE_BOOT_FILE } from "../runtimes/warm-node.js";

/**
 * Small helpers mounted read-only into every run at /petri/agent, so what the code does behaves
 * the way an agent expects:
 * - no network: resolving a host fails at once with an error that says how to allow it (instead
 *   of "Temporary failure in name resolution", which looks transient and invites retries);
 * - allowed hosts: Node's global fetch() goes through the broker (undici ignores HTTP(S)_PROXY);
 * - plt.show() and display() save figures to /petri/display, returned with the result.
 */
export const AGENT_MOUNT = "/petri/agent";
export const DISPLAY_MOUNT = "/petri/display";

const PY_SITECUSTOMIZE = `# Written by Petri (mounted read-only): explicit no-network errors, display() and plt.show().
def _petri_setup():
    import os, sys
    if os.environ.get("PETRI_NETWORK") == "none":
        def patch(socket):
            message = ${JSON.stringify(`petri: ${NO_NETWORK}`)}
            real = socket.getaddrinfo
            try:
                own = {socket.gethostname().lower()}
            except OSError:
                own = set()
            def local(host):
                if host is None:
                    return True
                if isinstance(host, (bytes, bytearray)):
                    host = bytes(host).decode("ascii", "replace")
                h = str(host).strip("[]").lower()
                return h in ("", "localhost", "localhost.localdomain", "ip6-localhost", "::1", "::", "0.0.0.0") or h.startswith("127.") or h in own
            def getaddrinfo(host, *args, **kwargs):
                if not local(host):
                    raise socket.gaierror(socket.EAI_NONAME, "%s (tried to reach %s)" % (message, host))
                return real(host, *args, **kwargs)
            socket.getaddrinfo = getaddrinfo

        class PetriNoNetwork:
            """Patches socket when it is first imported: importing it here would cost every run milliseconds."""
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name != "socket":
                    return None
                sys.meta_path.remove(cls)
                from importlib.machinery import PathFinder
                spec = PathFinder.find_spec(name, path)
                if spec is not None and spec.loader is not None:
                    real_exec = spec.loader.exec_module
                    def exec_module(module):
                        real_exec(module)
                        patch(module)
                    spec.loader.exec_module = exec_module
                return spec

        if "socket" in sys.modules:
            patch(sys.modules["socket"])
        else:
            sys.meta_path.insert(0, PetriNoNetwork)
    import builtins
    if not hasattr(builtins, "display"):
        def display(*objs, **kwargs):
            import petri_display
            for o in objs:
                petri_display.display_one(o)
        builtins.display = display

_petri_setup()
del _petri_setup
`;

const PY_DISPLAY = `# Written by Petri: a matplotlib backend whose show() saves figures for the run's result.
import os

DISPLAY_DIR = os.environ.get("PETRI_DISPLAY_DIR", ${JSON.stringify(DISPLAY_MOUNT)})

def _next_path(ext):
    n = 1
    while True:
        p = os.path.join(DISPLAY_DIR, "figure-%d.%s" % (n, ext))
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        return p

def save_figure(fig):
    fig.savefig(_next_path("png"), format="png", bbox_inches="tight")

def display_one(o):
    if hasattr(o, "savefig"):
        return save_figure(o)
    if hasattr(o, "get_figure") and type(o).__module__.startswith("matplotlib"):
        return save_figure(o.get_figure())
    for attr, ext, mode in (("_repr_png_", "png", "wb"), ("_repr_svg_", "svg", "w")):
        f = getattr(o, attr, None)
        if f is not None:
            data = f()
            if data:
                with open(_next_path(ext), mode) as out:
                    out.write(data)
                return
    print(o.to_string() if hasattr(o, "to_string") else repr(o))

try:
    from matplotlib.backend_bases import FigureManagerBase as FigureManager
    from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas
    from matplotlib._pylab_helpers import Gcf

    def show(*args, **kwargs):
        for manager in Gcf.get_all_fig_managers():
            save_figure(manager.canvas.figure)
        Gcf.destroy_all()
except ImportError:
    pass
`;

const NODE_PRELOAD = `'use strict';
// Written by Petri (mounted read-only): explicit no-network errors; fetch() through the broker.
(function () {
  const mode = process.env.PETRI_NETWORK;
  if (mode === 'none') {
    const dns = require('dns');
    const os = require('os');
    const message = ${JSON.stringify(`petri: ${NO_NETWORK}`)};
    let own = '';
    try { own = os.hostname().toLowerCase(); } catch (e) { own = ''; }
    const local = (h) => {
      h = String(h || '').replace(/^\\[|\\]$/g, '').toLowerCase();
      return h === '' || h === 'localhost' || h === 'localhost.localdomain' || h === '::1' || h === '::' || h === '0.0.0.0' || h.startsWith('127.') || h === own;
    };
    const refuse = (host) => Object.assign(new Error(message + ' (tried to reach ' + host + ')'), { code: 'ENETUNREACH', syscall: 'getaddrinfo', hostname: host });
    const lookup = dns.lookup;
    dns.lookup = function (host, options, callback) {
      if (typeof options === 'function') { callback = options; options = {}; }
      if (!local(host)) { process.nextTick(callback, refuse(host)); return {}; }
      return lookup.call(this, host, options, callback);
    };
    const plookup = dns.promises.lookup;
    dns.promises.lookup = function (host, options) {
      if (!local(host)) return Promise.reject(refuse(host));
      return plookup.call(this, host, options);
    };
  } else if (mode === 'proxy' && typeof globalThis.fetch === 'function' && (process.env.HTTPS_PROXY || process.env.HTTP_PROXY)) {
    // Node's bundled undici reads its dispatcher from this well-known global, so setting it
    // with a full undici routes the built-in fetch() through HTTP(S)_PROXY as well.
    try {
      const undici = require(${JSON.stringify(`${AGENT_MOUNT}/node/undici`)});
      // proxyTunnel: false sends http:// requests in absolute form; https:// is tunnelled with CONNECT.
      undici.setGlobalDispatcher(new undici.ProxyAgent({ uri: process.env.HTTPS_PROXY || process.env.HTTP_PROXY, proxyTunnel: false }));
    } catch (e) {
      process.emitWarning('petri: fetch() could not be routed through the proxy: ' + e.message);
    }
  }
})();
`;

let prepared: string | null = null;

/** Writes the helpers under `dataDir/agent` (once per process) and returns that directory. */
export function prepareAgentFiles(dataDir: string): string {
  const dir = path.join(dataDir, "agent");
  if (prepared === dir) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, "python"), { recursive: true, mode: 0o755 });
  fs.mkdirSync(path.join(tmp, "node"), { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(tmp, "python", "sitecustomize.py"), PY_SITECUSTOMIZE, { mode: 0o644 });
  fs.writeFileSync(path.join(tmp, "python", "petri_display.py"), PY_DISPLAY, { mode: 0o644 });
  fs.writeFileSync(path.join(tmp, "node", "preload.cjs"), NODE_PRELOAD, { mode: 0o644 });
  fs.writeFileSync(path.join(tmp, "node", "typescript.cjs"), TS_LOADER, { mode: 0o644 });
  // The hold of pre-started Node units (warm interpreters): its path is fixed in warm-node.ts.
  fs.writeFileSync(path.join(tmp, path.relative(AGENT_MOUNT, NODE_BOOT_FILE)), NODE_BOOT, { mode: 0o644 });
  // undici (the npm package, pure JavaScript) for the fetch() proxy dispatcher.
  const undiciDir = path.dirname(createRequire(import.meta.url).resolve("undici/package.json"));
  const target = path.join(tmp, "node", "undici");
  fs.mkdirSync(target, { mode: 0o755 });
  for (const f of ["package.json", "index.js", "lib", "LICENSE"]) {
    fs.cpSync(path.join(undiciDir, f), path.join(target, f), { recursive: true });
  }
  // Readable by the sandbox user, whatever this process's umask.
  for (const e of fs.readdirSync(tmp, { recursive: true, withFileTypes: true })) {
    fs.chmodSync(path.join(e.parentPath ?? e.path, e.name), e.isDirectory() ? 0o755 : 0o644);
  }
  fs.chmodSync(tmp, 0o755);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  prepared = dir;
  return dir;
}

/** Variables whose value is a list: a run's value is put in front of the language's, not instead. */
const LIST_VARS: Record<string, string> = { PATH: ":", PYTHONPATH: ":", NODE_PATH: ":", GOFLAGS: " ", NODE_OPTIONS: " " };

/**
 * Layers environments, later ones winning, except that list variables (PYTHONPATH, NODE_PATH,
 * PATH, NODE_OPTIONS, GOFLAGS) accumulate with the later value first.
 */
export function layerEnv(...layers: (Record<string, string> | undefined)[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer ?? {})) {
      const sep = LIST_VARS[k];
      out[k] = sep && out[k] && v ? `${v}${sep}${out[k]}` : v;
    }
  }
  return out;
}

/**
 * The environment every run gets for the helpers. PETRI_NETWORK says "none" until the run's
 * broker opens (then "proxy"); figures go to the run's own folder of the display mount.
 */
export function agentEnv(execId: string): Record<string, string> {
  return {
    PETRI_NETWORK: "none",
    PETRI_DISPLAY_DIR: `${DISPLAY_MOUNT}/${execId}`,
    PYTHONPATH: `${AGENT_MOUNT}/python`,
    MPLBACKEND: "module://petri_display",
    NODE_OPTIONS: `--require ${AGENT_MOUNT}/node/preload.cjs`,
  };
}

/**
 * The per-sandbox display directory is root-owned (the run cannot create, rename or replace
 * anything in it, so its per-run folder cannot be swapped for a symlink); the run's own folder
 * in it belongs to the sandbox user.
 */
export function prepareDisplayDirs(sandboxDisplayDir: string, execId: string, uid: number, gid: number): string {
  fs.mkdirSync(sandboxDisplayDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(sandboxDisplayDir, 0o755);
  const runDir = path.join(sandboxDisplayDir, execId);
  fs.mkdirSync(runDir, { mode: 0o700 });
  fs.chownSync(runDir, uid, gid);
  return runDir;
}
