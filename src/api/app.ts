import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import multipart from "@fastify/multipart";
import swagger from "@fastify/swagger";
import { Ajv } from "ajv";
import addFormatsModule from "ajv-formats";
import { Type } from "@sinclair/typebox";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import { PetriError, ERROR_CODES, type ErrorCode } from "../errors.js";
import type { AuthContext, KeyService } from "../auth/keys.js";
import type { SandboxService } from "../sandboxes/sandboxes.js";
import type { WorkspaceStore } from "../workspaces/workspaces.js";
import type { ExecService } from "../exec/exec.js";
import type { Runtime } from "../runtimes/types.js";
import type { QuotaService } from "../auth/quotas.js";
import type { SecretStore } from "../vault/index.js";
import type { DependencyService } from "../deps/service.js";
import { ErrorBody, NO_NUL_PATTERN } from "./schemas.js";
import type { AuditEvent, AuditRecord } from "../audit/types.js";
import type { AuditQuery } from "../audit/log.js";
import { auditRoutes } from "./routes/audit.js";
import { apiAuditEvent } from "../audit/api-records.js";
import { sandboxRoutes } from "./routes/sandboxes.js";
import { fileRoutes } from "./routes/files.js";
import { execRoutes } from "./routes/exec.js";
import { runRoutes } from "./routes/run.js";
import { adminRoutes } from "./routes/admin.js";
import { syncApplyRoutes, syncPlanRoutes } from "./routes/sync.js";
import type { BlobStore } from "../workspaces/sync.js";
import { toolRoutes } from "./routes/tools.js";
import { mcpRoutes } from "../mcp/http.js";
import type { ImageCatalog } from "../images/images.js";
import { opsRoutes } from "./routes/ops.js";
import type { PetriMetrics } from "../metrics/metrics.js";
import type { Readiness } from "../metrics/readiness.js";

export interface AuditSink {
  append(ev: AuditEvent): unknown;
  /** Resolves once durable; concurrent requests' records share one sync (AuditLog group commit). */
  appendDurable?(evs: AuditEvent[]): Promise<unknown>;
  query(f: AuditQuery): AuditRecord[];
  /** PETRI_AUDIT_FAIL=closed and the log cannot be appended: requests are refused (503). */
  refusesWork?(): boolean;
}

export interface AppDeps {
  keys: KeyService;
  sandboxes: SandboxService;
  workspaces: WorkspaceStore;
  blobs: BlobStore;
  exec: ExecService;
  runtimes: Map<string, Runtime>;
  defaultRuntime: string;
  logger: Logger;
  audit?: AuditSink;
  quotas?: QuotaService;
  /** TenantVault, to redact secret values from files the API returns. */
  vault?: SecretStore;
  /** Declared and detected dependencies, installed from the configured registries. */
  dependencies?: DependencyService;
  /** The images sandboxes may name, and what each holds (GET /v1/images, the describe_images tool). */
  images?: ImageCatalog;
  /** Extra route plugins (vault, audit…) registered inside the authenticated scope. */
  plugins?: ((app: FastifyInstance) => Promise<void>)[];
  /** Prometheus metrics and readiness checks (GET /metrics, GET /readyz). */
  metrics?: PetriMetrics;
  readiness?: Readiness;
}

declare module "fastify" {
  interface FastifyRequest {
    auth: AuthContext;
    /** Ids a route created, for the audit record of the request (e.g. the new sandbox). */
    auditIds: { sandbox_id?: string; exec_id?: string } | null;
  }
  interface FastifyContextConfig {
    /** Name of the action for the audit log, e.g. "sandbox.create". */
    action?: string;
    public?: boolean;
  }
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: "INVALID_JSON",
  FST_ERR_CTP_EMPTY_JSON_BODY: "INVALID_JSON",
  FST_ERR_CTP_BODY_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "VALIDATION_ERROR",
  FST_REQ_FILE_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  FST_FILES_LIMIT: "PAYLOAD_TOO_LARGE",
  FST_PARTS_LIMIT: "PAYLOAD_TOO_LARGE",
  FST_FIELDS_LIMIT: "PAYLOAD_TOO_LARGE",
  FST_PROTO_VIOLATION: "VALIDATION_ERROR",
  FST_INVALID_MULTIPART_CONTENT_TYPE: "UNSUPPORTED_MEDIA_TYPE",
  FST_ERR_VALIDATION: "VALIDATION_ERROR",
};

/** ajv's message, except where it would name a regex instead of the rule (NUL bytes). */
function validationMessage(e: FastifyError & { validation?: unknown; validationContext?: string }): string {
  const v = Array.isArray(e.validation) ? (e.validation[0] as { keyword?: string; instancePath?: string; params?: { pattern?: string } }) : undefined;
  if (v?.keyword === "pattern" && v.params?.pattern === NO_NUL_PATTERN) {
    return `${e.validationContext ?? "body"}${v.instancePath ?? ""} must not contain NUL bytes`;
  }
  return e.message;
}

