import { execFileSync, execSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

/**
 * Test registries on loopback, since PyPI and the Go module proxy are unreachable here:
 * - a PEP 503 "simple" index serving wheels built offline with Debian's setuptools/wheel
 *   (the same protocol PyPI and every mirror speak, so pip takes the same code path);
 * - a GOPROXY file tree (the protocol `go mod download` speaks).
 * Every request is logged so tests can tell what the install fetched.
 */
export interface LoopbackRegistry {
  url: string;
  dir: string;
  requests: string[];
  close(): Promise<void>;
}

/** Debian's interpreter: it has python3-setuptools and python3-wheel (scripts/setup.sh). */
const SYSTEM_PYTHON = "/usr/bin/python3";

export interface PyDist {
  name: string;
  version: string;
  /** Top-level module name and its source. */
  module: string;
  source: string;
  requires?: string[];
}

function buildWheel(work: string, dist: PyDist, out: string): void {
  const src = fs.mkdtempSync(path.join(work, "src-"));
  fs.mkdirSync(path.join(src, dist.module));
  fs.writeFileSync(path.join(src, dist.module, "__init__.py"), dist.source);
  fs.writeFileSync(path.join(src, "setup.py"), [
    "from setuptools import setup",
    `setup(name=${JSON.stringify(dist.name)}, version=${JSON.stringify(dist.version)}, packages=[${JSON.stringify(dist.module)}],`,
    `      install_requires=${JSON.stringify(dist.requires ?? [])})`,
  ].join("\n"));
  execFileSync(SYSTEM_PYTHON, ["setup.py", "-q", "bdist_wheel", "-d", out], { cwd: src, stdio: ["ignore", "ignore", "pipe"], env: { PATH: "/usr/bin:/bin", HOME: work } });
}

/**
 * An sdist with an in-tree PEP 517 backend (no setuptools needed to build it) whose build step
 * tries to reach `target`: what a malicious package's install script does.
 */
export interface HostileDist {
  name: string;
  version: string;
  /** URL the build step tries to fetch. */
  target?: string;
  /** Seconds the build step sleeps. */
  sleep?: number;
}

function buildHostileSdist(work: string, h: HostileDist, out: string): void {
  const { name, version } = h;
  const base = `${name.replace(/-/g, "_")}-${version}`;
  const src = path.join(work, base);
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, "pyproject.toml"), `[build-system]\nrequires = []\nbuild-backend = "hostile_backend"\nbackend-path = ["."]\n`);
  fs.writeFileSync(path.join(src, "PKG-INFO"), `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\n`);
  fs.writeFileSync(path.join(src, "hostile_backend.py"), [
    "import time, urllib.request",
    "def _call_home():",
    `    time.sleep(${h.sleep ?? 0})`,
    h.target ? `    urllib.request.urlopen(${JSON.stringify(h.target)}, timeout=10).read()` : "    pass",
    "def get_requires_for_build_wheel(config_settings=None):",
    "    _call_home()",
    "    return []",
    "def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):",
    "    _call_home()",
    "    raise SystemExit('unreachable')",
    "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):",
    "    _call_home()",
    "    raise SystemExit('unreachable')",
  ].join("\n") + "\n");
  execFileSync("tar", ["-czf", path.join(out, `${base}.tar.gz`), "-C", work, base]);
}

function serve(root: string, handler: (p: string, res: http.ServerResponse) => boolean, host = "127.0.0.1"): Promise<{ server: http.Server; url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    requests.push(p);
    if (handler(p, res)) return;
    res.writeHead(404, { "content-type": "text/plain" }).end("Not Found");
  });
  return new Promise((resolve) => server.listen(0, host, () => {
    const a = server.address() as { port: number };
    resolve({ server, url: `http://${host}:${a.port}`, requests });
  }));
}

