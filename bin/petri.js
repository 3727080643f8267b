#!/usr/bin/env node
// Thin launcher so `npx petri …` works from the repository root after `npm run build`.
import { main } from "../dist/src/cli/main.js";
main(process.argv.slice(2)).then(
  (code) => { if (typeof code === "number") process.exitCode = code; },
  (err) => { console.error(err instanceof Error ? err.message : err); process.exitCode = 1; },
);
