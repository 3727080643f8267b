// Node 20's test runner takes no globs, so the compiled test files are listed here.
// Usage: node scripts/run-tests.mjs [filter…]  (filters are substrings of the file paths)
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const filters = process.argv.slice(2);
const files = [];
for (const root of ["dist/src", "dist/test"]) {
  if (!fs.existsSync(root)) continue;
  for (const e of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    const full = path.join(e.parentPath ?? e.path, e.name);
    if (e.isFile() && e.name.endsWith(".test.js") && (filters.length === 0 || filters.some((f) => full.includes(f)))) files.push(full);
  }
}
files.sort();
if (files.length === 0) {
  console.error("no test files found; run `npm run build` first");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=600000", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
