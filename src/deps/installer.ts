import fs from "node:fs";
import path from "node:path";
import type { Mount, RunResult, RunSpec, Runtime } from "../runtimes/types.js";
import type { BrokerEvent } from "../vault/events.js";
import { openBrokerSession, type SecretStore } from "../vault/index.js";
import type { EgressPolicy } from "../vault/egress.js";
import type { Ecosystem, Requirement } from "./specs.js";

/**
 * One install, as its own hardened run: the sandbox's runtime and limits, no secrets, the
 * workspace read-only, and no network but the configured registries through the egress broker
 * (its CONNECT interception uses a per-run CA that pip and npm are told to trust). The target is
 * a fresh directory mounted read-write at the path runs will later see it at read-only, so
 * nothing an installer writes (venv paths, bin links) refers to a path that does not exist.
 */
export const ENV_TARGETS: Readonly<Record<Ecosystem, string>> = Object.freeze({
  python: "/deps/python",
  node: "/deps/node",
  go: "/deps/go",
});

/** Exit status the install script uses when the image lacks the installer (pip, npm, go). */
const NO_INSTALLER = 87;
const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", TMPDIR: "/tmp" };

export interface InstallRequest {
  eco: Ecosystem;
  requirements: Requirement[];
  /** Files copied into the target before installing (e.g. a workspace package-lock.json, go.sum). */
  extraFiles?: Record<string, string>;
  /** Host directory to install into; created empty by the caller. */
  targetDir: string;
  /** Scratch directory for the broker session. */
  runDir: string;
  image: string;
  rootfs?: string;
  runtime: Runtime;
  workspaceDir: string;
  limits: RunSpec["limits"];
  timeoutMs: number;
  uid: number;
  gid: number;
  labels: Record<string, string>;
  registries: { pipIndexUrl: string; npmRegistry: string; goProxy: string };
  /**
   * Host patterns the install may reach: the registries and the hosts they serve files from.
   * They are the operator's (config), so the broker treats them as trusted destinations, exempt
   * from the private-address block (an internal mirror); no tenant input reaches this list.
   */
  registryHosts: string[];
  egress: EgressPolicy;
  vault: SecretStore;
  tenantId: string;
  sandboxId: string;
  installId: string;
  onBrokerEvent: (ev: BrokerEvent) => void;
  /** Stops the install (e.g. the environment grew past its size limit). */
  signal?: AbortSignal;
}

export interface InstalledPackage {
  name: string;
  version: string;
  /** "sha256:…" for wheels and Go modules (h1:), "sha512-…" (SRI) for npm tarballs; "" if the installer did not say. */
  hash: string;
  /** Where it came from (a URL on the registry). */
  source: string;
}

export type InstallOutcome =
  | { ok: true; packages: InstalledPackage[]; lock: string; durationMs: number; raw: RunResult }
  | { ok: false; reason: "not_found" | "unresolvable" | "egress_blocked" | "timeout" | "no_installer" | "failed" | "aborted"; message: string; durationMs: number; blockedHosts: string[]; raw: RunResult | null };

