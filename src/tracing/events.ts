/**
 * Decodes the host tracer's output (bpftrace -f json; see program.ts for the record format).
 * Untrusted strings (paths, arguments) are kept as raw bytes until the end: a file name need not
 * be UTF-8, and the audit records it losslessly (`path` for display, `path_b64` for the bytes).
 */

export type TraceEvent =
  | { t: "fork"; ts: number; parent: number; child: number; run: string }
  | { t: "exec"; ts: number; tid: number; run: string; uid: number; path: Buffer }
  | { t: "arg"; tid: number; i: number; arg: Buffer }
  | { t: "more_args"; tid: number }
  /** tid: the thread that entered the exec (its E and A records'); pid: its process (after a non-leader's exec, the leader's pid). */
  | { t: "exec_ret"; ts: number; tid: number; run: string; ret: number; execId?: number; pid?: number }
  | { t: "open"; ts?: number; pid: number; run: string; ret: number; flags: number; path: Buffer; execId?: number; count?: number }
  | { t: "open_map"; entries: OpenEntry[]; size: number }
  /** Library opens past the per-drain listing bound (program.ts), counted per process image. */
  | { t: "lib_count"; run: string; pid: number; execId: number; count: number }
  | { t: "lib_map"; entries: LibCount[] }
  | { t: "net"; ts: number; pid: number; run: string; op: NetOp; ret: number; family: "inet" | "inet6"; port: number; address: string }
  | { t: "unix"; ts: number; pid: number; run: string; op: NetOp; ret: number; path: Buffer }
  | { t: "dns"; ts: number; pid: number; run: string; name: Buffer }
  | { t: "handover"; ts: number; pid: number; run: string; uid: number; execId: number; path: Buffer }
  /** An open of the run whose arguments the probe could not read (program.ts, openExitProbe). */
  | { t: "unreadable"; run: string }
  | { t: "barrier"; n: number }
  | { t: "lost"; count: number }
  | { t: "attached"; probes: number };

export type NetOp = "connect" | "bind" | "sendto";
/** The events that carry the kernel's clock (program.ts), by which a run's events are put back in order. */
export type TimedEvent = Extract<TraceEvent, { ts: number }> | (Extract<TraceEvent, { t: "open" }> & { ts: number });
/**
 * One entry of the kernel's open counts: opens of one path with one result by one process image.
 * execId is the process's self_exec_id × 2, plus 1 once it passed a warm hand-over mark (program.ts).
 */
export type OpenEntry = Extract<TraceEvent, { t: "open" }> & { execId: number; count: number };
export type LibCount = Extract<TraceEvent, { t: "lib_count" }>;
const OPS: Record<string, NetOp> = { c: "connect", b: "bind", s: "sendto" };

const SIMPLE_ESCAPES: Record<string, number> = { '"': 0x22, "\\": 0x5c, "/": 0x2f, b: 8, f: 12, n: 10, r: 13, t: 9 };

/**
 * The bytes of a JSON string body as bpftrace 0.17 writes it. Besides the usual escapes it
 * writes a byte ≥ 0x80 as `\uffffffXX` (a sign-extended char): that is decoded to the byte XX,
 * so nothing is lost. Null when the text is not such a string.
 */
export function decodeBpftraceString(s: string): Buffer | null {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x5c) {
      if (c < 0x80) out.push(c);
      else out.push(...Buffer.from(s[i], "utf8"));
      continue;
    }
    const e = s[i + 1];
    if (e === undefined) return null;
    if (e in SIMPLE_ESCAPES) { out.push(SIMPLE_ESCAPES[e]); i++; continue; }
    if (e !== "u") return null;
    if (/^ffffff[0-9a-f]{2}$/i.test(s.slice(i + 2, i + 10))) {
      out.push(parseInt(s.slice(i + 8, i + 10), 16));
      i += 9;
      continue;
    }
    const hex = s.slice(i + 2, i + 6);
    if (!/^[0-9a-f]{4}$/i.test(hex)) return null;
    const cp = parseInt(hex, 16);
    if (cp < 0x100) out.push(cp);
    else out.push(...Buffer.from(String.fromCharCode(cp), "utf8"));
    i += 5;
  }
  return Buffer.from(out);
}

const PRINTF_PREFIX = '{"type": "printf", "data": "';
const MAP_PREFIX = '{"type": "map", "data": {"@o';
const LIB_MAP_PREFIX = '{"type": "map", "data": {"@lc';

