import fs from "node:fs";
import path from "node:path";

/**
 * Reads the host's own apt sources so images are built from whatever mirror the host is
 * configured for (no registry or mirror name is written into Petri). Only entries for the
 * host's Debian release and its -updates/-security suites are kept: third-party repositories
 * on the host (vendor tools, language repos) have no business in a runtime image.
 */
export interface AptSource {
  uri: string;
  suite: string;
  components: string[];
  signedBy?: string;
}

export function hostCodename(osRelease = "/etc/os-release"): string {
  const text = fs.readFileSync(osRelease, "utf8");
  const m = /^VERSION_CODENAME=("?)([a-z0-9-]+)\1$/m.exec(text);
  if (!m) throw new Error(`cannot find VERSION_CODENAME in ${osRelease}`);
  return m[2];
}

export function parseDeb822(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields: Record<string, string> = {};
    let last = "";
    for (const line of stanza.split("\n")) {
      if (line.startsWith("#") || line.trim() === "") continue;
      if (/^\s/.test(line) && last) { fields[last] += " " + line.trim(); continue; }
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m) { last = m[1].toLowerCase(); fields[last] = m[2].trim(); }
    }
    if (fields.enabled === "no") continue;
    if (!(fields.types ?? "").split(/\s+/).includes("deb")) continue;
    for (const uri of (fields.uris ?? "").split(/\s+/).filter(Boolean)) {
      for (const suite of (fields.suites ?? "").split(/\s+/).filter(Boolean)) {
        out.push({ uri, suite, components: (fields.components ?? "main").split(/\s+/).filter(Boolean), signedBy: fields["signed-by"] });
      }
    }
  }
  return out;
}

export function parseOneLine(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line.startsWith("deb ")) continue;
    const rest = line.slice(4).replace(/\[[^\]]*\]\s*/, "").trim().split(/\s+/);
    if (rest.length < 2) continue;
    out.push({ uri: rest[0], suite: rest[1], components: rest.slice(2).length ? rest.slice(2) : ["main"] });
  }
  return out;
}

export function hostAptSources(root = "/etc/apt", codename = hostCodename()): AptSource[] {
  const all: AptSource[] = [];
  const main = path.join(root, "sources.list");
  if (fs.existsSync(main)) all.push(...parseOneLine(fs.readFileSync(main, "utf8")));
  const dir = path.join(root, "sources.list.d");
  if (fs.existsSync(dir)) {
    for (const f of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, f);
      if (f.endsWith(".sources")) all.push(...parseDeb822(fs.readFileSync(p, "utf8")));
      else if (f.endsWith(".list")) all.push(...parseOneLine(fs.readFileSync(p, "utf8")));
    }
  }
  const suites = new Set([codename, `${codename}-updates`, `${codename}-security`]);
  const kept = all.filter((s) => suites.has(s.suite));
  const seen = new Set<string>();
  return kept.filter((s) => {
    const k = `${s.uri} ${s.suite}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The host's Debian sources moved to another suite of the same archive: the host's mirror for
 * `bookworm`, `bookworm-updates` and `bookworm-security` serves `trixie`, `trixie-updates` and
 * `trixie-security` too. Images are built from these, so a newer Debian than the host's needs no
 * new mirror and no host name in Petri.
 */
export function suiteSources(sources: AptSource[], hostCodename: string, suite: string): AptSource[] {
  if (suite === hostCodename) return sources;
  return sources.map((s) => ({ ...s, suite: s.suite === hostCodename ? suite : s.suite.replace(`${hostCodename}-`, `${suite}-`) }));
}

/** One-line `deb` entries as mmdebstrap takes them for its MIRROR arguments. */
export function toMirrorArgs(sources: AptSource[]): string[] {
  return sources.map((s) => `deb ${s.uri} ${s.suite} ${s.components.join(" ")}`);
}