/** Turns any error into the stable `{error: {code, message}}` shape; only real faults are 500s. */
export function toPetriError(err: unknown): PetriError {
  if (err instanceof PetriError) return err;
  const e = err as FastifyError & { validation?: unknown };
  if (e?.validation) return new PetriError("VALIDATION_ERROR", validationMessage(e));
  if (e?.code && FASTIFY_CODES[e.code]) return new PetriError(FASTIFY_CODES[e.code], e.message);
  if (e instanceof SyntaxError) return new PetriError("INVALID_JSON", `request body is not valid JSON: ${e.message}`);
  const status = e?.statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) {
    const byStatus: Record<number, ErrorCode> = { 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS" };
    return new PetriError(byStatus[status] ?? "VALIDATION_ERROR", e.message);
  }
  return new PetriError("INTERNAL", "internal error");
}

export function sendError(reply: FastifyReply, err: PetriError): FastifyReply {
  return reply.code(ERROR_CODES[err.code]).type("application/json").send(err.toJSON());
}

function bearer(req: FastifyRequest): string | null {
  const h = req.headers.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : null;
}

/**
 * Builds the HTTP app without listening, so tests can use `app.inject()`. Routes are thin:
 * they validate (JSON schemas, which also generate the OpenAPI document) and call services.
 */
