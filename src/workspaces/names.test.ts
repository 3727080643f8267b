import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parsePathInput, parseRelPathB64, pathFields, pathFromKey, pathKey, splitBytes } from "./names.js";
import { PetriError } from "../errors.js";

const code = (fn: () => unknown) => {
  try { fn(); } catch (e) { return e instanceof PetriError ? e.code : String(e); }
  return undefined;
};

describe("names that are not UTF-8", () => {
  const bad = Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x74]); // "f\xff\xfe.t"
  it("gives path (U+FFFD for invalid bytes) and path_b64 only when the name is not UTF-8", () => {
    assert.deepEqual(pathFields(["a", "b.txt"]), { path: "a/b.txt" });
    assert.deepEqual(pathFields(["ünï", "файл"]), { path: "ünï/файл" });
    const f = pathFields(["dir", bad]);
    assert.equal(f.path, "dir/f\uFFFD\uFFFD.t");
    assert.equal(Buffer.from(f.path_b64!, "base64").toString("hex"), Buffer.concat([Buffer.from("dir/"), bad]).toString("hex"));
  });
  it("round-trips raw bytes through path_b64 and through keys", () => {
    const raw = Buffer.concat([Buffer.from("dir/"), bad]);
    const parts = parseRelPathB64(raw.toString("base64"));
    assert.equal(parts[0], "dir");
    assert.ok(Buffer.isBuffer(parts[1]) && parts[1].equals(bad));
    assert.deepEqual(pathFromKey(pathKey(parts)), parts);
    assert.deepEqual(pathFromKey(pathKey(["x", "y"])), ["x", "y"]);
    assert.deepEqual(splitBytes(Buffer.from("a//b/")), ["a", "b"]);
  });
  it("refuses in path_b64 what parseRelPath refuses", () => {
    const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");
    for (const s of ["../x", "a/../../x", "/etc/passwd", "a\0b", "a\nb", "a\\b", "", "x".repeat(256)]) {
      assert.equal(code(() => parseRelPathB64(b64(s))), "INVALID_PATH", JSON.stringify(s.slice(0, 20)));
    }
    assert.equal(code(() => parseRelPathB64("not base64!")), "INVALID_PATH");
    assert.equal(code(() => parseRelPathB64(42)), "INVALID_PATH");
  });
  it("parsePathInput takes exactly one of path and path_b64", () => {
    assert.deepEqual(parsePathInput({ path: "a/b" }), ["a", "b"]);
    assert.deepEqual(parsePathInput({ path: "", path_b64: Buffer.from("a/b").toString("base64") }), ["a", "b"]);
    assert.equal(code(() => parsePathInput({ path: "a", path_b64: "YQ==" })), "VALIDATION_ERROR");
    assert.deepEqual(parsePathInput({}, { allowRoot: true }), []);
  });
});
