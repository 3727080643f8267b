/**
 * Turns how a run ended into one line a person or a model can act on, and pulls the error out
 * of a Python, Node or Go traceback. An agent feeding stdout+stderr to its model otherwise sees
 * an empty SIGKILL for a timeout and cannot tell it from an out-of-memory kill.
 */

export interface ErrorSummary {
  /** Exception class or error kind: "ZeroDivisionError", "TypeError", "panic", "compile error". */
  type: string;
  message: string;
  /** Workspace-relative where possible ("main.py"), else as printed ("<string>", "[eval]"). */
  file: string | null;
  line: number | null;
}

export interface EndFacts {
  language: string;
  /** The run never started (or the runtime failed): the real cause. */
  startError?: { code: string; message: string } | null;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  oomKilled: boolean;
  cancelled?: "cancel" | "quota" | "shutdown" | null;
  quotaExceeded?: boolean;
  timeoutMs: number;
  memoryMb: number;
  workspaceMb?: number;
  fileSizeMb?: number;
  outputLimitBytes?: number;
  stdoutCutBytes?: number;
  stderrCutBytes?: number;
  /** Hosts the broker refused because they are not on the allow-list. */
  blockedHosts?: string[];
  /** The run had a network path (an HTTP broker); false: no network at all. */
  networkAllowed: boolean;
  stdout: string;
  stderr: string;
}

export const NO_NETWORK = "no network in this sandbox: allow the host with allow_hosts";

/** Seconds as people write them: 30, 1.5, 0.25. */
function seconds(ms: number): string {
  return String(Math.round(ms / 10) / 100);
}

function mb(bytes: number): string {
  const m = bytes / (1024 * 1024);
  return m >= 1 ? `${Math.round(m * 10) / 10} MB` : `${Math.round(bytes / 1024)} KB`;
}

const SIGNAL_MEANING: Record<string, string> = {
  SIGSEGV: "segmentation fault",
  SIGABRT: "aborted",
  SIGBUS: "bus error",
  SIGFPE: "arithmetic error",
  SIGILL: "illegal instruction",
  SIGTERM: "terminated",
  SIGKILL: "killed",
  SIGPIPE: "broken pipe",
};

// What failed name resolution or connection attempts print when there is no network interface.
const NO_NET_PATTERNS = [
  /Temporary failure in name resolution/,
  /Name or service not known/,
  /\bEAI_AGAIN\b/,
  /\bENOTFOUND\b/,
  /getaddrinfo/,
  /Network is unreachable/,
  /\bENETUNREACH\b/,
  /dial tcp: lookup /,
  /Could not resolve host/,
  /petri: no network in this sandbox/,
];

/**
 * The one-line explanation of how a run ended, or null when it simply succeeded.
 * Several facts can hold at once (a flood that then crashed); they are joined with "; ".
 */
