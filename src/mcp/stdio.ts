import fs from "node:fs";
import pino from "pino";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { Config } from "../config.js";
import { createServer } from "../server.js";
import { createMcpServer } from "./server.js";

/**
 * `petri mcp`: an MCP server on stdin/stdout for a local agent (Claude Desktop, an IDE). It runs
 * the engine in this process (no HTTP server) and acts as one API key: PETRI_API_KEY, else the
 * bootstrap admin key. stdout carries the protocol, so logs go to stderr.
 */
export async function runMcpStdio(config: Readonly<Config>): Promise<number> {
  const logger = pino({ level: config.logLevel === "info" ? "warn" : config.logLevel }, pino.destination(2));
  const engine = await createServer(config, { logger });
  const token = config.apiKey ?? config.adminToken ?? (engine.bootstrap.file ? fs.readFileSync(engine.bootstrap.file, "utf8").trim() : undefined);
  const auth = token ? engine.keys.authenticate(token) : null;
  if (!auth) {
    process.stderr.write("petri mcp: PETRI_API_KEY is not a valid API key\n");
    await engine.close();
    return 2;
  }
  const server = createMcpServer(engine.deps, auth, "mcp-stdio");
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => { transport.onclose = resolve; });
  await server.connect(transport);
  // The client closing stdin ends the session; SIGTERM/SIGINT too. Runs in flight are cancelled.
  process.stdin.on("end", () => void transport.close());
  process.on("SIGTERM", () => void transport.close());
  process.on("SIGINT", () => void transport.close());
  await closed;
  await engine.close();
  return 0;
}
