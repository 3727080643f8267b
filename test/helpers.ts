import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import tar from "tar-stream";
import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { loadConfig } from "../src/config.js";
import { imageRefOf } from "../src/images/catalog.js";
import { createServer, LABEL_INSTANCE, type PetriServer } from "../src/server.js";

export interface TestServer {
  url: string;
  adminKey: string;
  server: PetriServer;
  dataDir: string;
  /** fetch with the admin key (or another) and JSON handling. */
  api: (method: string, p: string, opts?: { body?: unknown; key?: string | null; headers?: Record<string, string>; raw?: RequestInit["body"] }) => Promise<{ status: number; json: any; text: string; headers: Headers }>;
  close: () => Promise<void>;
}

/**
 * PETRI_TEST_DOCKER_SOCKET points the tests' servers and their container checks at another
 * engine (one of your own, configured differently), leaving the shared one alone.
 */
export const TEST_DOCKER_SOCKET = process.env.PETRI_TEST_DOCKER_SOCKET || undefined;
export const docker = new Docker(TEST_DOCKER_SOCKET ? { socketPath: TEST_DOCKER_SOCKET } : undefined);

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-test-"));
  const adminKey = `pk_test_${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const config = loadConfig({ PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: adminKey, PETRI_PORT: "0", PETRI_LOG_LEVEL: "silent", PETRI_WARM_IDLE_MS: "0", PETRI_RUNTIMES: "runc", ...(TEST_DOCKER_SOCKET ? { PETRI_DOCKER_SOCKET: TEST_DOCKER_SOCKET } : {}), ...env });
  const server = await createServer(config, { logger: pino({ level: env.PETRI_LOG_LEVEL === "debug" ? "error" : "silent" }) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const addr = server.app.server.address();
  const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  const api: TestServer["api"] = async (method, p, opts = {}) => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const key = opts.key === undefined ? adminKey : opts.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let body: RequestInit["body"] = opts.raw;
    if (opts.body !== undefined) {
      body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(url + p, { method, headers, body });
    const text = await res.text();
    let json: any = undefined;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, json, text, headers: res.headers };
  };
  return {
    url, adminKey, server, dataDir, api,
    close: async () => {
      await server.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Containers this server's instance has in the engine (running or not). Given the server
 * itself, removals it has already scheduled are waited for first.
 */
export async function containersOf(target: string | TestServer): Promise<number> {
  let instanceId: string;
  if (typeof target === "string") {
    instanceId = target;
  } else {
    instanceId = target.server.instanceId;
    for (const rt of target.server.runtimes.values()) await rt.count({ [LABEL_INSTANCE]: instanceId });
  }
  const list = await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${instanceId}`] } });
  return list.length;
}

export async function createSandbox(t: TestServer, body: Record<string, unknown> = { language: "python" }, key?: string): Promise<string> {
  const r = await t.api("POST", "/v1/sandboxes", { body, key });
  if (r.status !== 201) throw new Error(`create sandbox: ${r.status} ${r.text}`);
  return r.json.id as string;
}

export async function putFile(t: TestServer, sb: string, p: string, content: string | Buffer, key?: string) {
  return t.api("PUT", `/v1/sandboxes/${sb}/files/${p}`, { raw: content as unknown as RequestInit["body"], key, headers: { "content-type": "application/octet-stream" } });
}

export async function exec(t: TestServer, sb: string, body: Record<string, unknown>, key?: string) {
  return t.api("POST", `/v1/sandboxes/${sb}/exec`, { body, key });
}

/**
 * Whether a built-in image (e.g. `datascience`) is in the Docker engine, asked of Docker itself
 * rather than of the server under test, so a test can say SKIP with the reason when it is not.
 */
export function imageBuilt(name: string): { ok: boolean; ref: string } {
  const ref = imageRefOf(name);
  try {
    execFileSync("docker", ["image", "inspect", "--format", "{{.Id}}", ref], { stdio: "ignore", timeout: 60_000 });
    return { ok: true, ref };
  } catch {
    return { ok: false, ref };
  }
}

/**
 * Runs `body` while polling the server's /healthz every `intervalMs`; every answer must be 200.
 * Returns the body's result with the slowest answer and how many there were, so callers can
 * check liveness (never a benchmark: the bound they assert is generous).
 */
export async function whileHealthzPolled<T>(t: Pick<TestServer, "url">, body: () => Promise<T>, intervalMs = 100): Promise<{ result: T; worstMs: number; answers: number }> {
  let done = false;
  let worstMs = 0;
  let answers = 0;
  let failure: Error | undefined;
  const poll = (async () => {
    while (!done) {
      const t0 = performance.now();
      const h = await fetch(`${t.url}/healthz`);
      await h.arrayBuffer();
      if (h.status !== 200) failure ??= new Error(`/healthz answered ${h.status}`);
      worstMs = Math.max(worstMs, performance.now() - t0);
      answers++;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  let result: T;
  try {
    result = await body();
  } finally {
    done = true;
    await poll;
  }
  if (failure) throw failure;
  return { result, worstMs, answers };
}

/** A TCP port free on loopback right now (for a `petri serve` started as a process). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Polls `${url}/healthz` until it answers 200, or throws after `ms`. */
export async function waitHealthy(url: string, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not become healthy");
}

/** A tar archive of `files` (path → content), as the SDKs send many small files in one sync part. */
export async function tarOf(files: Record<string, string | Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, c] of Object.entries(files)) pack.entry({ name, size: Buffer.byteLength(c) }, c);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
