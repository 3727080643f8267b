import type { AuditEvent } from "./types.js";

/**
 * The audit record of one API request — every authenticated route, reads included: what was
 * asked (action, method, route), about what (sandbox, run, key, tenant, secret, file paths), by
 * whom, with which result (status, the stable error code of a refusal, ids the request created).
 */
export interface ApiRequestFacts {
  method: string;
  /** The route pattern, e.g. /v1/sandboxes/:id/files/*; undefined when no route matched. */
  route: string | undefined;
  /** The route's own action name (config.action), when it has one. */
  action?: string;
  status: number;
  params: Record<string, string | undefined>;
  query: Record<string, unknown>;
  tenantId: string;
  keyId: string;
  ip: string;
  requestId: string;
  /** The body sent back, when JSON and small: read for the error code and the ids created. */
  responseBody?: string;
  userAgent?: string;
  /** Ids a route said it created (req.auditIds). */
  created?: { sandbox_id?: string; exec_id?: string };
}

const SINGULAR: Record<string, string> = { sandboxes: "sandbox", files: "file", keys: "key", tenants: "tenant", secrets: "secret", runtimes: "runtime", quotas: "quotas" };

/** `config.action`, else a name from the route: GET /v1/sandboxes/:id/files/* → sandbox.file.get. */
export function apiAction(method: string, route: string | undefined, configured?: string): string {
  if (configured) return configured;
  if (!route) return "route.not_found";
  const parts = route.replace(/^\/v1\//, "").split("/").filter(Boolean);
  const names = parts.filter((p) => !p.startsWith(":") && p !== "*").map((p) => SINGULAR[p] ?? p.replace(/[^A-Za-z0-9_]/g, "_"));
  const last = parts[parts.length - 1] ?? "";
  const onOne = last.startsWith(":") || last === "*";
  const verb = { GET: onOne ? "get" : "list", HEAD: "head", POST: "create", PUT: "put", PATCH: "update", DELETE: "delete" }[method.toUpperCase()] ?? method.toLowerCase();
  return [...(names.length ? names : ["root"]), verb].join(".").slice(0, 128);
}

const DENIED_STATUS = new Set([401, 403, 404, 429]);

function parse(body: string | undefined): Record<string, any> | null {
  if (!body || body.length > 1_000_000 || body[0] !== "{") return null;
  try {
    return JSON.parse(body) as Record<string, any>;
  } catch {
    return null;
  }
}

export function apiAuditEvent(f: ApiRequestFacts): AuditEvent {
  const json = parse(f.responseBody);
  const errorCode = typeof json?.error?.code === "string" ? (json.error.code as string) : null;
  const ok = f.status < 400;
  const p = f.params;
  const onSandbox = f.route?.startsWith("/v1/sandboxes/:id") ?? false;
  const detail: Record<string, unknown> = { method: f.method, route: f.route ?? null, status: f.status, user_agent: f.userAgent };
  const filePath = p["*"] ?? (typeof f.query.path === "string" ? f.query.path : undefined);
  if (filePath !== undefined) detail.path = filePath;
  if (typeof f.query.path_b64 === "string") detail.path_b64 = f.query.path_b64; // a name that is not UTF-8
  if (p.keyId) detail.target_key_id = p.keyId;
  if (p.tenantId) detail.target_tenant_id = p.tenantId;
  if (p.name) detail.secret_name = p.name;
  if (ok && json && f.status === 201) {
    // Ids of what was created, never a token: the key-creation reply carries one beside key.id.
    if (typeof json.key?.id === "string") detail.created_key_id = json.key.id;
    if (typeof json.id === "string") detail.created_id = json.id;
    if (Array.isArray(json.files)) detail.paths = json.files.slice(0, 200).map((x: { path?: unknown }) => x?.path).filter((x: unknown) => typeof x === "string");
    if (typeof json.path === "string") detail.path = json.path;
  }
  if (!ok && json?.error?.message) detail.reason = String(json.error.message).slice(0, 500);
  return {
    kind: "api",
    action: apiAction(f.method, f.route, f.action),
    outcome: ok ? "success" : DENIED_STATUS.has(f.status) ? "denied" : "failure",
    tenant_id: f.tenantId, key_id: f.keyId,
    sandbox_id: (onSandbox ? p.id : undefined) ?? f.created?.sandbox_id ?? (f.route === "/v1/sandboxes" && typeof detail.created_id === "string" ? detail.created_id : null) ?? null,
    exec_id: p.execId ?? f.created?.exec_id ?? null,
    client_ip: f.ip, request_id: f.requestId,
    error_code: ok ? null : errorCode ?? `HTTP_${f.status}`,
    detail,
  };
}