export function explainEnd(f: EndFacts): string | null {
  if (f.startError) return `could not start: ${f.startError.message}`;
  const parts: string[] = [];
  if (f.timedOut) parts.push(`killed: exceeded the ${seconds(f.timeoutMs)} s time limit`);
  else if (f.oomKilled) parts.push(`killed: out of memory (${f.memoryMb} MB limit)`);
  else if (f.quotaExceeded || f.cancelled === "quota") parts.push(`killed: the workspace grew past its ${f.workspaceMb ?? "?"} MB quota`);
  else if (f.cancelled === "cancel") parts.push("cancelled: stopped by a cancel request");
  else if (f.cancelled === "shutdown") parts.push("cancelled: the server shut down during the run");
  else if (f.signal === "SIGXFSZ") parts.push(`killed: wrote a file larger than the ${f.fileSizeMb ?? "?"} MB file size limit`);
  else if (f.signal) parts.push(`killed by ${f.signal}${SIGNAL_MEANING[f.signal] ? ` (${SIGNAL_MEANING[f.signal]})` : ""}`);

  const text = `${f.stderr}\n${f.stdout}`;
  const failed = parts.length > 0 || (f.exitCode !== null && f.exitCode !== 0);
  if (f.blockedHosts?.length) {
    parts.push(`blocked: ${f.blockedHosts.join(", ")} ${f.blockedHosts.length === 1 ? "is" : "are"} not on this sandbox's allow-list: add ${f.blockedHosts.length === 1 ? "it" : "them"} with allow_hosts`);
  } else if (!f.networkAllowed && failed && NO_NET_PATTERNS.some((p) => p.test(text))) {
    parts.push(NO_NETWORK);
  }
  if (parts.length === 0 && f.exitCode !== null && f.exitCode !== 0) {
    const s = summarizeError(f.language, f.stderr, f.stdout);
    parts.push(s ? `exited with code ${f.exitCode}: ${formatSummary(s)}` : `exited with code ${f.exitCode}`);
  }
  const cuts: string[] = [];
  if (f.stdoutCutBytes) cuts.push(`${f.stdoutCutBytes} bytes of stdout`);
  if (f.stderrCutBytes) cuts.push(`${f.stderrCutBytes} bytes of stderr`);
  if (cuts.length) {
    const limit = f.outputLimitBytes ? ` (${mb(f.outputLimitBytes)} kept per stream)` : "";
    parts.push(`output cut: ${cuts.join(" and ")} cut from the middle${limit}; write large output to a file`);
  }
  return parts.length ? parts.join("; ") : null;
}

export function formatSummary(s: ErrorSummary): string {
  const where = s.file ? ` (${s.file}${s.line !== null ? `:${s.line}` : ""})` : "";
  return `${s.type}${s.message ? `: ${s.message}` : ""}${where}`;
}

/**
 * Paths inside the run as the user knows them: /workspace/a/b.py → a/b.py; a snippet is
 * "<snippet>" however the language ran it (python -c: "<string>", node -e: "[eval]", or a file).
 * (A workspace file literally named "[eval]" is reported as the snippet too; an accepted blur.)
 */
function userPath(p: string): string {
  if (p === "<string>" || p === "[eval]" || p === "[eval]-wrapper") return "<snippet>";
  // A Node/TypeScript snippet runs from its file under the name `node -e` would give it, in the
  // working directory (languages.ts NODE_SNIPPET_LOADER): CommonJS and ES module spellings.
  if (p === "/workspace/[eval]" || p === "file:///workspace/%5Beval%5D") return "<snippet>";
  if (p.startsWith("/workspace/")) return p.slice("/workspace/".length);
  if (p.startsWith("file:///workspace/")) return p.slice("file:///workspace/".length);
  if (p.startsWith("/petri/snippet/")) return "<snippet>";
  return p;
}

/** The error a traceback ends with, for the run's language; null when there is none. */
export function summarizeError(language: string, stderr: string, stdout = ""): ErrorSummary | null {
  const text = stderr.trim() ? stderr : stdout;
  switch (language) {
    case "python": return python(text);
    case "node": case "typescript": return node(text);
    case "go": return go(text);
    case "bash": return bash(text);
    default: return python(text) ?? node(text) ?? go(text);
  }
}

function python(text: string): ErrorSummary | null {
  const lines = text.split("\n");
  let start = -1;
  lines.forEach((l, i) => { if (l.startsWith("Traceback (most recent call last):")) start = i; });
  // A SyntaxError raised while compiling the main file has no "Traceback" header.
  const from = start >= 0 ? start : lines.findIndex((l) => /^ {2}File ".*", line \d+/.test(l));
  if (from < 0) return null;
  let file: string | null = null;
  let line: number | null = null;
  for (let i = from; i < lines.length; i++) {
    const frame = /^ {2}File "(.*)", line (\d+)/.exec(lines[i]);
    if (frame) {
      // Frames inside the standard library or site-packages say less than the user's last frame.
      const own = !/\/usr\/lib\/python|site-packages|dist-packages|^<frozen /.test(frame[1]);
      if (own || file === null) { file = userPath(frame[1]); line = Number(frame[2]); }
      continue;
    }
    const exc = /^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)|[A-Z][\w.]*)(?::\s?(.*))?$/.exec(lines[i]);
    if (exc && !lines[i].startsWith(" ")) {
      return { type: exc[1], message: (exc[2] ?? "").trim(), file, line };
    }
  }
  return null;
}

