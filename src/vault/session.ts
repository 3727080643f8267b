import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Mount } from "../runtimes/types.js";
import { PetriError } from "../errors.js";
import type { BrokerEvent } from "./events.js";
import type { EgressPolicy } from "./egress.js";
import { HttpBroker } from "./http-broker.js";
import { PgBroker, PG_SOCKET_NAME } from "./pg-broker.js";
import { Redactor, type NamedSecret } from "./redact.js";
import type { HttpConfig, ResolvedSecret, SecretStore } from "./store.js";
import { RunCa } from "./x509.js";

/** Where the run directory appears inside the sandbox. */
export const BROKER_MOUNT_TARGET = "/petri/broker";
/** Loopback port inside the sandbox where socat forwards to the HTTP broker's socket. */
export const PROXY_PORT = 3128;
/**
 * Bytes of any form of a secret that count as a piece of it in broker responses. Shorter slices
 * are not recognisable (and are why Range requests are stripped); 8 keeps chance hits in
 * ordinary responses rare for high-entropy tokens.
 */
export const FRAGMENT_LENGTH = 8;
const HTTP_SOCKET = "http.sock";
const PG_DIR = "pg";
const CA_FILE = "ca.pem";
const CA_BUNDLE = "ca-bundle.pem";
const SECRETS_FILE = "secrets.json";
const NODE_PRELOAD = "node-proxy.cjs";

/**
 * Node's http/https ignore HTTP(S)_PROXY (before Node 24). Preloaded through NODE_OPTIONS, this
 * makes https.request/get tunnel through the broker with CONNECT, so ordinary Node code works.
 */
const NODE_PRELOAD_SOURCE = `'use strict';
// Written by Petri: routes Node's https module through the credential broker's proxy.
const http = require('http');
const https = require('https');
const net = require('net');
const tls = require('tls');
const PROXY_PORT = ${PROXY_PORT};
class PetriTunnelAgent extends https.Agent {
  createConnection(options, cb) {
    const host = options.host || options.hostname || 'localhost';
    const port = options.port || 443;
    const authority = (net.isIPv6(host) ? '[' + host + ']' : host) + ':' + port;
    const req = http.request({ host: '127.0.0.1', port: PROXY_PORT, method: 'CONNECT', path: authority, headers: { host: authority }, agent: false });
    req.once('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        cb(new Error('Petri broker refused CONNECT ' + authority + ': ' + res.statusCode + ' ' + (res.headers['x-petri-denied'] || '')));
        return;
      }
      const servername = options.servername || (net.isIP(host) ? undefined : host);
      cb(null, tls.connect(Object.assign({}, options, { socket, host, servername })));
    });
    req.once('error', cb);
    req.end();
  }
}
https.globalAgent = new PetriTunnelAgent({ keepAlive: true });
`;

export interface BrokerSessionOptions {
  store: SecretStore;
  tenantId: string;
  sandboxId: string;
  execId: string;
  /** Names of the tenant's secrets this run may use. */
  secrets: string[];
  /** Host patterns reachable without a secret ("api.example.com", "host:8443", "*.example.com"). */
  allowHosts?: string[];
  /** The operator's egress policy (config.egress); default: public addresses only. */
  egress?: EgressPolicy;
  /**
   * Operator-configured host[:port] entries (package registries) the run may reach, exempt from
   * the egress policy's private-address deny and allow-list. Never from a tenant.
   */
  trustedHosts?: string[];
  /** Host directory for sockets and files; bind-mount it read-only at /petri/broker. Created if missing. */
  runDir: string;
  onEvent: (ev: BrokerEvent) => void;
  /** PEM CA certificate(s) trusted for every HTTPS upstream, in addition to the system CAs. */
  upstreamCa?: string;
  /** Host CA bundle copied into the run's bundle; default /etc/ssl/certs/ca-certificates.crt. */
  systemCaFile?: string;
}

export interface BrokerSession {
  /** Environment for the run: placeholders and broker endpoints. Contains no secret value. */
  env: Record<string, string>;
  /** The run directory as a read-only mount at /petri/broker. */
  mount: Mount;
  /** Placeholder the code sees for each secret name. */
  placeholders: Record<string, string>;
  /** Wraps the run's argv so the in-sandbox proxy forwarder starts first (identity if no HTTP broker). */
  wrapArgv(argv: string[]): string[];
  /** Files written into runDir, by container path. */
  files: string[];
  /** Redacts every secret value of this run from output. */
  redactor: Redactor;
  close(): Promise<void>;
}

