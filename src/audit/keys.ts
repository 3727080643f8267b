import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { canonicalJson, sha256Hex } from "./canonical.js";

export const PRIVATE_KEY_FILE = "audit-signing-key.pem";
export const PUBLIC_KEY_FILE = "audit-signing-key.pub.pem";

export interface PublicKeyInfo {
  key: KeyObject;
  /** Base64 of the SubjectPublicKeyInfo DER: what checkpoints carry so a SIEM can verify them. */
  spkiBase64: string;
  /** "sha256:<hex>" of the SPKI DER: short name of the key, to compare with one pinned elsewhere. */
  fingerprint: string;
}

export interface SigningKey extends PublicKeyInfo {
  privateKey: KeyObject;
}

export function describePublicKey(key: KeyObject): PublicKeyInfo {
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`audit signing key must be Ed25519, got ${key.asymmetricKeyType}`);
  const der = key.export({ type: "spki", format: "der" });
  return { key, spkiBase64: der.toString("base64"), fingerprint: `sha256:${sha256Hex(der)}` };
}

/** Accepts a PEM public key, or the base64 SPKI DER that checkpoints carry. */
export function parsePublicKey(text: string): PublicKeyInfo {
  const t = text.trim();
  const key = t.startsWith("-----")
    ? createPublicKey(t)
    : createPublicKey({ key: Buffer.from(t, "base64"), format: "der", type: "spki" });
  return describePublicKey(key);
}

/**
 * Loads the Ed25519 key of an audit directory, creating it on first start. The private key is
 * written with mode 0600 and exclusive create, so two processes never end up with different keys;
 * the public key beside it is readable by anyone who verifies.
 */
export function loadOrCreateSigningKey(dir: string): SigningKey {
  const privPath = path.join(dir, PRIVATE_KEY_FILE);
  const pubPath = path.join(dir, PUBLIC_KEY_FILE);
  let privateKey: KeyObject;
  if (fs.existsSync(privPath)) {
    privateKey = createPrivateKey(fs.readFileSync(privPath));
  } else {
    const pair = generateKeyPairSync("ed25519");
    const pem = pair.privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    try {
      const fd = fs.openSync(privPath, "wx", 0o600);
      try {
        fs.writeFileSync(fd, pem);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      privateKey = pair.privateKey;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      privateKey = createPrivateKey(fs.readFileSync(privPath));
    }
  }
  const info = describePublicKey(createPublicKey(privateKey));
  const pubPem = info.key.export({ type: "spki", format: "pem" }) as string;
  if (!fs.existsSync(pubPath) || fs.readFileSync(pubPath, "utf8") !== pubPem) {
    const tmp = `${pubPath}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, pubPem, { mode: 0o644 });
    fs.renameSync(tmp, pubPath);
  }
  return { ...info, privateKey };
}

export function readPublicKeyFile(dir: string): PublicKeyInfo | undefined {
  const p = path.join(dir, PUBLIC_KEY_FILE);
  if (!fs.existsSync(p)) return undefined;
  return parsePublicKey(fs.readFileSync(p, "utf8"));
}

/** The statement a checkpoint signs: "the log up to `seq` ends in `hash`". */
export interface CheckpointStatement {
  v: 1;
  seq: number;
  hash: string;
  time: string;
}

export function signStatement(key: SigningKey, st: CheckpointStatement): string {
  return sign(null, Buffer.from(canonicalJson(st)), key.privateKey).toString("base64");
}

export function verifyStatement(key: PublicKeyInfo, st: unknown, signatureB64: string): boolean {
  try {
    return verify(null, Buffer.from(canonicalJson(st)), key.key, Buffer.from(signatureB64, "base64"));
  } catch {
    return false;
  }
}
