import fs from "node:fs";

/**
 * What a built image contains, read from the image itself at build time (never hard-coded):
 * language and tool versions, Python distributions, Node modules available without installing,
 * Debian packages. `GET /v1/images` serves it so an agent can be told what it may import, and
 * dependency installation uses it to skip what the image already provides.
 */
export interface ImageManifest {
  /** Manifest format version. */
  format: 1;
  name: string;
  ref: string;
  suite: string;
  built_at: string;
  /** Seconds the build took (mmdebstrap, Node, manifest, docker import). */
  build_seconds: number;
  /** Bytes of the root filesystem on disk. */
  size_bytes: number;
  /** Language → version of its toolchain (python, node, go, bash; typescript runs on node). */
  languages: Record<string, string>;
  /** Tools → version (pip, npm, tsc, esbuild, git …). */
  tools: Record<string, string>;
  /** Official Node.js build installed from the npm registry (null: Debian's node or none). */
  node_build: { package: string; version: string; integrity: string } | null;
  /** Python distributions importable without installing: name → version. */
  python_packages: Record<string, string>;
  /** Top-level importable Python module names (site-packages and dist-packages), for import → package decisions. */
  python_modules: string[];
  /** The interpreter's standard-library module names (sys.stdlib_module_names). */
  python_stdlib: string[];
  /** Node modules resolvable without installing (Debian's /usr/share/nodejs, global node_modules): name → version. */
  node_packages: Record<string, string>;
  /** Node's built-in module names (require('module').builtinModules). */
  node_builtins: string[];
  /** Debian packages: name → version. */
  debian_packages: Record<string, string>;
}

/**
 * Run with the image's own python3 inside the freshly built root filesystem (chroot, at build
 * time, by root: only Debian's packages and the verified Node build are in there, no user code).
 * Prints the JSON fields that come from inside the image.
 */
export const INTROSPECT_PY = String.raw`
import json, os, re, subprocess, sys, platform
from importlib import metadata

def ver(cmd, rx):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/tmp", "GOTOOLCHAIN": "local", "GOCACHE": "/tmp/gocache"})
    except Exception:
        return None
    m = re.search(rx, p.stdout + p.stderr)
    return m.group(1) if m else None

langs = {"python": platform.python_version(), "bash": ver(["bash", "--version"], r"version (\d+\.\d+\.\d+)")}
node = ver(["node", "--version"], r"v(\d+\.\d+\.\d+)")
if node:
    langs["node"] = node
    major, minor = (int(x) for x in node.split(".")[:2])
    # Type stripping is on by default from Node 22.18 / 23.6: .ts files and -e snippets run as they are.
    if major > 23 or (major == 23 and minor >= 6) or (major == 22 and minor >= 18):
        langs["typescript"] = node
go = ver(["go", "version"], r"go(\d+\.\d+(?:\.\d+)?)")
if go:
    langs["go"] = go

tools = {}
for name, cmd, rx in [
    ("pip", ["python3", "-m", "pip", "--version"], r"pip (\S+)"),
    ("npm", ["npm", "--version"], r"(\d+\.\d+\.\d+)"),
    ("tsc", ["tsc", "--version"], r"Version (\S+)"),
    ("esbuild", ["esbuild", "--version"], r"(\d+\.\d+\.\d+)"),
    ("git", ["git", "--version"], r"version (\S+)"),
]:
    v = ver(cmd, rx)
    if v:
        tools[name] = v

pkgs = {}
mods = set()
for d in metadata.distributions():
    n = d.metadata["Name"]
    if n:
        pkgs[n] = d.version
for p in sys.path:
    if not p.endswith(("site-packages", "dist-packages")) or not os.path.isdir(p):
        continue
    for e in os.listdir(p):
        if e.endswith((".dist-info", ".egg-info", ".pth")) or e.startswith(".") or e == "__pycache__":
            continue
        base = e.split(".")[0]
        if base and (os.path.isdir(os.path.join(p, e)) or e.endswith((".py", ".so"))):
            mods.add(base)

node_pkgs = {}
for root in ["/usr/share/nodejs", "/usr/lib/nodejs", "/usr/local/lib/node_modules", "/usr/lib/node_modules"]:
    if not os.path.isdir(root):
        continue
    for e in sorted(os.listdir(root)):
        dirs = [os.path.join(e, s) for s in os.listdir(os.path.join(root, e))] if e.startswith("@") and os.path.isdir(os.path.join(root, e)) else [e]
        for d in dirs:
            try:
                with open(os.path.join(root, d, "package.json")) as f:
                    pj = json.load(f)
                node_pkgs.setdefault(pj.get("name") or d, pj.get("version") or "")
            except Exception:
                pass

builtins = []
if node:
    b = subprocess.run(["node", "-p", "JSON.stringify(require('module').builtinModules)"], capture_output=True, text=True)
    try:
        builtins = json.loads(b.stdout)
    except Exception:
        pass

deb = {}
q = subprocess.run(["dpkg-query", "-W", "-f", "$" "{Package}\t" "$" "{Version}\n"], capture_output=True, text=True)
for line in q.stdout.splitlines():
    if "\t" in line:
        k, v = line.split("\t", 1)
        deb[k] = v

print(json.dumps({
    "languages": langs, "tools": tools,
    "python_packages": dict(sorted(pkgs.items(), key=lambda kv: kv[0].lower())),
    "python_modules": sorted(mods), "python_stdlib": sorted(sys.stdlib_module_names),
    "node_packages": node_pkgs, "node_builtins": builtins, "debian_packages": deb,
}))
`;

export function readManifest(file: string): ImageManifest | null {
  try {
    const m = JSON.parse(fs.readFileSync(file, "utf8")) as ImageManifest;
    return m && m.format === 1 ? m : null;
  } catch {
    return null;
  }
}
