/**
 * The backstop: even though brokers never hand a secret to sandboxed code, any occurrence of a
 * secret's value in output (raw, base64 in any alignment, hex, URL-encoded, JSON-escaped) is
 * replaced by `[REDACTED:name]`. Works on bytes so binary output passes through untouched.
 */
export interface NamedSecret {
  name: string;
  value: string;
}

interface Pattern {
  name: string;
  bytes: Buffer;
  /** The value mixes at least three kinds of characters (lower, upper, digit, other). */
  strong?: boolean;
}

interface Interval {
  start: number;
  end: number;
  name: string;
}

/** Encoded fragments shorter than this are too likely to occur by chance in ordinary output. */
const MIN_ENCODED_LEN = 6;

function b64Fragments(value: Buffer, url: boolean): string[] {
  // With k bytes of unknown data before the value in its 3-byte group, output character j
  // covers input bits [6j, 6j+6); keep only characters made entirely of the value's bits.
  const out: string[] = [];
  for (let k = 0; k < 3; k++) {
    const enc = Buffer.concat([Buffer.alloc(k), value]).toString(url ? "base64url" : "base64");
    const first = Math.ceil((8 * k) / 6);
    const end = Math.floor((8 * (k + value.length)) / 6);
    if (end - first >= MIN_ENCODED_LEN) out.push(enc.slice(first, end));
  }
  return out;
}

function pctEncode(value: Buffer, safe: RegExp, plusForSpace: boolean, upper: boolean): string {
  let s = "";
  for (const b of value) {
    const c = String.fromCharCode(b);
    if (b < 0x80 && safe.test(c)) s += c;
    else if (plusForSpace && b === 0x20) s += "+";
    else {
      const h = b.toString(16).padStart(2, "0");
      s += "%" + (upper ? h.toUpperCase() : h);
    }
  }
  return s;
}

