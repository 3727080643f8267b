import { isIP } from "node:net";
import os from "node:os";
import path from "node:path";
import type { AuditRecord } from "./types.js";

/**
 * Maps Petri audit records to OCSF 1.1.0 events (https://schema.ocsf.io/1.1.0). docs/audit.md has
 * an example of each class. Fields the class has no place for go to `unmapped`, so nothing of the
 * record is lost; the record's own id, seq and hashes are kept there too, letting a SIEM
 * de-duplicate and re-check the chain.
 *
 *   kind        class
 *   api         6003 API Activity
 *   auth        3002 Authentication
 *   exec        1007 Process Activity   (the run itself: Launch / Terminate)
 *   process     1007 Process Activity   (processes seen inside a run, e.g. from gVisor traces)
 *   file        1001 File System Activity
 *   network     4002 HTTP Activity when the call has an HTTP method, 4003 DNS Activity for
 *               dns.query, else 4001 Network Activity
 *   datastore   6005 Datastore Activity
 *   audit       0    Base Event (signed checkpoints)
 */
export const OCSF_VERSION = "1.1.0";

export interface OcsfOptions {
  /** Petri's version, reported in metadata.product.version. */
  productVersion?: string;
  /** Host name reported in `device`; defaults to os.hostname(). */
  hostname?: string;
}

type Obj = Record<string, unknown>;

const CATEGORY: Record<number, string> = {
  0: "Uncategorized",
  1: "System Activity",
  3: "Identity & Access Management",
  4: "Network Activity",
  6: "Application Activity",
};

const SEVERITY = ["Unknown", "Informational", "Low", "Medium", "High", "Critical", "Fatal"];

