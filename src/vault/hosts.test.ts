import { test } from "node:test";
import assert from "node:assert/strict";
import { isLocalAddress, matchHost, parseHostPattern } from "./hosts.js";

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
  for (const bad of ["", "bad host", "*.com", "*.1.2.3.4", "a.com:0", "a.com:70000", "-a.com", "a..com"]) assert.equal(parseHostPattern(bad), null, bad);
});

test("local addresses", () => {
  for (const a of ["127.0.0.1", "127.5.5.5", "169.254.169.254", "0.0.0.0", "::1", "fe80::1", "::ffff:127.0.0.1"]) assert.ok(isLocalAddress(a), a);
  for (const a of ["10.0.0.1", "8.8.8.8", "2001:db8::1"]) assert.ok(!isLocalAddress(a), a);
});
