import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { CreateSandboxBody, SandboxParams, SandboxSchema, errorResponses } from "../schemas.js";
import { DELETE_WAIT_MS } from "../../sandboxes/sandboxes.js";

export async function sandboxRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  app.post<{ Body: Static<typeof CreateSandboxBody> }>("/v1/sandboxes", {
    config: { action: "sandbox.create" },
    schema: {
      summary: "Create a sandbox (starts no container)",
      body: CreateSandboxBody,
      response: { 201: SandboxSchema, ...errorResponses(400, 401, 429) },
    },
  }, async (req, reply) => {
    const { dependencies, auto_detect_dependencies, ...rest } = req.body;
    deps.dependencies?.validateForLanguage(rest.language, dependencies);
    const sb = deps.sandboxes.create(req.auth, rest);
    req.auditIds = { sandbox_id: sb.id };
    if (deps.dependencies && (dependencies || auto_detect_dependencies !== undefined)) {
      deps.dependencies.saveSandboxSettings(sb.id, req.auth.tenantId, { dependencies, auto_detect_dependencies });
      if (dependencies) deps.dependencies.warm(req.auth.tenantId, sb);
    }
    return reply.code(201).send({ ...sb, ...(dependencies ? { dependencies } : {}), ...(auto_detect_dependencies !== undefined ? { auto_detect_dependencies } : {}) });
  });

  app.get<{ Querystring: { limit?: number; cursor?: string } }>("/v1/sandboxes", {
    schema: {
      summary: "List sandboxes (paginated, oldest first)",
      querystring: Type.Object({
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
        cursor: Type.Optional(Type.String({ maxLength: 512 })),
      }),
      response: { 200: Type.Object({ items: Type.Array(SandboxSchema), next_cursor: Type.Union([Type.String(), Type.Null()]) }), ...errorResponses(400, 401) },
    },
  }, async (req) => deps.sandboxes.list(req.auth, { limit: req.query.limit ?? 100, cursor: req.query.cursor }));

  app.get<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id", {
    schema: { summary: "Get a sandbox", params: SandboxParams, response: { 200: SandboxSchema, ...errorResponses(401, 404) } },
  }, async (req) => deps.sandboxes.get(req.auth, req.params.id));

  app.delete<{ Params: Static<typeof SandboxParams> }>("/v1/sandboxes/:id", {
    config: { action: "sandbox.delete" },
    schema: {
      summary: "Delete a sandbox, its runs and its workspace",
      description: "204 when everything is gone. 202 when the sandbox is already gone from the API (and from runs) but some of its data is not removed yet (a big workspace takes longer than the call waits, about a second, or a removal failed): the server finishes the deletion in the background (also after a restart).",
      params: SandboxParams,
      response: { 202: Type.Object({ status: Type.Literal("deleting") }), 204: Type.Null(), ...errorResponses(401, 404) },
    },
  }, async (req, reply) => {
    const sb = deps.sandboxes.get(req.auth, req.params.id);
    // Durable first: no new run can start, and a crash from here on is finished by the janitor.
    deps.sandboxes.markDeleting(sb.id);
    await deps.exec.cancelSandbox(sb.id, { runtime: sb.runtime });
    deps.dependencies?.forgetSandbox(sb.id);
    // A big workspace takes a while to remove: past DELETE_WAIT_MS the answer is 202 and the
    // removal goes on in the background (it is already invisible to the API and to runs).
    if (await deps.sandboxes.destroy(sb.id, { waitMs: DELETE_WAIT_MS })) return reply.code(204).send();
    return reply.code(202).send({ status: "deleting" as const });
  });
}
