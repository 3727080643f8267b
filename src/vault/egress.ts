import dns from "node:dns";
import net from "node:net";
import os from "node:os";
import { PetriError } from "../errors.js";
import { formatHostPattern, matchHost, parseHostPattern, type HostPattern } from "./hosts.js";

/**
 * The operator's egress policy. Tenants choose where their runs may go (allow_hosts, the hosts of
 * their http secrets), but only inside this policy:
 *
 * - `allowHosts` (PETRI_EGRESS_ALLOW_HOSTS): when set, every tenant host pattern must lie within
 *   one of these patterns; unset: any host name.
 * - Destinations that are not public — loopback, private, link-local (cloud metadata), CGNAT,
 *   multicast, reserved, documentation ranges, IPv4 inside IPv6 forms of those, and every
 *   address of this host's own interfaces — are refused, checked on the address a name resolves
 *   to when the broker connects (so DNS rebinding gains nothing), unless the operator opted the
 *   destination in with `privateHosts` (PETRI_EGRESS_PRIVATE_HOSTS: host patterns, or CIDR ranges
 *   such as 10.20.0.0/16).
 */
export interface EgressPolicy {
  readonly allowHosts: readonly HostPattern[] | null;
  readonly privateHosts: readonly HostPattern[];
  readonly privateRanges: net.BlockList;
  /** The policy as configured, for logs and docs. */
  readonly source: { allowHosts: string[] | null; privateHosts: string[] };
}

/** Ranges no run reaches unless the operator says so (IANA special-purpose registries). */
const V4_DENIED: Array<[string, number]> = [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.88.99.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15],
  ["198.51.100.0", 24], ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
];
const V6_DENIED: Array<[string, number]> = [
  ["::", 96], // unspecified, loopback, IPv4-compatible
  ["100::", 64], ["2001::", 23], ["2001:db8::", 32], ["fc00::", 7], ["fe80::", 10], ["fec0::", 10], ["ff00::", 8],
];
const DENIED = new net.BlockList();
for (const [a, p] of V4_DENIED) DENIED.addSubnet(a, p, "ipv4");
for (const [a, p] of V6_DENIED) DENIED.addSubnet(a, p, "ipv6");

/**
 * The IPv4 address an IPv6 address stands for, if it embeds one that routes to it: v4-mapped
 * (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48).
 */
function embeddedV4(addr: string): string | null {
  const words = expandV6(addr);
  if (!words) return null;
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) return v4(words[6], words[7]);
  if (words[0] === 0x64 && words[1] === 0xff9b && words.slice(2, 6).every((w) => w === 0)) return v4(words[6], words[7]);
  if (words[0] === 0x2002) return v4(words[1], words[2]);
  return null;
}

function expandV6(addr: string): number[] | null {
  if (!net.isIPv6(addr)) return null;
  let a = addr.toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (dotted) {
    const [p, q, r, s] = dotted[1].split(".").map(Number);
    a = a.slice(0, -dotted[1].length) + `${((p << 8) | q).toString(16)}:${((r << 8) | s).toString(16)}`;
  }
  const [head, tail] = a.includes("::") ? a.split("::") : [a, null];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = tail === null ? [] : new Array(8 - h.length - t.length).fill("0");
  const words = [...h, ...fill, ...t].map((w) => parseInt(w, 16));
  return words.length === 8 && words.every((w) => w >= 0 && w <= 0xffff) ? words : null;
}

let ownCache: { at: number; addrs: Set<string> } | null = null;
/** This host's interface addresses (re-read every few seconds: interfaces come and go). */
function ownAddresses(): Set<string> {
  if (!ownCache || Date.now() - ownCache.at > 5000) {
    const addrs = new Set<string>();
    for (const list of Object.values(os.networkInterfaces())) for (const i of list ?? []) addrs.add(i.address.toLowerCase().replace(/%.*$/, ""));
    ownCache = { at: Date.now(), addrs };
  }
  return ownCache.addrs;
}

