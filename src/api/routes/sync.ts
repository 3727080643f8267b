import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { parseRelPath } from "../../workspaces/paths.js";
import type { StagedFile } from "../../workspaces/workspaces.js";
import { planSync, validateManifest, type Manifest } from "../../workspaces/sync.js";
import { SandboxParams, errorResponses } from "../schemas.js";

export const ManifestSchema = Type.Object({
  files: Type.Array(Type.Object({
    path: Type.String(),
    sha256: Type.String({ pattern: "^[0-9a-f]{64}$" }),
    size: Type.Integer({ minimum: 0 }),
    mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })),
  }, { additionalProperties: false }), { maxItems: 100000 }),
  delete_extraneous: Type.Optional(Type.Boolean({ default: true, description: "delete workspace files the manifest does not list" })),
}, { additionalProperties: false });

const PlanSchema = Type.Object({
  missing: Type.Array(Type.String(), { description: "paths the client must send" }),
  reusable: Type.Array(Type.String(), { description: "paths the server fills from its per-tenant content store" }),
  unchanged: Type.Array(Type.String()),
  delete: Type.Array(Type.String(), { description: "paths apply will delete" }),
});

/** JSON half of delta sync: the plan. */
export async function syncPlanRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  app.post<{ Params: Static<typeof SandboxParams>; Body: Manifest }>("/v1/sandboxes/:id/sync/plan", {
    schema: {
      summary: "Delta sync, step 1: send a manifest, learn what the server lacks and what it will delete",
      params: SandboxParams, body: ManifestSchema,
      response: { 200: PlanSchema, ...errorResponses(400, 401, 404) },
    },
  }, async (req) => {
    const sb = deps.sandboxes.get(req.auth, req.params.id);
    return planSync(deps.workspaces, deps.blobs, req.auth.tenantId, sb.id, req.body);
  });
}

/** Multipart half of delta sync: the manifest again, then only the missing files. */
export async function syncApplyRoutes(app: FastifyInstance, config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const { workspaces, blobs, sandboxes } = deps;
  app.post<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id/sync/apply", {
    config: { action: "files.sync" },
    schema: {
      summary: "Delta sync, step 2: multipart with a `manifest` field first, then one part per missing path (field name = path)",
      params: SandboxParams,
      consumes: ["multipart/form-data"],
      response: {
        200: Type.Object({ uploaded: Type.Number(), reused: Type.Number(), unchanged: Type.Number(), deleted: Type.Number(), bytes_received: Type.Number() }),
        ...errorResponses(400, 401, 404, 413, 415),
      },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    if (!req.isMultipart()) throw new PetriError("UNSUPPORTED_MEDIA_TYPE", "sync/apply takes multipart/form-data");
    const quota = sb.limits.workspace_mb * 1024 * 1024;
    let manifest: Manifest | undefined;
    let wanted: ReturnType<typeof validateManifest> | undefined;
    const received = new Map<string, StagedFile>();
    let bytes = 0;
    let pendingPath: string | undefined;
    try {
      for await (const part of req.parts()) {
        if (part.type === "field") {
          // A `path` field names the next file part (for names a field name cannot carry).
          if (part.fieldname === "path") { pendingPath = String(part.value); continue; }
          if (part.fieldname !== "manifest") continue;
          try {
            manifest = JSON.parse(String(part.value)) as Manifest;
          } catch {
            throw new PetriError("INVALID_JSON", "the manifest field is not valid JSON");
          }
          if (!manifest || !Array.isArray(manifest.files)) throw new PetriError("VALIDATION_ERROR", "manifest.files must be an array");
          wanted = validateManifest(manifest);
          continue;
        }
        if (!wanted) throw new PetriError("VALIDATION_ERROR", "the manifest field must come before the files");
        const rel = parseRelPath(pendingPath ?? part.fieldname).join("/");
        pendingPath = undefined;
        const entry = wanted.get(rel);
        if (!entry) throw new PetriError("VALIDATION_ERROR", `file ${rel} is not in the manifest`);
        const staged = await workspaces.stage(part.file, Math.min(config.maxUploadBytes, quota));
        received.get(rel) && workspaces.discard([received.get(rel)!]);
        received.set(rel, staged);
        bytes += staged.size;
        if (staged.sha256 !== entry.sha256 || staged.size !== entry.size) {
          throw new PetriError("VALIDATION_ERROR", `content of ${rel} does not match its manifest entry (sha256/size)`);
        }
        blobs.put(req.auth.tenantId, staged);
      }
      if (!manifest || !wanted) throw new PetriError("VALIDATION_ERROR", "missing the manifest field");
      const plan = await planSync(workspaces, blobs, req.auth.tenantId, sb.id, manifest);
      const stillMissing = plan.missing.filter((p) => !received.has(p));
      if (stillMissing.length) {
        throw new PetriError("VALIDATION_ERROR", `missing content for ${stillMissing.length} file(s), e.g. ${stillMissing.slice(0, 5).join(", ")}`, { missing: stillMissing.slice(0, 100) });
      }
      const toCommit: { parts: string[]; staged: StagedFile }[] = [];
      let uploaded = 0;
      for (const p of [...plan.missing, ...plan.reusable]) {
        if (received.has(p)) uploaded++;
        const e = wanted.get(p)!;
        const staged = received.get(p) ?? blobs.materialize(req.auth.tenantId, e.sha256, e.size, workspaces.stagingDir);
        received.delete(p);
        toCommit.push({ parts: p.split("/"), staged });
      }
      workspaces.discard([...received.values()]);
      received.clear();
      try {
        deps.quotas?.checkWorkspaceBytes(req.auth.tenantId, sb.id, toCommit.reduce((a, f) => a + f.staged.size, 0));
      } catch (e) {
        workspaces.discard(toCommit.map((f) => f.staged));
        throw e;
      }
      workspaces.commit(sb.id, toCommit, quota);
      for (const p of [...plan.missing, ...plan.reusable, ...plan.unchanged]) {
        const mode = wanted.get(p)!.mode;
        if (mode !== undefined) await workspaces.chmod(sb.id, p, mode & 0o111 ? 0o755 : 0o644);
      }
      for (const p of plan.delete) {
        try {
          await workspaces.remove(sb.id, p, false);
        } catch (e) {
          if (!(e instanceof PetriError && e.code === "FILE_NOT_FOUND")) throw e;
        }
      }
      deps.quotas?.recordUsage(req.auth.tenantId, sb.id, workspaces.usage(sb.id));
      sandboxes.touch(sb.id);
      return { uploaded, reused: plan.missing.length + plan.reusable.length - uploaded, unchanged: plan.unchanged.length, deleted: plan.delete.length, bytes_received: bytes };
    } finally {
      workspaces.discard([...received.values()]);
    }
  });
}
