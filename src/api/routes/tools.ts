import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import type { AppDeps } from "../app.js";
import { TOOLS, anthropicTools, openAiTools } from "../../mcp/catalog.js";
import { callTool } from "../../mcp/tools.js";
import { errorResponses } from "../schemas.js";

const ToolsQuery = Type.Object({
  format: Type.Optional(Type.Union([Type.Literal("openai"), Type.Literal("anthropic"), Type.Literal("mcp")], { description: "shape of the definitions; default openai" })),
});
const CallBody = Type.Object({
  name: Type.String({ description: "a tool name from GET /v1/tools" }),
  arguments: Type.Optional(Type.Union([Type.Object({}, { additionalProperties: true }), Type.String({ description: "JSON text, as OpenAI-style models emit it" })])),
}, { additionalProperties: false });

/**
 * Tool definitions for function-calling models, and one endpoint that executes a tool call as
 * the model emitted it: an agent loop needs no code per tool.
 */
export async function toolRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.get<{ Querystring: Static<typeof ToolsQuery> }>("/v1/tools", {
    schema: {
      summary: "JSON-schema tool definitions for OpenAI-style or Anthropic-style function calling",
      querystring: ToolsQuery,
      response: { 200: Type.Object({ format: Type.String(), tools: Type.Array(Type.Object({}, { additionalProperties: true })) }), ...errorResponses(400, 401) },
    },
  }, async (req) => {
    const format = req.query.format ?? "openai";
    const tools = format === "anthropic" ? anthropicTools() : format === "mcp" ? TOOLS.map((t) => ({ ...t })) : openAiTools();
    return { format, tools };
  });

  app.post<{ Body: Static<typeof CallBody> }>("/v1/tools/call", {
    config: { action: "tools.call" },
    schema: {
      summary: "Execute one tool call (name + arguments as the model emitted them)",
      description: "Answers 200 with `{content, images, is_error, data}` even when the tool failed (a bad argument, an unknown sandbox): the model reads `content` and can correct itself.",
      body: CallBody,
      response: {
        200: Type.Object({
          content: Type.String(),
          images: Type.Array(Type.Object({ mime_type: Type.String(), data: Type.String() })),
          is_error: Type.Boolean(),
          data: Type.Any(),
        }),
        ...errorResponses(400, 401),
      },
    },
  }, async (req, reply) => {
    let args: unknown = req.body.arguments ?? {};
    if (typeof args === "string") {
      try {
        args = args.trim() === "" ? {} : JSON.parse(args);
      } catch (e) {
        return { content: `error VALIDATION_ERROR: arguments are not valid JSON: ${(e as Error).message}`, images: [], is_error: true, data: null };
      }
    }
    const ac = new AbortController();
    // A client that gives up on the call cancels the run it started.
    reply.raw.on("close", () => { if (!reply.raw.writableFinished) ac.abort(); });
    const out = await callTool({ deps, auth: req.auth, signal: ac.signal, via: "tools-api" }, req.body.name, args);
    return { content: out.text, images: out.images.map((i) => ({ mime_type: i.mimeType, data: i.data })), is_error: out.isError, data: out.data };
  });
}
