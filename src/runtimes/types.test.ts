import assert from "node:assert/strict";
import { test } from "node:test";
import { CappedBuffer, cutMarker } from "./types.js";

function fill(limit: number, chunks: string[]): CappedBuffer {
  const c = new CappedBuffer(limit);
  for (const s of chunks) c.push(Buffer.from(s));
  return c;
}

test("output within the limit is kept whole and not flagged", () => {
  const c = fill(10, ["abc", "defg", "hij"]);
  assert.equal(c.toBuffer().toString(), "abcdefghij");
  assert.equal(c.truncated, false);
  assert.equal(c.cutBytes, 0);
});

test("a flood keeps its first and last halves and says how much was cut", () => {
  const c = fill(10, ["HEAD-", "x".repeat(100), "-TAIL"]);
  assert.equal(c.truncated, true);
  assert.equal(c.cutBytes, 100);
  assert.equal(c.toBuffer().toString(), "HEAD-" + cutMarker(100) + "-TAIL");
  assert.equal(c.total, 110);
});

test("the tail follows many small chunks", () => {
  const chunks = Array.from({ length: 1000 }, (_, i) => `${i % 10}`);
  const c = fill(8, chunks);
  assert.equal(c.toBuffer().toString(), "0123" + cutMarker(992) + "6789");
});

test("one chunk larger than everything", () => {
  const c = fill(4, ["abcdefgh"]);
  assert.equal(c.toBuffer().toString(), "ab" + cutMarker(4) + "gh");
});

test("an odd limit gives the extra byte to the head", () => {
  const c = fill(5, ["123", "456", "789"]);
  assert.equal(c.toBuffer().toString(), "123" + cutMarker(4) + "89");
});
