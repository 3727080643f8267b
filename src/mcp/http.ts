import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { PetriError } from "../errors.js";
import { createMcpServer } from "./server.js";
import type { AgentDeps } from "./tools.js";

interface Session { transport: StreamableHTTPServerTransport; server: Server; keyId: string; lastUsed: number }

/** A session nobody used for this long is closed (its runs are not affected). */
const SESSION_IDLE_MS = 30 * 60 * 1000;
const MAX_SESSIONS = 1000;

/**
 * MCP over streamable HTTP at /mcp, authenticated with the same API keys as the REST API (the
 * app's bearer check has run before these handlers). Sessions are kept so a client can cancel
 * a call in progress (notifications/cancelled arrives as a separate POST); a session belongs
 * to the key that opened it and answers 404 to any other.
 */
export async function mcpRoutes(app: FastifyInstance, deps: AgentDeps): Promise<void> {
  const sessions = new Map<string, Session>();
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const s of sessions.values()) if (now - s.lastUsed > SESSION_IDLE_MS) void s.transport.close();
  }, 60_000);
  sweep.unref();
  app.addHook("onClose", async () => {
    clearInterval(sweep);
    await Promise.allSettled([...sessions.values()].map((s) => s.transport.close()));
  });

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const header = req.headers["mcp-session-id"];
    const sid = Array.isArray(header) ? header[0] : header;
    let session = sid ? sessions.get(sid) : undefined;
    if (sid && (!session || session.keyId !== req.auth.keyId)) {
      throw new PetriError("ROUTE_NOT_FOUND", "no such MCP session (it expired or was closed): initialize a new one");
    }
    if (!session) {
      if (req.method !== "POST" || !isInitializeRequest(req.body)) {
        throw new PetriError("VALIDATION_ERROR", "no mcp-session-id header: the first request of an MCP session must be `initialize`");
      }
      if (sessions.size >= MAX_SESSIONS) {
        const oldest = [...sessions.values()].sort((a, b) => a.lastUsed - b.lastUsed)[0];
        await oldest.transport.close();
      }
      const server = createMcpServer(deps, req.auth, "mcp-http");
      const keyId = req.auth.keyId;
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => { sessions.set(id, { transport, server, keyId, lastUsed: Date.now() }); },
      });
      transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
      await server.connect(transport);
      session = { transport, server, keyId, lastUsed: Date.now() };
    }
    session.lastUsed = Date.now();
    reply.hijack();
    await session.transport.handleRequest(req.raw, reply.raw, req.body);
  };

  const schema = { hide: true };
  // Tool calls are audited one by one (callTool); the transport's requests themselves are not.
  app.post("/mcp", { schema }, handle);
  app.get("/mcp", { schema }, handle);
  app.delete("/mcp", { schema }, handle);
}