/** A PEP 503 index on loopback with the given distributions built as wheels, plus hostile sdists. */
export async function startPythonIndex(dists: PyDist[], hostile: HostileDist[] = []): Promise<LoopbackRegistry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-pyindex-"));
  const files = path.join(dir, "files");
  fs.mkdirSync(files);
  for (const d of dists) buildWheel(dir, d, files);
  for (const h of hostile) buildHostileSdist(dir, h, files);
  const norm = (n: string) => n.toLowerCase().replace(/[-_.]+/g, "-");
  const byProject = new Map<string, string[]>();
  for (const f of fs.readdirSync(files)) {
    const project = norm(f.split("-")[0]);
    byProject.set(project, [...(byProject.get(project) ?? []), f]);
  }
  const { server, url, requests } = await serve(dir, (p, res) => {
    if (p === "/simple/" || p === "/simple") {
      res.writeHead(200, { "content-type": "text/html" }).end([...byProject.keys()].map((k) => `<a href="/simple/${k}/">${k}</a>`).join("\n"));
      return true;
    }
    const m = /^\/simple\/([^/]+)\/?$/.exec(p);
    if (m) {
      const list = byProject.get(norm(m[1]));
      if (!list) return false;
      const links = list.map((f) => {
        const sha = createHash("sha256").update(fs.readFileSync(path.join(files, f))).digest("hex");
        return `<a href="/files/${f}#sha256=${sha}">${f}</a><br/>`;
      });
      res.writeHead(200, { "content-type": "text/html" }).end(`<!DOCTYPE html><html><body>\n${links.join("\n")}\n</body></html>`);
      return true;
    }
    const f = /^\/files\/([^/]+)$/.exec(p);
    if (f && fs.existsSync(path.join(files, f[1]))) {
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(fs.readFileSync(path.join(files, f[1])));
      return true;
    }
    return false;
  });
  return {
    url: `${url}/simple`, dir, requests,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The npm registry npm itself is configured for on this machine (never a name written here). */
export function npmRegistryFromNpm(): string {
  return execSync("npm config get registry", { encoding: "utf8" }).trim().replace(/\/+$/, "");
}

/** True when Debian's setuptools and wheel are there to build test wheels. */
export function canBuildWheels(): boolean {
  try {
    execFileSync(SYSTEM_PYTHON, ["-c", "import setuptools, wheel"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export interface GoModule {
  path: string;
  version: string;
  /** File name → content, inside the module. */
  files: Record<string, string>;
}

/**
 * A GOPROXY serving a file tree in the module proxy protocol (list, .info, .mod, .zip). Go never
 * sends requests for `localhost` or a loopback IP literal through HTTP_PROXY, so inside a sandbox
 * (no network but the broker) such a URL is unreachable. The proxy listens on loopback and is
 * named by another name that resolves to loopback (`loopbackName()`, e.g. the host's own name in
 * /etc/hosts): Go sends that through the broker, which resolves it and lets it through as an
 * operator-trusted registry. Test traffic never leaves the loopback interface.
 */
export async function startGoProxy(mods: GoModule[], name = loopbackName()): Promise<LoopbackRegistry> {
  if (!name) throw new Error("no name other than localhost resolves to a loopback address here");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-goproxy-"));
  const esc = (p: string) => p.replace(/[A-Z]/g, (c) => "!" + c.toLowerCase());
  for (const m of mods) {
    const base = path.join(dir, esc(m.path), "@v");
    fs.mkdirSync(base, { recursive: true });
    const gomod = m.files["go.mod"] ?? `module ${m.path}\n\ngo 1.21\n`;
    fs.appendFileSync(path.join(base, "list"), `${m.version}\n`);
    fs.writeFileSync(path.join(base, `${m.version}.info`), JSON.stringify({ Version: m.version, Time: "2024-01-01T00:00:00Z" }));
    fs.writeFileSync(path.join(base, `${m.version}.mod`), gomod);
    const src = fs.mkdtempSync(path.join(os.tmpdir(), "petri-gomod-"));
    const prefix = `${m.path}@${m.version}`;
    for (const [f, c] of Object.entries({ ...m.files, "go.mod": gomod })) {
      fs.mkdirSync(path.dirname(path.join(src, prefix, f)), { recursive: true });
      fs.writeFileSync(path.join(src, prefix, f), c);
    }
    // A module zip is a plain zip whose entries are prefixed "path@version/"; Python's zipfile writes it.
    execFileSync(SYSTEM_PYTHON, ["-c", "import os,sys,zipfile\nroot,out=sys.argv[1],sys.argv[2]\nwith zipfile.ZipFile(out,'w') as z:\n  for d,_,fs in os.walk(root):\n    for f in fs:\n      p=os.path.join(d,f); z.write(p, os.path.relpath(p, root))",
      src, path.join(base, `${m.version}.zip`)]);
    fs.rmSync(src, { recursive: true, force: true });
  }
  const { server, url, requests } = await serve(dir, (p, res) => {
    const file = path.join(dir, p);
    if (!file.startsWith(dir + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return false;
    res.writeHead(200, { "content-type": p.endsWith(".zip") ? "application/zip" : "text/plain" }).end(fs.readFileSync(file));
    return true;
  }, name.address);
  return {
    url: url.replace(name.address, name.name), dir, requests,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A name other than "localhost" that resolves to a loopback address (the host's own name, as
 * Debian's /etc/hosts maps it), with that address; null when there is none.
 */
export function loopbackName(): { name: string; address: string } | null {
  const name = os.hostname();
  if (!name || name === "localhost") return null;
  try {
    const address = execFileSync("getent", ["ahostsv4", name], { encoding: "utf8" }).trim().split(/\s+/)[0] ?? "";
    return /^127\.\d+\.\d+\.\d+$/.test(address) ? { name, address } : null;
  } catch {
    return null;
  }
}
