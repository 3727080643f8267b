import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { SyncService, type IncomingPart, type Manifest } from "../../workspaces/sync.js";
import { SandboxParams, errorResponses } from "../schemas.js";

export const ManifestSchema = Type.Object({
  files: Type.Optional(Type.Array(Type.Object({
    path: Type.String(),
    sha256: Type.String({ pattern: "^[0-9a-f]{64}$" }),
    size: Type.Integer({ minimum: 0, description: "checked against the bytes received; a reused blob counts with its real size" }),
    mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })),
  }, { additionalProperties: false }), { maxItems: 100000, description: "required, except in the quick check (`manifest_sha256` alone)" })),
  manifest_sha256: Type.Optional(Type.String({ pattern: "^[0-9a-f]{64}$", description: "plan only, without `files`: the quick check. sha256 over `path\\nsha256\\nsize\\nmode\\n` per manifest entry in order (mode empty when absent); `up_to_date: true` when the workspace still holds what the last sync of that manifest left, else `false`: send the manifest" })),
  delete_extraneous: Type.Optional(Type.Boolean({ default: false, description: "delete files below `target` that the manifest does not list" })),
  target: Type.Optional(Type.String({ maxLength: 1024, description: "workspace folder the manifest's paths are relative to (default: the root)" })),
  archive: Type.Optional(Type.Literal("tar", { description: "apply only: file parts named `tar` are tar archives of manifest paths" })),
}, { additionalProperties: false });

const PlanSchema = Type.Object({
  missing: Type.Array(Type.String(), { description: "paths the client must send" }),
  reusable: Type.Array(Type.String(), { description: "paths the server fills from its per-tenant content store" }),
  unchanged: Type.Array(Type.String()),
  delete: Type.Array(Type.String(), { description: "paths apply will delete (only with delete_extraneous)" }),
  complete: Type.Boolean({ description: "false when the workspace could not be listed completely" }),
  reason: Type.Optional(Type.String()),
  up_to_date: Type.Boolean({ description: "nothing to send, reuse or delete. In the quick check (no `files`), false means: send the manifest" }),
});

/** JSON half of delta sync: the plan. */
export async function syncPlanRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const sync = new SyncService(deps.workspaces, deps.blobs);
  app.post<{ Params: Static<typeof SandboxParams>; Body: Manifest }>("/v1/sandboxes/:id/sync/plan", {
    // A manifest of 100,000 files is ~15 MB of JSON.
    bodyLimit: 32 * 1024 * 1024,
    schema: {
      summary: "Delta sync, step 1: send a manifest, learn what the server lacks and what it will delete",
      params: SandboxParams, body: ManifestSchema,
      response: { 200: PlanSchema, ...errorResponses(400, 401, 404) },
    },
  }, async (req) => {
    const sb = deps.sandboxes.get(req.auth, req.params.id);
    if (req.body.files === undefined) {
      if (req.body.manifest_sha256 === undefined) throw new PetriError("VALIDATION_ERROR", "the manifest needs files (or manifest_sha256 alone, for the quick check)");
      const upToDate = sync.upToDate(sb.id, req.body);
      deps.metrics?.syncPlanned(upToDate ? "quick_hit" : "quick_miss");
      return { missing: [], reusable: [], unchanged: [], delete: [], complete: true, up_to_date: upToDate };
    }
    deps.metrics?.syncPlanned("full");
    const { chmod: _chmod, ...plan } = await sync.plan(req.auth.tenantId, sb.id, req.body);
    return plan;
  });
}

/** Multipart half of delta sync: the manifest again, then only the missing files. */
export async function syncApplyRoutes(app: FastifyInstance, config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const sync = new SyncService(deps.workspaces, deps.blobs);
  app.post<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id/sync/apply", {
    config: { action: "files.sync" },
    schema: {
      summary: "Delta sync, step 2: multipart with a `manifest` field first, then the missing files",
      description: "Files as one part per path (field name = path, or a preceding `path` field), or, with `\"archive\": \"tar\"` in the manifest, as parts named `tar` holding tar archives (one part can carry thousands of small files). All files are stored, or none.",
      params: SandboxParams,
      consumes: ["multipart/form-data"],
      response: {
        200: Type.Object({ uploaded: Type.Number(), reused: Type.Number(), unchanged: Type.Number(), deleted: Type.Number(), bytes_received: Type.Number() }),
        ...errorResponses(400, 401, 404, 413, 415),
      },
    },
  }, async (req) => {
    const sb = deps.sandboxes.get(req.auth, req.params.id);
    if (!req.isMultipart()) throw new PetriError("UNSUPPORTED_MEDIA_TYPE", "sync/apply takes multipart/form-data");
    const r = await sync.apply({
      tenantId: req.auth.tenantId,
      sandboxId: sb.id,
      quotaBytes: sb.limits.workspace_mb * 1024 * 1024,
      maxUploadBytes: config.maxUploadBytes,
      checkTenantBytes: (n) => deps.quotas?.checkWorkspaceBytes(req.auth.tenantId, sb.id, n),
    }, req.parts() as AsyncIterable<IncomingPart>);
    deps.quotas?.recordUsage(req.auth.tenantId, sb.id, deps.workspaces.usage(sb.id));
    deps.sandboxes.touch(sb.id);
    return r;
  });
}
