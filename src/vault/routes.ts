import { Type, type Static } from "@sinclair/typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { PetriError } from "../errors.js";
import { SECRET_KINDS, SECRET_VALUE_MAX, SECRET_VALUE_MIN, type SecretStore } from "./store.js";

export interface VaultRoutesOptions {
  store: SecretStore;
}

interface VaultAuth {
  tenantId: string;
  keyId: string;
  isAdmin: boolean;
}

const NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_-]{0,63}$";

const Params = Type.Object({ name: Type.String({ pattern: NAME_PATTERN, description: "Secret name: a letter, then letters, digits, '_' or '-' (max 64)" }) });

/**
 * Config is validated per kind by the store (clear messages, one place). A schema union here
 * would interact badly with Ajv's removeAdditional/useDefaults, which mutate data while trying
 * each branch. Documented shapes, for OpenAPI:
 *   postgres: { host, port?=5432, database, user, sslmode?=prefer (disable|prefer|require|verify-ca|verify-full), ca? (PEM) }
 *   http:     { hosts: ["api.example.com", "*.example.com", "host:8443"], header?="Authorization", template?="Bearer {{value}}", upstreamCa? (PEM) }
 *   generic:  {} (stored and redacted; not brokered)
 */
const ConfigSchema = Type.Object({}, { additionalProperties: true, description: "Kind-specific settings; see docs/vault.md" });

const PutBody = Type.Object(
  {
    value: Type.String({ minLength: SECRET_VALUE_MIN, maxLength: SECRET_VALUE_MAX, description: "The secret. Write-only: no API returns it." }),
    kind: Type.Union(SECRET_KINDS.map((k) => Type.Literal(k)), { default: "generic" }),
    config: Type.Optional(ConfigSchema),
  },
  { additionalProperties: false },
);
type PutBody = Static<typeof PutBody>;

export const SecretMetaSchema = Type.Object(
  {
    name: Type.String(),
    kind: Type.String(),
    version: Type.Integer(),
    scope: Type.Array(Type.String()),
    config: Type.Object({}, { additionalProperties: true }),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: false },
);

const ErrorSchema = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Object({}, { additionalProperties: true })) }),
});

function tenantOf(request: FastifyRequest): string {
  const auth = (request as unknown as { auth?: VaultAuth }).auth;
  if (!auth || typeof auth.tenantId !== "string" || auth.tenantId === "") throw new PetriError("UNAUTHORIZED", "authentication required");
  return auth.tenantId;
}

/**
 * Secret management for the calling tenant. Values go in and never come out: every response
 * is serialized through SecretMetaSchema, which has no field that could carry one.
 */
export async function vaultRoutes(app: FastifyInstance, opts: VaultRoutesOptions): Promise<void> {
  const { store } = opts;

  app.put<{ Params: { name: string }; Body: PutBody }>(
    "/v1/secrets/:name",
    {
      // Audited by the server's onResponse hook (method, route, status; never the body).
      config: { action: "secret.put" },
      schema: {
        tags: ["secrets"],
        summary: "Create or replace a secret (a new version each time)",
        params: Params,
        body: PutBody,
        response: { 200: SecretMetaSchema, 201: SecretMetaSchema, 400: ErrorSchema, 401: ErrorSchema },
      },
    },
    async (request, reply) => {
      const tenantId = tenantOf(request);
      const meta = store.put(tenantId, request.params.name, {
        value: request.body.value,
        kind: request.body.kind,
        config: request.body.config as Record<string, unknown> | undefined,
      });
      return reply.code(meta.version === 1 ? 201 : 200).send(meta);
    },
  );

  app.get(
    "/v1/secrets",
    {
      schema: {
        tags: ["secrets"],
        summary: "List the tenant's secrets (no values)",
        response: { 200: Type.Object({ secrets: Type.Array(SecretMetaSchema) }), 401: ErrorSchema },
      },
    },
    async (request) => ({ secrets: store.list(tenantOf(request)) }),
  );

  app.get<{ Params: { name: string } }>(
    "/v1/secrets/:name",
    {
      schema: {
        tags: ["secrets"],
        summary: "Describe one secret (no value)",
        params: Params,
        response: { 200: SecretMetaSchema, 401: ErrorSchema, 404: ErrorSchema },
      },
    },
    async (request) => store.get(tenantOf(request), request.params.name),
  );

  app.delete<{ Params: { name: string } }>(
    "/v1/secrets/:name",
    {
      config: { action: "secret.delete" },
      schema: {
        tags: ["secrets"],
        summary: "Delete a secret",
        params: Params,
        response: { 204: Type.Null(), 401: ErrorSchema, 404: ErrorSchema },
      },
    },
    async (request, reply) => {
      store.delete(tenantOf(request), request.params.name);
      return reply.code(204).send();
    },
  );
}
