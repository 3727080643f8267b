import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** sdks/typescript, wherever the compiled test runs from (build/test/…). */
export const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO_DIR = path.resolve(SDK_DIR, "../..");
export const TESTDATA_DIR = path.resolve(SDK_DIR, "../testdata");

export interface LiveServer {
  url: string;
  apiKey: string;
  /** Connection options for the SDK. */
  conn: { url: string; apiKey: string };
  stop: () => Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts a real Petri server (`node bin/petri.js serve`) with a throw-away data directory, a
 * free port and a fresh admin token, and waits for /healthz. `PETRI_TEST_URL` +
 * `PETRI_TEST_API_KEY` point the tests at a server that is already running instead.
 */
export async function startServer(extraEnv: Record<string, string> = {}): Promise<LiveServer> {
  if (process.env.PETRI_TEST_URL && process.env.PETRI_TEST_API_KEY && !Object.keys(extraEnv).length) {
    const url = process.env.PETRI_TEST_URL;
    const apiKey = process.env.PETRI_TEST_API_KEY;
    return { url, apiKey, conn: { url, apiKey }, stop: async () => undefined };
  }
  const bin = process.env.PETRI_SERVER_BIN ?? path.join(REPO_DIR, "bin", "petri.js");
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "jhansi-ts-"));
  const port = await freePort();
  const apiKey = `pk_sdk_${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const url = `http://127.0.0.1:${port}`;
  let log = "";
  const child: ChildProcess = spawn(process.execPath, [bin, "serve"], {
    env: { ...process.env, ...extraEnv, PETRI_DATA_DIR: dataDir, PETRI_PORT: String(port), PETRI_HOST: "127.0.0.1", PETRI_ADMIN_TOKEN: apiKey, PETRI_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (b: Buffer) => { log += b.toString(); });
  child.stderr!.on("data", (b: Buffer) => { log += b.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let alive = true;
  void exited.then(() => { alive = false; });
  const stop = async () => {
    if (alive) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!alive) {
      await stop();
      throw new Error(`petri serve exited before it was ready:\n${log}`);
    }
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`petri serve did not answer /healthz within 60 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, apiKey, conn: { url, apiKey }, stop };
}

export function tmpDir(prefix = "jhansi-ts-local-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Writes files (path → content) under a directory, creating parents. */
export function writeTree(root: string, files: Record<string, string | Buffer>): void {
  for (const [p, content] of Object.entries(files)) {
    const abs = path.join(root, p);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, content);
  }
}

/** Runs a command, resolving with its exit code and output. */
export function runProcess(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Whether a built-in image (e.g. `datascience`) is in the Docker engine, asked of Docker itself
 * (not of the server under test), so a test can say SKIP when it is not built here.
 */
export async function imageBuilt(name: string): Promise<{ ok: boolean; ref: string }> {
  const catalog = (await import(path.join(REPO_DIR, "dist", "src", "images", "catalog.js"))) as { imageRefOf(n: string): string };
  const ref = catalog.imageRefOf(name);
  const r = await runProcess("docker", ["image", "inspect", "--format", "{{.Id}}", ref]).catch(() => ({ code: 1 }));
  return { ok: r.code === 0, ref };
}
