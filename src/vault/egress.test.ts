import assert from "node:assert/strict";
import os from "node:os";
import { test } from "node:test";
import { PetriError } from "../errors.js";
import { DEFAULT_EGRESS_POLICY, checkTenantHosts, destinationRefusal, isPublicAddress, parseEgressPolicy, parseTrustedHosts, patternWithin } from "./egress.js";
import { parseHostPattern } from "./hosts.js";

test("non-public addresses: loopback, private, link-local, metadata, reserved, and IPv4 inside IPv6", () => {
  const denied = [
    "127.0.0.1", "127.9.9.9", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.100.100.200", "100.64.0.1", "192.0.0.192", "198.18.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
    "::1", "::", "fe80::1", "fd00:ec2::254", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "::127.0.0.1", "2001:db8::1", "2001::1",
  ];
  for (const a of denied) assert.equal(isPublicAddress(a), false, a);
  for (const a of ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]) assert.equal(isPublicAddress(a), true, a);
  assert.equal(isPublicAddress("not an address"), false);
});

test("this host's own interface addresses are never public destinations", () => {
  const own = Object.values(os.networkInterfaces()).flat().filter((i) => i && !i.internal).map((i) => i!.address);
  for (const a of own) assert.equal(isPublicAddress(a), false, a);
});

test("the policy is parsed from the operator's settings, bad entries named", () => {
  const p = parseEgressPolicy({ allowHosts: "*.example.com, api.github.com:443", privateHosts: "db.internal:5432,10.20.0.0/16,127.0.0.1:8080" });
  assert.equal(p.allowHosts?.length, 2);
  assert.equal(p.privateHosts.length, 2);
  assert.equal(parseEgressPolicy({}).allowHosts, null);
  assert.throws(() => parseEgressPolicy({ allowHosts: "http://x/" }), /PETRI_EGRESS_ALLOW_HOSTS: "http:\/\/x\/"/);
  assert.throws(() => parseEgressPolicy({ privateHosts: "10.0.0.0/99" }), /PETRI_EGRESS_PRIVATE_HOSTS/);
});

test("destinations: private addresses refused by default, opened by host or range, trusted hosts exempt", () => {
  const d = DEFAULT_EGRESS_POLICY;
  assert.equal(destinationRefusal(d, { host: "api.example.com", port: 443, address: "93.184.216.34" }), null);
  assert.equal(destinationRefusal(d, { host: "api.example.com", port: 443, address: "127.0.0.1" }), "private_address");
  assert.equal(destinationRefusal(d, { host: "169.254.169.254", port: 80, address: "169.254.169.254" }), "private_address");
  assert.equal(destinationRefusal(d, { host: "rebind.example", port: 443, address: "::ffff:10.0.0.1" }), "private_address");
  const p = parseEgressPolicy({ allowHosts: "*.example.com,*.example.com:5432", privateHosts: "db.example.com:5432,10.20.0.0/16" });
  assert.equal(destinationRefusal(p, { host: "other.org", port: 443, address: "8.8.8.8" }), "outside_operator_policy");
  assert.equal(destinationRefusal(p, { host: "db.example.com", port: 5432, address: "10.1.1.1" }), null);
  assert.equal(destinationRefusal(p, { host: "db.example.com", port: 22, address: "10.1.1.1" }), "outside_operator_policy");
  assert.equal(destinationRefusal(p, { host: "www.example.com", port: 443, address: "10.1.1.1" }), "private_address");
  assert.equal(destinationRefusal(p, { host: "x.example.com", port: 443, address: "10.20.3.4" }), null);
  const trusted = parseTrustedHosts(["127.0.0.1:4873"]);
  assert.equal(destinationRefusal(p, { host: "127.0.0.1", port: 4873, address: "127.0.0.1" }, trusted), null);
  assert.equal(destinationRefusal(p, { host: "127.0.0.1", port: 4874, address: "127.0.0.1" }, trusted), "outside_operator_policy");
});

test("tenant host patterns: malformed → VALIDATION_ERROR, outside the policy or private literals → EGRESS_NOT_ALLOWED", () => {
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof PetriError ? e.code : String(e);
    }
    return "ok";
  };
  const d = DEFAULT_EGRESS_POLICY;
  for (const bad of ["http://evil/", "evil/path", "user@host", "", "a b", "h:99999"]) assert.equal(code(() => checkTenantHosts([bad], d, "allow_hosts")), "VALIDATION_ERROR", bad);
  for (const priv of ["127.0.0.1:22", "169.254.169.254", "localhost:2375", "[::1]:8080", "10.0.0.1", "[::ffff:127.0.0.1]:80", "x.localhost"]) {
    assert.equal(code(() => checkTenantHosts([priv], d, "allow_hosts")), "EGRESS_NOT_ALLOWED", priv);
  }
  assert.deepEqual(checkTenantHosts(["API.example.com", "*.example.org:8443"], d, "allow_hosts"), ["api.example.com", "*.example.org:8443"]);
  const p = parseEgressPolicy({ allowHosts: "*.example.com", privateHosts: "127.0.0.1:9000" });
  assert.equal(code(() => checkTenantHosts(["api.example.com"], p, "h")), "ok");
  assert.equal(code(() => checkTenantHosts(["example.org"], p, "h")), "EGRESS_NOT_ALLOWED");
  assert.equal(code(() => checkTenantHosts(["*.com"], p, "h")), "VALIDATION_ERROR");
  const q = parseEgressPolicy({ privateHosts: "127.0.0.1:9000" });
  assert.equal(code(() => checkTenantHosts(["127.0.0.1:9000"], q, "h")), "ok");
  assert.equal(code(() => checkTenantHosts(["127.0.0.1:9001"], q, "h")), "EGRESS_NOT_ALLOWED");
});

test("pattern containment", () => {
  const P = (s: string) => parseHostPattern(s)!;
  assert.ok(patternWithin(P("a.example.com"), P("*.example.com")));
  assert.ok(patternWithin(P("*.a.example.com"), P("*.example.com")));
  assert.ok(!patternWithin(P("*.example.com"), P("a.example.com")));
  assert.ok(!patternWithin(P("a.example.com:22"), P("*.example.com")));
  assert.ok(patternWithin(P("a.example.com:443"), P("*.example.com")));
  assert.ok(!patternWithin(P("a.example.com"), P("a.example.com:443")));
});
