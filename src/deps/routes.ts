import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { SandboxService } from "../sandboxes/sandboxes.js";
import { DependenciesSchema, SandboxParams, errorResponses } from "../api/schemas.js";
import type { DependencyService } from "./service.js";

const Summary = Type.Object({}, { additionalProperties: true, description: "ecosystem, detected, requirements, status (installed/reused), environment, packages, install_ms, skipped" });

export async function dependencyRoutes(app: FastifyInstance, opts: { deps: DependencyService; sandboxes: SandboxService }): Promise<void> {
  const { deps, sandboxes } = opts;

  app.post<{ Params: Static<typeof SandboxParams>; Body: Static<typeof DependenciesSchema> }>("/v1/sandboxes/:id/dependencies", {
    config: { action: "dependency.install" },
    schema: {
      summary: "Install packages for a sandbox now (from the configured registries) and keep them for its runs",
      params: SandboxParams,
      body: DependenciesSchema,
      response: { 200: Summary, ...errorResponses(400, 401, 404, 413, 429, 503) },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    req.auditIds = { sandbox_id: sb.id };
    return deps.install(req.auth.tenantId, sb, req.body ?? {});
  });

  app.get<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id/dependencies", {
    schema: {
      summary: "A sandbox's declared dependencies and whether its runs detect imports",
      params: SandboxParams,
      response: { 200: Type.Object({ dependencies: DependenciesSchema, auto_detect_dependencies: Type.Union([Type.Boolean(), Type.Null()]) }), ...errorResponses(401, 404) },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const s = deps.settings(sb.id);
    return { dependencies: s.declared, auto_detect_dependencies: s.autoDetect };
  });

  app.get("/v1/dependencies/environments", {
    schema: {
      summary: "The caller's tenant's installed dependency environments",
      response: { 200: Type.Object({ items: Type.Array(Type.Object({}, { additionalProperties: true })), used_bytes: Type.Number(), quota_bytes: Type.Number() }), ...errorResponses(401) },
    },
  }, async (req) => ({
    items: deps.envs.list(req.auth.tenantId).map((e) => ({ id: e.id, ecosystem: e.ecosystem, image: e.image, size_bytes: e.sizeBytes, lock_sha256: e.lockSha256, packages: e.packages })),
    used_bytes: deps.envs.tenantUsage(req.auth.tenantId),
    quota_bytes: deps.quotaBytes,
  }));
}