/** True for an address any tenant may be sent to: routable, public, and not this host. */
export function isPublicAddress(addr: string): boolean {
  const a = addr.toLowerCase().replace(/%.*$/, "");
  if (net.isIPv4(a)) return !DENIED.check(a, "ipv4") && !ownAddresses().has(a);
  if (!net.isIPv6(a)) return false;
  const v4 = embeddedV4(a);
  if (v4 !== null) return isPublicAddress(v4);
  return !DENIED.check(a, "ipv6") && !ownAddresses().has(a);
}

export const DEFAULT_EGRESS_POLICY: EgressPolicy = Object.freeze({
  allowHosts: null,
  privateHosts: [],
  privateRanges: new net.BlockList(),
  source: { allowHosts: null, privateHosts: [] },
});

/** Parses the operator's settings; throws Error with a message naming the bad entry. */
export function parseEgressPolicy(opts: { allowHosts?: string; privateHosts?: string }): EgressPolicy {
  const list = (s: string | undefined) => (s ?? "").split(",").map((x) => x.trim()).filter(Boolean);
  const allowSrc = opts.allowHosts !== undefined && opts.allowHosts.trim() !== "" ? list(opts.allowHosts) : null;
  const allowHosts = allowSrc?.map((h) => {
    const p = parseHostPattern(h);
    if (!p) throw new Error(`PETRI_EGRESS_ALLOW_HOSTS: "${h}" is not a host pattern (host, host:port, *.domain, [v6]:port)`);
    return p;
  }) ?? null;
  const privateHosts: HostPattern[] = [];
  const privateRanges = new net.BlockList();
  const privSrc = list(opts.privateHosts);
  for (const entry of privSrc) {
    const cidr = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(entry);
    if (cidr) {
      const type = net.isIPv4(cidr[1]) ? "ipv4" : net.isIPv6(cidr[1]) ? "ipv6" : null;
      const bits = Number(cidr[2]);
      if (!type || bits > (type === "ipv4" ? 32 : 128)) throw new Error(`PETRI_EGRESS_PRIVATE_HOSTS: "${entry}" is not a CIDR range`);
      privateRanges.addSubnet(cidr[1], bits, type);
      continue;
    }
    const p = parseHostPattern(entry);
    if (!p) throw new Error(`PETRI_EGRESS_PRIVATE_HOSTS: "${entry}" is neither a host pattern nor a CIDR range`);
    privateHosts.push(p);
  }
  return Object.freeze({ allowHosts, privateHosts, privateRanges, source: { allowHosts: allowSrc, privateHosts: privSrc } });
}

/** Whether every host:port `inner` matches is also matched by `outer`. */
export function patternWithin(inner: HostPattern, outer: HostPattern): boolean {
  if (outer.port !== null && inner.port !== outer.port) return false;
  if (outer.port === null && inner.port !== null && inner.port !== 80 && inner.port !== 443) return false;
  if (outer.wildcard) return inner.host.endsWith("." + outer.host);
  return !inner.wildcard && inner.host === outer.host;
}

function rangesContain(list: net.BlockList, addr: string): boolean {
  const v4 = net.isIPv6(addr) ? embeddedV4(addr) : null;
  if (v4 && list.check(v4, "ipv4")) return true;
  return list.check(addr, net.isIPv4(addr) ? "ipv4" : "ipv6");
}

/**
 * Why a destination may not be reached by a run (null: it may). `address` is the resolved
 * address the broker is about to connect to. `trusted` are operator-configured destinations
 * (package registries) exempt from the policy.
 */
export function destinationRefusal(policy: EgressPolicy, t: { host: string; port: number; address: string }, trusted: readonly HostPattern[] = []):
  "outside_operator_policy" | "private_address" | null {
  if (trusted.some((p) => matchHost(p, t.host, t.port))) return null;
  if (policy.allowHosts && !policy.allowHosts.some((p) => matchHost(p, t.host, t.port))) return "outside_operator_policy";
  if (isPublicAddress(t.address)) return null;
  if (policy.privateHosts.some((p) => matchHost(p, t.host, t.port))) return null;
  if (rangesContain(policy.privateRanges, t.address.toLowerCase())) return null;
  return "private_address";
}

