import { builtinModules } from "node:module";
import { init as initLexer, parse as lexModule } from "es-module-lexer";

/**
 * JS/TS import specifiers, read with es-module-lexer: a real lexer (strings, template literals,
 * comments, regular expressions vs division), ~100× faster than building an AST, and tolerant
 * of TypeScript syntax. It reads ESM `import`/`export … from`/`import()`; CommonJS `require(`
 * is rewritten in place to the same-length ` import(` before lexing so the lexer finds it with
 * the same care — a `require("x")` inside a string or comment is never taken for one.
 * When the lexer refuses a file (JSX, syntax errors) oxc-parser, a full parser, reads it.
 */
export interface JsImports {
  /** Bare specifiers (packages, builtins), in source order, without duplicates. */
  bare: string[];
  /** Relative specifiers ("./x", "../y"): workspace modules to follow. */
  relative: string[];
}

let ready = false;
/** es-module-lexer compiles a small WebAssembly module once; call at start-up to keep it off a run's path. */
export async function initJsScanner(): Promise<void> {
  await initLexer;
  ready = true;
}

const BUILTINS = new Set(builtinModules.flatMap((m) => [m, m.split("/")[0]]));

export function isNodeBuiltin(spec: string): boolean {
  return spec.startsWith("node:") || BUILTINS.has(spec) || BUILTINS.has(spec.split("/")[0]);
}

/**
 * The package a bare specifier names: "@scope/pkg/sub/path" → "@scope/pkg", "lodash/fp" →
 * "lodash". Null for builtins, relative or absolute paths, URLs and malformed names.
 */
export function packageOf(spec: string): string | null {
  if (!spec || isNodeBuiltin(spec) || /^[./]/.test(spec) || /^[a-z][a-z0-9+.-]*:/i.test(spec)) return null;
  const parts = spec.split("/");
  const name = spec.startsWith("@") ? (parts.length >= 2 ? `${parts[0]}/${parts[1]}` : null) : parts[0];
  if (!name || !/^(?:@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/.test(name) || name.length > 214) return null;
  return name;
}

const REQUIRE = /(^|[^\w$.])require(\s*)\(/g;

export function scanJsImports(src: string, filename = "main.js"): JsImports {
  if (!ready) throw new Error("initJsScanner() was not awaited");
  const specs: string[] = [];
  try {
    // Same length, so the lexer's offsets still point into the original text.
    const text = src.replace(REQUIRE, (_m, p: string, ws: string) => `${p} import${ws}(`);
    const [imports] = lexModule(text, filename);
    for (const im of imports) {
      if (im.n === undefined) continue;
      // `import type …` / `export type … from` are erased by TypeScript: nothing to install.
      if (im.d === -1 && /^(?:import|export)\s+type\s/.test(text.slice(im.ss, im.ss + 12))) continue;
      specs.push(im.n);
    }
  } catch {
    specs.push(...scanWithParser(src, filename));
  }
  const bare: string[] = [];
  const relative: string[] = [];
  for (const s of new Set(specs)) {
    if (s.startsWith("./") || s.startsWith("../") || s === "." || s === "..") relative.push(s);
    else if (!s.startsWith("/")) bare.push(s);
  }
  return { bare, relative };
}

type OxcParse = typeof import("oxc-parser").parseSync;
let oxcParse: OxcParse | null = null;
/** Loaded on first need: most files never need it. */
export async function loadFallbackParser(): Promise<void> {
  oxcParse ??= (await import("oxc-parser")).parseSync;
}

function scanWithParser(src: string, filename: string): string[] {
  if (!oxcParse) return [];
  const lang = /\.tsx$/.test(filename) ? "tsx" : /\.[cm]?ts$/.test(filename) ? "ts" : "jsx";
  const r = oxcParse(filename, src, { lang });
  const out: string[] = [];
  for (const im of r.module.staticImports) {
    if (!im.entries.length || im.entries.some((e) => !e.isType)) out.push(im.moduleRequest.value);
  }
  for (const ex of r.module.staticExports) for (const e of ex.entries) if (e.moduleRequest && !e.isType) out.push(e.moduleRequest.value);
  for (const d of r.module.dynamicImports) {
    const m = /^\s*(['"])([^'"]+)\1\s*$/.exec(src.slice(d.moduleRequest.start, d.moduleRequest.end));
    if (m) out.push(m[2]);
  }
  for (const m of src.matchAll(/(?:^|[^\w$.])require\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g)) out.push(m[2]);
  return out;
}