export async function buildApp(config: Readonly<Config>, deps: AppDeps): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.logger as unknown as FastifyBaseLogger,
    bodyLimit: 10 * 1024 * 1024,
    // A caller's (or proxy's) X-Request-Id is kept when it is a plain token, so one id follows a
    // request through the proxy's logs, Petri's JSON log and the audit record.
    genReqId: (req) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && /^[A-Za-z0-9._:-]{1,64}$/.test(given)
        ? given : `req_${Math.random().toString(36).slice(2, 12)}${Date.now().toString(36)}`;
    },
  });
  // A client that half-closes its socket right after its request (`printf … | nc`) still gets the
  // answer: node's HTTP server otherwise ends the socket as soon as it reads the FIN, and a reply
  // waits for its audit record's group commit, so the FIN would win. The socket ends after the reply.
  (app.server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  app.addHook("onSend", async (req, reply) => { reply.header("x-request-id", req.id); });
  app.decorateRequest("auth", null as unknown as AuthContext);
  app.decorateRequest("auditIds", null);
  // Query strings and path params are text and need coercing ("?limit=2"); JSON bodies must
  // not be coerced, or {"language": 7} would quietly become "7".
  const addFormats = addFormatsModule as unknown as (a: Ajv) => Ajv;
  const strict = addFormats(new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false, strict: false }));
  const coercing = addFormats(new Ajv({ coerceTypes: "array", useDefaults: true, removeAdditional: false, allErrors: false, strict: false }));
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === "body" ? strict : coercing).compile(schema));

  // `curl -d '{"language":"python"}'` sends form-encoding; the documented examples must work as
  // written, so a form body that is JSON is read as JSON.
  app.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string" }, (_req, body, done) => {
    const text = (body as string).trim();
    if (text === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      const form = Object.fromEntries(new URLSearchParams(text));
      done(null, form);
    }
  });
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
    const text = (body as string).trim();
    if (text === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new PetriError("INVALID_JSON", `request body is not valid JSON: ${(e as Error).message}`), undefined);
    }
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: { title: "Petri", description: "Self-hosted execution engine for untrusted code", version: "0.1.0" },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
  });
  app.addSchema(ErrorBody);

  app.setErrorHandler((err, req, reply) => {
    const pe = toPetriError(err);
    if (pe.code === "QUOTA_EXCEEDED" || pe.code === "WORKSPACE_QUOTA_EXCEEDED") {
      deps.metrics?.quotaRefused(typeof pe.details?.quota === "string" ? pe.details.quota : pe.code === "QUOTA_EXCEEDED" ? "tenant" : "workspace");
    }
    if (pe.code === "INTERNAL") req.log.error({ err }, "unhandled error");
    return sendError(reply, pe);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new PetriError("ROUTE_NOT_FOUND", `no route for ${req.method} ${req.url.split("?")[0]}`)));

  app.addHook("onRequest", async (req, reply) => {
    if (req.routeOptions.config?.public) return;
    // Fail closed: nothing happens that the audit log could not record.
    if (deps.audit?.refusesWork?.()) {
      return sendError(reply, new PetriError("AUDIT_UNAVAILABLE", "the audit log cannot be written; this server refuses requests until it can (PETRI_AUDIT_FAIL=closed)"));
    }
    const token = bearer(req);
    const auth = token ? deps.keys.authenticate(token) : null;
    if (!auth) {
      try { deps.audit?.append({
        kind: "auth", action: "auth.failure", outcome: "denied", client_ip: req.ip, request_id: req.id,
        error_code: "UNAUTHORIZED", detail: { method: req.method, path: req.url.split("?")[0], reason: token ? "unknown or revoked key" : "missing bearer token" },
      }); } catch (e) { req.log.error({ err: (e as Error).message }, "audit append failed for an authentication failure"); }
      return sendError(reply, new PetriError("UNAUTHORIZED", token ? "API key is not valid" : "missing `Authorization: Bearer <key>` header"));
    }
    req.auth = auth;
  });

  // Every authenticated request is recorded, reads too, before its answer leaves (onSend): the
  // reply body gives the error code of a refusal and the ids a request created. With
  // PETRI_AUDIT_FAIL=closed a read whose record cannot be written is answered 503 instead of
  // its data; a change has already happened by then, so its answer stands and the lost record
  // is counted in the audit.gap record written once the log takes writes again.
  const requestEvent = (req: FastifyRequest, status: number, body?: string): AuditEvent => {
    (req as { auditRecorded?: boolean }).auditRecorded = true;
    return apiAuditEvent({
      method: req.method, route: req.routeOptions.url, action: req.routeOptions.config?.action, status,
      params: (req.params ?? {}) as Record<string, string>, query: (req.query ?? {}) as Record<string, unknown>,
      tenantId: req.auth.tenantId, keyId: req.auth.keyId, ip: req.ip, requestId: req.id,
      responseBody: body, userAgent: req.headers["user-agent"],
      created: req.auditIds ?? undefined,
    });
  };
  const recordRequest = (req: FastifyRequest, status: number, body?: string): void => {
    deps.audit!.append(requestEvent(req, status, body));
  };
  app.addHook("onSend", async (req, reply, payload) => {
    if (!req.auth || !deps.audit || req.routeOptions.config?.public) return payload;
    try {
      const ev = requestEvent(req, reply.statusCode, typeof payload === "string" && payload.length <= 1_000_000 ? payload : undefined);
      // Durable before the answer leaves, as before; the sync is a group commit off the event
      // loop, shared with the records of every request (and run) written meanwhile.
      if (deps.audit.appendDurable) await deps.audit.appendDurable([ev]);
      else deps.audit.append(ev);
    } catch (e) {
      req.log.error({ err: (e as Error).message }, "audit append failed for an API request");
      if ((req.method === "GET" || req.method === "HEAD") && deps.audit.refusesWork?.()) {
        (payload as { destroy?: () => void } | null)?.destroy?.();
        reply.code(503).type("application/json").removeHeader("content-length");
        return JSON.stringify(new PetriError("AUDIT_UNAVAILABLE", "the audit log cannot be written, so nothing is read out unrecorded (PETRI_AUDIT_FAIL=closed)").toJSON());
      }
    }
    return payload;
  });
  app.addHook("onResponse", async (req, reply) => {
    deps.metrics?.httpResponse(reply.statusCode);
    // Answers written straight to the socket (NDJSON streams, MCP) skip onSend.
    if (!req.auth || !deps.audit || req.routeOptions.config?.public || (req as { auditRecorded?: boolean }).auditRecorded) return;
    try {
      recordRequest(req, reply.statusCode);
    } catch (e) {
      req.log.error({ err: (e as Error).message }, "audit append failed for an API request");
    }
  });

  app.get("/healthz", {
    config: { public: true },
    schema: { summary: "Liveness", security: [], response: { 200: Type.Object({ status: Type.String(), active_runs: Type.Number() }) } },
  }, async () => ({ status: "ok", active_runs: deps.exec.activeCount() }));

  await opsRoutes(app, deps);

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  app.get("/v1/runtimes", {
    schema: {
      summary: "Runtimes this server allows",
      response: { 200: Type.Object({ default: Type.String(), runtimes: Type.Array(Type.Object({ name: Type.String(), kind: Type.String() })) }) },
    },
  }, async () => ({
    default: deps.defaultRuntime,
    runtimes: [...deps.runtimes.entries()].map(([name, r]) => ({ name, kind: r.name })),
  }));

  await app.register(async (scoped) => {
    await sandboxRoutes(scoped, config, deps);
    await execRoutes(scoped, config, deps);
    await runRoutes(scoped, config, deps);
    await adminRoutes(scoped, config, deps);
    await syncPlanRoutes(scoped, config, deps);
    await auditRoutes(scoped, config, deps);
    await toolRoutes(scoped, deps);
    await mcpRoutes(scoped, deps);
    for (const p of deps.plugins ?? []) await p(scoped);
  });
  // File routes need their own body parsers (raw bytes and multipart), so they live in a scope
  // where the JSON/form parsers are not installed.
  await app.register(async (filesScope) => {
    filesScope.removeAllContentTypeParsers();
    filesScope.addContentTypeParser("*", (_req, _payload, done) => done(null));
    await filesScope.register(multipart, {
      // fieldSize: a delta-sync manifest of 100,000 files is a text field of ~15 MB.
      limits: { fileSize: config.maxUploadBytes, files: 100_000, fields: 100_000, parts: 200_000, fieldSize: 32 * 1024 * 1024 },
    });
    await fileRoutes(filesScope, config, deps);
    await syncApplyRoutes(filesScope, config, deps);
  });
  return app;
}
