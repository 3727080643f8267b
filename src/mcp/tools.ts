import { Readable } from "node:stream";
import fs from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import type { AuthContext } from "../auth/keys.js";
import { PetriError } from "../errors.js";
import type { AppDeps } from "../api/app.js";
import type { ExecResult } from "../exec/exec.js";
import { parseRelPath } from "../workspaces/paths.js";
import { DELETE_WAIT_MS } from "../sandboxes/sandboxes.js";
import { TOOLS } from "./catalog.js";
import { renderRun, type ToolOutput } from "./render.js";

/** What the tools need: the services themselves, never HTTP to this server. */
export type AgentDeps = Pick<AppDeps, "sandboxes" | "workspaces" | "exec" | "quotas" | "vault" | "audit" | "dependencies" | "images">;

export interface ToolCall {
  deps: AgentDeps;
  auth: AuthContext;
  /** Aborting (MCP cancellation, a closed connection) cancels a run in progress. */
  signal?: AbortSignal;
  /** Where the call came from, for the audit record ("mcp", "tools-api"). */
  via: string;
}

const ajv = new Ajv({ allErrors: false, strict: false, useDefaults: true, coerceTypes: false });
const validators = new Map<string, ValidateFunction>(TOOLS.map((t) => [t.name, ajv.compile(t.inputSchema)]));

/** Files larger than this are not returned inline by read_file (download them instead). */
const READ_INLINE_MAX = 4 * 1024 * 1024;

const IMAGE_TYPES: Record<string, string> = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", svg: "image/svg+xml" };

export function mimeTypeOf(p: string): string | null {
  const ext = p.toLowerCase().split(".").pop() ?? "";
  return IMAGE_TYPES[ext] ?? ({ csv: "text/csv", json: "application/json", txt: "text/plain", md: "text/markdown", html: "text/html" } as Record<string, string>)[ext] ?? null;
}

/**
 * Runs one tool. Bad arguments and Petri errors come back as an error output (the model reads
 * the message and can correct itself), never as an exception: that is what MCP and function
 * calling expect of a tool result.
 */
export async function callTool(call: ToolCall, name: string, args: unknown): Promise<ToolOutput> {
  const validate = validators.get(name);
  if (!validate) return errorOutput(new PetriError("VALIDATION_ERROR", `unknown tool "${name}"; tools: ${TOOLS.map((t) => t.name).join(", ")}`));
  const input = (args ?? {}) as Record<string, any>;
  if (!validate(input)) {
    const e = validate.errors?.[0];
    return errorOutput(new PetriError("VALIDATION_ERROR", `${name}: argument ${e?.instancePath || "(root)"} ${e?.message ?? "is invalid"}`));
  }
  try {
    return await dispatch(call, name, input);
  } catch (e) {
    if (e instanceof PetriError) return errorOutput(e);
    throw e;
  }
}

function errorOutput(e: PetriError): ToolOutput {
  return { text: `error ${e.code}: ${e.message}`, images: [], isError: true, data: e.toJSON() };
}

function json(data: unknown, text?: string): ToolOutput {
  return { text: text ?? JSON.stringify(data, null, 2), images: [], isError: false, data };
}

