import { domainToASCII } from "node:url";
import net from "node:net";

/**
 * Host patterns used by allowlists and by http secrets: "api.example.com", "api.example.com:8443",
 * "*.example.com" (any subdomain, not the apex), "10.0.0.5:9000", "[::1]:8080". A pattern without
 * a port matches the standard web ports 80 and 443 only, so allowing a name does not silently
 * allow every service on that machine.
 */
export interface HostPattern {
  /** Lower-case ASCII host (IPv6 without brackets); for wildcards, the suffix without "*.". */
  host: string;
  wildcard: boolean;
  port: number | null;
  /** The pattern names an IP literal or "localhost" (not a name resolved through DNS). */
  literal: boolean;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export function normalizeHost(host: string): string | null {
  let h = host.trim();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  // One spelling per address (::ffff:127.0.0.1 and ::ffff:7f00:1 are the same), as URL parsing gives.
  if (net.isIPv6(h)) return new URL(`http://[${h}]/`).hostname.slice(1, -1);
  if (net.isIPv4(h)) return h;
  h = h.replace(/\.$/, "");
  // domainToASCII parses like a URL host: "a.com/x" or "a.com:22/x" would come back as "a.com".
  if (/[\s/\\?#@%:[\]\x00-\x1f\x7f]/.test(h)) return null;
  const ascii = domainToASCII(h.toLowerCase());
  if (!ascii || ascii.length > 253) return null;
  if (!ascii.split(".").every((l) => LABEL.test(l))) return null;
  return ascii;
}

export function parseHostPattern(entry: string): HostPattern | null {
  let s = entry.trim();
  let port: number | null = null;
  const v6 = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(s);
  if (v6) {
    if (!net.isIPv6(v6[1])) return null;
    if (v6[2] !== undefined) port = Number(v6[2]);
    s = v6[1];
  } else {
    const m = /^(.*?)(?::(\d{1,5}))?$/.exec(s)!;
    s = m[1];
    if (m[2] !== undefined) port = Number(m[2]);
  }
  if (port !== null && (port < 1 || port > 65535)) return null;
  let wildcard = false;
  if (s.startsWith("*.")) {
    wildcard = true;
    s = s.slice(2);
  }
  const host = normalizeHost(s);
  if (!host) return null;
  const literal = net.isIP(host) !== 0 || host === "localhost";
  if (wildcard && (net.isIP(host) !== 0 || !host.includes("."))) return null;
  return { host, wildcard, port, literal };
}

export function matchHost(p: HostPattern, host: string, port: number): boolean {
  if (p.port === null ? port !== 80 && port !== 443 : p.port !== port) return false;
  if (p.wildcard) return host.endsWith("." + p.host);
  return host === p.host;
}

export function formatHostPattern(p: HostPattern): string {
  const h = net.isIPv6(p.host) ? `[${p.host}]` : p.host;
  return `${p.wildcard ? "*." : ""}${h}${p.port !== null ? `:${p.port}` : ""}`;
}