/** The library-open counts past the listing bound: keys "run,pid,exec id", numbers only. */
function parseLibMap(line: string): TraceEvent | null {
  const i = line.indexOf("{", LIB_MAP_PREFIX.length);
  if (i === -1) return null;
  const entries: LibCount[] = [];
  for (const m of line.slice(i).matchAll(/"(\d+),(\d+),(\d+)": (\d+)/g)) {
    entries.push({ t: "lib_count", run: m[1]!, pid: Number(m[2]), execId: Number(m[3]), count: Number(m[4]) });
  }
  return { t: "lib_map", entries };
}

/**
 * The kernel's open counts, printed by bpftrace as one JSON map whose keys are the fields joined
 * by commas: "run,pid,exec id,result,flags,path" (the path last, so its own commas are harmless).
 * Parsed by hand: JSON.parse would mangle bpftrace's \uffffffXX escapes of bytes ≥ 0x80.
 */
function parseOpenMap(line: string): TraceEvent | null {
  let i = line.indexOf("{", MAP_PREFIX.length);
  if (i === -1) return null;
  i++;
  const entries: OpenEntry[] = [];
  let size = 0;
  let nextBs = line.indexOf("\\", i);
  let raw: Buffer | undefined;
  // A drained map can hold tens of thousands of keys in one line: keys without an escape (nearly
  // all) are sliced as they are; only the others go through decodeBpftraceString.
  while (i < line.length) {
    const c = line.charCodeAt(i);
    if (c === 0x7d /* } */) break;
    if (c === 0x2c /* , */ || c === 0x20) { i++; continue; }
    if (c !== 0x22 /* " */) return null;
    let j = line.indexOf('"', i + 1);
    // The next backslash of the line, searched again only once passed (not once per key).
    if (nextBs !== -1 && nextBs <= i) nextBs = line.indexOf("\\", i + 1);
    const bs = nextBs;
    let key: Buffer | string | null;
    if (bs === -1 || bs > j) {
      key = line.slice(i + 1, j);
    } else {
      // The key ends at the first quote not escaped by an odd run of backslashes.
      for (j = i + 1; j < line.length; j++) {
        const d = line.charCodeAt(j);
        if (d === 0x5c) { j++; continue; }
        if (d === 0x22) break;
      }
      key = decodeBpftraceString(line.slice(i + 1, j));
    }
    if (j === -1 || key === null || line.charCodeAt(j + 1) !== 0x3a /* : */) return null;
    const i0 = i;
    let k = j + 2;
    while (line.charCodeAt(k) === 0x20) k++;
    let count = 0;
    const digits = k;
    for (let d = line.charCodeAt(k); d >= 0x30 && d <= 0x39; d = line.charCodeAt(++k)) count = count * 10 + (d - 0x30);
    if (k === digits) return null;
    i = k;
    size++;
    // "run,pid,exec id,result,flags,path": the path last, so its own commas are harmless.
    const text = typeof key === "string" ? key : key.toString("latin1");
    const c1 = text.indexOf(","), c2 = text.indexOf(",", c1 + 1), c3 = text.indexOf(",", c2 + 1), c4 = text.indexOf(",", c3 + 1), c5 = text.indexOf(",", c4 + 1);
    if (c1 < 0 || c2 < 0 || c3 < 0 || c4 < 0 || c5 < 0) continue;
    // A view into one copy of the whole line (latin1: one byte per character), not a copy per key.
    const path = typeof key === "string" ? (raw ??= Buffer.from(line, "latin1")).subarray(i0 + 1 + c5 + 1, i0 + 1 + key.length) : key.subarray(c5 + 1);
    entries.push({ t: "open", run: text.slice(0, c1), pid: int(text.slice(c1 + 1, c2)), execId: int(text.slice(c2 + 1, c3)), ret: int(text.slice(c3 + 1, c4)),
      flags: int(text.slice(c4 + 1, c5)), path, count });
  }
  return { t: "open_map", entries, size };
}

function int(s: string | undefined): number {
  const n = Number(s);
  return Number.isFinite(n) ? n : NaN;
}

/** Splits off `n` space-separated ASCII fields; the rest of the bytes (after one space) is the tail. */
function fields(b: Buffer, n: number): { f: string[]; tail: Buffer } | null {
  const f: string[] = [];
  let pos = 0;
  for (let k = 0; k < n; k++) {
    const sp = b.indexOf(0x20, pos);
    if (sp === -1) {
      if (k === n - 1) { f.push(b.subarray(pos).toString("latin1")); return { f, tail: Buffer.alloc(0) }; }
      return null;
    }
    f.push(b.subarray(pos, sp).toString("latin1"));
    pos = sp + 1;
  }
  return { f, tail: b.subarray(pos) };
}

