import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openDirNoFollow, openFileNoFollow, parseRelPath } from "./paths.js";
import { PetriError } from "../errors.js";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof PetriError ? e.code : (e as NodeJS.ErrnoException).code;
  }
  return undefined;
}

describe("parseRelPath", () => {
  it("accepts relative paths and normalises . and empty components", () => {
    assert.deepEqual(parseRelPath("a/b/c.py"), ["a", "b", "c.py"]);
    assert.deepEqual(parseRelPath("./a//b/"), ["a", "b"]);
    assert.deepEqual(parseRelPath("ünïcødé/файл.txt"), ["ünïcødé", "файл.txt"]);
    assert.deepEqual(parseRelPath("", { allowRoot: true }), []);
  });
  it("refuses traversal, absolute paths, NUL, control bytes, backslashes, over-long names", () => {
    for (const bad of ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "a\0b", "a\nb", "a\\..\\b", "x".repeat(256), "a/".repeat(600), ""]) {
      assert.equal(code(() => parseRelPath(bad)), "INVALID_PATH", JSON.stringify(bad.slice(0, 40)));
    }
    assert.equal(code(() => parseRelPath(42)), "INVALID_PATH");
  });
});

describe("no-follow resolution", () => {
  it("never follows a symlink, in any component", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "petri-paths-"));
    try {
      fs.mkdirSync(path.join(root, "real"));
      fs.writeFileSync(path.join(root, "real", "f"), "ok");
      fs.symlinkSync("/etc", path.join(root, "etc"));
      fs.symlinkSync("/etc/passwd", path.join(root, "passwd"));
      fs.symlinkSync("real", path.join(root, "inner"));
      const { fd } = openFileNoFollow(root, ["real", "f"]);
      assert.equal(fs.readFileSync(fd, "utf8"), "ok");
      fs.closeSync(fd);
      assert.equal(code(() => openFileNoFollow(root, ["passwd"])), "ELOOP");
      assert.equal(code(() => openFileNoFollow(root, ["etc", "passwd"])), "ELOOP");
      assert.equal(code(() => openFileNoFollow(root, ["inner", "f"])), "ELOOP", "even a link that stays inside is refused");
      assert.equal(code(() => openDirNoFollow(root, ["etc", "x"], { create: true })), "ELOOP");
      assert.equal(fs.existsSync("/etc/x"), false);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
