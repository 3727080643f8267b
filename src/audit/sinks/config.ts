import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../../config.js";
import { sha256Hex } from "../canonical.js";

export type SinkFormat = "json" | "ocsf";

interface SinkCommon {
  /** Names the durable cursor file (`<dir>/sinks/<name>.cursor.json`). Default: derived from the destination. */
  name: string;
  /** "json": Petri's own records; "ocsf": OCSF 1.1 events. */
  format: SinkFormat;
  /** Most records per delivery (one HTTP request, one socket write, one file write). */
  batch_size: number;
  /** First retry delay after a failure, milliseconds; doubles up to `retry_max_ms` (with jitter). */
  retry_min_ms: number;
  retry_max_ms: number;
  /** Connect / request / write timeout, milliseconds. */
  timeout_ms: number;
  /** Where a sink without a cursor starts: the first record ("beginning", default) or the next new one ("end"). */
  start: "beginning" | "end";
}

export interface FileSinkConfig extends SinkCommon {
  type: "file";
  path: string;
}

export interface SyslogSinkConfig extends SinkCommon {
  type: "syslog";
  transport: "tcp" | "tls";
  host: string;
  port: number;
  /** PEM file of the CA(s) that sign the receiver's certificate (TLS). Default: Node's built-in roots. */
  ca?: string;
  /** Client certificate and key PEM files, for receivers that require mutual TLS. */
  cert?: string;
  key?: string;
  /** Name checked against the receiver's certificate; default `host`. */
  servername?: string;
  /** Syslog facility number 0–23; default 13 ("log audit"). */
  facility: number;
  /** HOSTNAME field; default os.hostname(). */
  hostname?: string;
  app_name: string;
  /**
   * Syslog has no acknowledgements. A record counts as delivered once the connection stayed up
   * this long after it was written; records written on a connection that then broke are re-sent.
   */
  confirm_ms: number;
}

export interface WebhookSinkConfig extends SinkCommon {
  type: "webhook";
  url: string;
  /** HMAC-SHA256 key, or a file holding it (trailing newline ignored). One of the two is required. */
  secret?: string;
  secret_file?: string;
  ca?: string;
}

export interface SplunkSinkConfig extends SinkCommon {
  type: "splunk";
  /** Base URL of the HEC endpoint, e.g. https://splunk:8088; "/services/collector/event" is appended unless present. */
  url: string;
  token?: string;
  token_file?: string;
  index?: string;
  source: string;
  sourcetype?: string;
  ca?: string;
}

export type SinkConfig = FileSinkConfig | SyslogSinkConfig | WebhookSinkConfig | SplunkSinkConfig;

/** What a caller may write: the same fields, with everything that has a default optional. */
export type SinkConfigInput =
  | (Partial<SinkCommon> & { type: "file"; path: string })
  | (Partial<Omit<SyslogSinkConfig, "type" | "host" | "port" | "transport">> & { type: "syslog"; transport?: "tcp" | "tls"; host: string; port?: number })
  | (Partial<Omit<WebhookSinkConfig, "type" | "url">> & { type: "webhook"; url: string })
  | (Partial<Omit<SplunkSinkConfig, "type" | "url">> & { type: "splunk"; url: string });

const FACILITIES: Record<string, number> = {
  kern: 0, user: 1, mail: 2, daemon: 3, auth: 4, syslog: 5, lpr: 6, news: 7, uucp: 8, cron: 9, authpriv: 10,
  ftp: 11, ntp: 12, audit: 13, alert: 14, clock: 15, local0: 16, local1: 17, local2: 18, local3: 19, local4: 20,
  local5: 21, local6: 22, local7: 23,
};

const BATCH_DEFAULT: Record<SinkConfig["type"], number> = { file: 500, syslog: 200, webhook: 100, splunk: 100 };
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function fail(msg: string): never {
  throw new ConfigError(`PETRI_AUDIT_SINKS: ${msg}`);
}

function intIn(v: unknown, what: string, min: number, max: number): number {
  const n = typeof v === "string" && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) fail(`${what} must be a whole number between ${min} and ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function readableFile(p: unknown, what: string): string {
  if (typeof p !== "string" || p === "") fail(`${what} must be a file path`);
  const abs = path.resolve(p);
  try {
    fs.accessSync(abs, fs.constants.R_OK);
  } catch {
    fail(`${what} file ${abs} is not readable`);
  }
  return abs;
}

function facility(v: unknown): number {
  if (v === undefined) return 13;
  if (typeof v === "string" && v.toLowerCase() in FACILITIES) return FACILITIES[v.toLowerCase()]!;
  return intIn(v, "facility", 0, 23);
}

/** The destination without secrets: used for the default name and in log lines. */
export function describeSink(c: SinkConfig): string {
  switch (c.type) {
    case "file":
      return `file:${c.path}`;
    case "syslog":
      return `syslog+${c.transport}://${net.isIPv6(c.host) ? `[${c.host}]` : c.host}:${c.port}`;
    case "webhook":
    case "splunk": {
      const u = new URL(c.url);
      return `${c.type}+${u.protocol}//${u.host}${u.pathname}`;
    }
  }
}