async function dispatch(call: ToolCall, name: string, a: Record<string, any>): Promise<ToolOutput> {
  const { deps, auth } = call;
  switch (name) {
    case "create_sandbox": {
      const sb = createSandbox(call, a);
      return json(sb, `created sandbox ${sb.id} (${sb.language}, image ${sb.image}); its files persist between runs. Network: ${sb.allow_hosts.length ? sb.allow_hosts.join(", ") : "none"}\n${JSON.stringify(sb, null, 2)}`);
    }
    case "describe_images": return describeImages(call, a.name);
    case "list_sandboxes": {
      const { items } = deps.sandboxes.list(auth, { limit: 1000 });
      const rows = items.map((s) => ({ id: s.id, language: s.language, image: s.image, status: s.status, allow_hosts: s.allow_hosts, expires_at: s.expires_at }));
      return json({ sandboxes: rows }, rows.length ? JSON.stringify(rows, null, 2) : "no sandboxes");
    }
    case "delete_sandbox": {
      const sb = deps.sandboxes.get(auth, a.sandbox_id);
      // As DELETE /v1/sandboxes/{id}: durable first, then cancel, then remove (or finish later).
      deps.sandboxes.markDeleting(sb.id);
      await deps.exec.cancelSandbox(sb.id, { runtime: sb.runtime });
      const done = await deps.sandboxes.destroy(sb.id, { waitMs: DELETE_WAIT_MS });
      audit(call, "sandbox.delete", sb.id);
      return json({ deleted: sb.id, status: done ? "deleted" : "deleting" }, done ? `deleted sandbox ${sb.id}` : `deleted sandbox ${sb.id} (its remaining data is removed in the background)`);
    }
    case "run_code": return runCode(call, a);
    case "install_dependencies": {
      const sb = deps.sandboxes.get(auth, a.sandbox_id);
      if (!deps.dependencies) throw new PetriError("RUNTIME_UNAVAILABLE", "this server does not install dependencies");
      const wanted = Object.fromEntries((["python", "node", "go"] as const).filter((k) => a[k]?.length).map((k) => [k, a[k] as string[]]));
      if (Object.keys(wanted).length === 0) throw new PetriError("VALIDATION_ERROR", "install_dependencies: name packages under python, node or go");
      const summary = await deps.dependencies.install(auth.tenantId, sb, wanted);
      audit(call, "dependency.install", sb.id);
      return json(summary);
    }
    case "write_file": {
      const sb = deps.sandboxes.get(auth, a.sandbox_id);
      const entry = await writeFile(call, sb.id, a.path, decode(a.content, a.encoding));
      return json(entry, `wrote ${entry.path} (${entry.size} bytes)`);
    }
    case "read_file": return readFile(call, a.sandbox_id, a.path);
    case "list_files": {
      const sb = deps.sandboxes.get(auth, a.sandbox_id);
      const files = await deps.workspaces.list(sb.id, a.path ?? "", { recursive: a.recursive ?? true, hashes: false });
      const lines = files.map((f) => `${f.type === "directory" ? "d" : f.type === "symlink" ? "l" : "-"} ${String(f.size).padStart(10)}  ${f.path}${f.type === "directory" ? "/" : ""}`);
      return json({ files }, lines.length ? lines.join("\n") : "(empty)");
    }
    case "delete_file": {
      const sb = deps.sandboxes.get(auth, a.sandbox_id);
      await deps.workspaces.remove(sb.id, a.path, a.recursive ?? false);
      deps.quotas?.recordUsage(auth.tenantId, sb.id, deps.workspaces.usage(sb.id));
      deps.sandboxes.touch(sb.id);
      audit(call, "files.delete", sb.id);
      return json({ deleted: a.path }, `deleted ${a.path}`);
    }
    default:
      throw new PetriError("VALIDATION_ERROR", `unknown tool "${name}"`);
  }
}