export async function runInstall(req: InstallRequest): Promise<InstallOutcome> {
  const started = Date.now();
  const target = ENV_TARGETS[req.eco];
  writeManifests(req);
  fs.chownSync(req.targetDir, req.uid, req.gid);
  const blocked = new Set<string>();
  const session = await openBrokerSession({
    store: req.vault, tenantId: req.tenantId, sandboxId: req.sandboxId, execId: req.installId,
    secrets: [], allowHosts: [], trustedHosts: req.registryHosts, egress: req.egress, runDir: req.runDir,
    onEvent: (ev) => {
      if (ev.outcome === "denied") blocked.add(String(ev.detail.host ?? ev.detail.target ?? "?"));
      req.onBrokerEvent(ev);
    },
  });
  let raw: RunResult | null = null;
  try {
    const mounts: Mount[] = [
      { source: req.workspaceDir, target: "/workspace", readonly: true },
      { source: req.targetDir, target, readonly: false },
      session.mount,
    ];
    const env: Record<string, string> = { ...BASE_ENV, ...session.env, ...installerEnv(req) };
    const spec: RunSpec = {
      image: req.image,
      rootfs: req.rootfs,
      argv: session.wrapArgv(["/bin/sh", "-c", installScript(req.eco), "petri-install"]),
      env,
      cwd: target,
      mounts,
      limits: req.limits,
      timeoutMs: req.timeoutMs,
      outputLimitBytes: 256 * 1024,
      uid: req.uid,
      gid: req.gid,
      labels: req.labels,
      signal: req.signal,
    };
    raw = await req.runtime.run(spec);
  } finally {
    await session.close().catch(() => undefined);
  }
  const durationMs = Date.now() - started;
  const stderr = raw.stderr.toString("utf8");
  const stdout = raw.stdout.toString("utf8");
  const fail = (reason: Exclude<InstallOutcome, { ok: true }>["reason"], message: string): InstallOutcome =>
    ({ ok: false, reason, message, durationMs, blockedHosts: [...blocked], raw });
  if (raw.killed) return fail("aborted", "the install was stopped");
  if (raw.timedOut) return fail("timeout", `the install did not finish within ${req.timeoutMs} ms`);
  if (raw.exitCode === NO_INSTALLER) return fail("no_installer", lastLines(stderr, 3));
  if (raw.exitCode !== 0) {
    if (blocked.size) return fail("egress_blocked", `the install tried to reach ${[...blocked].join(", ")}, which is not a configured registry; the broker blocked it`);
    return classifyFailure(req.eco, stdout + "\n" + stderr, fail);
  }
  try {
    const { packages, lock } = readLock(req.eco, req.targetDir);
    return { ok: true, packages, lock, durationMs, raw };
  } catch (e) {
    return fail("failed", `the installer finished but left no readable lock: ${(e as Error).message}`);
  }
}

function writeManifests(req: InstallRequest): void {
  const dir = req.targetDir;
  for (const [name, content] of Object.entries(req.extraFiles ?? {})) fs.writeFileSync(path.join(dir, name), content, { mode: 0o644 });
  if (req.eco === "python") {
    fs.writeFileSync(path.join(dir, ".petri-requirements.txt"), req.requirements.map((r) => r.spec).join("\n") + "\n", { mode: 0o644 });
  } else if (req.eco === "node") {
    const deps: Record<string, string> = {};
    for (const r of req.requirements) deps[r.name] = r.range || "*";
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "petri-env", private: true, dependencies: deps }, null, 2) + "\n", { mode: 0o644 });
    fs.writeFileSync(path.join(dir, ".petri-npmrc"), "", { mode: 0o644 });
  } else {
    fs.writeFileSync(path.join(dir, ".petri-wanted"), req.requirements.map((r) => (r.range ? `${r.name}@${r.range}` : `${r.name}@latest`)).join("\n") + "\n", { mode: 0o644 });
  }
}

function installerEnv(req: InstallRequest): Record<string, string> {
  const { pipIndexUrl, npmRegistry, goProxy } = req.registries;
  const proxy = "http://127.0.0.1:3128";
  if (req.eco === "python") {
    const u = new URL(pipIndexUrl);
    return {
      PETRI_INDEX_URL: pipIndexUrl,
      // A plain-http index (an internal mirror, the tests' loopback index) is the operator's choice.
      PETRI_TRUSTED_HOST: u.protocol === "http:" ? u.host : "",
      PIP_CONFIG_FILE: "/dev/null",
      PIP_NO_INPUT: "1",
      PIP_DISABLE_PIP_VERSION_CHECK: "1",
      // pip's default of 5 retries with back-off would hold a run for a minute on a dead mirror.
      PIP_RETRIES: "1",
      PIP_TIMEOUT: "60",
      PYTHONDONTWRITEBYTECODE: "",
    };
  }
  if (req.eco === "node") {
    return {
      npm_config_registry: npmRegistry + "/",
      npm_config_proxy: proxy,
      npm_config_https_proxy: proxy,
      npm_config_noproxy: "",
      npm_config_cafile: "/petri/broker/ca-bundle.pem",
      // The image's and the user's npmrc must not pick another registry or a token.
      npm_config_userconfig: `${ENV_TARGETS.node}/.petri-npmrc`,
      npm_config_globalconfig: "/dev/null",
      npm_config_update_notifier: "false",
      npm_config_fund: "false",
      npm_config_audit: "false",
      npm_config_cache: `${ENV_TARGETS.node}/.petri-cache`,
      npm_config_logs_dir: `${ENV_TARGETS.node}/.petri-cache/_logs`,
      // The broker preload patches https.globalAgent for user code; npm brings its own agent.
      NODE_OPTIONS: "",
    };
  }
  return {
    GOPROXY: goProxy,
    GOMODCACHE: `${ENV_TARGETS.go}/mod`,
    GOPATH: `${ENV_TARGETS.go}/gopath`,
    GOCACHE: `${ENV_TARGETS.go}/.petri-cache`,
    GOFLAGS: "",
    GOTOOLCHAIN: "local",
    GOSUMDB: "off",
    GONOSUMDB: "*",
    CGO_ENABLED: "0",
  };
}

