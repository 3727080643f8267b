/**
 * Python imports, read by a static scan instead of Python's `ast` module: detection runs before
 * every run and must cost a few milliseconds, and starting a sandboxed interpreter costs tens.
 * The scan is a real tokenizer for the parts that matter — comments, all string forms (prefixes,
 * triple quotes, escapes), line continuations and bracket nesting — so an `import` inside a
 * string, a comment or a docstring is never taken for one, and a statement split over lines is.
 *
 * What it reports: absolute imports (`import a.b as c, d`, `from a.b import c`), string-literal
 * `__import__("x")` and `importlib.import_module("x")`. Relative imports (`from . import x`)
 * are returned apart, as workspace-local. Imports under `if`/`try` count too: a module tried and
 * then replaced by a fallback is reported, and the installer skips what the registry lacks.
 */
export interface PythonImports {
  /** Dotted module names imported absolutely, in source order, without duplicates. */
  modules: string[];
  /** Relative imports as (level, module) — `from ..a import b` is {level: 2, module: "a", names: ["b"]}. */
  relative: { level: number; module: string; names: string[] }[];
}

type Tok = { t: "name" | "op" | "str" | "nl"; v: string };

// Character classes by code, not regex: the tokenizer looks at every character of the file.
function isNameStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 0xc0;
}
function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= 48 && c <= 57);
}
const STRING_PREFIX = /^(?:[rRbBuUfFtT]|[rR][bBfFtT]|[bBfFtT][rR])$/;

function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let depth = 0;
  let i = 0;
  const n = src.length;
  while (i < n) {
    const c = src[i];
    if (c === "#") {
      while (i < n && src[i] !== "\n") i++;
      continue;
    }
    if (c === "\\" && (src[i + 1] === "\n" || (src[i + 1] === "\r" && src[i + 2] === "\n"))) {
      i += src[i + 1] === "\n" ? 2 : 3;
      continue;
    }
    if (c === "\n") {
      if (depth === 0 && out.length && out[out.length - 1].t !== "nl") out.push({ t: "nl", v: "\n" });
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\f") {
      i++;
      continue;
    }
    if (c === "'" || c === '"') {
      i = readString(src, i, out);
      continue;
    }
    if (isNameStart(src.charCodeAt(i))) {
      let j = i + 1;
      while (j < n && isNameChar(src.charCodeAt(j))) j++;
      const word = src.slice(i, j);
      if ((src[j] === "'" || src[j] === '"') && STRING_PREFIX.test(word)) {
        i = readString(src, j, out);
        continue;
      }
      out.push({ t: "name", v: word });
      i = j;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth = Math.max(0, depth - 1);
    out.push({ t: "op", v: c });
    i++;
  }
  return out;
}

/** Reads a string literal starting at its quote; pushes its (raw) body; returns the index after it. */
function readString(src: string, i: number, out: Tok[]): number {
  const q = src[i];
  const triple = src[i + 1] === q && src[i + 2] === q;
  const close = triple ? q + q + q : q;
  let j = i + (triple ? 3 : 1);
  const start = j;
  while (j < src.length) {
    const c = src[j];
    if (c === "\\") {
      j += 2;
      continue;
    }
    if (!triple && c === "\n") break; // unterminated: stop at the line end like the tokenizer does
    if (src.startsWith(close, j)) {
      out.push({ t: "str", v: src.slice(start, j) });
      return j + close.length;
    }
    j++;
  }
  out.push({ t: "str", v: src.slice(start, j) });
  return j;
}

export function scanPythonImports(src: string): PythonImports {
  const toks = tokenize(src);
  const modules: string[] = [];
  const seen = new Set<string>();
  const relative: PythonImports["relative"] = [];
  const add = (m: string) => {
    if (m && !seen.has(m)) {
      seen.add(m);
      modules.push(m);
    }
  };
  // Reads a dotted name at k; returns [name, next index].
  const dotted = (k: number): [string, number] => {
    let name = "";
    while (k < toks.length && toks[k].t === "name" && toks[k].v !== "import") {
      name += toks[k].v;
      k++;
      if (toks[k]?.t === "op" && toks[k].v === "." && toks[k + 1]?.t === "name") {
        name += ".";
        k++;
      } else break;
    }
    return [name, k];
  };
  for (let k = 0; k < toks.length; k++) {
    const tok = toks[k];
    const prev = toks[k - 1];
    const atStatement = !prev || prev.t === "nl" || (prev.t === "op" && (prev.v === ";" || prev.v === ":"));
    if (tok.t === "name" && tok.v === "import" && atStatement) {
      let j = k + 1;
      for (;;) {
        const [name, next] = dotted(j);
        if (!name) break;
        add(name);
        j = next;
        if (toks[j]?.t === "name" && toks[j].v === "as") j += 2;
        if (toks[j]?.t === "op" && toks[j].v === ",") j++;
        else break;
      }
      k = j - 1;
    } else if (tok.t === "name" && tok.v === "from" && atStatement) {
      let j = k + 1;
      let level = 0;
      while (toks[j]?.t === "op" && toks[j].v === ".") {
        level++;
        j++;
      }
      const [name, next] = dotted(j);
      j = next;
      if (toks[j]?.t !== "name" || toks[j].v !== "import") continue;
      j++;
      const names: string[] = [];
      if (toks[j]?.t === "op" && toks[j].v === "(") j++;
      while (toks[j]?.t === "name") {
        names.push(toks[j].v);
        j++;
        if (toks[j]?.t === "name" && toks[j].v === "as") j += 2;
        if (toks[j]?.t === "op" && toks[j].v === ",") j++;
        else break;
      }
      if (toks[j]?.t === "op" && toks[j].v === "*") names.push("*");
      if (level > 0) relative.push({ level, module: name, names });
      else if (name) add(name);
      k = j - 1;
    } else if (tok.t === "name" && (tok.v === "__import__" || tok.v === "import_module")) {
      // __import__("x") / importlib.import_module("x") with a literal: the dynamic forms LLM code uses.
      const arg = toks[k + 2];
      const after = toks[k + 3];
      if (toks[k + 1]?.v === "(" && arg?.t === "str" && (after?.v === ")" || after?.v === ",") && /^[A-Za-z_][\w.]*$/.test(arg.v)) add(arg.v);
    }
  }
  return { modules, relative };
}

/** The top-level package of a dotted module name ("matplotlib.pyplot" → "matplotlib"). */
export function topLevel(module: string): string {
  const d = module.indexOf(".");
  return d < 0 ? module : module.slice(0, d);
}
