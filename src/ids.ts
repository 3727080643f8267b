import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** Random, unguessable ids: 20 chars of base36 ≈ 103 bits from the CSPRNG. */
export function newId(prefix: "sb" | "ex" | "key" | "tn" | "req" | "dep", length = 20): string {
  const bytes = randomBytes(length);
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHABET[bytes[i] % 36];
  return `${prefix}_${out}`;
}

export const ID_PATTERN = {
  sandbox: /^sb_[0-9a-z]{20}$/,
  exec: /^ex_[0-9a-z]{20}$/,
};
