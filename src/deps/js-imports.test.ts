import { before, test } from "node:test";
import assert from "node:assert/strict";
import { initJsScanner, isNodeBuiltin, loadFallbackParser, packageOf, scanJsImports } from "./js-imports.js";

before(async () => {
  await initJsScanner();
  await loadFallbackParser();
});

test("ESM, dynamic import and require; scoped packages and subpaths name their package", () => {
  const src = [
    'import _ from "lodash";',
    "import { format } from 'date-fns/format';",
    'import * as z from "@scope/pkg/sub/path.js";',
    'export { x } from "re-exported";',
    'const d = require("dayjs");',
    "const later = await import('chalk');",
    "const fs = require('node:fs'); const p = require('path'); import { pipeline } from 'stream/promises';",
    'import local from "./local.js";',
    'const up = require("../up");',
  ].join("\n");
  const r = scanJsImports(src, "main.mjs");
  assert.deepEqual(r.bare, ["lodash", "date-fns/format", "@scope/pkg/sub/path.js", "re-exported", "dayjs", "chalk", "node:fs", "path", "stream/promises"]);
  assert.deepEqual(r.relative, ["./local.js", "../up"]);
  assert.deepEqual(r.bare.map(packageOf).filter(Boolean), ["lodash", "date-fns", "@scope/pkg", "re-exported", "dayjs", "chalk"]);
});

test("strings, comments, regexes and template literals are not imports", () => {
  const src = [
    '// require("commented")',
    "/* import x from 'block' */",
    "const s = \"require('in-string')\";",
    "const re = /require\\(\"in-regex\"\\)/g;",
    "const t = `import y from 'in-template'`;",
    "const half = a / 2 / require('real');",
    "obj.require('method-call');",
  ].join("\n");
  assert.deepEqual(scanJsImports(src, "x.js").bare, ["real"]);
});

test("TypeScript: type-only imports are erased, the rest is read", () => {
  const src = [
    'import type { Foo } from "types-only";',
    'export type { Bar } from "types-only-2";',
    'import { z } from "zod";',
    "interface A<T> { a: Array<T> }",
    "function f<T extends object>(x: T): x is T { return true; }",
    "const n: number = (1 as number) / 2;",
  ].join("\n");
  assert.deepEqual(scanJsImports(src, "main.ts").bare, ["zod"]);
});

test("JSX is read by the fallback parser", () => {
  const src = 'import React from "react";\nconst el = <div className="x">{require("in-jsx")}</div>;\nexport default el;\n';
  assert.deepEqual(scanJsImports(src, "app.jsx").bare.sort(), ["in-jsx", "react"]);
});

test("builtins (with and without node:) and non-package specifiers are excluded", () => {
  for (const b of ["fs", "node:fs", "fs/promises", "node:test", "child_process", "worker_threads"]) assert.equal(isNodeBuiltin(b), true, b);
  assert.equal(packageOf("lodash"), "lodash");
  assert.equal(packageOf("@types/node/fs"), "@types/node");
  for (const bad of ["./x", "/abs", "https://cdn.example/x.js", "data:text/javascript,1", "@scope", "Upper", "node:fs"]) assert.equal(packageOf(bad), null, bad);
});