/** Validates one sink and fills in defaults. Throws ConfigError with a message naming the problem. */
export function normalizeSinkConfig(input: SinkConfigInput | Record<string, unknown>): SinkConfig {
  const i = input as Record<string, unknown>;
  const format = i.format ?? "json";
  if (format !== "json" && format !== "ocsf") fail(`format must be "json" or "ocsf", got ${JSON.stringify(format)}`);
  const start = i.start ?? "beginning";
  if (start !== "beginning" && start !== "end") fail(`start must be "beginning" or "end", got ${JSON.stringify(start)}`);
  const type = i.type;
  if (type !== "file" && type !== "syslog" && type !== "webhook" && type !== "splunk") {
    fail(`unknown sink type ${JSON.stringify(type)} (file, syslog, webhook, splunk)`);
  }
  const retryMin = intIn(i.retry_min_ms ?? 500, "retry_min_ms", 10, 3_600_000);
  const common = {
    name: "",
    format: format as SinkFormat,
    batch_size: intIn(i.batch_size ?? BATCH_DEFAULT[type], "batch_size", 1, 10_000),
    retry_min_ms: retryMin,
    retry_max_ms: intIn(i.retry_max_ms ?? Math.max(60_000, retryMin), "retry_max_ms", retryMin, 3_600_000),
    timeout_ms: intIn(i.timeout_ms ?? 10_000, "timeout_ms", 100, 600_000),
    start: start as "beginning" | "end",
  };
  let out: SinkConfig;
  switch (type) {
    case "file": {
      if (typeof i.path !== "string" || !path.isAbsolute(i.path)) fail(`file sink needs an absolute path, got ${JSON.stringify(i.path)}`);
      out = { ...common, type, path: path.normalize(i.path) };
      break;
    }
    case "syslog": {
      const transport = i.transport ?? "tcp";
      if (transport !== "tcp" && transport !== "tls") fail(`syslog transport must be "tcp" or "tls", got ${JSON.stringify(transport)}`);
      if (typeof i.host !== "string" || i.host === "") fail("syslog sink needs a host");
      if ((i.cert === undefined) !== (i.key === undefined)) fail("syslog cert and key must be given together");
      if (transport === "tcp" && (i.ca !== undefined || i.cert !== undefined)) fail("ca/cert/key only apply to syslog+tls");
      const appName = i.app_name ?? "petri";
      if (typeof appName !== "string" || !/^[!-~]{1,48}$/.test(appName)) fail("app_name must be 1–48 printable ASCII characters");
      out = {
        ...common,
        type,
        transport,
        host: i.host.replace(/^\[|\]$/g, ""),
        port: intIn(i.port ?? (transport === "tls" ? 6514 : 514), "port", 1, 65535),
        ca: i.ca === undefined ? undefined : readableFile(i.ca, "ca"),
        cert: i.cert === undefined ? undefined : readableFile(i.cert, "cert"),
        key: i.key === undefined ? undefined : readableFile(i.key, "key"),
        servername: typeof i.servername === "string" ? i.servername : undefined,
        facility: facility(i.facility),
        hostname: typeof i.hostname === "string" ? i.hostname : undefined,
        app_name: appName,
        confirm_ms: intIn(i.confirm_ms ?? 2000, "confirm_ms", 0, 600_000),
      };
      break;
    }
    case "webhook":
    case "splunk": {
      let u: URL;
      try {
        u = new URL(String(i.url));
      } catch {
        fail(`${type} sink needs a valid http(s) URL, got ${JSON.stringify(i.url)}`);
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") fail(`${type} URL must be http or https, got ${u.protocol}`);
      if (u.username || u.password) fail(`${type} URL must not carry credentials; use ${type === "webhook" ? "secret" : "token"}_file`);
      if (i.ca !== undefined && u.protocol !== "https:") fail("ca only applies to https URLs");
      const ca = i.ca === undefined ? undefined : readableFile(i.ca, "ca");
      const secretKey = type === "webhook" ? "secret" : "token";
      const inline = i[secretKey];
      const file = i[`${secretKey}_file`];
      if ((inline === undefined) === (file === undefined)) fail(`${type} sink needs exactly one of ${secretKey} or ${secretKey}_file`);
      if (inline !== undefined && (typeof inline !== "string" || inline === "")) fail(`${secretKey} must be a non-empty string`);
      const fileAbs = file === undefined ? undefined : readableFile(file, `${secretKey}_file`);
      if (type === "webhook") {
        out = { ...common, type, url: u.toString(), secret: inline as string | undefined, secret_file: fileAbs, ca };
      } else {
        if (!u.pathname.endsWith("/services/collector/event")) u.pathname = `${u.pathname.replace(/\/$/, "")}/services/collector/event`;
        out = {
          ...common,
          type,
          url: u.toString(),
          token: inline as string | undefined,
          token_file: fileAbs,
          index: typeof i.index === "string" ? i.index : undefined,
          source: typeof i.source === "string" ? i.source : "petri",
          sourcetype: typeof i.sourcetype === "string" ? i.sourcetype : undefined,
          ca,
        };
      }
      break;
    }
  }
  if (i.name !== undefined) {
    if (typeof i.name !== "string" || !NAME_RE.test(i.name)) fail(`name must match ${NAME_RE}, got ${JSON.stringify(i.name)}`);
    out.name = i.name;
  } else {
    out.name = `${out.type}-${sha256Hex(describeSink(out)).slice(0, 12)}`;
  }
  return out;
}

/** Query parameters every URL form understands; all others stay in a webhook/Splunk URL. */
const COMMON_PARAMS = ["name", "format", "batch_size", "retry_min_ms", "retry_max_ms", "timeout_ms", "start"];
const TYPE_PARAMS: Record<string, string[]> = {
  file: [],
  syslog: ["ca", "cert", "key", "servername", "facility", "hostname", "app_name", "confirm_ms"],
  webhook: ["secret", "secret_file", "ca"],
  splunk: ["token", "token_file", "index", "source", "sourcetype", "ca"],
};

function fromUrl(spec: string): Record<string, unknown> {
  let u: URL;
  try {
    u = new URL(spec);
  } catch {
    fail(`not a sink URL: ${JSON.stringify(spec.replace(/(secret|token)=[^&]*/gi, "$1=***"))}`);
  }
  const scheme = u.protocol.slice(0, -1).toLowerCase();
  const out: Record<string, unknown> = {};
  let type: string;
  if (scheme === "file") {
    type = "file";
    if (u.hostname !== "" && u.hostname !== "localhost") fail(`a file sink needs an absolute path (file:///var/log/petri/audit.jsonl), got ${JSON.stringify(spec)}`);
    out.path = fileURLToPath(new URL(`file://${u.pathname}`));
  } else if (scheme === "syslog+tcp" || scheme === "syslog+tls" || scheme === "syslog") {
    type = "syslog";
    out.transport = scheme === "syslog+tls" ? "tls" : "tcp";
    out.host = decodeURIComponent(u.hostname);
    if (u.port) out.port = u.port;
  } else if (/^(webhook|splunk)\+https?$/.test(scheme)) {
    type = scheme.split("+")[0]!;
  } else {
    fail(`unknown sink scheme "${scheme}:" (file, syslog+tcp, syslog+tls, webhook+http(s), splunk+http(s))`);
  }
  out.type = type;
  const known = new Set([...COMMON_PARAMS, ...TYPE_PARAMS[type]!]);
  const passThrough = new URLSearchParams();
  for (const [k, v] of u.searchParams) {
    if (known.has(k)) out[k] = v;
    else if (type === "webhook" || type === "splunk") passThrough.append(k, v);
    else fail(`unknown parameter "${k}" for a ${type} sink`);
  }
  if (type === "webhook" || type === "splunk") {
    const target = new URL(spec.replace(/^[a-z]+\+/i, ""));
    target.search = passThrough.toString();
    out.url = target.toString();
  }
  return out;
}

/**
 * Parses the value of PETRI_AUDIT_SINKS. Two spellings (docs/audit.md):
 *
 * - a JSON array of sink objects: `[{"type":"syslog","transport":"tls","host":"siem","ca":"/etc/ca.pem"}]`
 * - sink URLs separated by commas or whitespace:
 *   `syslog+tls://siem:6514?ca=/etc/ca.pem&format=ocsf, webhook+https://hooks.example/petri?secret_file=/run/s`
 *
 * An empty string means no sinks. Throws ConfigError on anything invalid, naming it.
 */
export function parseSinkConfig(spec: string): SinkConfig[] {
  const s = spec.trim();
  if (s === "") return [];
  let inputs: Record<string, unknown>[];
  if (s.startsWith("[")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(s);
    } catch (e) {
      fail(`invalid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(parsed) || parsed.some((x) => x === null || typeof x !== "object" || Array.isArray(x))) {
      fail("the JSON form must be an array of objects");
    }
    inputs = parsed as Record<string, unknown>[];
  } else {
    // Split before every "scheme://", so commas inside a URL's query stay where they are.
    inputs = s
      .split(/[\s,]+(?=[a-z][a-z0-9+.-]*:\/\/)/i)
      .map((x) => x.trim().replace(/,$/, ""))
      .filter(Boolean)
      .map(fromUrl);
  }
  const sinks = inputs.map(normalizeSinkConfig);
  const seen = new Set<string>();
  for (const c of sinks) {
    if (seen.has(c.name)) fail(`two sinks share the name "${c.name}"; give one a different name=`);
    seen.add(c.name);
  }
  return sinks;
}
