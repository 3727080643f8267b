import fs from "node:fs";
import { Transform } from "node:stream";
import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { parseRelPath } from "../../workspaces/paths.js";
import { parsePathInput } from "../../workspaces/names.js";
import type { StagedFile } from "../../workspaces/workspaces.js";
import { FileEntrySchema, SandboxParams, errorResponses } from "../schemas.js";

/** Multipart field names that mean "use the part's filename as the path". */
const GENERIC_FIELDS = new Set(["file", "files", "file[]", "files[]", "upload"]);

const FileParams = Type.Object({ id: Type.String({ maxLength: 64 }), "*": Type.String() });
const PathB64 = Type.Optional(Type.String({ maxLength: 2048, description: "the path as base64 of its raw bytes, for names that are not UTF-8 (listings give it as `path_b64`); use it with an empty path: …/files/?path_b64=…" }));

/** The file a wildcard route names: `path_b64` from the query when given, else the URL path. */
function routePath(params: { "*": string }, query: { path_b64?: string }) {
  return parsePathInput({ path: params["*"], path_b64: query.path_b64 });
}

export async function fileRoutes(app: FastifyInstance, config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const { sandboxes, workspaces } = deps;

  app.post<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id/files", {
    config: { action: "files.upload" },
    schema: {
      summary: "Upload files (multipart/form-data)",
      description: "Each file part is written to the path given by a preceding `path` field, else by its field name, else (field `file`/`files`) by its filename. Parent directories are created. All parts are stored, or none.",
      params: SandboxParams,
      consumes: ["multipart/form-data"],
      response: { 201: Type.Object({ files: Type.Array(FileEntrySchema) }), ...errorResponses(400, 401, 404, 413, 415) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    if (!req.isMultipart()) {
      throw new PetriError("UNSUPPORTED_MEDIA_TYPE", "upload files as multipart/form-data, or PUT raw bytes to /v1/sandboxes/{id}/files/{path}");
    }
    const quota = sb.limits.workspace_mb * 1024 * 1024;
    const staged: { parts: string[]; staged: StagedFile }[] = [];
    let pendingPath: string | undefined;
    let total = 0;
    try {
      for await (const part of req.parts()) {
        if (part.type === "field") {
          if (part.fieldname === "path") pendingPath = String(part.value);
          continue;
        }
        const target = pendingPath ?? (GENERIC_FIELDS.has(part.fieldname) ? part.filename : part.fieldname);
        pendingPath = undefined;
        if (!target) throw new PetriError("INVALID_PATH", "a file part has no path: give a `path` field, a field name, or a filename");
        const parts = parseRelPath(target);
        const s = await workspaces.stage(part.file, Math.min(config.maxUploadBytes, quota - total));
        if (part.file.truncated) {
          workspaces.discard([s]);
          throw new PetriError("PAYLOAD_TOO_LARGE", `file ${target} exceeds the upload limit of ${config.maxUploadBytes} bytes`);
        }
        total += s.size;
        staged.push({ parts, staged: s });
      }
    } catch (e) {
      workspaces.discard(staged.map((s) => s.staged));
      if (e instanceof PetriError && e.code === "PAYLOAD_TOO_LARGE" && total >= quota - config.maxUploadBytes) {
        throw new PetriError("WORKSPACE_QUOTA_EXCEEDED", `upload would exceed the workspace quota of ${quota} bytes`);
      }
      throw e;
    }
    if (staged.length === 0) throw new PetriError("VALIDATION_ERROR", "no file parts in the upload");
    try {
      deps.quotas?.checkWorkspaceBytes(req.auth.tenantId, sb.id, total);
    } catch (e) {
      workspaces.discard(staged.map((x) => x.staged));
      throw e;
    }
    const files = workspaces.commit(sb.id, staged, quota);
    deps.quotas?.recordUsage(req.auth.tenantId, sb.id, workspaces.usage(sb.id));
    sandboxes.touch(sb.id);
    return reply.code(201).send({ files });
  });

  app.put<{ Params: Static<typeof FileParams> }>("/v1/sandboxes/:id/files/*", {
    config: { action: "files.write" },
    schema: {
      summary: "Write one file from the raw request body (parents are created)",
      params: FileParams,
      response: { 201: FileEntrySchema, ...errorResponses(400, 401, 404, 413) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const parts = parseRelPath(req.params["*"]);
    const quota = sb.limits.workspace_mb * 1024 * 1024;
    const s = await workspaces.stage(req.raw, Math.min(config.maxUploadBytes, quota));
    try {
      deps.quotas?.checkWorkspaceBytes(req.auth.tenantId, sb.id, s.size);
    } catch (e) {
      workspaces.discard([s]);
      throw e;
    }
    const [entry] = workspaces.commit(sb.id, [{ parts, staged: s }], quota);
    deps.quotas?.recordUsage(req.auth.tenantId, sb.id, workspaces.usage(sb.id));
    sandboxes.touch(sb.id);
    return reply.code(201).send(entry);
  });

  app.get<{ Params: Static<typeof SandboxParams>; Querystring: { path?: string; path_b64?: string; recursive?: boolean; hashes?: boolean; limit?: number } }>("/v1/sandboxes/:id/files", {
    schema: {
      summary: "List workspace files (symlinks are listed, never followed)",
      description: "Any depth. `complete` is false when entries were left out (more than `limit`, paths longer than 4096 bytes, or the workspace changed during the walk); `reason` says which.",
      params: SandboxParams,
      querystring: Type.Object({
        path: Type.Optional(Type.String({ description: "directory to list, default the workspace root" })),
        path_b64: PathB64,
        recursive: Type.Optional(Type.Boolean({ default: true })),
        hashes: Type.Optional(Type.Boolean({ default: true, description: "include sha256 of files" })),
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 200_000, description: "most entries to return" })),
      }),
      response: {
        200: Type.Object({ files: Type.Array(FileEntrySchema), complete: Type.Boolean(), reason: Type.Optional(Type.String()) }),
        ...errorResponses(400, 401, 404),
      },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const dir = parsePathInput({ path: req.query.path ?? "", path_b64: req.query.path_b64 }, { allowRoot: true });
    return workspaces.listing(sb.id, dir, { recursive: req.query.recursive ?? true, hashes: req.query.hashes ?? true, limit: req.query.limit });
  });

  app.get<{ Params: Static<typeof FileParams>; Querystring: { path_b64?: string } }>("/v1/sandboxes/:id/files/*", {
    config: { action: "files.read" },
    schema: {
      summary: "Download a file (refuses symlinks and non-regular files)",
      params: FileParams,
      querystring: Type.Object({ path_b64: PathB64 }),
      produces: ["application/octet-stream"],
      response: { ...errorResponses(400, 401, 404) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const { fd, size } = workspaces.openRead(sb.id, routePath(req.params, req.query));
    const body = fs.createReadStream("", { fd, autoClose: true });
    reply.header("content-type", "application/octet-stream");
    // A secret value the code wrote into a file never leaves through a download either: every
    // secret of the tenant (a run may have been granted one the sandbox does not list), rotated
    // values included. The length may change, so no content-length.
    const redactor = deps.vault?.redactorFor(req.auth.tenantId);
    if (redactor && !redactor.empty) {
      const r = redactor.stream();
      const t = new Transform({
        transform(chunk: Buffer, _e, cb) { cb(null, r.push(chunk)); },
        flush(cb) {
          this.push(r.end());
          cb();
        },
      });
      reply.header("x-petri-redaction", "applied");
      return reply.send(body.pipe(t));
    }
    reply.header("content-length", String(size));
    return reply.send(body);
  });

  app.delete<{ Params: Static<typeof FileParams>; Querystring: { recursive?: boolean; path_b64?: string } }>("/v1/sandboxes/:id/files/*", {
    config: { action: "files.delete" },
    schema: {
      summary: "Delete a file, or a directory (recursive=true for non-empty ones)",
      params: FileParams,
      querystring: Type.Object({ recursive: Type.Optional(Type.Boolean({ default: false })), path_b64: PathB64 }),
      response: { 204: Type.Null(), ...errorResponses(400, 401, 404, 409) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    await workspaces.remove(sb.id, routePath(req.params, req.query), req.query.recursive ?? false);
    deps.quotas?.recordUsage(req.auth.tenantId, sb.id, workspaces.usage(sb.id));
    sandboxes.touch(sb.id);
    return reply.code(204).send();
  });
}
