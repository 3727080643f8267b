/**
 * Go imports. Go's grammar puts every import in `import "x"` or `import ( … )` declarations
 * right after the package clause, before any other declaration, so a scan of that prologue
 * (comments and raw strings skipped) is exact, the way `go list` itself reads imports first.
 */
export function scanGoImports(src: string): string[] {
  const out = new Set<string>();
  // Blank comments out first (keeping strings): `//…` and `/*…*/`, but not inside "…" or `…`.
  const text = src.replace(/"(?:\\.|[^"\\\n])*"|`[^`]*`|\/\/[^\n]*|\/\*[\s\S]*?\*\//g, (m) => (m[0] === "/" ? " " : m));
  const decl = /\bimport\s*(?:\(([^)]*)\)|((?:[A-Za-z_.][\w]*\s+)?(?:"[^"\n]*"|`[^`]*`)))/g;
  for (const m of text.matchAll(decl)) {
    const body = m[1] ?? m[2] ?? "";
    for (const s of body.matchAll(/"((?:\\.|[^"\\\n])*)"|`([^`]*)`/g)) out.add(s[1] ?? s[2]);
  }
  return [...out];
}

/** Standard library packages have no dot in their first path element ("net/http", "fmt"). */
export function isGoStdlib(importPath: string): boolean {
  const first = importPath.split("/")[0];
  return !first.includes(".");
}
