/**
 * Which statements the PostgreSQL broker refuses: those that set a role's password. A role may
 * change its own password; done through the broker it would hand the sandbox a credential it
 * knows and lock the vault's stored one out.
 *
 * Statements are classified by their parse tree from libpg-query, the real PostgreSQL parser
 * (compiled to WebAssembly): comments (nested ones too), quoting, dollar quoting, E'' strings
 * and multi-statement texts are understood exactly as the server understands them, so
 * `ALTER/**∕ROLE agent PASSWORD '…'` is an AlterRoleStmt like any other spelling. What a parse
 * tree cannot show is what code will build at run time: bodies of DO blocks and of functions
 * or procedures are refused when they mention a password at all (see docs/vault.md for what
 * stays best effort).
 */
import { loadModule, parseSync, scanSync } from "libpg-query";

let ready: Promise<void> | null = null;

/** Loads the parser (WebAssembly); call once before classify(). */
export function loadSqlGuard(): Promise<void> {
  ready ??= loadModule();
  return ready;
}

export type Verdict = { blocked: false } | { blocked: true; reason: "role_password_change"; detail: string };

const ALLOW: Verdict = { blocked: false };

type Node = Record<string, unknown>;

/** Statement kinds that carry code to run later, and where their body text is. */
function bodiesOf(kind: string, stmt: Node): string[] {
  const texts: string[] = [];
  const defElems = (list: unknown) => (Array.isArray(list) ? list : []).map((x) => (x as Node).DefElem as Node | undefined).filter(Boolean) as Node[];
  const strings = (arg: unknown): string[] => {
    if (!arg || typeof arg !== "object") return [];
    const a = arg as Node;
    if (a.String) return [String((a.String as Node).sval ?? "")];
    if (a.List) return ((a.List as Node).items as unknown[] ?? []).flatMap(strings);
    return [];
  };
  if (kind === "DoStmt") for (const d of defElems(stmt.args)) if (d.defname === "as") texts.push(...strings(d.arg));
  if (kind === "CreateFunctionStmt") {
    for (const d of defElems(stmt.options)) if (d.defname === "as") texts.push(...strings(d.arg));
    // SQL-standard bodies (BEGIN ATOMIC … END) are parsed statements: walked below.
  }
  return texts;
}

function walk(node: unknown, visit: (kind: string, n: Node) => void): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(x, visit);
    return;
  }
  if (!node || typeof node !== "object") return;
  for (const [k, v] of Object.entries(node as Node)) {
    if (/^[A-Z]/.test(k) && v && typeof v === "object" && !Array.isArray(v)) visit(k, v as Node);
    walk(v, visit);
  }
}

function setsPassword(kind: string, n: Node): boolean {
  if (kind !== "AlterRoleStmt" && kind !== "CreateRoleStmt") return false;
  const opts = Array.isArray(n.options) ? n.options : [];
  return opts.some((o) => ((o as Node).DefElem as Node | undefined)?.defname === "password");
}

/**
 * The fallback for text the parser rejects (the server will most likely reject it too, but a
 * parser-version difference must not open a hole): PostgreSQL's own scanner, so comments and
 * quoting are still understood; refuse ALTER/CREATE … ROLE/USER … PASSWORD as keywords.
 */
function scanVerdict(sql: string): Verdict {
  let tokens: { keywordName?: string; tokenName?: string; text?: string }[];
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return /password/i.test(sql) ? { blocked: true, reason: "role_password_change", detail: "unscannable statement mentioning a password" } : ALLOW;
  }
  const words = tokens.map((t) => String(t.text ?? "").toUpperCase());
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== "ALTER" && words[i] !== "CREATE") continue;
    if (words[i + 1] !== "ROLE" && words[i + 1] !== "USER") continue;
    if (words.slice(i + 2).some((w, j) => w === "PASSWORD" && tokens[i + 2 + j].keywordName !== undefined)) {
      return { blocked: true, reason: "role_password_change", detail: "ALTER/CREATE ROLE … PASSWORD (scanned)" };
    }
  }
  return ALLOW;
}

/** Classifies one Query or Parse statement text (which may hold several statements). */
export function classify(sql: string, depth = 0): Verdict {
  let tree: unknown;
  try {
    tree = parseSync(sql);
  } catch {
    return scanVerdict(sql);
  }
  let verdict: Verdict = ALLOW;
  walk(tree, (kind, n) => {
    if (verdict.blocked) return;
    if (setsPassword(kind, n)) {
      verdict = { blocked: true, reason: "role_password_change", detail: `${kind} with PASSWORD` };
      return;
    }
    for (const body of bodiesOf(kind, n)) {
      // Code run later can build any statement at run time (EXECUTE 'ALTER ' || 'ROLE …'):
      // a body that mentions a password at all is refused; a body that is plain SQL is also
      // classified as such.
      if (/password/i.test(body)) {
        verdict = { blocked: true, reason: "role_password_change", detail: `${kind} body mentions a password` };
        return;
      }
      if (depth < 3) {
        const inner = classify(body, depth + 1);
        if (inner.blocked) verdict = inner;
      }
    }
  });
  return verdict;
}