/** Every form in which a value may show up in text. */
export function encodedForms(value: string): string[] {
  const raw = Buffer.from(value, "utf8");
  const forms = new Set<string>([value]);
  // Printed backwards (a classic way past a scanner); only worth it for values that are not palindromes.
  forms.add(Buffer.from(raw).reverse().toString("latin1") === raw.toString("latin1") ? value : Buffer.from(raw).reverse().toString("utf8"));
  const json = JSON.stringify(value).slice(1, -1);
  forms.add(json);
  if (raw.length * 2 >= MIN_ENCODED_LEN) {
    forms.add(raw.toString("hex"));
    forms.add(raw.toString("hex").toUpperCase());
  }
  for (const f of b64Fragments(raw, false)) forms.add(f);
  for (const f of b64Fragments(raw, true)) forms.add(f);
  const safeSets: [RegExp, boolean][] = [
    [/[A-Za-z0-9\-_.!~*'()]/, false], // encodeURIComponent
    [/[A-Za-z0-9\-_.~]/, false], // RFC 3986 unreserved, Python quote(safe="")
    [/[A-Za-z0-9\-_.~/]/, false], // Python quote() default
    [/[A-Za-z0-9*\-._]/, true], // application/x-www-form-urlencoded (URLSearchParams)
    [/[A-Za-z0-9\-_.~]/, true], // Python quote_plus
    [/(?!)/, false], // every byte percent-encoded
  ];
  for (const [safe, plus] of safeSets) {
    forms.add(pctEncode(raw, safe, plus, true));
    forms.add(pctEncode(raw, safe, plus, false));
  }
  return [...forms].filter((f) => f.length > 0);
}

export interface RedactorOptions {
  /**
   * Also match any run of this many bytes taken from any form of a value (raw, hex, base64,
   * URL-encoded, reversed…), so a value handed back in slices is caught slice by slice. Used on
   * what enters a sandbox (brokers' responses), where a few false hits cost little.
   * Values no longer than this are matched whole only. Unset: whole values only.
   */
  fragmentLength?: number;
}

/** Longest form (bytes) whose pieces are indexed for fragment matching. */
export const MAX_FRAGMENTED_FORM = 4096;

/** Polynomial rolling hash base (odd, so multiplication mod 2^32 is invertible). */
const HASH_BASE = 0x01000193;

export class Redactor {
  private readonly patterns: Pattern[] = [];
  /** Length in bytes of the longest pattern: what a stream must hold back. */
  readonly maxPatternLength: number;
  readonly names: string[];
  private readonly fragLen: number;
  /** Rolling hash of each K-byte fragment → the fragments with that hash. */
  private readonly fragments = new Map<number, Pattern[]>();
  private readonly basePow: number;

  constructor(secrets: NamedSecret[], opts: RedactorOptions = {}) {
    this.fragLen = opts.fragmentLength ?? 0;
    const seen = new Set<string>();
    // Longer values first: when one secret contains another, the longer one names the match.
    const sorted = [...secrets].filter((s) => s.value.length > 0).sort((a, b) => b.value.length - a.value.length);
    for (const s of sorted) {
      for (const f of encodedForms(s.value)) {
        if (seen.has(f)) continue;
        seen.add(f);
        this.patterns.push({ name: s.name, bytes: Buffer.from(f, "utf8"), strong: charClasses(Buffer.from(s.value, "utf8")) >= 3 });
      }
    }
    this.names = [...new Set(secrets.map((s) => s.name))];
    this.maxPatternLength = this.patterns.reduce((m, p) => Math.max(m, p.bytes.length), 0);
    let pow = 1;
    for (let i = 1; i < this.fragLen; i++) pow = Math.imul(pow, HASH_BASE);
    this.basePow = pow;
    if (this.fragLen > 0) {
      const K = this.fragLen;
      const seenFrag = new Set<string>();
      for (const p of this.patterns) {
        // Long values (keys, certificates) are matched whole: indexing every piece of every
        // encoding of 64 KiB would cost each run megabytes; tokens and passwords are short.
        if (p.bytes.length <= K || p.bytes.length > MAX_FRAGMENTED_FORM) continue;
        for (let i = 0; i + K <= p.bytes.length; i++) {
          const bytes = p.bytes.subarray(i, i + K);
          // For a value made of words or digits ("not-the-password"), a piece that is one word
          // or one number ("password", "20261130") is ordinary text too often: skipped. A
          // token mixing three or more kinds of characters is random enough to match whole.
          if (!p.strong && charClasses(bytes) < 2) continue;
          const key = bytes.toString("latin1");
          if (seenFrag.has(key)) continue;
          seenFrag.add(key);
          const h = hashOf(bytes, 0, K);
          const list = this.fragments.get(h);
          if (list) list.push({ name: p.name, bytes });
          else this.fragments.set(h, [{ name: p.name, bytes }]);
        }
      }
    }
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Fragment matches: every K-byte window of buf equal to a K-byte piece of some form of a value. */
  private findFragments(buf: Buffer, out: Interval[]): void {
    const K = this.fragLen;
    if (K === 0 || this.fragments.size === 0 || buf.length < K) return;
    let h = hashOf(buf, 0, K);
    for (let i = 0; ; i++) {
      const list = this.fragments.get(h);
      if (list) {
        for (const f of list) {
          if (buf.compare(f.bytes, 0, K, i, i + K) === 0) {
            out.push({ start: i, end: i + K, name: f.name });
            break;
          }
        }
      }
      if (i + K >= buf.length) break;
      h = (Math.imul(h - Math.imul(buf[i], this.basePow), HASH_BASE) + buf[i + K]) | 0;
    }
  }

  redact(input: Buffer | string): { text: string; redactions: string[] } {
    const { data, redactions } = this.redactBuffer(input);
    return { text: data.toString("utf8"), redactions };
  }

  redactBuffer(input: Buffer | string): { data: Buffer; redactions: string[] } {
    const buf = typeof input === "string" ? Buffer.from(input, "utf8") : input;
    const intervals = this.find(buf);
    if (intervals.length === 0) return { data: buf, redactions: [] };
    return { data: this.apply(buf, intervals, 0, buf.length), redactions: uniqueNames(intervals) };
  }

  /** Names of the secrets that occur in `input` in any form. */
  detect(input: Buffer | string): string[] {
    const buf = typeof input === "string" ? Buffer.from(input, "utf8") : input;
    return uniqueNames(this.find(buf));
  }

  stream(): StreamRedactor {
    return new StreamRedactor(this);
  }

  /** Merged (overlapping matches joined) intervals of all matches in buf, in order. */
  find(buf: Buffer): Interval[] {
    const all: Interval[] = [];
    if (this.patterns.length === 0 || buf.length === 0) return all;
    for (const p of this.patterns) {
      let i = buf.indexOf(p.bytes);
      while (i !== -1) {
        all.push({ start: i, end: i + p.bytes.length, name: p.name });
        i = buf.indexOf(p.bytes, i + 1);
      }
    }
    this.findFragments(buf, all);
    if (all.length === 0) return all;
    all.sort((a, b) => a.start - b.start || b.end - a.end);
    const merged: Interval[] = [{ ...all[0] }];
    for (let i = 1; i < all.length; i++) {
      const last = merged[merged.length - 1];
      if (all[i].start < last.end) last.end = Math.max(last.end, all[i].end);
      else merged.push({ ...all[i] });
    }
    return merged;
  }

  /** buf[from, to) with intervals (all within it) replaced. */
  apply(buf: Buffer, intervals: Interval[], from: number, to: number): Buffer {
    const parts: Buffer[] = [];
    let pos = from;
    for (const iv of intervals) {
      parts.push(buf.subarray(pos, iv.start), Buffer.from(`[REDACTED:${iv.name}]`));
      pos = iv.end;
    }
    parts.push(buf.subarray(pos, to));
    return Buffer.concat(parts);
  }
}

function uniqueNames(intervals: Interval[]): string[] {
  return [...new Set(intervals.map((i) => i.name))];
}

/**
 * Redacts a byte stream chunk by chunk. It holds back the last (longest pattern - 1) bytes, so a
 * secret split across chunks is still caught; `end()` releases the rest. Emitted chunks may
 * split a UTF-8 character: decode with a StringDecoder.
 */
export class StreamRedactor {
  private tail: Buffer = Buffer.alloc(0);
  private readonly found = new Set<string>();

  constructor(private readonly redactor: Redactor) {}

  get redactions(): string[] {
    return [...this.found];
  }

  push(chunk: Buffer | string): Buffer {
    const c = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
    if (this.redactor.empty) return c;
    const buf = this.tail.length ? Buffer.concat([this.tail, c]) : c;
    const hold = this.redactor.maxPatternLength - 1;
    let cut = buf.length - hold;
    if (cut <= 0) {
      this.tail = Buffer.from(buf);
      return Buffer.alloc(0);
    }
    // Any match starting before `cut` lies entirely in buf, so it is fully known. A run of
    // fragments reaching into the held tail may go on in the next chunk: hold it back whole
    // (within bounds), so no short piece of it slips out after the marker.
    const intervals = this.redactor.find(buf);
    const emitted: Interval[] = [];
    const tailStart = buf.length - hold;
    for (const iv of intervals) {
      if (iv.start >= cut) break;
      if (iv.end > tailStart && buf.length - iv.start <= 8 * this.redactor.maxPatternLength) {
        cut = iv.start;
        break;
      }
      emitted.push(iv);
      if (iv.end > cut) cut = iv.end;
    }
    if (cut <= 0) {
      this.tail = Buffer.from(buf);
      return Buffer.alloc(0);
    }
    for (const iv of emitted) this.found.add(iv.name);
    const out = this.redactor.apply(buf, emitted, 0, cut);
    this.tail = Buffer.from(buf.subarray(cut));
    return out;
  }

  end(): Buffer {
    const rest = this.tail;
    this.tail = Buffer.alloc(0);
    const intervals = this.redactor.find(rest);
    for (const iv of intervals) this.found.add(iv.name);
    return intervals.length ? this.redactor.apply(rest, intervals, 0, rest.length) : rest;
  }
}

function hashOf(buf: Buffer, from: number, len: number): number {
  let h = 0;
  for (let i = from; i < from + len; i++) h = (Math.imul(h, HASH_BASE) + buf[i]) | 0;
  return h;
}

/** How many of lower-case, upper-case, digit and other bytes occur in b. */
function charClasses(b: Buffer): number {
  let lower = 0, upper = 0, digit = 0, other = 0;
  for (const c of b) {
    if (c >= 0x61 && c <= 0x7a) lower = 1;
    else if (c >= 0x41 && c <= 0x5a) upper = 1;
    else if (c >= 0x30 && c <= 0x39) digit = 1;
    else other = 1;
  }
  return lower + upper + digit + other;
}