function createSandbox(call: ToolCall, a: Record<string, any>) {
  const limits: Record<string, number> = {};
  if (a.timeout_ms !== undefined) limits.timeout_ms = a.timeout_ms;
  if (a.memory_mb !== undefined) limits.memory_mb = a.memory_mb;
  const sb = call.deps.sandboxes.create(call.auth, {
    language: a.language ?? "python",
    ...(a.image !== undefined ? { image: a.image } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
    ...(a.allow_hosts ? { allow_hosts: a.allow_hosts } : {}),
    ...(a.env ? { env: a.env } : {}),
  });
  audit(call, "sandbox.create", sb.id);
  return sb;
}

async function runCode(call: ToolCall, a: Record<string, any>): Promise<ToolOutput> {
  const { deps, auth } = call;
  if ((a.code === undefined) === (a.path === undefined)) throw new PetriError("VALIDATION_ERROR", "run_code: give exactly one of `code` or `path`");
  let created = false;
  const sb = a.sandbox_id ? deps.sandboxes.get(auth, a.sandbox_id) : (created = true, createSandbox(call, { language: a.language ?? "python", image: a.image }));
  for (const f of (a.files ?? []) as { path: string; content: string; encoding?: string }[]) {
    await writeFile(call, sb.id, f.path, decode(f.content, f.encoding));
  }
  if (call.signal?.aborted) throw new PetriError("EXEC_NOT_RUNNING", "the call was cancelled before the run started");
  const handle = deps.exec.start(auth, sb, {
    ...(a.code !== undefined ? { code: a.code } : { filename: a.path }),
    ...(a.args ? { args: a.args } : {}),
    ...(a.stdin !== undefined ? { stdin: a.stdin } : {}),
    ...(a.env ? { env: a.env } : {}),
    ...(a.timeout_ms !== undefined ? { timeout_ms: a.timeout_ms } : {}),
    ...(a.allow_hosts ? { allow_hosts: a.allow_hosts } : {}),
  });
  audit(call, "exec.create", sb.id, handle.id);
  const onAbort = () => handle.cancel("cancel");
  call.signal?.addEventListener("abort", onAbort, { once: true });
  let result: ExecResult;
  try {
    result = await handle.done;
  } finally {
    call.signal?.removeEventListener("abort", onAbort);
  }
  return renderRun(result, created ? `sandbox ${sb.id} was created for this run; pass sandbox_id to reuse its files` : null);
}

/**
 * Packages named per list in the text a model reads: a few per image in the overview, more for
 * one image (Debian's Node tree alone has ~1,500 modules); the structured data has them all.
 */
const SUMMARY_PACKAGES = 25;
const ONE_IMAGE_PACKAGES = 300;

/**
 * What the server's images hold, as a model needs it to pick one and to know what it can
 * import without installing: read from each built image's manifest (GET /v1/images).
 */
function describeImages(call: ToolCall, name: string | undefined): ToolOutput {
  const catalog = call.deps.images;
  if (!catalog) throw new PetriError("RUNTIME_UNAVAILABLE", "this server does not describe its images");
  if (name !== undefined && !catalog.has(name)) {
    throw new PetriError("IMAGE_NOT_FOUND", `no image "${name}"; this server offers: ${catalog.names().join(", ")}`);
  }
  const infos = name !== undefined ? [catalog.info(name)] : catalog.list();
  const lines: string[] = [];
  for (const i of infos) {
    const state = i.external ? "external: contents unknown" : i.built ? "built" : "not built on this server: sandboxes cannot use it yet";
    lines.push(`## ${i.name} (${state})${i.default_for.length ? `, default for ${i.default_for.join(", ")}` : ""}`, i.description);
    const langs = Object.entries(i.languages).map(([l, v]) => `${l} ${v}`);
    if (langs.length) lines.push(`languages: ${langs.join(", ")}`);
    const tools = Object.entries(i.tools).map(([t, v]) => `${t} ${v}`);
    if (tools.length) lines.push(`tools: ${tools.join(", ")}`);
    for (const [label, pkgs] of [["python packages", i.python_packages], ["node packages", i.node_packages]] as const) {
      const all = Object.entries(pkgs).sort(([a], [b]) => a.localeCompare(b)).map(([p, v]) => `${p} ${v}`);
      if (!all.length) continue;
      const shown = all.slice(0, name !== undefined ? ONE_IMAGE_PACKAGES : SUMMARY_PACKAGES);
      const more = all.length - shown.length;
      lines.push(`${label} (${all.length}): ${shown.join(", ")}${more ? `, and ${more} more (${name !== undefined ? "all are in the structured result" : `describe_images with name "${i.name}" lists more`})` : ""}`);
    }
  }
  lines.push("", "Pass an image's name as `image` to create_sandbox (or run_code without sandbox_id). Packages an image lacks are installed from the configured registries when the code imports them.");
  return json({ images: infos }, lines.join("\n"));
}

function decode(content: string, encoding: string | undefined): Buffer {
  if (encoding === "base64") return Buffer.from(content, "base64");
  return Buffer.from(content, "utf8");
}

/** The same steps as PUT …/files/{path}: quota checks, atomic replace, usage recorded. */
async function writeFile(call: ToolCall, sandboxId: string, relPath: string, data: Buffer) {
  const { deps, auth } = call;
  const sb = deps.sandboxes.get(auth, sandboxId);
  const parts = parseRelPath(relPath);
  const quota = sb.limits.workspace_mb * 1024 * 1024;
  const staged = await deps.workspaces.stage(Readable.from([data]), quota);
  try {
    deps.quotas?.checkWorkspaceBytes(auth.tenantId, sb.id, staged.size);
  } catch (e) {
    deps.workspaces.discard([staged]);
    throw e;
  }
  const [entry] = deps.workspaces.commit(sb.id, [{ parts, staged }], quota);
  deps.quotas?.recordUsage(auth.tenantId, sb.id, deps.workspaces.usage(sb.id));
  deps.sandboxes.touch(sb.id);
  audit(call, "files.write", sb.id);
  return entry;
}

/** Reads a workspace file as the download route does, secret values redacted. */
export function readWorkspaceFile(deps: AgentDeps, auth: AuthContext, sandboxId: string, relPath: string): { data: Buffer; path: string } {
  const sb = deps.sandboxes.get(auth, sandboxId);
  const p = parseRelPath(relPath).join("/");
  const { fd, size } = deps.workspaces.openRead(sb.id, p);
  let data: Buffer;
  try {
    if (size > READ_INLINE_MAX) throw new PetriError("PAYLOAD_TOO_LARGE", `${p} is ${size} bytes, more than the ${READ_INLINE_MAX} bytes returned inline; download it with GET /v1/sandboxes/${sb.id}/files/${p}`);
    data = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, data, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    data = data.subarray(0, off);
  } finally {
    fs.closeSync(fd);
  }
  if (sb.secrets.length && deps.vault) data = deps.vault.redactorFor(auth.tenantId, sb.secrets).redactBuffer(data).data;
  return { data, path: p };
}

function readFile(call: ToolCall, sandboxId: string, relPath: string): ToolOutput {
  const { data, path: p } = readWorkspaceFile(call.deps, call.auth, sandboxId, relPath);
  audit(call, "files.read", sandboxId);
  const mime = mimeTypeOf(p);
  if (mime?.startsWith("image/") && mime !== "image/svg+xml") {
    return { text: `${p} (${mime}, ${data.length} bytes)`, images: [{ mimeType: mime, data: data.toString("base64") }], isError: false, data: { path: p, size: data.length, mime_type: mime } };
  }
  const text = data.toString("utf8");
  if (!Buffer.from(text, "utf8").equals(data)) {
    return json({ path: p, size: data.length, encoding: "base64", content: data.toString("base64") }, `${p} is binary (${data.length} bytes); base64:\n${data.toString("base64")}`);
  }
  return json({ path: p, size: data.length, encoding: "utf8", content: text }, text);
}

function audit(call: ToolCall, action: string, sandboxId: string, execId?: string): void {
  try {
    call.deps.audit?.append({
      kind: "api", action, outcome: "success", tenant_id: call.auth.tenantId, key_id: call.auth.keyId,
      sandbox_id: sandboxId, exec_id: execId ?? null, detail: { via: call.via },
    });
  } catch {
    /* the audit log reports its own failures; a tool result is not lost over it */
  }
}
