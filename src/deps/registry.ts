import semver from "semver";
import { PetriError } from "../errors.js";
import type { Ecosystem, Requirement } from "./specs.js";

/**
 * Asks the configured registry whether a requirement exists before an install run is started,
 * so a typo answers 400 DEPENDENCY_NOT_FOUND quoting the registry, in a fraction of the time an
 * install run takes. These are Petri's own GETs of public metadata, not the sandboxed install.
 * A registry Petri cannot reach gives no verdict ("unknown"): the install run then decides.
 */
export type Verdict = { ok: true } | { ok: false; code: "DEPENDENCY_NOT_FOUND" | "DEPENDENCY_UNRESOLVABLE"; message: string } | { ok: null; reason: string };

export interface RegistryUrls {
  pipIndexUrl: string;
  npmRegistry: string;
  goProxy: string;
}

const TIMEOUT_MS = 15_000;

async function get(url: string, accept: string): Promise<{ status: number; statusText: string; body: string } | { error: string }> {
  try {
    const res = await fetch(url, { headers: { accept }, signal: AbortSignal.timeout(TIMEOUT_MS), redirect: "follow" });
    const body = res.status === 200 ? await res.text() : (await res.text().catch(() => "")).slice(0, 300);
    return { status: res.status, statusText: res.statusText, body };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string } };
    return { error: err.cause?.code ?? err.message };
  }
}

/** Go module paths are case-encoded in proxy URLs: an upper-case letter becomes "!" + lower case. */
export function goEscape(mod: string): string {
  return mod.replace(/[A-Z]/g, (c) => "!" + c.toLowerCase());
}

export async function checkRequirement(eco: Ecosystem, r: Requirement, urls: RegistryUrls): Promise<Verdict> {
  if (eco === "python") {
    const url = `${urls.pipIndexUrl}/${r.name}/`;
    const res = await get(url, "text/html");
    if ("error" in res) return { ok: null, reason: res.error };
    if (res.status === 404) return { ok: false, code: "DEPENDENCY_NOT_FOUND", message: `no package "${r.name}" on the Python index ${urls.pipIndexUrl}: it answered ${res.status} ${res.statusText}` };
    return res.status === 200 ? { ok: true } : { ok: null, reason: `HTTP ${res.status}` };
  }
  if (eco === "node") {
    const url = `${urls.npmRegistry}/${r.name.replace("/", "%2f")}`;
    const res = await get(url, "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8");
    if ("error" in res) return { ok: null, reason: res.error };
    if (res.status === 404) return { ok: false, code: "DEPENDENCY_NOT_FOUND", message: `no package "${r.name}" on the npm registry ${urls.npmRegistry}: it answered ${res.status} ${res.statusText}` };
    if (res.status !== 200) return { ok: null, reason: `HTTP ${res.status}` };
    if (!r.range) return { ok: true };
    let doc: { versions?: Record<string, unknown>; "dist-tags"?: Record<string, string> };
    try {
      doc = JSON.parse(res.body) as typeof doc;
    } catch {
      return { ok: null, reason: "unreadable registry answer" };
    }
    const versions = Object.keys(doc.versions ?? {});
    const tags = doc["dist-tags"] ?? {};
    if (tags[r.range] || semver.maxSatisfying(versions, r.range)) return { ok: true };
    return { ok: false, code: "DEPENDENCY_UNRESOLVABLE", message: `no version of "${r.name}" on ${urls.npmRegistry} satisfies "${r.range}" (latest is ${tags.latest ?? "none"})` };
  }
  const base = `${urls.goProxy}/${goEscape(r.name)}/@v/`;
  const res = await get(`${base}list`, "text/plain");
  if ("error" in res) return { ok: null, reason: res.error };
  if (res.status === 404 || res.status === 410) {
    return { ok: false, code: "DEPENDENCY_NOT_FOUND", message: `no module "${r.name}" on the Go module proxy ${urls.goProxy}: it answered ${res.status} ${res.statusText}` };
  }
  if (res.status !== 200) return { ok: null, reason: `HTTP ${res.status}` };
  if (r.range && /^v\d/.test(r.range) && !res.body.split("\n").includes(r.range)) {
    const info = await get(`${base}${r.range}.info`, "application/json");
    if (!("error" in info) && (info.status === 404 || info.status === 410)) {
      return { ok: false, code: "DEPENDENCY_UNRESOLVABLE", message: `module "${r.name}" has no version ${r.range} on ${urls.goProxy}` };
    }
  }
  return { ok: true };
}

/** Throws the registry's verdict for the first declared requirement that does not exist. */
export async function checkDeclared(eco: Ecosystem, reqs: Requirement[], urls: RegistryUrls): Promise<void> {
  const verdicts = await Promise.all(reqs.map((r) => checkRequirement(eco, r, urls)));
  verdicts.forEach((v, i) => {
    if (v.ok === false) throw new PetriError(v.code, v.message, { package: reqs[i].name, ecosystem: eco });
  });
}
