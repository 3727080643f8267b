import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalJson } from "./canonical.js";
import { isSecretKey, REDACTED, sanitizeDetail, MAX_DETAIL_BYTES } from "./redact.js";

describe("canonicalJson", () => {
  it("sorts keys at every depth and drops undefined", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[1,{"y":2,"z":1}]},"b":1}');
  });
  it("keeps UTF-8 and escapes control characters", () => {
    assert.equal(canonicalJson({ s: "ü\n日本" }), '{"s":"ü\\n日本"}');
  });
  it("refuses non-JSON values", () => {
    assert.throws(() => canonicalJson({ n: NaN }));
  });
});

describe("redaction guard", () => {
  it("keeps env var names and drops their values", () => {
    const d = sanitizeDetail({ env: { PATH: "/usr/bin", API_TOKEN: "s3cr3t" } });
    assert.deepEqual(d.env, ["API_TOKEN", "PATH"]);
    assert.deepEqual(d.redacted_paths, ["env"]);
    assert.ok(!JSON.stringify(d).includes("s3cr3t"));
  });

  it("strips NAME=value entries in an env list down to the name", () => {
    const d = sanitizeDetail({ env: ["HOME", "DB_PASSWORD=hunter2"] });
    assert.deepEqual(d.env, ["HOME", "DB_PASSWORD"]);
    assert.ok(!JSON.stringify(d).includes("hunter2"));
  });

  it("leaves a clean list of names alone", () => {
    const d = sanitizeDetail({ env: ["HOME", "LANG"] });
    assert.deepEqual(d, { env: ["HOME", "LANG"] });
  });

  it("redacts values of secret-looking keys at any depth and in any case style", () => {
    const d = sanitizeDetail({
      secret_value: "a", password: "b", nested: { apiToken: "c", "x-auth-token": "d", list: [{ client_secret: "e" }] },
      headers: { Authorization: "Bearer abcdefgh", Cookie: "sid=1" }, value: "f",
    });
    const text = JSON.stringify(d);
    for (const s of ['"a"', '"b"', '"c"', '"d"', '"e"', "abcdefgh", "sid=1", '"f"']) assert.ok(!text.includes(s), `${s} leaked: ${text}`);
    assert.equal((d.nested as Record<string, unknown>).apiToken, REDACTED);
    assert.ok((d.redacted_paths as string[]).includes("nested.list[0].client_secret"));
  });

  it("keeps names of secrets and harmless look-alikes", () => {
    const d = sanitizeDetail({ secret_name: "STRIPE_KEY", token_count: 3, key_id: "k_1", secrets_used: ["A"] });
    assert.deepEqual(d, { secret_name: "STRIPE_KEY", token_count: 3, key_id: "k_1", secrets_used: ["A"] });
    assert.equal(isSecretKey("secret_name"), false);
    assert.equal(isSecretKey("dbPassword"), true);
  });

  it("redacts credential-shaped strings and URL passwords", () => {
    const d = sanitizeDetail({ note: "Bearer eyJhbGciOiJIUzI1NiJ9", url: "https://user:pw123@example.com/x", pem: "-----BEGIN PRIVATE KEY-----\nMIIE" });
    assert.equal(d.note, REDACTED);
    assert.equal(d.url, "https://user:***@example.com/x");
    assert.equal(d.pem, REDACTED);
  });

  it("normalizes to plain JSON and does not touch the caller's object", () => {
    const input = { when: new Date(0), big: 10n, nan: NaN, u: undefined, buf: Buffer.from("xy"), f: () => 1 };
    const d = sanitizeDetail(input);
    assert.deepEqual(d, { when: "1970-01-01T00:00:00.000Z", big: "10", nan: null, buf: "[2 bytes]" });
    assert.ok(input.when instanceof Date);
  });

  it("bounds the size by dropping the largest values", () => {
    const d = sanitizeDetail({ small: 1, files: Array.from({ length: 40_000 }, (_, i) => `/workspace/file-${i}.txt`) });
    assert.equal(d.small, 1);
    assert.equal(d.files, undefined);
    assert.ok((d.dropped_for_size as Record<string, number>).files! > MAX_DETAIL_BYTES);
  });

  it("refuses a detail that is not an object", () => {
    assert.throws(() => sanitizeDetail([1]), TypeError);
  });
});
