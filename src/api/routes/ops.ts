import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import type { PetriMetrics } from "../../metrics/metrics.js";
import type { Readiness } from "../../metrics/readiness.js";

/**
 * Operator endpoints, no API key: readiness for orchestrators (Compose healthcheck, systemd
 * watchdogs, load balancers) and metrics for Prometheus. Neither names a tenant, sandbox or run.
 */
export async function opsRoutes(app: FastifyInstance, deps: { metrics?: PetriMetrics; readiness?: Readiness }): Promise<void> {
  const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), detail: Type.String() });
  app.get("/readyz", {
    config: { public: true },
    schema: {
      summary: "Readiness: runtimes, images, database, data directory, Docker engine, audit sinks",
      security: [],
      response: { 200: Type.Object({ status: Type.String(), checks: Type.Array(Check) }), 503: Type.Object({ status: Type.String(), checks: Type.Array(Check) }) },
    },
  }, async (_req, reply) => {
    if (!deps.readiness) return { status: "ready", checks: [] };
    const r = await deps.readiness.check();
    return reply.code(r.ready ? 200 : 503).send({ status: r.ready ? "ready" : "not_ready", checks: r.checks });
  });

  app.get("/metrics", { config: { public: true }, schema: { summary: "Prometheus metrics (text exposition format)", security: [], hide: false } }, async (_req, reply) => {
    if (!deps.metrics) return reply.code(404).send();
    return reply.type(deps.metrics.contentType).send(await deps.metrics.text());
  });
}
