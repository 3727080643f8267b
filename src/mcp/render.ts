import type { ExecResult } from "../exec/exec.js";

/** A tool's answer: text for the model, images shown inline, and the structured data. */
export interface ToolOutput {
  text: string;
  images: { mimeType: string; data: string }[];
  isError: boolean;
  data: unknown;
}

interface Artifact { path: string; mime_type: string; size: number; encoding?: string; data?: string; omitted?: string }

/**
 * A run as a model reads it best: how it ended first (the explanation, when there is one),
 * then the output, then what it created. Images come back as images, not as paths to fetch.
 */
export function renderRun(r: ExecResult, note: string | null): ToolOutput {
  const x = r as ExecResult & { explanation?: string | null; artifacts?: Artifact[] };
  const lines: string[] = [];
  const how = r.error ? `failed to start (${r.error.code})` : r.exit_code !== null ? `exit code ${r.exit_code}` : `ended by ${r.signal ?? "the runtime"}`;
  lines.push(`run ${r.id} in sandbox ${r.sandbox_id}: ${how}, ${r.duration_ms} ms`);
  if (x.explanation) lines.push(`explanation: ${x.explanation}`);
  if (r.error && !x.explanation) lines.push(`error: ${r.error.message}`);
  if (note) lines.push(note);
  if (r.stdout) lines.push("--- stdout ---", r.stdout.replace(/\n$/, ""));
  if (r.stderr) lines.push("--- stderr ---", r.stderr.replace(/\n$/, ""));
  if (!r.stdout && !r.stderr) lines.push("(no output)");
  const changed = [...(r.files?.created ?? []).map((f) => `+${f}`), ...(r.files?.modified ?? []).map((f) => `~${f}`), ...(r.files?.deleted ?? []).map((f) => `-${f}`)];
  if (changed.length) lines.push(`--- workspace changes ---`, changed.join("\n"));
  const images: ToolOutput["images"] = [];
  for (const a of x.artifacts ?? []) {
    if (a.data && a.mime_type.startsWith("image/") && a.mime_type !== "image/svg+xml") {
      images.push({ mimeType: a.mime_type, data: a.data });
      lines.push(`[image ${a.path} (${a.mime_type}, ${a.size} bytes) attached]`);
    } else if (a.data && a.encoding === "utf8") {
      lines.push(`--- ${a.path} (${a.mime_type}) ---`, a.data.replace(/\n$/, ""));
    } else if (a.omitted) {
      lines.push(`[${a.path} (${a.mime_type}, ${a.size} bytes) not attached: ${a.omitted}]`);
    }
  }
  const failed = Boolean(r.error) || r.exit_code !== 0;
  // Inline artifact bytes are in `images`/text already; the structured copy stays small.
  const data = { ...r, artifacts: (x.artifacts ?? []).map(({ data: _d, ...rest }) => rest) };
  return { text: lines.join("\n"), images, isError: failed, data };
}
