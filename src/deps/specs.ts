import semver from "semver";
import { parse as parseToml } from "smol-toml";
import { PetriError } from "../errors.js";
import { normalizeDistribution } from "./python-names.js";

/**
 * Dependency specs as clients declare them, checked before anything is installed. Only names
 * from the configured registries are accepted: a URL, a path, a VCS reference or a pip/npm
 * option would let a request pick its own source (`--index-url`, `git+https://…`, `file:`,
 * `../x`) and bypass the registries the operator chose, so each is refused with a 400.
 */
export type Ecosystem = "python" | "node" | "go";
export const ECOSYSTEMS: readonly Ecosystem[] = ["python", "node", "go"];

/** Which package ecosystem a language installs from; null for languages without one (bash). */
export function ecosystemFor(language: string): Ecosystem | null {
  if (language === "python") return "python";
  if (language === "node" || language === "typescript") return "node";
  if (language === "go") return "go";
  return null;
}

export interface Requirement {
  /** Normalized package name (PEP 503 for Python, as-is for npm, module path for Go). */
  name: string;
  /** The spec as the installer gets it ("pandas>=2", "lodash@^4", "golang.org/x/text@v0.14.0"). */
  spec: string;
  /** Version constraint part, "" when any version will do. */
  range: string;
}

export type DeclaredDependencies = Partial<Record<Ecosystem, string[]>>;

const MAX_SPECS = 256;
const MAX_SPEC_LENGTH = 300;

function refuse(spec: string, why: string): never {
  throw new PetriError("DEPENDENCY_INVALID", `dependency "${spec.slice(0, 120)}" is refused: ${why}`, { spec: spec.slice(0, 300) });
}

/** What every ecosystem refuses: options, URLs, paths, VCS and file references. */
function refuseSources(raw: string): void {
  const s = raw.trim();
  if (!s) refuse(raw, "empty");
  if (s.length > MAX_SPEC_LENGTH) refuse(raw, `longer than ${MAX_SPEC_LENGTH} characters`);
  if (/[\u0000-\u001f\u007f]/.test(s)) refuse(raw, "control characters");
  if (s.startsWith("-")) refuse(raw, "installer options are not accepted; the registry is set by the server");
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s) || /\b(?:git|hg|svn|bzr)\+/i.test(s) || /:\/\//.test(s)) refuse(raw, "a URL; only package names from the configured registry are installed");
  if (/^(?:file|link|workspace|portal|patch|git|github|gitlab|bitbucket|gist|npm|http|https):/i.test(s)) refuse(raw, "a source reference; only package names from the configured registry are installed");
  if (/^[.~/\\]/.test(s) || s.includes("\\") || /(?:^|\/)\.\.(?:\/|$)/.test(s)) refuse(raw, "a path; only package names from the configured registry are installed");
}

const PY_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const PY_VERSION_CLAUSE = /^\s*(~=|===|==|!=|<=|>=|<|>)\s*([A-Za-z0-9.*+!_-]+)\s*$/;
const PY_MARKER = /^[A-Za-z0-9_.\s'"<>=!~(),-]*$/;

export function parsePythonRequirement(raw: string): Requirement {
  refuseSources(raw);
  const s = raw.trim();
  const [body, marker] = splitOnce(s, ";");
  if (marker !== undefined && !PY_MARKER.test(marker)) refuse(raw, "an environment marker with unexpected characters");
  if (body.includes("@")) refuse(raw, "a direct reference (name @ url); only versions from the configured index are installed");
  const m = /^\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?\s*(.*)$/.exec(body);
  if (!m || !PY_NAME.test(m[1])) refuse(raw, "not a Python requirement (name, optional [extras], optional version specifiers)");
  const extras = m[2] ?? "";
  if (extras && !/^\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\]$/.test(extras)) refuse(raw, "malformed [extras]");
  let range = m[3].trim();
  if (range.startsWith("(") && range.endsWith(")")) range = range.slice(1, -1).trim();
  if (range) {
    for (const clause of range.split(",")) {
      if (!PY_VERSION_CLAUSE.test(clause)) refuse(raw, `"${clause.trim()}" is not a version specifier (==, >=, ~=, …)`);
    }
  }
  const name = normalizeDistribution(m[1]);
  const cleanRange = range.replace(/\s+/g, "");
  const spec = `${name}${extras.replace(/\s+/g, "")}${cleanRange}${marker !== undefined ? ` ; ${marker.trim()}` : ""}`;
  return { name, spec, range: cleanRange };
}

const NPM_NAME = /^(?:@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/;
const NPM_TAG = /^[A-Za-z][A-Za-z0-9._-]{0,63}$/;

/** `name`, `name@range`, `@scope/name@range`; range a semver range or a dist-tag. */
export function parseNpmSpec(raw: string): Requirement {
  refuseSources(raw);
  const s = raw.trim();
  const at = s.indexOf("@", s.startsWith("@") ? 1 : 0);
  const name = at < 0 ? s : s.slice(0, at);
  const range = at < 0 ? "" : s.slice(at + 1).trim();
  return npmRequirement(name, range, raw);
}

export function npmRequirement(name: string, range: string, raw = `${name}@${range}`): Requirement {
  if (!NPM_NAME.test(name) || name.length > 214) refuse(raw, "not an npm package name");
  if (range) {
    refuseSources(range);
    if (range.includes("/") || range.includes(":")) refuse(raw, "not a version range or dist-tag");
    if (semver.validRange(range) === null && !NPM_TAG.test(range)) refuse(raw, `"${range}" is not a version range or dist-tag`);
  }
  return { name, spec: range ? `${name}@${range}` : name, range };
}

const GO_MODULE = /^[a-z0-9][a-z0-9.-]*\.[a-z]{2,}(?:\/[A-Za-z0-9._~+-]+)*$/;
const GO_VERSION = /^(?:latest|upgrade|patch|v\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+incompatible)?)$/;

