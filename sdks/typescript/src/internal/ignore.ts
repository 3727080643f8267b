/**
 * A small matcher for gitignore syntax, used by `sync` and `files.upload` with `.petriignore`.
 * Supported: `#` comments, `!` negation (last matching rule wins), `*`, `?`, `[…]`, `**`,
 * a leading or inner `/` anchoring the pattern to the root, a trailing `/` for directories only,
 * and `\` escapes. As in git, a file inside an ignored directory cannot be re-included, because
 * the walker never descends into an ignored directory.
 */

/** Skipped unless a `.petriignore` re-includes them with `!name/`. */
export const DEFAULT_IGNORES: readonly string[] = Object.freeze([".git/", "node_modules/", "__pycache__/", ".venv/"]);

export const IGNORE_FILE = ".petriignore";

interface Rule {
  regex: RegExp;
  negate: boolean;
  dirOnly: boolean;
}

function globToRegex(glob: string): string {
  let out = "";
  let i = 0;
  while (i < glob.length) {
    const c = glob[i];
    if (c === "*") {
      if (glob[i + 1] === "*") {
        const atStart = i === 0 || glob[i - 1] === "/";
        const atEnd = i + 2 === glob.length || glob[i + 2] === "/";
        if (atStart && atEnd) {
          if (i + 2 === glob.length) {
            out += ".*"; // trailing `/**`: everything inside
            i += 2;
          } else {
            out += "(?:.*/)?"; // `**/`: zero or more directories
            i += 3;
          }
          continue;
        }
        out += "[^/]*"; // `**` inside a name is a plain `*`
        i += 2;
        continue;
      }
      out += "[^/]*";
      i += 1;
    } else if (c === "?") {
      out += "[^/]";
      i += 1;
    } else if (c === "[") {
      const close = glob.indexOf("]", i + 2);
      if (close === -1) {
        out += "\\[";
        i += 1;
        continue;
      }
      let body = glob.slice(i + 1, close);
      let neg = false;
      if (body[0] === "!" || body[0] === "^") {
        neg = true;
        body = body.slice(1);
      }
      body = body.replace(/\\/g, "\\\\").replace(/\]/g, "\\]");
      out += `[${neg ? "^" : ""}${body}]`;
      i = close + 1;
    } else if (c === "\\" && i + 1 < glob.length) {
      out += glob[i + 1].replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
      i += 2;
    } else {
      out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
      i += 1;
    }
  }
  return out;
}

/** Parses one line of a gitignore file; undefined for blanks and comments. */
function parseLine(raw: string): Rule | undefined {
  let line = raw.replace(/\r$/, "");
  // Trailing spaces are ignored unless escaped.
  line = line.replace(/(?<!\\)\s+$/, "");
  if (line === "" || line.startsWith("#")) return undefined;
  let negate = false;
  if (line.startsWith("!")) {
    negate = true;
    line = line.slice(1);
  } else if (line.startsWith("\\!") || line.startsWith("\\#")) {
    line = line.slice(1);
  }
  let dirOnly = false;
  if (line.endsWith("/") && !line.endsWith("\\/")) {
    dirOnly = true;
    line = line.replace(/\/+$/, "");
  }
  if (line === "") return undefined;
  // A slash at the start or in the middle anchors the pattern to the root.
  const anchored = line.includes("/");
  if (line.startsWith("/")) line = line.slice(1);
  const body = globToRegex(line);
  const regex = new RegExp(anchored || line.startsWith("**/") ? `^${body}$` : `^(?:.*/)?${body}$`, "s");
  return { regex, negate, dirOnly };
}

export class IgnoreMatcher {
  private readonly rules: Rule[];

  constructor(patterns: Iterable<string>) {
    this.rules = [];
    for (const p of patterns) {
      const r = parseLine(p);
      if (r) this.rules.push(r);
    }
  }

  /** Parses the text of a gitignore-style file. */
  static fromText(text: string, base: Iterable<string> = []): IgnoreMatcher {
    return new IgnoreMatcher([...base, ...text.split("\n")]);
  }

  /**
   * Whether a path (relative, `/`-separated) is ignored by the rules themselves. Callers walking
   * a tree must also treat everything under an ignored directory as ignored.
   */
  ignores(relPath: string, isDir: boolean): boolean {
    let ignored = false;
    for (const r of this.rules) {
      if (r.dirOnly && !isDir) continue;
      if (r.regex.test(relPath)) ignored = !r.negate;
    }
    return ignored;
  }

  /** Like `ignores`, but also true when any parent directory is ignored (git's semantics). */
  ignoresPath(relPath: string, isDir: boolean): boolean {
    const parts = relPath.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (this.ignores(parts.slice(0, i).join("/"), true)) return true;
    }
    return this.ignores(relPath, isDir);
  }
}
