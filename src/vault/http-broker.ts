/**
 * HTTP(S) credential broker: a forward proxy on a Unix socket (inside the run it is reached at
 * 127.0.0.1:3128 through socat, see session.ts). It is the run's only way to the network.
 *
 * - Hosts not on the allowlist (session allowHosts + the hosts of the run's http secrets) are refused.
 * - `https://` arrives as CONNECT and is intercepted with the run's own CA, so every request is
 *   seen: the broker makes the upstream TLS request itself, verifying the real server.
 * - `http://` to a host bound to a secret is upgraded to HTTPS upstream; the secret never
 *   travels in cleartext.
 * - The secret's header is set by the broker on the last hop. A placeholder (or a secret's
 *   value) anywhere else — another host, a URL, a body — blocks the request as exfiltration.
 * - Responses to requests that carried a secret are scrubbed of it (headers and body, after
 *   decompressing), so an echoing server cannot hand it back to the code.
 */
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { Transform, type TransformCallback } from "node:stream";
import tls from "node:tls";
import zlib from "node:zlib";
import type { BrokerEvent } from "./events.js";
import { DEFAULT_EGRESS_POLICY, EgressRefused, guardedLookup, parseTrustedHosts, refuseLiteral, type EgressPolicy } from "./egress.js";
import { matchHost, normalizeHost, parseHostPattern, type HostPattern } from "./hosts.js";
import { Redactor, type NamedSecret } from "./redact.js";
import type { HttpConfig, ResolvedSecret } from "./store.js";
import type { RunCa } from "./x509.js";

export interface HttpBrokerOptions {
  socketPath: string;
  /** The run's http secrets (resolved). Their hosts are allowed implicitly. */
  secrets: ResolvedSecret[];
  /** Extra host patterns the run may reach without a secret. */
  allowHosts: string[];
  /** The operator's bounds on where runs may connect; default: public addresses only. */
  egress?: EgressPolicy;
  /**
   * Operator-configured destinations (host[:port], e.g. package registries) this run may reach
   * even on a private or loopback address, and even outside the egress policy's allow-list.
   */
  trustedHosts?: string[];
  /** Placeholders the run's code sees, by secret name: blocked wherever they would leave. */
  placeholders: NamedSecret[];
  /** Every secret value of the run (all kinds, rotated ones too): never allowed out, scrubbed from responses. */
  values: NamedSecret[];
  /** Scrubs responses (whole values and fragments); default: whole values of `values`. */
  inbound?: Redactor;
  ca: RunCa;
  onEvent: (ev: BrokerEvent) => void;
  /** PEM CA certificate(s) trusted for every upstream, in addition to the system CAs. */
  upstreamCa?: string;
  /** System CA bundle; default /etc/ssl/certs/ca-certificates.crt, else Node's bundled roots. */
  systemCaFile?: string;
  /** Request body bytes scanned before anything is sent upstream (larger bodies stream). Default 1 MiB. */
  bodyPrefixBytes?: number;
  /** Upstream inactivity timeout, milliseconds. Default 120000. */
  upstreamTimeoutMs?: number;
}

interface Target {
  host: string;
  port: number;
}

interface Bound {
  secret: ResolvedSecret;
  config: HttpConfig;
}

class Denied extends Error {
  constructor(readonly reason: string, readonly status = 403, readonly extra: Record<string, unknown> = {}) {
    super(reason);
  }
}

const HOP_BY_HOP = new Set([
  "connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade", "expect",
]);
const PATH_LOG_LIMIT = 1024;

let systemCaCache: string[] | null = null;
function systemCas(file: string | undefined): string[] {
  if (!systemCaCache) {
    try {
      systemCaCache = [fs.readFileSync(file ?? "/etc/ssl/certs/ca-certificates.crt", "utf8")];
    } catch {
      systemCaCache = [...tls.rootCertificates];
    }
  }
  return systemCaCache;
}

function parseTarget(authority: string, defaultPort: number): Target | null {
  let u: URL;
  try {
    u = new URL(`http://${authority}`);
  } catch {
    return null;
  }
  if (u.username || u.password || (u.pathname !== "/" && u.pathname !== "")) return null;
  const host = normalizeHost(u.hostname);
  if (!host) return null;
  return { host, port: u.port ? Number(u.port) : defaultPort };
}

