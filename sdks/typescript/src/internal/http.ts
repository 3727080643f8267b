import { ConfigurationError, ConnectionError, InvalidRequestError, PetriError, TimeoutError, errorFromResponse } from "../errors.js";

/** How to reach a Petri server. Every public entry point takes these. */
export interface ConnectionOptions {
  /** API key sent as `Authorization: Bearer …`. Default: env `PETRI_API_KEY`. */
  apiKey?: string;
  /** Base URL of the Petri server, e.g. `http://127.0.0.1:8080`. Default: env `PETRI_URL`. */
  url?: string;
  /** Deadline of each API call that does not wait for a run, in milliseconds. Default 30_000. */
  requestTimeoutMs?: number;
  /** Extra HTTP headers sent with every request. */
  headers?: Record<string, string>;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** JSON body. */
  json?: unknown;
  /** Raw body (bytes, Blob, FormData…). */
  body?: RequestInit["body"];
  headers?: Record<string, string>;
  /** Overrides the client's request deadline, ms. `Infinity` for none. */
  timeoutMs?: number;
}

/** A response whose body the caller reads; `done()` must be called when it has finished. */
export interface OpenResponse {
  response: Response;
  done: () => void;
}

/** Reads and checks the connection settings once: explicit options first, then the environment. */
export function resolveConnection(opts: ConnectionOptions = {}): Required<Pick<ConnectionOptions, "apiKey" | "url" | "requestTimeoutMs">> & { headers: Record<string, string> } {
  const apiKey = opts.apiKey ?? process.env.PETRI_API_KEY ?? "";
  const url = opts.url ?? process.env.PETRI_URL ?? "";
  const missing = [!apiKey && "PETRI_API_KEY", !url && "PETRI_URL"].filter(Boolean);
  if (missing.length) {
    throw new ConfigurationError(
      `Petri needs an API key and a server URL: pass { apiKey, url } or set the PETRI_API_KEY and PETRI_URL environment variables (missing: ${missing.join(", ")})`,
      { code: "CONFIGURATION" },
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigurationError(`PETRI_URL / url is not a valid URL: ${JSON.stringify(url)}`, { code: "CONFIGURATION" });
  }
  return {
    apiKey,
    url: parsed.toString().replace(/\/+$/, ""),
    requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    headers: { ...(opts.headers ?? {}) },
  };
}

/**
 * Encodes a workspace path for a URL, one segment at a time (slashes stay slashes). URL
 * normalisation would turn `a/../b` into another route, so dot segments are refused here with
 * the error the server gives them.
 */
export function encodePath(p: string): string {
  return p.split("/").map(encodeSegment).join("/");
}

/** Encodes one path segment (or an id); `.` and `..` are refused. */
export function encodeSegment(s: string): string {
  if (s === "." || s === "..") {
    throw new InvalidRequestError(`path segment "${s}" is not allowed: workspace paths are relative and stay inside the workspace`, { code: "INVALID_PATH" });
  }
  return encodeURIComponent(s);
}

export class ApiClient {
  readonly apiKey: string;
  readonly url: string;
  readonly requestTimeoutMs: number;
  private readonly headers: Record<string, string>;

  constructor(opts: ConnectionOptions = {}) {
    const c = resolveConnection(opts);
    this.apiKey = c.apiKey;
    this.url = c.url;
    this.requestTimeoutMs = c.requestTimeoutMs;
    this.headers = c.headers;
  }

  /** The options that reproduce this client (for `connect`-style helpers). */
  get connection(): ConnectionOptions {
    return { apiKey: this.apiKey, url: this.url, requestTimeoutMs: this.requestTimeoutMs, headers: this.headers };
  }

  /** Sends a request and leaves the body to the caller; throws typed errors for 4xx/5xx. */
  async open(method: string, path: string, opts: RequestOptions = {}): Promise<OpenResponse> {
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = { ...this.headers, authorization: `Bearer ${this.apiKey}`, ...(opts.headers ?? {}) };
    let body: RequestInit["body"] | undefined = opts.body;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers["content-type"] = "application/json";
    }
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = Number.isFinite(timeoutMs)
      ? setTimeout(() => { timedOut = true; controller.abort(); }, timeoutMs)
      : undefined;
    const done = () => { if (timer) clearTimeout(timer); };
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body, signal: controller.signal });
    } catch (e) {
      done();
      throw this.transportError(e, timedOut, method, path, timeoutMs);
    }
    if (!response.ok) {
      let parsed: unknown;
      try {
        const text = await response.text();
        try { parsed = JSON.parse(text); } catch { parsed = undefined; }
      } catch (e) {
        done();
        throw this.transportError(e, timedOut, method, path, timeoutMs);
      }
      done();
      throw errorFromResponse(response.status, parsed);
    }
    // Reading the body may fail later with the abort; wrap it so the caller sees our errors.
    return { response, done };
  }

  /** Sends a request and reads the whole body as JSON (or nothing for 204). */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { response, done } = await this.open(method, path, opts);
    try {
      if (response.status === 204) return undefined as T;
      const text = await response.text();
      return (text ? JSON.parse(text) : undefined) as T;
    } catch (e) {
      throw this.transportError(e, false, method, path, opts.timeoutMs ?? this.requestTimeoutMs);
    } finally {
      done();
    }
  }

  /** Sends a request and reads the whole body as bytes. */
  async bytes(method: string, path: string, opts: RequestOptions = {}): Promise<Uint8Array> {
    const { response, done } = await this.open(method, path, opts);
    try {
      return new Uint8Array(await response.arrayBuffer());
    } catch (e) {
      throw this.transportError(e, false, method, path, opts.timeoutMs ?? this.requestTimeoutMs);
    } finally {
      done();
    }
  }

  transportError(e: unknown, timedOut: boolean, method: string, path: string, timeoutMs: number): PetriError {
    if (e instanceof PetriError) return e;
    const name = (e as Error)?.name;
    if (timedOut || name === "AbortError" || name === "TimeoutError") {
      return new TimeoutError(`${method} ${path} did not finish within ${timeoutMs} ms`, { code: "TIMEOUT", cause: e });
    }
    const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
    const why = cause?.code ?? cause?.message ?? (e as Error)?.message ?? String(e);
    return new ConnectionError(`cannot reach the Petri server at ${this.url} (${method} ${path}): ${why}`, { code: "CONNECTION", cause: e });
  }
}
