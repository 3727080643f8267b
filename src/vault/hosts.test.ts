import { test } from "node:test";
import assert from "node:assert/strict";
import { matchHost, parseHostPattern } from "./hosts.js";

test("host patterns", () => {
  const p = (s: string) => parseHostPattern(s)!;
  assert.ok(matchHost(p("api.example.com"), "api.example.com", 443));
  assert.ok(matchHost(p("api.example.com"), "api.example.com", 80));
  assert.ok(!matchHost(p("api.example.com"), "api.example.com", 22));
  assert.ok(matchHost(p("API.example.com."), "api.example.com", 443));
  assert.ok(matchHost(p("api.example.com:8443"), "api.example.com", 8443));
  assert.ok(!matchHost(p("api.example.com:8443"), "api.example.com", 443));
  assert.ok(matchHost(p("*.example.com"), "a.b.example.com", 443));
  assert.ok(!matchHost(p("*.example.com"), "example.com", 443));
  assert.ok(!matchHost(p("*.example.com"), "evilexample.com", 443));
  assert.ok(matchHost(p("[::1]:8080"), "::1", 8080));
  assert.ok(p("127.0.0.1:5000").literal);
  assert.ok(!p("example.com").literal);
  for (const bad of ["", "bad host", "*.com", "*.1.2.3.4", "a.com:0", "a.com:70000", "-a.com", "a..com", "http://evil/", "https://a.com", "a.com/x", "user@a.com", "a.com:22/x", "a.com\0"]) assert.equal(parseHostPattern(bad), null, bad);
});
