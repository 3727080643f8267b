import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * Authenticated encryption primitives of the vault. One sealed format for everything:
 * [1 byte format version][12 byte IV][16 byte GCM tag][ciphertext]. The associated data is
 * never stored; callers rebuild it from where the blob lives (tenant, name…), so a blob copied
 * to another row fails authentication instead of decrypting under the wrong identity.
 */
const FORMAT_V1 = 1;
const IV_LEN = 12;
const TAG_LEN = 16;
export const KEY_LEN = 32;

export class VaultCryptoError extends Error {}

export function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  if (key.length !== KEY_LEN) throw new VaultCryptoError("key must be 32 bytes");
  const iv = randomBytes(IV_LEN);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([FORMAT_V1]), iv, cipher.getAuthTag(), ct]);
}

export function open(key: Buffer, blob: Buffer, aad: Buffer): Buffer {
  if (key.length !== KEY_LEN) throw new VaultCryptoError("key must be 32 bytes");
  if (blob.length < 1 + IV_LEN + TAG_LEN || blob[0] !== FORMAT_V1) throw new VaultCryptoError("unknown ciphertext format");
  const iv = blob.subarray(1, 1 + IV_LEN);
  const tag = blob.subarray(1 + IV_LEN, 1 + IV_LEN + TAG_LEN);
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(blob.subarray(1 + IV_LEN + TAG_LEN)), decipher.final()]);
  } catch {
    throw new VaultCryptoError("ciphertext failed authentication (wrong key or moved ciphertext)");
  }
}

/**
 * A stable, non-reversible name for a master key, stored next to each wrapped data key so a
 * wrong PETRI_MASTER_KEY is reported as such instead of as corrupt data.
 */
export function masterKeyId(key: Buffer): string {
  return createHmac("sha256", key).update("petri/vault/master-key-id").digest("hex").slice(0, 16);
}

export function generateMasterKey(): Buffer {
  return randomBytes(KEY_LEN);
}

/** Accepts 64 hex characters or base64/base64url of exactly 32 bytes. */
export function parseMasterKey(text: string): Buffer {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, "hex");
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) {
    const b = Buffer.from(t.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    if (b.length === KEY_LEN) return b;
  }
  throw new VaultCryptoError("master key must be 32 bytes, given as 64 hex characters or base64");
}

export interface MasterKeySource {
  /** Value of PETRI_MASTER_KEY, if set (hex or base64 of 32 bytes). Takes precedence over the file. */
  env?: string;
  /** Key file, created with mode 0600 (directory 0700) on first start when no env value is given. */
  file: string;
}

/**
 * The master key from PETRI_MASTER_KEY, else from the key file, else a new random key written to
 * the key file. A key file readable by group or others is refused: it would defeat the point.
 */
export function loadOrCreateMasterKey(src: MasterKeySource): Buffer {
  if (src.env !== undefined && src.env.trim() !== "") return parseMasterKey(src.env);
  try {
    return readMasterKeyFile(src.file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const key = generateMasterKey();
  fs.mkdirSync(path.dirname(src.file), { recursive: true, mode: 0o700 });
  try {
    // "wx": if another process won the race, use its key rather than overwriting it.
    fs.writeFileSync(src.file, key.toString("base64") + "\n", { mode: 0o600, flag: "wx" });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return readMasterKeyFile(src.file);
    throw e;
  }
  return key;
}

/** The current master key from a key file (its first line). */
export function readMasterKeyFile(file: string): Buffer {
  return readMasterKeyRing(file)[0];
}

/**
 * All keys in a key file: the first line is the current key, further lines are previous keys
 * kept during a rotation so that running servers can still open data keys not yet re-wrapped.
 */
export function readMasterKeyRing(file: string): Buffer[] {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new VaultCryptoError(`master key file ${file} must not be accessible by group or others (chmod 600 it)`);
  }
  const lines = fs.readFileSync(file, "utf8").split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (lines.length === 0) throw new VaultCryptoError(`master key file ${file} is empty`);
  return lines.map(parseMasterKey);
}

/** Replaces the key file atomically (temp file, fsync, rename), mode 0600. `keys[0]` is the current key. */
export function writeMasterKeyFile(file: string, keys: Buffer | Buffer[]): void {
  const list = Array.isArray(keys) ? keys : [keys];
  if (list.length === 0 || list.some((k) => k.length !== KEY_LEN)) throw new VaultCryptoError("master keys must be 32 bytes");
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeSync(fd, list.map((k) => k.toString("base64")).join("\n") + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