/**
 * Validates host patterns a tenant asks for (a sandbox's or a run's allow_hosts, an http
 * secret's hosts) against the policy, with a 4xx the client can act on. Names are checked again
 * on their resolved address at connect time; this refuses what is wrong on its face.
 */
export function checkTenantHosts(entries: readonly unknown[], policy: EgressPolicy, field: string): string[] {
  return entries.map((entry, i) => {
    const p = typeof entry === "string" ? parseHostPattern(entry) : null;
    if (!p || typeof entry !== "string" || entry.includes("\0")) {
      throw new PetriError("VALIDATION_ERROR", `${field}[${i}]: ${JSON.stringify(String(entry).slice(0, 100))} is not a host pattern (host, host:port, *.domain or [v6]:port; no scheme, path or credentials)`);
    }
    const shown = formatHostPattern(p);
    if (policy.allowHosts && !policy.allowHosts.some((o) => patternWithin(p, o))) {
      throw new PetriError("EGRESS_NOT_ALLOWED", `${field}[${i}]: ${shown} is outside this server's egress policy (PETRI_EGRESS_ALLOW_HOSTS)`);
    }
    const literal = net.isIP(p.host) !== 0 ? p.host : p.host === "localhost" || p.host.endsWith(".localhost") ? "127.0.0.1" : null;
    if (literal !== null && !isPublicAddress(literal)) {
      const port = p.port ?? 443;
      const opted = policy.privateHosts.some((o) => patternWithin(p, o) || matchHost(o, p.host, port)) || rangesContain(policy.privateRanges, literal);
      if (!opted) {
        throw new PetriError("EGRESS_NOT_ALLOWED", `${field}[${i}]: ${shown} is a loopback, private, link-local or own address of this host; the operator has not opened it (PETRI_EGRESS_PRIVATE_HOSTS)`);
      }
    }
    return shown;
  });
}

/** Parses operator-trusted host[:port] entries (registries); throws on a bad one. */
export function parseTrustedHosts(entries: readonly string[] = []): HostPattern[] {
  return entries.map((h) => {
    const p = parseHostPattern(h);
    if (!p) throw new Error(`trusted host "${h}" is not a host pattern`);
    return p;
  });
}

/** A broker refused to connect: the destination is outside the operator's policy. */
export class EgressRefused extends Error {
  constructor(readonly reason: "outside_operator_policy" | "private_address", readonly addresses: string[]) {
    super(`egress refused (${reason}) for ${addresses.slice(0, 4).join(", ")}`);
  }
}

type LookupCb = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;
export type LookupFn = (hostname: string, options: dns.LookupOptions, cb: LookupCb) => void;

/**
 * A `lookup` for net/http/https that keeps only the addresses the policy allows for this
 * destination, so the socket connects to an address that was checked (a name re-pointed after
 * any earlier check gains nothing). Calls back with EgressRefused when none is left. IP literals
 * never reach a lookup: check them with `refuseLiteral` first.
 */
export function guardedLookup(policy: EgressPolicy, trusted: readonly HostPattern[], dest: { host: string; port: number }): LookupFn {
  return (hostname, options, cb) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return cb(err, []);
      const all = addresses as dns.LookupAddress[];
      const reasons = all.map((a) => destinationRefusal(policy, { ...dest, address: a.address }, trusted));
      const ok = all.filter((_, i) => reasons[i] === null);
      if (ok.length === 0) return cb(new EgressRefused(reasons.find((r) => r !== null) ?? "private_address", all.map((a) => a.address)), []);
      if (options.all) cb(null, ok);
      else cb(null, ok[0].address, ok[0].family);
    });
  };
}

/** For a destination given as an IP literal: throws EgressRefused if the policy forbids it. */
export function refuseLiteral(policy: EgressPolicy, trusted: readonly HostPattern[], dest: { host: string; port: number }): void {
  if (net.isIP(dest.host) === 0) return;
  const why = destinationRefusal(policy, { ...dest, address: dest.host }, trusted);
  if (why) throw new EgressRefused(why, [dest.host]);
}