function authorityOf(t: Target): string {
  return net.isIPv6(t.host) ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

function truncate(s: string, n = PATH_LOG_LIMIT): string {
  return s.length > n ? s.slice(0, n) + "…" : s;
}

/**
 * Scans a request body for placeholders / secret values while it is forwarded, holding back a
 * tail so nothing split across chunks slips out. Bytes pass unchanged when nothing is found.
 */
class BodyScanner {
  bytes = 0;
  found: string[] = [];
  private readonly sr;
  constructor(detector: Redactor) {
    this.sr = detector.stream();
  }
  push(chunk: Buffer): Buffer {
    this.bytes += chunk.length;
    const out = this.sr.push(chunk);
    this.found = this.sr.redactions;
    return out;
  }
  end(): Buffer {
    const out = this.sr.end();
    this.found = this.sr.redactions;
    return out;
  }
}

/** Replaces secret values in a response body stream. */
class RedactingStream extends Transform {
  private readonly sr;
  constructor(redactor: Redactor, private readonly onRedacted: (names: string[]) => void) {
    super();
    this.sr = redactor.stream();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    cb(null, this.sr.push(chunk));
  }
  override _flush(cb: TransformCallback): void {
    const out = this.sr.end();
    if (this.sr.redactions.length) this.onRedacted(this.sr.redactions);
    cb(null, out);
  }
}

export class HttpBroker {
  private server: http.Server | null = null;
  private readonly mitm: http.Server;
  private readonly targets = new WeakMap<net.Socket, Target>();
  private readonly sockets = new Set<net.Socket>();
  private readonly agentHttps = new https.Agent({ keepAlive: true, maxSockets: 32 });
  private readonly agentHttp = new http.Agent({ keepAlive: true, maxSockets: 32 });
  private readonly allow: HostPattern[];
  private readonly trusted: HostPattern[];
  private readonly egress: EgressPolicy;
  private readonly bindings: { pattern: HostPattern; bound: Bound }[] = [];
  /** Tagged names: "p:<secret>" for a placeholder, "v:<secret>" for a value. */
  private readonly detector: Redactor;
  private readonly valueRedactor: Redactor;
  /**
   * The run holds secret values: then every response, from every host, is scanned — a value
   * can be reflected by any host the run may reach (an echo on the bound host, a log viewer on
   * another), not only by the one it was sent to.
   */
  private readonly holdsSecrets: boolean;
  private readonly contexts = new Map<string, tls.SecureContext>();

  private constructor(private readonly opts: HttpBrokerOptions) {
    this.allow = opts.allowHosts.map((h) => {
      const p = parseHostPattern(h);
      if (!p) throw new Error(`allowHosts: "${h}" is not a host pattern`);
      return p;
    });
    this.trusted = parseTrustedHosts(opts.trustedHosts);
    this.egress = opts.egress ?? DEFAULT_EGRESS_POLICY;
    for (const s of opts.secrets) {
      const cfg = s.config as HttpConfig;
      for (const h of cfg.hosts) {
        const p = parseHostPattern(h);
        if (p) this.bindings.push({ pattern: p, bound: { secret: s, config: cfg } });
      }
    }
    this.detector = new Redactor([
      ...opts.placeholders.map((p) => ({ name: `p:${p.name}`, value: p.value })),
      ...opts.values.map((v) => ({ name: `v:${v.name}`, value: v.value })),
    ]);
    this.valueRedactor = opts.inbound ?? new Redactor(opts.values);
    this.holdsSecrets = opts.values.length > 0;
    this.mitm = http.createServer((req, res) => {
      const t = this.targets.get(req.socket);
      if (!t) {
        res.destroy();
        return;
      }
      void this.forward(req, res, t, true);
    });
    this.mitm.on("upgrade", (req: http.IncomingMessage, sock: net.Socket) => this.refuseUpgrade(req, sock, this.targets.get(sock)));
    this.mitm.on("clientError", (_e, sock: net.Socket) => sock.destroy());
  }

  static async start(opts: HttpBrokerOptions): Promise<HttpBroker> {
    const b = new HttpBroker(opts);
    fs.rmSync(opts.socketPath, { force: true });
    const server = http.createServer((req, res) => void b.plain(req, res));
    server.maxConnections = 256;
    server.on("connect", (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => b.connect(req, sock, head));
    server.on("upgrade", (req: http.IncomingMessage, sock: net.Socket) => b.refuseUpgrade(req, sock, null));
    server.on("connection", (s: net.Socket) => {
      b.sockets.add(s);
      s.on("close", () => b.sockets.delete(s));
    });
    server.on("clientError", (_e, sock: net.Socket) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.socketPath, () => resolve());
    });
    fs.chmodSync(opts.socketPath, 0o666);
    b.server = server;
    return b;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.agentHttps.destroy();
    this.agentHttp.destroy();
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
    this.server = null;
    fs.rmSync(this.opts.socketPath, { force: true });
  }

  private emit(action: string, outcome: BrokerEvent["outcome"], detail: Record<string, unknown>): void {
    try {
      this.opts.onEvent({ kind: "network", action, outcome, detail });
    } catch {
      /* an event sink failure must not break the proxy */
    }
  }

  /** The allow pattern(s) that admit this target, or null. */
  private admitted(t: Target): HostPattern[] | null {
    const hits = [...this.allow, ...this.trusted, ...this.bindings.map((b) => b.pattern)].filter((p) => matchHost(p, t.host, t.port));
    return hits.length ? hits : null;
  }

  private boundTo(t: Target): Bound[] {
    const out: Bound[] = [];
    for (const b of this.bindings) if (matchHost(b.pattern, t.host, t.port) && !out.includes(b.bound)) out.push(b.bound);
    return out;
  }

  private refuseUpgrade(req: http.IncomingMessage, sock: net.Socket, t: Target | null | undefined): void {
    this.emit("http_request", "denied", { host: t?.host, port: t?.port, method: req.method, path: truncate(req.url ?? ""), reason: "protocol_upgrade_not_supported" });
    sock.end("HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  }

  private connect(req: http.IncomingMessage, sock: net.Socket, head: Buffer): void {
    const t = parseTarget(req.url ?? "", 443);
    const deny = (reason: string, extra: Record<string, unknown> = {}) => {
      this.emit("connect", "denied", { target: truncate(req.url ?? "", 300), host: t?.host, port: t?.port, reason, ...extra });
      // Clients often show only the status line of a refused CONNECT (Python: "Tunnel connection
      // failed: 403 …"), so the reason phrase says what to do as well as the body.
      const phrase = reason === "host_not_allowed" && t ? notAllowed(t.host) : "Forbidden";
      const body = `Petri broker: ${reason === "host_not_allowed" && t ? notAllowed(t.host) : reason}\n`;
      sock.end(`HTTP/1.1 403 ${phrase}\r\nContent-Type: text/plain\r\nX-Petri-Denied: ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    };
    if (!t) return deny("invalid_target");
    if (!this.admitted(t)) return deny("host_not_allowed");
    const placeholder = this.detector.detect(req.url ?? "");
    if (placeholder.length) return deny("exfiltration_attempt", { found: placeholder.map(describeTag) });

    sock.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length) sock.unshift(head);
    const tlsSock = new tls.TLSSocket(sock, { isServer: true, secureContext: this.contextFor(t.host), ALPNProtocols: ["http/1.1"] });
    this.targets.set(tlsSock, t);
    this.sockets.add(tlsSock);
    tlsSock.on("close", () => this.sockets.delete(tlsSock));
    tlsSock.on("error", (e) => {
      // Usually: the client does not trust the run CA (SSL_CERT_FILE not honoured) or is not speaking TLS.
      this.emit("connect", "failure", { host: t.host, port: t.port, reason: "tls_handshake_failed", error: truncate(e.message, 200) });
      tlsSock.destroy();
    });
    this.mitm.emit("connection", tlsSock);
  }

  private contextFor(host: string): tls.SecureContext {
    let ctx = this.contexts.get(host);
    if (!ctx) {
      const leaf = this.opts.ca.leafFor(host);
      ctx = tls.createSecureContext({ cert: leaf.certPem, key: leaf.keyPem, minVersion: "TLSv1.2" });
      this.contexts.set(host, ctx);
    }
    return ctx;
  }

  private async plain(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let u: URL | null = null;
    try {
      u = new URL(req.url ?? "");
    } catch {
      u = null;
    }
    if (!u || u.protocol !== "http:") {
      this.emit("http_request", "denied", { method: req.method, path: truncate(req.url ?? ""), reason: "not_a_proxy_request" });
      return sendDenied(res, 400, "not_a_proxy_request", "this is an HTTP proxy: send absolute-form http:// URLs, or CONNECT for https");
    }
    const host = normalizeHost(u.hostname);
    if (!host || u.username || u.password) {
      this.emit("http_request", "denied", { method: req.method, path: truncate(req.url ?? ""), reason: "invalid_target" });
      return sendDenied(res, 400, "invalid_target", "invalid host");
    }
    await this.forward(req, res, { host, port: u.port ? Number(u.port) : 80 }, false, u.pathname + u.search);
  }

  private async forward(req: http.IncomingMessage, res: http.ServerResponse, t: Target, viaConnect: boolean, plainPath?: string): Promise<void> {
    const started = Date.now();
    const method = req.method ?? "GET";
    const path = plainPath ?? (req.url?.startsWith("/") ? req.url : null);
    const detail: Record<string, unknown> = { scheme: viaConnect ? "https" : "http", host: t.host, port: t.port, method, path: truncate(path ?? req.url ?? "") };
    let bound: Bound[] = [];
    let upReq: http.ClientRequest | null = null;
    try {
      if (path === null) throw new Denied("absolute_url_inside_tunnel", 400);
      const admitted = this.admitted(t);
      if (!admitted) throw new Denied("host_not_allowed", 403, { host: t.host });
      if (viaConnect) {
        // Without this, one allowed tunnel could carry requests for other virtual hosts (domain fronting).
        const h = parseTarget(req.headers.host ?? "", 443);
        if (!h || h.host !== t.host || (h.port !== t.port && req.headers.host?.includes(":"))) throw new Denied("host_header_mismatch");
      }
      bound = this.boundTo(t);
      if (bound.length) detail.secret = bound.map((b) => b.secret.name).join(",");

      // Placeholders / values in the URL are never allowed, in headers only the bound host's own.
      const inUrl = this.detector.detect(path);
      if (inUrl.length) throw new Denied("exfiltration_attempt", 403, { location: "url", found: inUrl.map(describeTag) });
      const replaced = new Set(bound.map((b) => b.config.header.toLowerCase()));
      const headers: Record<string, string | string[]> = {};
      const connectionListed = new Set((String(req.headers.connection ?? "")).toLowerCase().split(",").map((s) => s.trim()));
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i];
        const lower = name.toLowerCase();
        const value = req.rawHeaders[i + 1];
        if (HOP_BY_HOP.has(lower) || connectionListed.has(lower) || lower === "host") continue;
        const found = this.detector.detect(`${name}: ${value}`);
        const bad = found.filter((tag) => !(tag.startsWith("p:") && bound.some((b) => `p:${b.secret.name}` === tag)));
        if (bad.length) throw new Denied("exfiltration_attempt", 403, { location: "header", header: lower, found: bad.map(describeTag) });
        if (replaced.has(lower)) continue;
        const prev = headers[lower];
        headers[lower] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
      }
      headers.host = t.port === (viaConnect || bound.length ? 443 : 80) ? hostForHeader(t.host) : authorityOf(t);
      for (const b of bound) headers[b.config.header.toLowerCase()] = b.config.template.split("{{value}}").join(b.secret.value);
      if (this.holdsSecrets) {
        // A response must be scannable whole: no compression we might not undo, and no byte
        // ranges (slices of a reflected value shorter than anything recognisable).
        headers["accept-encoding"] = "identity";
        for (const h of ["range", "if-range"]) {
          if (headers[h] !== undefined) {
            delete headers[h];
            detail.strippedHeaders = [...((detail.strippedHeaders as string[] | undefined) ?? []), h];
          }
        }
      }

      // Scan (a prefix of) the body before anything is sent, so small exfiltration attempts never leave.
      const scanner = new BodyScanner(this.detector);
      const { chunks: prefix, ended } = await readPrefix(req, scanner, this.opts.bodyPrefixBytes ?? 1024 * 1024);
      if (scanner.found.length) throw new Denied("exfiltration_attempt", 403, { location: "body", found: scanner.found.map(describeTag) });

      const upgraded = !viaConnect && bound.length > 0;
      detail.upgradedToHttps = upgraded;
      const secure = viaConnect || upgraded;
      const upstreamPort = upgraded && t.port === 80 ? 443 : t.port;
      // The operator's policy, on the address actually connected to: an IP literal here, a
      // name in the lookup below (at connect time, so a name re-pointed later gains nothing).
      refuseLiteral(this.egress, this.trusted, { host: t.host, port: upstreamPort });
      const cas = [...bound.map((b) => b.config.upstreamCa), this.opts.upstreamCa].filter((c): c is string => Boolean(c));
      const reqOpts: https.RequestOptions = {
        host: t.host,
        port: upstreamPort,
        method,
        path,
        headers,
        agent: secure ? this.agentHttps : this.agentHttp,
        lookup: guardedLookup(this.egress, this.trusted, { host: t.host, port: upstreamPort }) as https.RequestOptions["lookup"],
        timeout: this.opts.upstreamTimeoutMs ?? 120_000,
      };
      if (secure) {
        reqOpts.servername = net.isIP(t.host) ? undefined : t.host;
        reqOpts.ca = cas.length ? [...systemCas(this.opts.systemCaFile), ...cas] : undefined;
        reqOpts.minVersion = "TLSv1.2";
      }
      const up = (secure ? https : http).request(reqOpts);
      upReq = up;
      up.on("timeout", () => up.destroy(new Error("upstream timed out")));

      const response = new Promise<http.IncomingMessage>((resolve, reject) => {
        up.on("response", resolve);
        up.on("error", reject);
      });
      for (const c of prefix) up.write(c);
      if (ended) up.end();
      else streamRest(req, up, scanner);

      const upRes = await response;
      if (scanner.found.length) throw new Denied("exfiltration_attempt", 403, { location: "body", found: scanner.found.map(describeTag) });
      await this.respond(upRes, res, this.holdsSecrets, detail);
      detail.status = upRes.statusCode;
      detail.bytesSent = scanner.bytes;
      detail.durationMs = Date.now() - started;
      this.emit("http_request", "success", detail);
    } catch (err) {
      upReq?.destroy();
      detail.durationMs = Date.now() - started;
      const e = err instanceof EgressRefused ? new Denied(err.reason, 403, { resolved: err.addresses.slice(0, 4) }) : err;
      if (e instanceof Denied) {
        Object.assign(detail, { reason: e.reason, ...e.extra, status: e.status });
        this.emit("http_request", "denied", detail);
        if (!res.headersSent) sendDenied(res, e.status, e.reason, describeDenied(e));
        else res.destroy();
      } else {
        const message = this.valueRedactor.redact((e as Error).message ?? String(e)).text;
        Object.assign(detail, { reason: "upstream_error", error: truncate(message, 300), status: 502 });
        this.emit("http_request", "failure", detail);
        if (!res.headersSent) sendDenied(res, 502, "upstream_error", `Petri broker: upstream request failed: ${message}`);
        else res.destroy();
      }
    }
  }

  private respond(upRes: http.IncomingMessage, res: http.ServerResponse, scrub: boolean, detail: Record<string, unknown>): Promise<void> {
    const headers: Record<string, string | string[]> = {};
    const redactions = new Set<string>();
    const encoding = String(upRes.headers["content-encoding"] ?? "identity").toLowerCase().trim();
    let decoder: Transform | null = null;
    if (scrub && (upRes.statusCode === 206 || upRes.headers["content-range"] !== undefined)) {
      // Not asked for (Range is stripped): a slice could carry a piece too short to recognise.
      return Promise.reject(new Denied("partial_content_refused", 502));
    }
    if (scrub && encoding !== "identity" && encoding !== "") {
      // The code must not get the secret back compressed either: decode, then scrub.
      if (encoding === "gzip" || encoding === "x-gzip") decoder = zlib.createGunzip();
      else if (encoding === "deflate") decoder = zlib.createInflate();
      else if (encoding === "br") decoder = zlib.createBrotliDecompress();
      else return Promise.reject(new Denied("unsupported_content_encoding", 502, { encoding: truncate(encoding, 40) }));
    }
    for (let i = 0; i < upRes.rawHeaders.length; i += 2) {
      const lower = upRes.rawHeaders[i].toLowerCase();
      let value = upRes.rawHeaders[i + 1];
      if (HOP_BY_HOP.has(lower)) continue;
      if (scrub && (lower === "content-length" || lower === "content-encoding")) continue;
      if (scrub) {
        const r = this.valueRedactor.redact(value);
        value = r.text;
        r.redactions.forEach((n) => redactions.add(n));
      }
      const prev = headers[lower];
      headers[lower] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
    }
    res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers);
    let bytes = 0;
    return new Promise<void>((resolve, reject) => {
      let body: NodeJS.ReadableStream = upRes;
      if (decoder) body = upRes.pipe(decoder);
      if (scrub) body = body.pipe(new RedactingStream(this.valueRedactor, (names) => names.forEach((n) => redactions.add(n))));
      body.on("data", (c: Buffer) => (bytes += c.length));
      body.on("error", (e: Error) => {
        res.destroy();
        reject(e);
      });
      decoder?.on("error", (e) => {
        res.destroy();
        reject(e);
      });
      res.on("close", () => {
        detail.bytesReceived = bytes;
        if (redactions.size) detail.responseRedactions = [...redactions];
        resolve();
      });
      body.pipe(res);
    });
  }
}

function hostForHeader(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}

function describeTag(tag: string): { secret: string; form: "placeholder" | "value" } {
  return { secret: tag.slice(2), form: tag.startsWith("p:") ? "placeholder" : "value" };
}

function describeDenied(e: Denied): string {
  switch (e.reason) {
    case "host_not_allowed":
      return `Petri broker: ${notAllowed(typeof e.extra.host === "string" ? e.extra.host : "this host")}`;
    case "exfiltration_attempt":
      return `Petri broker: request blocked: it carries a secret placeholder where it may not go (${String(e.extra.location ?? "")}); reported`;
    case "host_header_mismatch":
      return "Petri broker: Host header does not match the CONNECT target";
    case "private_address":
      return "Petri broker: the destination is a loopback, private, link-local or own address of this host, which the operator has not opened";
    case "outside_operator_policy":
      return "Petri broker: the destination is outside this server's egress policy";
    default:
      return `Petri broker: ${e.reason}`;
  }
}

/** What a refused host is told (one line, no CR/LF: it is also a status line's reason phrase). */
export function notAllowed(host: string): string {
  return `${host.replace(/[\r\n]/g, "")} is not on this sandbox's allow-list; add it with allow_hosts`;
}

function sendDenied(res: http.ServerResponse, status: number, reason: string, message: string): void {
  const body = message + "\n";
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "x-petri-denied": reason, "content-length": Buffer.byteLength(body), connection: "close" });
  res.end(body);
}

/** Reads and scans the body until `limit` bytes or its end, then leaves the request paused. */
function readPrefix(req: http.IncomingMessage, scanner: BodyScanner, limit: number): Promise<{ chunks: Buffer[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (ended: boolean) => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      resolve({ chunks, ended });
    };
    const onData = (c: Buffer) => {
      size += c.length;
      chunks.push(scanner.push(c));
      if (scanner.found.length || size >= limit) {
        req.pause();
        done(false);
      }
    };
    const onEnd = () => {
      chunks.push(scanner.end());
      done(true);
    };
    const onError = (e: Error) => {
      req.off("data", onData);
      req.off("end", onEnd);
      reject(e);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

/** Streams the rest of a large body upstream, aborting the upstream request if the scanner finds something. */
function streamRest(req: http.IncomingMessage, up: http.ClientRequest, scanner: BodyScanner): void {
  const abort = () => {
    req.pause();
    up.destroy(new Denied("exfiltration_attempt", 403, { location: "body", found: scanner.found.map(describeTag) }));
  };
  req.on("data", (c: Buffer) => {
    const out = scanner.push(c);
    if (scanner.found.length) return abort();
    if (!up.write(out)) req.pause();
  });
  up.on("drain", () => req.resume());
  req.on("end", () => {
    const out = scanner.end();
    if (scanner.found.length) return abort();
    up.end(out);
  });
  req.on("error", (e) => up.destroy(e));
  req.resume();
}
