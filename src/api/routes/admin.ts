import type { FastifyInstance, FastifyRequest } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { errorResponses } from "../schemas.js";

const KeySchema = Type.Object({
  id: Type.String(), tenant_id: Type.String(), name: Type.String(), is_admin: Type.Boolean(),
  created_at: Type.String(), revoked_at: Type.Union([Type.String(), Type.Null()]), last_used_at: Type.Union([Type.String(), Type.Null()]),
});
const TenantSchema = Type.Object({ id: Type.String(), name: Type.String(), created_at: Type.String() });
const CreateKeyBody = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 128 })),
  tenant_id: Type.Optional(Type.String({ maxLength: 64, description: "existing tenant; omitted: a new tenant is made for the key" })),
  admin: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });

function requireAdmin(req: FastifyRequest): void {
  if (!req.auth.isAdmin) throw new PetriError("FORBIDDEN", "this action needs an admin key");
}

export async function adminRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const { keys } = deps;

  app.post<{ Body: Static<typeof CreateKeyBody> }>("/v1/keys", {
    config: { action: "key.create" },
    schema: {
      summary: "Create an API key (admin). The token is shown once.",
      body: CreateKeyBody,
      response: { 201: Type.Object({ key: KeySchema, token: Type.String() }), ...errorResponses(400, 401, 403, 404) },
    },
  }, async (req, reply) => {
    requireAdmin(req);
    const out = keys.createKey({ name: req.body.name, tenantId: req.body.tenant_id, admin: req.body.admin });
    return reply.code(201).send(out);
  });

  app.get("/v1/keys", {
    schema: { summary: "List API keys (admin; secrets are never shown)", response: { 200: Type.Object({ items: Type.Array(KeySchema) }), ...errorResponses(401, 403) } },
  }, async (req) => {
    requireAdmin(req);
    return { items: keys.listKeys() };
  });

  app.delete<{ Params: { keyId: string } }>("/v1/keys/:keyId", {
    config: { action: "key.revoke" },
    schema: { summary: "Revoke an API key (admin); it stops working at once", params: Type.Object({ keyId: Type.String({ maxLength: 64 }) }), response: { 204: Type.Null(), ...errorResponses(401, 403, 404) } },
  }, async (req, reply) => {
    requireAdmin(req);
    if (!keys.getKey(req.params.keyId)) throw new PetriError("KEY_NOT_FOUND", `key ${req.params.keyId} not found`);
    keys.revokeKey(req.params.keyId);
    return reply.code(204).send();
  });

  app.post<{ Body: { name: string } }>("/v1/tenants", {
    config: { action: "tenant.create" },
    schema: {
      summary: "Create a tenant (admin)",
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false }),
      response: { 201: TenantSchema, ...errorResponses(400, 401, 403) },
    },
  }, async (req, reply) => {
    requireAdmin(req);
    return reply.code(201).send(keys.createTenant(req.body.name));
  });

  const QuotasSchema = Type.Object({
    max_sandboxes: Type.Optional(Type.Integer({ minimum: 1 })),
    max_concurrent_runs: Type.Optional(Type.Integer({ minimum: 1 })),
    max_workspace_mb: Type.Optional(Type.Integer({ minimum: 1 })),
  }, { additionalProperties: false });
  const FullQuotas = Type.Object({ max_sandboxes: Type.Integer(), max_concurrent_runs: Type.Integer(), max_workspace_mb: Type.Integer() });

  app.get<{ Params: { tenantId: string } }>("/v1/tenants/:tenantId", {
    schema: {
      summary: "A tenant and its quotas (admin, or a key of that tenant)",
      params: Type.Object({ tenantId: Type.String({ maxLength: 64 }) }),
      response: { 200: Type.Composite([TenantSchema, Type.Object({ quotas: FullQuotas })]), ...errorResponses(401, 404) },
    },
  }, async (req) => {
    const t = keys.getTenant(req.params.tenantId);
    if (!t || (!req.auth.isAdmin && req.auth.tenantId !== t.id)) throw new PetriError("TENANT_NOT_FOUND", `tenant ${req.params.tenantId} not found`);
    return { ...t, quotas: deps.quotas!.get(t.id) };
  });

  app.put<{ Params: { tenantId: string }; Body: Static<typeof QuotasSchema> }>("/v1/tenants/:tenantId/quotas", {
    config: { action: "tenant.quotas" },
    schema: {
      summary: "Set a tenant's quotas (admin)",
      params: Type.Object({ tenantId: Type.String({ maxLength: 64 }) }),
      body: QuotasSchema,
      response: { 200: FullQuotas, ...errorResponses(400, 401, 403, 404) },
    },
  }, async (req) => {
    requireAdmin(req);
    return deps.quotas!.set(req.params.tenantId, req.body);
  });

  app.get("/v1/tenants", {
    schema: { summary: "List tenants (admin)", response: { 200: Type.Object({ items: Type.Array(TenantSchema) }), ...errorResponses(401, 403) } },
  }, async (req) => {
    requireAdmin(req);
    return { items: keys.listTenants() };
  });
}