/** IPv6 address from the four 32-bit words bpftrace printed (each read little-endian from network order). */
function inet6(words: string[]): string {
  const buf = Buffer.alloc(16);
  words.forEach((w, i) => buf.writeUInt32LE(parseInt(w, 16) >>> 0, i * 4));
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(i).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 asks.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best === -1) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** One line of bpftrace's JSON output → an event, or null for anything else. */
export function parseTraceLine(line: string): TraceEvent | null {
  if (line.startsWith(MAP_PREFIX)) return parseOpenMap(line);
  if (line.startsWith(LIB_MAP_PREFIX)) return parseLibMap(line);
  if (!line.startsWith(PRINTF_PREFIX)) {
    if (line.startsWith('{"type": "lost_events"')) {
      try {
        return { t: "lost", count: Number((JSON.parse(line) as { data: { events: number } }).data.events) || 1 };
      } catch {
        return { t: "lost", count: 1 };
      }
    }
    if (line.startsWith('{"type": "attached_probes"')) {
      try {
        return { t: "attached", probes: Number((JSON.parse(line) as { data: { probes: number } }).data.probes) };
      } catch {
        return null;
      }
    }
    return null;
  }
  if (!line.endsWith('"}')) return null;
  const raw = decodeBpftraceString(line.slice(PRINTF_PREFIX.length, -2));
  if (!raw || raw.length < 2 || raw[raw.length - 1] !== 0x0a) return null;
  const b = raw.subarray(0, raw.length - 1);
  const kind = String.fromCharCode(b[0]);
  let rest = b.subarray(2);
  // The clock field of the timed kinds (program.ts). A Number: exact to the nanosecond for the
  // first 104 days of uptime and to a few nanoseconds for years after, far finer than the time
  // between two events of one task.
  let ts = NaN;
  if ("FEXNUDHO".includes(kind)) {
    const sp = rest.indexOf(0x20);
    if (sp === -1) return null;
    ts = int(rest.subarray(0, sp).toString("latin1"));
    rest = rest.subarray(sp + 1);
  }
  switch (kind) {
    case "F": {
      const r = fields(rest, 3);
      return r ? { t: "fork", ts, parent: int(r.f[0]), child: int(r.f[1]), run: r.f[2] } : null;
    }
    case "E": {
      const r = fields(rest, 3);
      return r ? { t: "exec", ts, tid: int(r.f[0]), run: r.f[1], uid: int(r.f[2]), path: r.tail } : null;
    }
    case "A": {
      const r = fields(rest, 2);
      return r ? { t: "arg", tid: int(r.f[0]), i: int(r.f[1]), arg: r.tail } : null;
    }
    case "M":
      return { t: "more_args", tid: int(rest.toString("latin1")) };
    case "X": {
      const f = rest.toString("latin1").split(" ");
      if (f.length === 5) return { t: "exec_ret", ts, tid: int(f[0]), run: f[1], ret: int(f[2]), execId: int(f[3]), pid: int(f[4]) };
      if (f.length === 4) return { t: "exec_ret", ts, tid: int(f[0]), run: f[1], ret: int(f[2]), execId: int(f[3]) };
      return f.length === 3 ? { t: "exec_ret", ts, tid: int(f[0]), run: f[1], ret: int(f[2]) } : null;
    }
    case "O": {
      const r = fields(rest, 4);
      return r ? { t: "open", ts, pid: int(r.f[0]), run: r.f[1], ret: int(r.f[2]), flags: int(r.f[3]), path: r.tail } : null;
    }
    case "N": {
      const f = rest.toString("latin1").split(" ");
      const op = OPS[f[2]];
      if (!op || f.length < 7) return null;
      const base = { t: "net" as const, ts, pid: int(f[0]), run: f[1], op, ret: int(f[3]), port: int(f[5]) };
      if (f[4] === "4") return { ...base, family: "inet", address: f[6] };
      if (f[4] === "6" && f.length === 10) return { ...base, family: "inet6", address: inet6(f.slice(6, 10)) };
      return null;
    }
    case "U": {
      const r = fields(rest, 4);
      const op = r && OPS[r.f[2]];
      return r && op ? { t: "unix", ts, pid: int(r.f[0]), run: r.f[1], op, ret: int(r.f[3]), path: r.tail } : null;
    }
    case "D": {
      const r = fields(rest, 2);
      return r ? { t: "dns", ts, pid: int(r.f[0]), run: r.f[1], name: r.tail } : null;
    }
    case "H": {
      const r = fields(rest, 4);
      return r ? { t: "handover", ts, pid: int(r.f[0]), run: r.f[1], uid: int(r.f[2]), execId: int(r.f[3]), path: r.tail } : null;
    }
    case "B":
      return { t: "barrier", n: int(rest.toString("latin1")) };
    case "Z":
      return { t: "unreadable", run: rest.toString("latin1") };
    default:
      return null;
  }
}