/**
 * The install, in /bin/sh: exits NO_INSTALLER when the image has no installer, removes the
 * installer's caches and scratch files before declaring success.
 */
export function installScript(eco: Ecosystem): string {
  const t = ENV_TARGETS[eco];
  if (eco === "python") {
    return [
      "set -e",
      `python3 -m pip --version >/dev/null 2>&1 || { echo "petri: this image has no pip (python3 -m pip); pick an image that has it" >&2; exit ${NO_INSTALLER}; }`,
      // A venv that sees the image's own packages: what the image provides is not installed again.
      `python3 -m venv --without-pip --system-site-packages ${t}`,
      `mkdir -p ${t}/.petri-tmp && export TMPDIR=${t}/.petri-tmp`,
      `set -- --index-url "$PETRI_INDEX_URL"`,
      `[ -n "$PETRI_TRUSTED_HOST" ] && set -- "$@" --trusted-host "$PETRI_TRUSTED_HOST"`,
      `${t}/bin/python -m pip install --no-cache-dir --progress-bar off --report ${t}/.petri-report.json "$@" -r ${t}/.petri-requirements.txt`,
      `rm -rf ${t}/.petri-tmp`,
    ].join("\n");
  }
  if (eco === "node") {
    return [
      "set -e",
      `command -v npm >/dev/null 2>&1 || { echo "petri: this image has no npm; pick an image that has it" >&2; exit ${NO_INSTALLER}; }`,
      `cd ${t}`,
      // A workspace lock is written by the server (not ours to change); npm rewrites it, so it
      // gets a copy of its own.
      `if [ -f package-lock.json ]; then cp package-lock.json .petri-lock.tmp && mv -f .petri-lock.tmp package-lock.json; fi`,
      `npm install --no-audit --no-fund --loglevel=error`,
      `rm -rf ${t}/.petri-cache`,
    ].join("\n");
  }
  return [
    "set -e",
    `command -v go >/dev/null 2>&1 || { echo "petri: this image has no go toolchain" >&2; exit ${NO_INSTALLER}; }`,
    `mkdir -p ${t}/mod ${t}/.petri-work && cd ${t}/.petri-work`,
    `go mod init petri.invalid/env >/dev/null 2>&1`,
    `[ -f ../go.sum ] && cp ../go.sum go.sum || true`,
    // Each wanted module@version, downloaded into the module cache; go's JSON record is the lock.
    `: > ../.petri-download.json`,
    `while read -r m; do [ -n "$m" ] && { go mod download -json "$m" >> ../.petri-download.json || { cat ../.petri-download.json >&2; exit 1; }; }; done < ../.petri-wanted`,
    `cd .. && rm -rf .petri-work .petri-cache`,
    `chmod -R u+w ${t}/mod`,
  ].join("\n");
}

function lastLines(s: string, n: number): string {
  return s.trim().split("\n").slice(-n).join("\n").slice(0, 2000);
}

