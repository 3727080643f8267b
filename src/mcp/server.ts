import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema, ListResourcesRequestSchema, ListResourceTemplatesRequestSchema, ListToolsRequestSchema,
  McpError, ErrorCode, ReadResourceRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import type { AuthContext } from "../auth/keys.js";
import { PetriError } from "../errors.js";
import { TOOLS } from "./catalog.js";
import { callTool, mimeTypeOf, readWorkspaceFile, type AgentDeps } from "./tools.js";

export const RESOURCE_TEMPLATE = "petri://sandboxes/{sandbox_id}/files/{path}";
/** resources/list names at most this many files (the template reaches every file). */
const RESOURCE_LIST_MAX = 1000;

export function resourceUri(sandboxId: string, p: string): string {
  return `petri://sandboxes/${sandboxId}/files/${p.split("/").map(encodeURIComponent).join("/")}`;
}

function parseResourceUri(uri: string): { sandboxId: string; path: string } {
  const m = /^petri:\/\/sandboxes\/([^/]+)\/files\/(.+)$/.exec(uri);
  if (!m) throw new McpError(ErrorCode.InvalidParams, `not a Petri workspace file URI: ${uri} (expected ${RESOURCE_TEMPLATE})`);
  return { sandboxId: decodeURIComponent(m[1]), path: m[2].split("/").map(decodeURIComponent).join("/") };
}

/**
 * One MCP server bound to one caller (an API key's tenant). The low-level Server is used
 * rather than McpServer because the tool schemas are plain JSON Schema shared with
 * GET /v1/tools; arguments are validated against them in callTool.
 */
export function createMcpServer(deps: AgentDeps, auth: AuthContext, via: "mcp-stdio" | "mcp-http"): Server {
  const server = new Server(
    { name: "petri", version: "0.1.0" },
    {
      capabilities: { tools: {}, resources: {} },
      instructions: "Petri runs code in isolated, throw-away containers. Create a sandbox (its workspace files persist), write files, run code; results carry an `explanation` line for any abnormal end, and images the run made (plt.show() figures too) come back inline. There is no network unless you pass allow_hosts.",
    },
  );

  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS.map((t) => ({ ...t })) }));

  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const out = await callTool({ deps, auth, signal: extra.signal, via }, req.params.name, req.params.arguments ?? {});
    return {
      content: [
        { type: "text" as const, text: out.text },
        ...out.images.map((i) => ({ type: "image" as const, data: i.data, mimeType: i.mimeType })),
      ],
      isError: out.isError,
    };
  });

  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [{ uriTemplate: RESOURCE_TEMPLATE, name: "workspace file", description: "a file in one of your sandboxes' workspaces" }],
  }));

  server.setRequestHandler(ListResourcesRequestSchema, async () => {
    const resources: { uri: string; name: string; mimeType?: string; size?: number }[] = [];
    for (const sb of deps.sandboxes.list(auth, { limit: 1000 }).items) {
      if (resources.length >= RESOURCE_LIST_MAX) break;
      const files = await deps.workspaces.list(sb.id, "", { recursive: true, hashes: false });
      for (const f of files) {
        if (f.type !== "file") continue;
        if (resources.length >= RESOURCE_LIST_MAX) break;
        resources.push({ uri: resourceUri(sb.id, f.path), name: `${sb.id}/${f.path}`, size: f.size, ...(mimeTypeOf(f.path) ? { mimeType: mimeTypeOf(f.path)! } : {}) });
      }
    }
    return { resources };
  });

  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const { sandboxId, path } = parseResourceUri(req.params.uri);
    let file: { data: Buffer; path: string };
    try {
      file = readWorkspaceFile(deps, auth, sandboxId, path);
    } catch (e) {
      if (e instanceof PetriError) throw new McpError(e.status === 404 ? ErrorCode.InvalidParams : ErrorCode.InvalidRequest, `${e.code}: ${e.message}`);
      throw e;
    }
    const mimeType = mimeTypeOf(file.path) ?? "application/octet-stream";
    const text = file.data.toString("utf8");
    const isText = Buffer.from(text, "utf8").equals(file.data) && !mimeType.startsWith("image/");
    return { contents: [isText ? { uri: req.params.uri, mimeType, text } : { uri: req.params.uri, mimeType, blob: file.data.toString("base64") }] };
  });

  return server;
}
