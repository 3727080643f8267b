import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { errorResponses } from "../schemas.js";

const AuditQuerySchema = Type.Object({
  tenant_id: Type.Optional(Type.String({ maxLength: 64, description: "admin only: another tenant's records" })),
  sandbox_id: Type.Optional(Type.String({ maxLength: 64 })),
  exec_id: Type.Optional(Type.String({ maxLength: 64 })),
  action: Type.Optional(Type.String({ maxLength: 128, description: "e.g. exec.finish, sandbox.create, file.create, auth.failure" })),
  kind: Type.Optional(Type.String({ maxLength: 32, description: "api, auth, exec, file, network, datastore, process, audit" })),
  since: Type.Optional(Type.String({ format: "date-time" })),
  until: Type.Optional(Type.String({ format: "date-time" })),
  after_seq: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
});

export async function auditRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  app.get<{ Querystring: Static<typeof AuditQuerySchema> }>("/v1/audit", {
    schema: {
      summary: "Audit records, oldest first, with filters; a key sees its tenant's, an admin key all (or one tenant's)",
      querystring: AuditQuerySchema,
      response: { 200: Type.Object({ items: Type.Array(Type.Object({}, { additionalProperties: true })) }), ...errorResponses(400, 401, 403) },
    },
  }, async (req) => {
    const audit = deps.audit;
    if (!audit) return { items: [] };
    // A run's records follow its result (they wait for the tracer): a reader who has the result sees them.
    await deps.exec.auditRecorded();
    const q = req.query;
    let tenant: string | undefined = req.auth.tenantId;
    if (req.auth.isAdmin) tenant = q.tenant_id;
    else if (q.tenant_id && q.tenant_id !== req.auth.tenantId) throw new PetriError("FORBIDDEN", "only an admin key can read another tenant's audit records");
    try {
      const items = audit.query({
        tenant_id: tenant, sandbox_id: q.sandbox_id, exec_id: q.exec_id, action: q.action,
        kind: q.kind as never, since: q.since, until: q.until, after_seq: q.after_seq, limit: q.limit ?? 100,
      });
      return { items };
    } catch (e) {
      if (e instanceof TypeError) throw new PetriError("VALIDATION_ERROR", e.message);
      throw e;
    }
  });
}
