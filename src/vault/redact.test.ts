import { test } from "node:test";
import assert from "node:assert/strict";
import { Redactor, encodedForms } from "./redact.js";

const SECRET = "pa$$w0rd/with+odd=chars&more";
const r = new Redactor([{ name: "db", value: SECRET }]);

test("raw, hex, URL-encoded and JSON forms are replaced", () => {
  const raw = Buffer.from(SECRET);
  const inputs = [
    `x=${SECRET};`,
    `hex ${raw.toString("hex")} / ${raw.toString("hex").toUpperCase()}`,
    `url ${encodeURIComponent(SECRET)} form ${new URLSearchParams({ a: SECRET }).toString()}`,
    `json ${JSON.stringify({ p: SECRET + '"' })}`,
    `every byte ${[...raw].map((b) => "%" + b.toString(16).padStart(2, "0")).join("")}`,
  ];
  for (const s of inputs) {
    const out = r.redact(s);
    assert.deepEqual(out.redactions, ["db"], s);
    assert.ok(out.text.includes("[REDACTED:db]"), out.text);
    for (const f of encodedForms(SECRET)) assert.ok(!out.text.includes(f), `${f} survived in ${out.text}`);
  }
});

test("base64 of the value embedded at any alignment is caught", () => {
  for (const prefix of ["", "a", "ab", "abc", "user:"]) {
    for (const suffix of ["", "x", "xy"]) {
      for (const enc of ["base64", "base64url"] as const) {
        const b64 = Buffer.from(prefix + SECRET + suffix).toString(enc);
        const out = r.redact(`Authorization: Basic ${b64}`);
        assert.deepEqual(out.redactions, ["db"], `${prefix}|${suffix}|${enc}`);
        // What remains is the surrounding data plus at most a boundary character or two.
        const left = out.text.replace("Authorization: Basic ", "").split("[REDACTED:db]").join("");
        assert.ok(left.length <= Math.ceil(((prefix.length + suffix.length) * 4) / 3) + 6, left);
      }
    }
  }
});

test("ordinary output passes through byte for byte", () => {
  const bin = Buffer.from([0, 255, 1, 2, 0xc3, 0x28, 10]);
  const out = r.redactBuffer(bin);
  assert.deepEqual(out.redactions, []);
  assert.equal(out.data, bin);
});

test("stream redactor catches a secret split across every possible chunk boundary", () => {
  const text = `before ${SECRET} middle ${Buffer.from(SECRET).toString("base64")} after`;
  const buf = Buffer.from(text);
  const whole = r.redact(text).text;
  for (let cut = 1; cut < buf.length; cut++) {
    for (const cut2 of [cut, Math.min(buf.length, cut + 3)]) {
      const s = r.stream();
      const out = Buffer.concat([s.push(buf.subarray(0, cut)), s.push(buf.subarray(cut, cut2)), s.push(buf.subarray(cut2)), s.end()]).toString();
      assert.equal(out, whole, `cut at ${cut}/${cut2}`);
      assert.deepEqual(s.redactions, ["db"]);
    }
  }
  // One byte at a time.
  const s = r.stream();
  const parts: Buffer[] = [];
  for (const b of buf) parts.push(s.push(Buffer.from([b])));
  parts.push(s.end());
  assert.equal(Buffer.concat(parts).toString(), whole);
});

test("several secrets, overlapping and repeated occurrences", () => {
  const two = new Redactor([
    { name: "a", value: "alpha-secret" },
    { name: "b", value: "secret-beta!" },
  ]);
  const out = two.redact("alpha-secret-beta! and alpha-secret and secret-beta!");
  assert.ok(!out.text.includes("alpha-secret") && !out.text.includes("secret-beta"), out.text);
  assert.deepEqual(out.redactions.sort(), ["a", "b"]);
  const rep = new Redactor([{ name: "z", value: "zzzzzz" }]).redact("z".repeat(50));
  assert.equal(rep.text.replace(/\[REDACTED:z\]/g, "").replace(/z{0,5}/, ""), "");
});

test("empty redactor is a no-op", () => {
  const e = new Redactor([]);
  assert.equal(e.empty, true);
  assert.equal(e.redact("anything").text, "anything");
  const s = e.stream();
  assert.equal(s.push("abc").toString() + s.end().toString(), "abc");
});

test("fragments: any 8-byte piece of any form of a value is caught, also split across chunks; whole-value redaction is unchanged", () => {
  const value = "tok_Zq8Xv3Lm9Pw2Rt7Ks4Hd";
  const r = new Redactor([{ name: "api", value }], { fragmentLength: 8 });
  assert.equal(r.redact(`x ${value.slice(3, 13)} y`).text, "x [REDACTED:api] y");
  const hexOut = r.redact(`hex ${Buffer.from(value).toString("hex").slice(4, 20)}`).text;
  assert.match(hexOut, /^hex \[REDACTED:api\][0-9a-f]{0,7}$/, "at most a piece shorter than a fragment (all digits) is left");
  assert.equal(r.redact(`rev ${[...value].reverse().join("").slice(2, 12)}`).text, "rev [REDACTED:api]");
  assert.equal(r.redact(`short ${value.slice(0, 7)} ok`).text, `short ${value.slice(0, 7)} ok`, "7 bytes are below the fragment length");
  assert.equal(r.redact("ordinary text, nothing to see").text, "ordinary text, nothing to see");
  // Pieces that are a plain word or number are not matched: they occur in ordinary text.
  const weak = new Redactor([{ name: "pw", value: "not-the-password" }], { fragmentLength: 8 });
  assert.equal(weak.redact("changing a role password is not allowed").text, "changing a role password is not allowed");
  assert.equal(weak.redact("x the-pass y").text, "x [REDACTED:pw] y");
  // A long run split at every possible point: no byte of the value comes out.
  const text = Buffer.from(`head ${value.slice(2)} tail`);
  for (let cut = 1; cut < text.length; cut++) {
    const sr = r.stream();
    const out = Buffer.concat([sr.push(text.subarray(0, cut)), sr.push(text.subarray(cut)), sr.end()]).toString();
    assert.ok(out.startsWith("head ") && out.endsWith(" tail"), out);
    assert.ok(!out.includes(value.slice(2, 9)) && !out.includes(value.slice(-7)), `cut ${cut}: ${out}`);
  }
  // Without the option only whole values (and their encodings) are matched, as before.
  assert.equal(new Redactor([{ name: "api", value }]).redact(value.slice(3, 13)).text, value.slice(3, 13));
});

test("a value printed backwards is redacted", () => {
  const r = new Redactor([{ name: "pw", value: "s3cret-Passw0rd" }]);
  assert.equal(r.redact("dr0wssaP-terc3s").text, "[REDACTED:pw]");
});
