import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { ttyArgv } from "./tty.js";

test("the tty wrapper quotes every argument for the shell that script starts", () => {
  const argv = ttyArgv(["printf", "%s|", "it's", "a b", "$HOME", "`x`"]);
  assert.equal(argv[0], "script");
  // Run only the shell command script would run (no sandbox needed: printf of fixed strings).
  const cmd = argv[argv.indexOf("-c") + 1].replace(/^stty[^;]*; /, "");
  const r = spawnSync("/bin/sh", ["-c", cmd], { encoding: "utf8" });
  assert.equal(r.stdout, "it's|a b|$HOME|`x`|");
});
