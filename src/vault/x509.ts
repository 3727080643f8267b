import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import net from "node:net";

/**
 * Just enough DER and X.509 to mint the per-run CA and its leaf certificates in-process: an
 * openssl spawn per run (and per host) would cost tens of milliseconds on every run, and the
 * structures needed are small and fixed (ECDSA P-256 + SHA-256, a handful of extensions).
 */
function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  while (n > 0) {
    bytes.unshift(n & 0xff);
    n >>= 8;
  }
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), len(content.length), content]);
}
const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const octets = (b: Buffer) => tlv(0x04, b);
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));
const explicit = (n: number, inner: Buffer) => tlv(0xa0 + n, inner);
function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && (b[i + 1] & 0x80) === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0] & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
function bitString(b: Buffer, unusedBits = 0): Buffer {
  return tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), b]));
}
function oid(dotted: string): Buffer {
  const parts = dotted.split(".").map(Number);
  const out: number[] = [40 * parts[0] + parts[1]];
  for (const p of parts.slice(2)) {
    const stack: number[] = [p & 0x7f];
    let v = p >>> 7;
    while (v > 0) {
      stack.unshift((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    out.push(...stack);
  }
  return tlv(0x06, Buffer.from(out));
}
function time(d: Date): Buffer {
  const p = (n: number) => String(n).padStart(2, "0");
  const body = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  const y = d.getUTCFullYear();
  return y < 2050 ? tlv(0x17, Buffer.from(`${p(y % 100)}${body}`)) : tlv(0x18, Buffer.from(`${y}${body}`));
}
function name(cn: string): Buffer {
  return seq(set(seq(oid("2.5.4.10"), utf8("Petri"))), set(seq(oid("2.5.4.3"), utf8(cn))));
}
function ext(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}
function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split(".").map(Number));
  // Expand "::" then pack 8 groups.
  const [head, tail] = ip.includes("::") ? ip.split("::") : [ip, ""];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

const ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"));

function keyId(spkiDer: Buffer): Buffer {
  // RFC 5280 method 1 would hash only the key bits; any stable hash of the key works for matching.
  return createHash("sha1").update(spkiDer).digest();
}

export interface CertAndKey {
  certPem: string;
  certDer: Buffer;
  key: KeyObject;
  spki: Buffer;
}

interface IssueOptions {
  subjectCn: string;
  issuerCn: string;
  subjectSpki: Buffer;
  issuerSpki: Buffer;
  issuerKey: KeyObject;
  isCa: boolean;
  dnsNames?: string[];
  ips?: string[];
  validForMs: number;
}

function issue(o: IssueOptions): Buffer {
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const now = Date.now();
  const exts: Buffer[] = [
    ext("2.5.29.19", true, o.isCa ? seq(bool(true), integer(Buffer.from([0]))) : seq()),
    // CA: digitalSignature, keyCertSign, cRLSign (0x86, 1 unused bit); leaf: digitalSignature.
    ext("2.5.29.15", true, o.isCa ? bitString(Buffer.from([0x86]), 1) : bitString(Buffer.from([0x80]), 7)),
    ext("2.5.29.14", false, octets(keyId(o.subjectSpki))),
    ext("2.5.29.35", false, seq(tlv(0x80, keyId(o.issuerSpki)))),
  ];
  if (!o.isCa) {
    exts.push(ext("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"))));
    const sans = [...(o.dnsNames ?? []).map((d) => tlv(0x82, Buffer.from(d, "ascii"))), ...(o.ips ?? []).map((ip) => tlv(0x87, ipBytes(ip)))];
    exts.push(ext("2.5.29.17", false, seq(...sans)));
  }
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(serial),
    ECDSA_SHA256,
    name(o.issuerCn),
    seq(time(new Date(now - 60 * 60 * 1000)), time(new Date(now + o.validForMs))),
    name(o.subjectCn),
    o.subjectSpki,
    explicit(3, seq(...exts)),
  );
  const sig = sign("sha256", tbs, o.issuerKey);
  return seq(tbs, ECDSA_SHA256, bitString(sig));
}

export function toPem(der: Buffer, label = "CERTIFICATE"): string {
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function ecKey(): { key: KeyObject; spki: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return { key: privateKey, spki: publicKey.export({ type: "spki", format: "der" }) };
}

/**
 * A certificate authority that lives as long as one run. Its private key never leaves this
 * process; the sandbox only gets the certificate to trust. Leaves share one key pair (minting a
 * key per host buys nothing when one process holds them all).
 */
export class RunCa {
  readonly cert: CertAndKey;
  private readonly leafKey = ecKey();
  private readonly leaves = new Map<string, { certPem: string; keyPem: string }>();

  constructor(private readonly label: string, private readonly validForMs = 24 * 60 * 60 * 1000) {
    const k = ecKey();
    const cn = `Petri run CA ${label}`.slice(0, 64);
    const der = issue({ subjectCn: cn, issuerCn: cn, subjectSpki: k.spki, issuerSpki: k.spki, issuerKey: k.key, isCa: true, validForMs });
    this.cert = { certPem: toPem(der), certDer: der, key: k.key, spki: k.spki };
  }

  /** Certificate + key (PEM) for `host` (a DNS name or IP literal), cached per host. */
  leafFor(host: string): { certPem: string; keyPem: string } {
    let leaf = this.leaves.get(host);
    if (!leaf) {
      const isIp = net.isIP(host) !== 0;
      const der = issue({
        subjectCn: host.slice(0, 64),
        issuerCn: `Petri run CA ${this.label}`.slice(0, 64),
        subjectSpki: this.leafKey.spki,
        issuerSpki: this.cert.spki,
        issuerKey: this.cert.key,
        isCa: false,
        dnsNames: isIp ? [] : [host],
        ips: isIp ? [host] : [],
        validForMs: this.validForMs,
      });
      leaf = {
        certPem: toPem(der) + this.cert.certPem,
        keyPem: this.leafKey.key.export({ type: "pkcs8", format: "pem" }) as string,
      };
      this.leaves.set(host, leaf);
    }
    return leaf;
  }
}
