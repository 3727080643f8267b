import { StringDecoder } from "node:string_decoder";
import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { Config } from "../../config.js";
import type { AppDeps } from "../app.js";
import { PetriError } from "../../errors.js";
import { answered } from "../answered.js";
import { ChangeSetSchema, ExecBody, ExecResultSchema, SandboxParams, errorResponses } from "../schemas.js";

const ExecParams = Type.Object({ id: Type.String({ maxLength: 64 }), execId: Type.String({ maxLength: 64 }) });

export async function execRoutes(app: FastifyInstance, _config: Readonly<Config>, deps: AppDeps): Promise<void> {
  const { sandboxes, exec } = deps;

  app.post<{ Params: Static<typeof SandboxParams>; Body: Static<typeof ExecBody> & { stdin_open?: boolean } }>("/v1/sandboxes/:id/exec", {
    config: { action: "exec.create" },
    schema: {
      summary: "Run a workspace file or a snippet in a fresh container",
      description: "Default: waits and answers 200 with the result. `detach: true`: answers 202 at once. `stream: true` (or `Accept: application/x-ndjson`): answers with NDJSON events `start`, `stdout`, `stderr`, `result` as they happen. `stdin_open: true` keeps stdin open for POST …/exec/{exec_id}/stdin.",
      params: SandboxParams,
      body: Type.Composite([ExecBody, Type.Object({ stdin_open: Type.Optional(Type.Boolean()) })], { additionalProperties: false }),
      response: { 200: ExecResultSchema, 202: ExecResultSchema, ...errorResponses(400, 401, 404, 413, 503) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const body = req.body ?? {};
    const streaming = body.stream === true || (req.headers.accept ?? "").includes("application/x-ndjson");
    // Dependencies are settled before the run exists: a bad or missing package is a 400, not a failed run.
    const prepared = (await deps.dependencies?.prepare(req.auth.tenantId, sb, body)) ?? null;
    let handle;
    try {
      // A plain answer: the work after the result waits for it to leave (streams and detached runs have theirs already).
      handle = exec.start(req.auth, sb, body, { interactiveStdin: body.stdin_open === true, deps: prepared, answered: body.detach || streaming ? undefined : answered(reply) });
    } catch (e) {
      prepared?.release();
      throw e;
    }
    req.auditIds = { exec_id: handle.id };
    if (body.detach) {
      return reply.code(202).send({ id: handle.id, sandbox_id: sb.id, status: "running" });
    }
    if (!streaming) {
      return reply.code(200).send(await handle.done);
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store", "x-petri-exec-id": handle.id });
    const send = (o: object) => { if (!res.writableEnded) res.write(JSON.stringify(o) + "\n"); };
    send({ type: "start", id: handle.id, sandbox_id: sb.id });
    // A multi-byte character split across two chunks must not turn into two replacement marks.
    const outDec = new StringDecoder("utf8");
    const errDec = new StringDecoder("utf8");
    const onOut = (b: Buffer) => { const d = outDec.write(b); if (d) send({ type: "stdout", data: d }); };
    const onErr = (b: Buffer) => { const d = errDec.write(b); if (d) send({ type: "stderr", data: d }); };
    handle.on("stdout", onOut);
    handle.on("stderr", onErr);
    const result = await handle.done;
    handle.off("stdout", onOut);
    handle.off("stderr", onErr);
    const restOut = outDec.end();
    const restErr = errDec.end();
    if (restOut) send({ type: "stdout", data: restOut });
    if (restErr) send({ type: "stderr", data: restErr });
    send({ type: "result", result });
    res.end();
  });

  app.get<{ Params: Static<typeof SandboxParams>; Querystring: { limit?: number } }>("/v1/sandboxes/:id/exec", {
    schema: {
      summary: "Run history of a sandbox, newest first",
      params: SandboxParams,
      querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })) }),
      response: { 200: Type.Object({ items: Type.Array(Type.Object({}, { additionalProperties: true })) }), ...errorResponses(401, 404) },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    return { items: exec.history(req.auth, sb.id, { limit: req.query.limit ?? 100 }) };
  });

  app.get<{ Params: Static<typeof ExecParams> }>("/v1/sandboxes/:id/exec/:execId", {
    schema: { summary: "A run's status and retained result", params: ExecParams, response: { 200: ExecResultSchema, ...errorResponses(401, 404) } },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    return exec.get(req.auth, sb.id, req.params.execId);
  });

  app.get<{ Params: Static<typeof ExecParams> }>("/v1/sandboxes/:id/exec/:execId/changes", {
    schema: {
      summary: "A run's change set: every entry it created, modified or deleted, with sizes and SHA-256 hashes",
      description: "`changes` is null while the run is in progress. `path` shows bytes that are not UTF-8 as U+FFFD; `path_b64` then carries the exact name. `conflict: true` marks a change not applied because an upload changed the same path during the run.",
      params: ExecParams,
      response: { 200: ChangeSetSchema, ...errorResponses(401, 404) },
    },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    return exec.changes(req.auth, sb.id, req.params.execId);
  });

  app.post<{ Params: Static<typeof ExecParams>; Body: { data?: string; close?: boolean } }>("/v1/sandboxes/:id/exec/:execId/stdin", {
    config: { action: "exec.stdin" },
    schema: {
      summary: "Write to the stdin of a live run started with stdin_open",
      params: ExecParams,
      body: Type.Object({ data: Type.Optional(Type.String()), close: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...errorResponses(400, 401, 404, 409) },
    },
  }, async (req, reply) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const h = exec.getHandle(req.auth.tenantId, sb.id, req.params.execId);
    if (!h) {
      exec.get(req.auth, sb.id, req.params.execId); // 404 if it never existed
      throw new PetriError("EXEC_NOT_RUNNING", `run ${req.params.execId} is not running`);
    }
    if (req.body?.data) h.writeStdin(Buffer.from(req.body.data, "utf8"));
    if (req.body?.close) h.closeStdin();
    return reply.code(204).send();
  });

  app.delete<{ Params: Static<typeof ExecParams> }>("/v1/sandboxes/:id/exec/:execId", {
    config: { action: "exec.cancel" },
    schema: { summary: "Cancel a live run (kills its whole process tree)", params: ExecParams, response: { 200: ExecResultSchema, ...errorResponses(401, 404) } },
  }, async (req) => {
    const sb = sandboxes.get(req.auth, req.params.id);
    const h = exec.getHandle(req.auth.tenantId, sb.id, req.params.execId);
    if (!h) return exec.get(req.auth, sb.id, req.params.execId);
    h.cancel("cancel");
    return await h.done;
  });
}