function node(text: string): ErrorSummary | null {
  const lines = text.split("\n");
  // The thrown error is the line just above the first "    at " frame (or the last error line).
  const firstAt = lines.findIndex((l) => /^\s+at /.test(l));
  let errIdx = -1;
  const errLine = /^(?:Uncaught )?([A-Za-z_$][\w$]*(?:Error|Exception)|Error|AssertionError \[[A-Z_]+\])(?: \[[A-Z_]+\])?:\s?(.*)$/;
  const end = firstAt >= 0 ? firstAt : lines.length;
  for (let i = end - 1; i >= 0; i--) if (errLine.test(lines[i])) { errIdx = i; break; }
  if (errIdx < 0) {
    // `throw "text"` and other non-Error values: "Uncaught 'text'" after the source excerpt.
    const thrown = lines.findIndex((l) => /^Uncaught /.test(l));
    if (thrown < 0) return null;
    errIdx = thrown;
  }
  const m = errLine.exec(lines[errIdx]);
  let file: string | null = null;
  let line: number | null = null;
  // Node prints the throwing location first: "/workspace/main.js:2" above the source excerpt.
  const loc = lines.slice(0, errIdx).map((l) => /^((?:\/|\[eval\]|file:\/\/)[^\s:]*):(\d+)$/.exec(l)).find(Boolean);
  if (loc) { file = userPath(loc[1]); line = Number(loc[2]); }
  for (let i = errIdx + 1; i < lines.length && file === null; i++) {
    const at = /^\s+at (?:.*\()?((?:\/|file:\/\/|\[eval\])[^():]*?):(\d+):\d+\)?$/.exec(lines[i]);
    if (at && !at[1].startsWith("node:")) { file = userPath(at[1]); line = Number(at[2]); }
  }
  if (!m) return { type: "Uncaught", message: lines[errIdx].replace(/^Uncaught /, ""), file, line };
  return { type: m[1], message: m[2].trim(), file, line };
}

function go(text: string): ErrorSummary | null {
  const lines = text.split("\n");
  const p = lines.findIndex((l) => l.startsWith("panic: "));
  if (p >= 0) {
    let message = lines[p].slice("panic: ".length).replace(/ \[recovered\]$/, "");
    const goexit = /^(.*) \[signal .*\]$/.exec(message);
    if (goexit) message = goexit[1];
    let file: string | null = null;
    let line: number | null = null;
    for (let i = p + 1; i < lines.length; i++) {
      const fr = /^\t(\S+\.go):(\d+)/.exec(lines[i]);
      if (fr && !/\/src\/runtime\/|\/usr\/lib\/go/.test(fr[1])) { file = userPath(fr[1]); line = Number(fr[2]); break; }
    }
    return { type: "panic", message, file, line };
  }
  // Compile errors: "./main.go:5:2: undefined: x" (the first one is the one to fix).
  for (const l of lines) {
    const ce = /^(\S+\.go):(\d+)(?::\d+)?: (.*)$/.exec(l);
    if (ce) return { type: "compile error", message: ce[3], file: userPath(ce[1].replace(/^\.\//, "")), line: Number(ce[2]) };
  }
  const fatal = lines.find((l) => l.startsWith("fatal error: "));
  if (fatal) return { type: "fatal error", message: fatal.slice("fatal error: ".length), file: null, line: null };
  return null;
}

function bash(text: string): ErrorSummary | null {
  const lines = text.split("\n").filter((l) => l.trim());
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^(.+?): line (\d+): (.*)$/.exec(lines[i]);
    if (m) return { type: "bash", message: m[3], file: m[1] === "bash" ? "<snippet>" : userPath(m[1]), line: Number(m[2]) };
  }
  return null;
}