export function envName(secretName: string): string {
  return "PETRI_SECRET_" + secretName.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

/**
 * Starts the brokers one run needs. Secret values are decrypted here, held by the brokers in
 * this process, and never written into runDir, the env or any event.
 */
export async function openBrokerSession(opts: BrokerSessionOptions): Promise<BrokerSession> {
  const names = [...new Set(opts.secrets)];
  const resolved: ResolvedSecret[] = names.map((n) => opts.store.resolve(opts.tenantId, n));
  const placeholders: Record<string, string> = {};
  for (const s of resolved) placeholders[s.name] = `petri-secret:${s.name}:${randomBytes(12).toString("hex")}`;
  // Current and rotated-out values alike: an older one may still be valid somewhere.
  const runValues: NamedSecret[] = resolved.flatMap((s) => [s.value, ...(s.previous ?? [])].map((value) => ({ name: s.name, value })));
  // Scanned for (never sent): every secret of the tenant, not only this run's. Another run of
  // the tenant may have used one with a host that logs requests; this run must not read it back.
  const values: NamedSecret[] = [...runValues, ...otherTenantValues(opts.store, opts.tenantId, names)];
  const redactor = new Redactor(values);
  // What enters the sandbox from a broker is also scanned for slices of a value (see docs/vault.md).
  const inbound = new Redactor(values, { fragmentLength: FRAGMENT_LENGTH });
  const pgSecrets = resolved.filter((s) => s.kind === "postgres");
  const httpSecrets = resolved.filter((s) => s.kind === "http");
  const allowHosts = opts.allowHosts ?? [];
  const trustedHosts = opts.trustedHosts ?? [];
  const wantHttp = httpSecrets.length > 0 || allowHosts.length > 0 || trustedHosts.length > 0;

  const createdRunDir = !fs.existsSync(opts.runDir);
  fs.mkdirSync(opts.runDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(opts.runDir, 0o755);
  const created: string[] = [];
  const env: Record<string, string> = {};
  const onEvent = (ev: BrokerEvent) => {
    // Context for the audit layer, and a last guard: no event leaves with a value in it.
    const detail = { ...ev.detail, tenantId: opts.tenantId, sandboxId: opts.sandboxId, execId: opts.execId };
    const json = JSON.stringify(detail);
    const safe = redactor.detect(json).length ? (JSON.parse(redactor.redact(json).text) as Record<string, unknown>) : detail;
    opts.onEvent({ ...ev, detail: safe });
  };

  let pg: PgBroker | null = null;
  let httpBroker: HttpBroker | null = null;
  const close = async () => {
    await Promise.allSettled([pg?.close(), httpBroker?.close()]);
    for (const f of created.reverse()) fs.rmSync(f, { recursive: true, force: true });
    if (createdRunDir) fs.rmSync(opts.runDir, { recursive: true, force: true });
  };

  try {
    for (const s of resolved) env[envName(s.name)] = placeholders[s.name];

    if (pgSecrets.length) {
      const dir = path.join(opts.runDir, PG_DIR);
      created.push(dir);
      pg = await PgBroker.start({ socketDir: dir, secrets: pgSecrets, redactor: inbound, onEvent, egress: opts.egress });
      const first = pgSecrets[0].name;
      Object.assign(env, {
        PGHOST: `${BROKER_MOUNT_TARGET}/${PG_DIR}`,
        PGPORT: "5432",
        // The broker ignores user and password; the database name picks the secret.
        PGUSER: first,
        PGDATABASE: first,
        PGSSLMODE: "disable",
        DATABASE_URL: pgUrl(first),
      });
      for (const s of pgSecrets) env[`${envName(s.name)}_URL`] = pgUrl(s.name);
    }

    if (wantHttp) {
      const ca = new RunCa(opts.execId);
      const caPath = path.join(opts.runDir, CA_FILE);
      const bundlePath = path.join(opts.runDir, CA_BUNDLE);
      let system = "";
      try {
        system = fs.readFileSync(opts.systemCaFile ?? "/etc/ssl/certs/ca-certificates.crt", "utf8");
      } catch {
        /* no system bundle: the run CA alone still covers everything the broker intercepts */
      }
      const preloadPath = path.join(opts.runDir, NODE_PRELOAD);
      created.push(caPath, bundlePath, preloadPath);
      fs.writeFileSync(preloadPath, NODE_PRELOAD_SOURCE, { mode: 0o644 });
      fs.writeFileSync(caPath, ca.cert.certPem, { mode: 0o644 });
      fs.writeFileSync(bundlePath, (system.endsWith("\n") || system === "" ? system : system + "\n") + ca.cert.certPem, { mode: 0o644 });
      const sock = path.join(opts.runDir, HTTP_SOCKET);
      created.push(sock);
      httpBroker = await HttpBroker.start({
        socketPath: sock,
        secrets: httpSecrets,
        allowHosts,
        egress: opts.egress,
        trustedHosts,
        placeholders: Object.entries(placeholders).map(([name, value]) => ({ name, value })),
        values,
        inbound,
        ca,
        onEvent,
        upstreamCa: opts.upstreamCa,
        systemCaFile: opts.systemCaFile,
      });
      const proxy = `http://127.0.0.1:${PROXY_PORT}`;
      const bundle = `${BROKER_MOUNT_TARGET}/${CA_BUNDLE}`;
      Object.assign(env, {
        HTTP_PROXY: proxy, HTTPS_PROXY: proxy, http_proxy: proxy, https_proxy: proxy, ALL_PROXY: proxy, all_proxy: proxy,
        NO_PROXY: "", no_proxy: "",
        SSL_CERT_FILE: bundle, REQUESTS_CA_BUNDLE: bundle, CURL_CA_BUNDLE: bundle, GIT_SSL_CAINFO: bundle, PIP_CERT: bundle,
        NODE_EXTRA_CA_CERTS: `${BROKER_MOUNT_TARGET}/${CA_FILE}`,
        NODE_OPTIONS: `--require ${BROKER_MOUNT_TARGET}/${NODE_PRELOAD}`,
        PETRI_PROXY_SOCKET: `${BROKER_MOUNT_TARGET}/${HTTP_SOCKET}`,
      });
    }

    // A config-file form of the placeholders, for code that prefers reading one to env vars.
    const manifest: Record<string, unknown> = {};
    for (const s of resolved) {
      manifest[s.name] = {
        kind: s.kind,
        placeholder: placeholders[s.name],
        ...(s.kind === "postgres" ? { socketDir: `${BROKER_MOUNT_TARGET}/${PG_DIR}`, database: s.name, url: pgUrl(s.name) } : {}),
        ...(s.kind === "http" ? { hosts: (s.config as HttpConfig).hosts, header: (s.config as HttpConfig).header } : {}),
      };
    }
    const manifestPath = path.join(opts.runDir, SECRETS_FILE);
    created.push(manifestPath);
    fs.writeFileSync(manifestPath, JSON.stringify({ secrets: manifest, proxy: wantHttp ? `http://127.0.0.1:${PROXY_PORT}` : null }, null, 2) + "\n", { mode: 0o644 });
  } catch (e) {
    await close();
    if (e instanceof PetriError) throw e;
    throw new PetriError("INTERNAL", `could not start the credential brokers: ${redactor.redact((e as Error).message).text}`);
  }

  const files = created.filter((f) => !f.endsWith(HTTP_SOCKET) && !f.endsWith(PG_DIR)).map((f) => `${BROKER_MOUNT_TARGET}/${path.basename(f)}`);
  let closed = false;
  return {
    env,
    mount: { source: opts.runDir, target: BROKER_MOUNT_TARGET, readonly: true },
    placeholders,
    files,
    redactor,
    wrapArgv: (argv) => (httpBroker ? wrapWithForwarder(argv) : argv),
    close: async () => {
      if (closed) return;
      closed = true;
      await close();
    },
  };
}

function otherTenantValues(store: SecretStore, tenantId: string, exclude: string[]): NamedSecret[] {
  const out: NamedSecret[] = [];
  for (const meta of store.list(tenantId)) {
    if (exclude.includes(meta.name)) continue;
    try {
      const r = store.resolve(tenantId, meta.name);
      for (const value of [r.value, ...r.previous]) out.push({ name: meta.name, value });
    } catch {
      /* one undecryptable secret must not stop unrelated runs; it is reported where it is used */
    }
  }
  return out;
}

function pgUrl(database: string): string {
  return `postgresql://${database}@${encodeURIComponent(`${BROKER_MOUNT_TARGET}/${PG_DIR}`)}/${database}`;
}

/**
 * Starts socat (TCP 127.0.0.1:3128 → the broker's Unix socket) in the background, waits until
 * it listens (so the first request does not race it), then execs the real argv. Uses only
 * /bin/sh and /proc, both present in any image that has socat.
 */
export function wrapWithForwarder(argv: string[]): string[] {
  const portHex = PROXY_PORT.toString(16).toUpperCase().padStart(4, "0");
  const script = [
    `socat TCP-LISTEN:${PROXY_PORT},bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:${BROKER_MOUNT_TARGET}/${HTTP_SOCKET} </dev/null >/dev/null 2>&1 &`,
    "i=0",
    `while ! grep -q ':${portHex} 00000000:0000 0A' /proc/net/tcp 2>/dev/null; do`,
    "  i=$((i+1)); [ $i -gt 500 ] && { echo 'petri: proxy forwarder did not start' >&2; break; }",
    "  sleep 0.01",
    "done",
    'exec "$@"',
  ].join("\n");
  return ["/bin/sh", "-c", script, "petri-run", ...argv];
}