export function parseGoSpec(raw: string): Requirement {
  refuseSources(raw);
  const s = raw.trim();
  const [mod, version] = splitOnce(s, "@");
  if (!GO_MODULE.test(mod) || mod.split("/").some((p) => p === "." || p === "..")) refuse(raw, "not a Go module path (host.tld/path)");
  if (version !== undefined && !GO_VERSION.test(version)) refuse(raw, `"${version}" is not a Go module version (v1.2.3, latest)`);
  return { name: mod, spec: version ? `${mod}@${version}` : mod, range: version ?? "" };
}

export function parseSpec(eco: Ecosystem, raw: string): Requirement {
  if (typeof raw !== "string") refuse(String(raw), "not a string");
  return eco === "python" ? parsePythonRequirement(raw) : eco === "node" ? parseNpmSpec(raw) : parseGoSpec(raw);
}

/** Validates a `dependencies` object from a request; returns normalized requirements per ecosystem. */
export function parseDeclared(deps: unknown): Partial<Record<Ecosystem, Requirement[]>> {
  if (deps === undefined || deps === null) return {};
  if (typeof deps !== "object" || Array.isArray(deps)) throw new PetriError("VALIDATION_ERROR", "`dependencies` must be an object like {\"python\": [\"pandas>=2\"]}");
  const out: Partial<Record<Ecosystem, Requirement[]>> = {};
  for (const [k, v] of Object.entries(deps)) {
    if (!(ECOSYSTEMS as readonly string[]).includes(k)) throw new PetriError("VALIDATION_ERROR", `dependencies: unknown ecosystem "${k}"; known: ${ECOSYSTEMS.join(", ")}`);
    if (!Array.isArray(v)) throw new PetriError("VALIDATION_ERROR", `dependencies.${k} must be a list of package specs`);
    if (v.length > MAX_SPECS) throw new PetriError("VALIDATION_ERROR", `dependencies.${k}: at most ${MAX_SPECS} packages`);
    out[k as Ecosystem] = v.map((s) => parseSpec(k as Ecosystem, s as string));
  }
  return out;
}

/** requirements.txt: one requirement a line; comments and blank lines skipped; options refused. */
export function parseRequirementsTxt(text: string): Requirement[] {
  const out: Requirement[] = [];
  for (const raw of text.replace(/\\\r?\n/g, " ").split(/\r?\n/)) {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (!line) continue;
    out.push(parsePythonRequirement(line));
  }
  return out;
}

/** pyproject.toml: `[project].dependencies` (PEP 621). */
export function parsePyproject(text: string): Requirement[] {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new PetriError("DEPENDENCY_INVALID", `pyproject.toml is not valid TOML: ${(e as Error).message.split("\n")[0]}`);
  }
  const deps = (doc.project as { dependencies?: unknown } | undefined)?.dependencies;
  if (deps === undefined) return [];
  if (!Array.isArray(deps)) throw new PetriError("DEPENDENCY_INVALID", "pyproject.toml: project.dependencies must be a list");
  return deps.map((d) => parsePythonRequirement(String(d)));
}

/** package.json: `dependencies` (and `optionalDependencies`); each value checked like a spec. */
export function parsePackageJson(text: string): Requirement[] {
  let doc: { dependencies?: Record<string, unknown>; optionalDependencies?: Record<string, unknown> };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (e) {
    throw new PetriError("DEPENDENCY_INVALID", `package.json is not valid JSON: ${(e as Error).message}`);
  }
  const out: Requirement[] = [];
  for (const field of [doc?.dependencies, doc?.optionalDependencies]) {
    if (!field) continue;
    if (typeof field !== "object") throw new PetriError("DEPENDENCY_INVALID", "package.json: dependencies must be an object");
    for (const [name, range] of Object.entries(field)) out.push(npmRequirement(name, String(range ?? "").trim() === "*" ? "" : String(range ?? "").trim()));
  }
  return out;
}

/** go.mod: `require` lines (single and block). `replace` to a local path is refused. */
export function parseGoMod(text: string): Requirement[] {
  const out: Requirement[] = [];
  const clean = text.replace(/\/\/[^\n]*/g, "");
  for (const m of clean.matchAll(/^\s*replace\s+(?:\(([^)]*)\)|(.*))$/gm)) {
    const body = m[1] ?? m[2] ?? "";
    if (/=>\s*[./]/.test(body)) throw new PetriError("DEPENDENCY_INVALID", "go.mod: a replace directive to a local path is not installed; vendor the module instead");
  }
  for (const m of clean.matchAll(/^\s*require\s+(?:\(([^)]*)\)|(.*))$/gm)) {
    const body = m[1] ?? m[2] ?? "";
    for (const line of body.split("\n")) {
      const parts = line.trim().split(/\s+/);
      if (parts.length >= 2 && parts[0]) out.push(parseGoSpec(`${parts[0]}@${parts[1]}`));
    }
  }
  return out;
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

/** Merges requirement lists: a later entry for the same name replaces an earlier one. */
export function mergeRequirements(...lists: Requirement[][]): Requirement[] {
  const byName = new Map<string, Requirement>();
  for (const list of lists) for (const r of list) {
    const prev = byName.get(r.name);
    // An unversioned detection never overrides a declared constraint.
    if (prev && !r.range && prev.range) continue;
    byName.set(r.name, r);
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
