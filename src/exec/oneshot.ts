import type { Config } from "../config.js";
import { PetriError } from "../errors.js";
import type { AuthContext } from "../auth/keys.js";
import type { SandboxService, Sandbox, CreateSandboxInput } from "../sandboxes/sandboxes.js";
import type { StagedFile, WorkspaceStore } from "../workspaces/workspaces.js";
import { parseRelPath } from "../workspaces/paths.js";
import type { Runtime } from "../runtimes/types.js";
import type { DependencyService } from "../deps/service.js";
import type { ExecRequest, ExecResult, ExecService } from "./exec.js";

export interface InlineFile {
  path: string;
  content: string;
  encoding?: "utf8" | "base64";
}

export interface OneShotRequest extends ExecRequest {
  language: string;
  image?: string;
  runtime?: string;
  files?: InlineFile[];
}

export interface OneShotDeps {
  config: Readonly<Config>;
  sandboxes: SandboxService;
  workspaces: WorkspaceStore;
  exec: ExecService;
  runtimes: Map<string, Runtime>;
  dependencies?: DependencyService;
  log: { warn: (o: object, m?: string) => void };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decodes and checks every inline file before anything is created: bad input costs no sandbox. */
export function decodeFiles(files: InlineFile[], maxBytes: number): { parts: string[]; data: Buffer }[] {
  let total = 0;
  return files.map((f, i) => {
    const parts = parseRelPath(f.path);
    const enc = f.encoding ?? "utf8";
    let data: Buffer;
    if (enc === "base64") {
      const s = f.content.replace(/\s+/g, "");
      // Node's decoder silently skips bad characters; a file must not arrive quietly altered.
      if (s.length % 4 !== 0 || !BASE64.test(s)) throw new PetriError("INVALID_ENCODING", `files[${i}] (${f.path}): content is not valid base64`);
      data = Buffer.from(s, "base64");
    } else if (enc === "utf8") {
      data = Buffer.from(f.content, "utf8");
    } else {
      throw new PetriError("INVALID_ENCODING", `files[${i}] (${f.path}): encoding must be "utf8" or "base64"`);
    }
    total += data.length;
    if (total > maxBytes) throw new PetriError("PAYLOAD_TOO_LARGE", `inline files exceed the upload limit of ${maxBytes} bytes`);
    return { parts, data };
  });
}

/**
 * One-request runs (Piston-style): a throw-away sandbox is created, given the inline files, runs
 * once and is deleted. Its runs leave nothing pre-started behind (no next run will come). The
 * sandbox is marked deleting (durably, invisible to the API) before the answer; its data is
 * removed by `cleanup`, which the caller starts after answering, and which the janitor finishes
 * if it cannot complete now.
 */
export class OneShotService {
  constructor(private readonly d: OneShotDeps) {}

  /** `answered`: resolves once the caller has answered the result (ExecService.start). */
  async run(auth: AuthContext, req: OneShotRequest, opts: { answered?: Promise<unknown> } = {}): Promise<{ result: ExecResult; sandbox: Sandbox; cleanup: () => Promise<void> }> {
    const { files = [], language, image, runtime, ...rest } = req;
    if (rest.filename === undefined && rest.code === undefined) {
      if (files.length === 0) throw new PetriError("VALIDATION_ERROR", "give `files`, `filename` or `code`");
      rest.filename = files[0]!.path;
    }
    if (rest.filename !== undefined && rest.code !== undefined) throw new PetriError("VALIDATION_ERROR", "give exactly one of `filename` or `code`");
    const decoded = decodeFiles(files, this.d.config.maxUploadBytes);
    if (rest.filename !== undefined) {
      const entry = parseRelPath(rest.filename).join("/");
      if (!decoded.some((f) => f.parts.join("/") === entry)) {
        throw new PetriError("VALIDATION_ERROR", `cannot run ${entry}: it is not among the request's files`);
      }
    }
    const input: CreateSandboxInput = { language, image, runtime, ...(rest.limits ? { limits: rest.limits } : {}) };
    const sb = this.d.sandboxes.create(auth, input);
    const quiet = this.d.runtimes.get(sb.runtime)?.noPrestartFor?.(sb.id);
    let handedOver = false;
    const cleanup = async () => {
      try {
        this.d.sandboxes.markDeleting(sb.id);
        await this.d.exec.cancelSandbox(sb.id, { runtime: sb.runtime });
        this.d.dependencies?.forgetSandbox(sb.id);
        if (!(await this.d.sandboxes.destroy(sb.id))) {
          this.d.log.warn({ sandbox: sb.id }, "one-request sandbox could not be removed yet; the janitor finishes it");
        }
      } catch (e) {
        // Marked deleting: the janitor retries.
        this.d.log.warn({ sandbox: sb.id, err: (e as Error).message }, "one-request sandbox removal failed; the janitor finishes it");
      } finally {
        quiet?.();
      }
    };
    try {
      await this.write(sb, decoded);
      const prepared = (await this.d.dependencies?.prepare(auth.tenantId, sb, rest)) ?? null;
      let handle;
      try {
        handle = this.d.exec.start(auth, sb, rest, { deps: prepared, answered: opts.answered });
      } catch (e) {
        prepared?.release();
        throw e;
      }
      const result = await handle.done;
      // Durable before the answer: the sandbox is gone from the API, and a crash is finished by the janitor.
      this.d.sandboxes.markDeleting(sb.id);
      handedOver = true;
      return { result, sandbox: sb, cleanup };
    } finally {
      if (!handedOver) await cleanup();
    }
  }

  private async write(sb: Sandbox, files: { parts: string[]; data: Buffer }[]): Promise<void> {
    if (files.length === 0) return;
    const { workspaces } = this.d;
    const quota = sb.limits.workspace_mb * 1024 * 1024;
    const staged: { parts: string[]; staged: StagedFile }[] = [];
    try {
      // The bytes are already in memory and checked against the upload limit (decodeFiles): one
      // write each, no stream through the thread pool (that cost a cold run milliseconds).
      for (const f of files) {
        if (f.data.length > quota) throw new PetriError("PAYLOAD_TOO_LARGE", `upload exceeds the limit of ${quota} bytes`);
        staged.push({ parts: f.parts, staged: workspaces.stageBuffer(f.data) });
      }
    } catch (e) {
      workspaces.discard(staged.map((s) => s.staged));
      throw e;
    }
    workspaces.commit(sb.id, staged, quota);
  }
}
