import type { FastifyInstance } from "fastify";
import type { Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { OneShotService } from "../../exec/oneshot.js";
import { answered } from "../answered.js";
import { afterAnswer } from "../../exec/exec.js";
import { ExecResultSchema, OneShotBody, errorResponses } from "../schemas.js";

export async function runRoutes(app: FastifyInstance, config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const oneshot = new OneShotService({
    config, sandboxes: deps.sandboxes, workspaces: deps.workspaces, exec: deps.exec,
    runtimes: deps.runtimes, dependencies: deps.dependencies, log: deps.logger,
  });
  app.post<{ Body: Static<typeof OneShotBody> }>("/v1/run", {
    config: { action: "run.oneshot" },
    schema: {
      summary: "One-request run: a throw-away sandbox gets the inline files, runs once and is deleted",
      description: "Answers 200 with the run's result. The sandbox is gone from the API when the answer arrives; its data is removed right after (never delaying the answer), and nothing is pre-started for it.",
      body: OneShotBody,
      response: { 200: ExecResultSchema, ...errorResponses(400, 401, 404, 413, 429, 503) },
    },
  }, async (req, reply) => {
    const done = answered(reply);
    const { result, sandbox, cleanup } = await oneshot.run(req.auth, req.body, { answered: done });
    req.auditIds = { sandbox_id: sandbox.id, exec_id: result.id };
    const sent = reply.code(200).send(result);
    // Once the answer has left (its audit record's sync comes first): removal never delays it.
    // Bounded (afterAnswer), so a reply that never finishes cannot keep the sandbox.
    void afterAnswer(done).then(cleanup);
    return sent;
  });
}