function verb(action: string): string {
  const parts = action.toLowerCase().split(".");
  return parts[parts.length - 1] ?? "";
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Drops undefined, null and empty objects so events stay compact. */
function compact<T>(v: T): T {
  if (Array.isArray(v)) return v.map(compact).filter((x) => x !== undefined) as T;
  if (v !== null && typeof v === "object") {
    const out: Obj = {};
    for (const [k, x] of Object.entries(v as Obj)) {
      if (x === undefined || x === null) continue;
      const c = compact(x);
      if (c !== null && typeof c === "object" && !Array.isArray(c) && Object.keys(c).length === 0) continue;
      out[k] = c;
    }
    return out as T;
  }
  return v;
}

function pick(detail: Obj, used: Set<string>, ...keys: string[]): unknown {
  for (const k of keys) {
    if (detail[k] !== undefined && detail[k] !== null) {
      used.add(k);
      return detail[k];
    }
  }
  return undefined;
}

function sha256Hashes(value: unknown): Obj[] | undefined {
  const v = str(value);
  return v ? [{ algorithm_id: 3, algorithm: "SHA-256", value: v }] : undefined;
}

interface ClassChoice {
  class_uid: number;
  class_name: string;
  category_uid: number;
  activity_id: number;
  activity_name: string;
}

const API_ACTIVITIES: [number, string, RegExp][] = [
  [1, "Create", /^(create|add|upload|put|write|mkdir|start|run|exec|connect|issue)$/],
  [2, "Read", /^(get|read|list|download|query|show|describe|stream|logs|search)$/],
  [3, "Update", /^(update|patch|rename|move|set|modify|restart|rotate)$/],
  [4, "Delete", /^(delete|remove|rm|kill|destroy|revoke|purge|stop)$/],
];

function apiActivity(action: string, method: string | undefined): [number, string] {
  const v = verb(action);
  for (const [id, name, re] of API_ACTIVITIES) if (re.test(v)) return [id, name];
  switch (method?.toUpperCase()) {
    case "POST":
      return [1, "Create"];
    case "GET":
    case "HEAD":
      return [2, "Read"];
    case "PUT":
    case "PATCH":
      return [3, "Update"];
    case "DELETE":
      return [4, "Delete"];
  }
  return [99, "Other"];
}

const HTTP_ACTIVITY: Record<string, number> = { CONNECT: 1, DELETE: 2, GET: 3, HEAD: 4, OPTIONS: 5, POST: 6, PUT: 7, TRACE: 8 };

const FILE_ACTIVITIES: Record<string, [number, string]> = {
  create: [1, "Create"], read: [2, "Read"], update: [3, "Update"], modify: [3, "Update"], write: [3, "Update"],
  delete: [4, "Delete"], rename: [5, "Rename"], chmod: [6, "Set Attributes"], set_attributes: [6, "Set Attributes"],
  chown: [7, "Set Security"], stat: [8, "Get Attributes"], open: [14, "Open"],
};

const DATASTORE_ACTIVITIES: Record<string, [number, string]> = {
  read: [1, "Read"], select: [1, "Read"], update: [2, "Update"], connect: [3, "Connect"], query: [4, "Query"],
  write: [5, "Write"], insert: [5, "Write"], create: [6, "Create"], delete: [7, "Delete"],
};

const NETWORK_ACTIVITIES: Record<string, [number, string]> = {
  open: [1, "Open"], connect: [1, "Open"], close: [2, "Close"], reset: [3, "Reset"], fail: [4, "Fail"],
  refuse: [5, "Refuse"], deny: [5, "Refuse"], denied: [5, "Refuse"], traffic: [6, "Traffic"], listen: [7, "Listen"],
};

function choose(r: AuditRecord): ClassChoice {
  const d = r.detail;
  const v = verb(r.action);
  switch (r.kind) {
    case "api": {
      const [id, name] = apiActivity(r.action, str(d.method));
      return { class_uid: 6003, class_name: "API Activity", category_uid: 6, activity_id: id, activity_name: name };
    }
    case "auth": {
      const [id, name]: [number, string] = /^(logoff|logout)$/.test(v) ? [2, "Logoff"] : [1, "Logon"];
      return { class_uid: 3002, class_name: "Authentication", category_uid: 3, activity_id: id, activity_name: name };
    }
    case "exec":
    case "process": {
      const [id, name]: [number, string] = /^(start|launch|exec|spawn|create)$/.test(v)
        ? [1, "Launch"]
        : /^(finish|exit|end|terminate|kill|timeout|stop)$/.test(v) ? [2, "Terminate"] : [99, "Other"];
      return { class_uid: 1007, class_name: "Process Activity", category_uid: 1, activity_id: id, activity_name: name };
    }
    case "file": {
      const [id, name] = FILE_ACTIVITIES[v] ?? [99, "Other"];
      return { class_uid: 1001, class_name: "File System Activity", category_uid: 1, activity_id: id, activity_name: name };
    }
    case "network": {
      if (v === "query" && r.action.startsWith("dns.")) {
        return { class_uid: 4003, class_name: "DNS Activity", category_uid: 4, activity_id: 1, activity_name: "Query" };
      }
      const method = str(d.method ?? d.http_method)?.toUpperCase();
      if (method) {
        const id = HTTP_ACTIVITY[method] ?? 99;
        return { class_uid: 4002, class_name: "HTTP Activity", category_uid: 4, activity_id: id, activity_name: id === 99 ? method : method[0] + method.slice(1).toLowerCase() };
      }
      // A connection the broker refused is a Refuse, whatever verb the caller used.
      const [id, name] = r.outcome === "denied" ? [5, "Refuse"] : (NETWORK_ACTIVITIES[v] ?? [99, "Other"]);
      return { class_uid: 4001, class_name: "Network Activity", category_uid: 4, activity_id: id, activity_name: name };
    }
    case "datastore": {
      const [id, name] = DATASTORE_ACTIVITIES[v] ?? [99, "Other"];
      return { class_uid: 6005, class_name: "Datastore Activity", category_uid: 6, activity_id: id, activity_name: name };
    }
    default:
      return { class_uid: 0, class_name: "Base Event", category_uid: 0, activity_id: 99, activity_name: "Other" };
  }
}

function severityId(r: AuditRecord): number {
  if (r.outcome === "denied") return 3;
  if (r.outcome === "failure") return r.kind === "auth" ? 3 : 2;
  return 1;
}

function endpointOf(d: Obj, used: Set<string>): Obj | undefined {
  let hostname = str(pick(d, used, "host", "hostname", "dst_host"));
  let ip = str(pick(d, used, "ip", "dst_ip", "address"));
  if (!ip && hostname && isIP(hostname)) [ip, hostname] = [hostname, undefined];
  const port = num(pick(d, used, "port", "dst_port"));
  if (!hostname && !ip && port === undefined) return undefined;
  return { hostname, ip, port };
}

function quoteArg(a: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

/** Maps one record. Pure apart from reading os.hostname() when no hostname is given. */
export function toOcsf(r: AuditRecord, opts: OcsfOptions = {}): Obj {
  const c = choose(r);
  const d = r.detail ?? {};
  const used = new Set<string>(["redacted_paths", "dropped_for_size"]);
  const sev = severityId(r);
  const statusId = r.outcome === "success" ? 1 : 2;
  const hostname = opts.hostname ?? os.hostname();
  const profiles: string[] = [];

  const ev: Obj = {
    category_uid: c.category_uid,
    category_name: CATEGORY[c.category_uid],
    class_uid: c.class_uid,
    class_name: c.class_name,
    activity_id: c.activity_id,
    activity_name: c.activity_name,
    type_uid: c.class_uid * 100 + c.activity_id,
    type_name: `${c.class_name}: ${c.activity_name}`,
    severity_id: sev,
    severity: SEVERITY[sev],
    status_id: statusId,
    status: statusId === 1 ? "Success" : "Failure",
    status_code: r.error_code ?? undefined,
    time: Date.parse(r.time),
    message: `${r.action} ${r.outcome}`,
    metadata: {
      version: OCSF_VERSION,
      product: { name: "Petri", vendor_name: "Jhansi.io", version: opts.productVersion },
      uid: r.id,
      sequence: r.seq,
      correlation_uid: r.exec_id ?? r.request_id ?? undefined,
      tenant_uid: r.tenant_id ?? undefined,
      log_name: "audit",
      original_time: r.time,
      profiles,
    },
  };

  // An API key acts as the user; its tenant is the user's organization.
  const user = r.key_id || r.tenant_id
    ? { uid: r.key_id ?? undefined, type_id: 99, type: "API key", org: r.tenant_id ? { uid: r.tenant_id } : undefined }
    : undefined;
  const runProcess = r.exec_id ? { uid: r.exec_id } : undefined;
  const device = { hostname, type_id: 1, type: "Server" };
  const container = r.sandbox_id ? { uid: r.sandbox_id, name: r.sandbox_id } : undefined;
  const srcEndpoint = r.client_ip ? { ip: r.client_ip } : undefined;
  const resources = [
    r.sandbox_id ? { type: "sandbox", uid: r.sandbox_id } : undefined,
    r.exec_id ? { type: "exec", uid: r.exec_id } : undefined,
  ].filter(Boolean);
  const reason = str(pick(d, used, "reason", "error_message"));
  if (reason) ev.status_detail = reason;

  switch (c.class_uid) {
    case 6003: {
      const method = str(pick(d, used, "method"));
      const route = str(pick(d, used, "route", "path"));
      const status = num(pick(d, used, "status", "http_status"));
      const userAgent = str(pick(d, used, "user_agent"));
      ev.actor = { user: user ?? { uid: "anonymous" } };
      ev.api = {
        operation: r.action,
        service: { name: "petri" },
        version: "v1",
        request: { uid: r.request_id ?? undefined },
        response: { code: status, error: r.error_code ?? undefined, error_message: reason },
      };
      ev.src_endpoint = srcEndpoint ?? { ip: "0.0.0.0" };
      ev.http_request = method || route || userAgent ? { http_method: method, url: route ? { path: route } : undefined, user_agent: userAgent } : undefined;
      ev.resources = resources.length ? resources : undefined;
      break;
    }
    case 3002: {
      const method = str(pick(d, used, "method"));
      const route = str(pick(d, used, "route", "path"));
      ev.user = { ...(user ?? { type_id: 99, type: "API key" }), uid: r.key_id ?? str(pick(d, used, "key_prefix")) ?? "unknown" };
      ev.auth_protocol_id = 99;
      ev.auth_protocol = str(pick(d, used, "scheme", "auth_scheme")) ?? "API key";
      ev.logon_type_id = 3;
      ev.logon_type = "Network";
      ev.is_remote = true;
      ev.service = { name: "petri-api" };
      ev.src_endpoint = srcEndpoint;
      ev.http_request = method || route ? { http_method: method, url: { path: route } } : undefined;
      if (!reason && r.outcome !== "success" && r.error_code) ev.status_detail = r.error_code;
      break;
    }
    case 1007: {
      const argv = pick(d, used, "argv");
      const argvList = Array.isArray(argv) ? argv.map(String) : undefined;
      const entry = str(pick(d, used, "entry_file", "file", "path"));
      const codeSha = pick(d, used, "code_sha256", "entry_sha256", "sha256");
      const imageName = str(pick(d, used, "image"));
      const imageId = str(pick(d, used, "image_id"));
      const runtime = str(pick(d, used, "runtime"));
      const pid = num(pick(d, used, "pid"));
      const osUid = num(pick(d, used, "uid"));
      const processUid = r.kind === "exec" ? r.exec_id : str(pick(d, used, "process_uid"));
      // OCSF 1.1.0 has no container on System Activity events: the container profile puts it in
      // the process object.
      const processContainer = container || imageName || imageId
        ? { ...container, image: imageName || imageId ? { name: imageName, uid: imageId ?? imageName } : undefined, runtime }
        : undefined;
      if (processContainer) profiles.push("container");
      ev.process = {
        uid: processUid ?? (r.exec_id && pid !== undefined ? `${r.exec_id}/${pid}` : undefined),
        pid,
        name: argvList?.[0] ? path.basename(argvList[0]) : entry ? path.basename(entry) : undefined,
        cmd_line: argvList ? argvList.map(quoteArg).join(" ") : str(pick(d, used, "cmd_line")),
        file: entry ? { path: entry, name: path.basename(entry), type_id: 1, type: "Regular File", hashes: sha256Hashes(codeSha) } : undefined,
        user: osUid !== undefined ? { uid: String(osUid), type_id: osUid === 0 ? 2 : 1, type: osUid === 0 ? "Admin" : "User" } : undefined,
        parent_process: r.kind === "process" && r.exec_id ? { uid: r.exec_id } : undefined,
        container: processContainer,
      };
      ev.actor = { user, process: r.kind === "process" && r.exec_id ? { uid: r.exec_id } : undefined };
      ev.device = device;
      ev.exit_code = num(pick(d, used, "exit_code"));
      ev.duration = num(pick(d, used, "duration_ms"));
      break;
    }
    case 1001: {
      const p = str(pick(d, used, "path", "old_path", "from"));
      const newPath = str(pick(d, used, "new_path", "to"));
      const type = str(pick(d, used, "type"));
      const isDir = type === "dir" || type === "directory";
      const fileObj = (fp: string | undefined, hash: unknown, size: unknown): Obj | undefined =>
        fp
          ? { path: fp, name: path.basename(fp), type_id: isDir ? 2 : 1, type: isDir ? "Folder" : "Regular File", size: num(size), hashes: sha256Hashes(hash) }
          : undefined;
      ev.file = fileObj(p, pick(d, used, "sha256", "before_sha256"), pick(d, used, "size", "bytes"));
      if (newPath) ev.file_result = fileObj(newPath, pick(d, used, "after_sha256"), undefined);
      ev.actor = { user, process: runProcess ? { ...runProcess, container } : undefined };
      ev.device = device;
      if (runProcess && container) profiles.push("container");
      break;
    }
    case 4003: {
      // Names the program asked the resolver for (getaddrinfo), whether or not a packet left.
      ev.query = { hostname: str(pick(d, used, "hostname", "host")) ?? "" };
      ev.src_endpoint = container ? { uid: r.sandbox_id, name: r.sandbox_id } : { hostname };
      ev.actor = { user, process: runProcess };
      profiles.push("host");
      break;
    }
    case 4001:
    case 4002: {
      const dst = endpointOf(d, used);
      const bytesIn = num(pick(d, used, "bytes_in", "response_bytes"));
      const bytesOut = num(pick(d, used, "bytes_out", "request_bytes"));
      // A Unix socket (or a target the broker could not parse) has no address: named instead.
      ev.dst_endpoint = dst ?? { name: str(pick(d, used, "socket_path", "target")) ?? "unknown" };
      ev.src_endpoint = container ? { uid: r.sandbox_id, name: r.sandbox_id } : { hostname };
      ev.actor = { user, process: runProcess };
      profiles.push("host"); // actor belongs to the host profile in Network Activity classes
      ev.traffic = bytesIn !== undefined || bytesOut !== undefined ? { bytes_in: bytesIn, bytes_out: bytesOut } : undefined;
      ev.connection_info = { protocol_name: str(pick(d, used, "protocol")) ?? (d.family === "unix" ? "unix" : "tcp"), direction_id: 2, direction: "Outbound" };
      const allowed = r.outcome !== "denied";
      ev.action_id = allowed ? 1 : 2;
      ev.action = allowed ? "Allowed" : "Denied";
      ev.disposition_id = allowed ? 1 : 2;
      ev.disposition = allowed ? "Allowed" : "Blocked";
      profiles.push("security_control");
      if (c.class_uid === 4002) {
        const method = str(pick(d, used, "method", "http_method"))?.toUpperCase();
        const scheme = str(pick(d, used, "scheme"));
        const urlPath = str(pick(d, used, "path"));
        const url = str(pick(d, used, "url"));
        const status = num(pick(d, used, "status", "http_status"));
        ev.http_request = {
          http_method: method,
          url: { hostname: (dst as Obj | undefined)?.hostname, port: (dst as Obj | undefined)?.port, path: urlPath, scheme, url_string: url },
        };
        ev.http_response = status !== undefined || bytesIn !== undefined ? { code: status, length: bytesIn } : undefined;
        ev.http_status = status;
      }
      break;
    }
    case 6005: {
      const engine = str(pick(d, used, "engine", "database_type"));
      const relational = engine !== undefined && /postgres|mysql|maria|sqlite|mssql|sql server|oracle/i.test(engine);
      // The broker names a query's database by the vault secret it connected through.
      const dbName = str(pick(d, used, "database", "db"));
      ev.database = { name: dbName, uid: dbName ? undefined : str(d.secret_name) ?? "unknown", type_id: engine ? (relational ? 1 : 99) : 0, type: engine };
      ev.type_id = 1;
      ev.type = "Database";
      const q = str(pick(d, used, "query", "statement"));
      ev.query_info = q ? { query_string: q, name: str(pick(d, used, "query_name")) ?? r.action } : undefined;
      ev.dst_endpoint = endpointOf(d, used);
      ev.src_endpoint = container ? { uid: r.sandbox_id, name: r.sandbox_id } : { hostname };
      ev.actor = { user, process: runProcess };
      ev.duration = num(pick(d, used, "duration_ms"));
      break;
    }
    default:
      ev.message = r.action === "audit.checkpoint" ? `Audit log checkpoint through seq ${r.seq - 1}` : ev.message;
  }

  const rest: Obj = {};
  for (const [k, v] of Object.entries(d)) if (!used.has(k) || k === "redacted_paths" || k === "dropped_for_size") rest[k] = v;
  ev.unmapped = {
    petri: {
      id: r.id, seq: r.seq, kind: r.kind, action: r.action, outcome: r.outcome,
      tenant_id: r.tenant_id, key_id: r.key_id, sandbox_id: r.sandbox_id, exec_id: r.exec_id,
      request_id: r.request_id, client_ip: r.client_ip, prev_hash: r.prev_hash, hash: r.hash,
    },
    detail: Object.keys(rest).length ? rest : undefined,
  };
  if (!profiles.length) delete (ev.metadata as Obj).profiles;
  return compact(ev);
}