function classifyFailure(eco: Ecosystem, out: string, fail: (r: Exclude<InstallOutcome, { ok: true }>["reason"], m: string) => InstallOutcome): InstallOutcome {
  // The installer never reached the broker (pip then reports "from versions: none"): say so
  // rather than blame the package.
  const unreachable = /ProxyError\([^\n]*|NewConnectionError[^\n]*|Failed to establish a new connection[^\n]*|ECONNREFUSED 127\.0\.0\.1:3128[^\n]*|proxyconnect tcp[^\n]*/.exec(out);
  if (unreachable) return fail("failed", `the installer could not reach the registry through Petri's egress broker: ${unreachable[0].slice(0, 300)}`);
  if (eco === "python") {
    const none = /Could not find a version that satisfies the requirement (\S+) \(from versions: none\)/.exec(out);
    if (none) return fail("not_found", `the Python index has no distribution for ${none[1]} that this image can install`);
    const versions = /Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)/.exec(out);
    if (versions) return fail("unresolvable", `no version of ${versions[1]} satisfies the request (the index has: ${versions[2].slice(0, 300)})`);
    if (/ResolutionImpossible|conflicting dependencies/.test(out)) return fail("unresolvable", `the requirements conflict: ${lastLines(out, 8)}`);
  } else if (eco === "node") {
    const e404 = /npm error 404 (.*)/.exec(out) ?? /npm ERR! 404 (.*)/.exec(out);
    if (/code E404/.test(out)) return fail("not_found", `the npm registry answered: ${e404?.[1]?.trim() ?? "404 Not Found"}`);
    const etarget = /No matching version found for (\S+)/.exec(out);
    if (/code ETARGET/.test(out) || etarget) return fail("unresolvable", `no version matches ${etarget?.[1] ?? "the request"}`);
    if (/code ERESOLVE/.test(out)) return fail("unresolvable", `the dependencies conflict: ${lastLines(out, 8)}`);
  } else {
    if (/(?:404|410) Not Found|unknown revision|no matching versions/.test(out)) return fail("not_found", lastLines(out, 4));
  }
  return fail("failed", lastLines(out, 12) || "the installer failed without a message");
}

interface PipReport {
  install?: { metadata?: { name?: string; version?: string }; download_info?: { url?: string; archive_info?: { hashes?: Record<string, string>; hash?: string } } }[];
}

/** Reads what was installed (the installer's own record) into a lock: one line per package. */
export function readLock(eco: Ecosystem, dir: string): { packages: InstalledPackage[]; lock: string } {
  let packages: InstalledPackage[] = [];
  if (eco === "python") {
    const report = JSON.parse(fs.readFileSync(path.join(dir, ".petri-report.json"), "utf8")) as PipReport;
    packages = (report.install ?? []).map((i) => {
      const hashes = i.download_info?.archive_info?.hashes ?? {};
      const legacy = i.download_info?.archive_info?.hash?.replace("=", ":");
      return {
        name: (i.metadata?.name ?? "?").toLowerCase().replace(/[-_.]+/g, "-"),
        version: i.metadata?.version ?? "?",
        hash: hashes.sha256 ? `sha256:${hashes.sha256}` : legacy ?? "",
        source: i.download_info?.url ?? "",
      };
    });
  } else if (eco === "node") {
    const lock = JSON.parse(fs.readFileSync(path.join(dir, "package-lock.json"), "utf8")) as { packages?: Record<string, { version?: string; resolved?: string; integrity?: string; link?: boolean }> };
    for (const [p, v] of Object.entries(lock.packages ?? {})) {
      if (!p || v.link) continue;
      const name = p.slice(p.lastIndexOf("node_modules/") + "node_modules/".length);
      packages.push({ name, version: v.version ?? "?", hash: v.integrity ?? "", source: v.resolved ?? "" });
    }
  } else {
    const text = fs.readFileSync(path.join(dir, ".petri-download.json"), "utf8");
    for (const m of text.matchAll(/\{[^{}]*"Path":\s*"([^"]+)"[^{}]*"Version":\s*"([^"]+)"[^{}]*\}/g)) {
      const sum = /"Sum":\s*"([^"]+)"/.exec(m[0])?.[1] ?? "";
      packages.push({ name: m[1], version: m[2], hash: sum, source: "" });
    }
  }
  packages.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : 1));
  const lock = packages.map((p) => `${p.name}==${p.version} ${p.hash}`.trim()).join("\n") + "\n";
  return { packages, lock };
}
