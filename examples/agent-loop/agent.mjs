#!/usr/bin/env node
// A minimal agent loop driving a Petri sandbox through function calling.
//
//   PETRI_URL=http://127.0.0.1:8080 PETRI_API_KEY=… node examples/agent-loop/agent.mjs [--format openai|anthropic]
//
// It fetches the tool definitions from GET /v1/tools, hands them to a model, executes every tool
// call the model makes with POST /v1/tools/call, feeds the results back, and stops when the model
// answers without a tool call. The "model" here is a scripted stub (model-stub.mjs) so the loop
// runs offline and in tests; replace `stubModel` with a call to a real model API: the messages
// and tools are already in the shape OpenAI's Chat Completions / Anthropic's Messages API expect.
import { scriptedModel } from "./model-stub.mjs";

const url = (process.env.PETRI_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const key = process.env.PETRI_API_KEY;
if (!key) {
  console.error("set PETRI_API_KEY (and PETRI_URL)");
  process.exit(2);
}
const format = process.argv.includes("--format") ? process.argv[process.argv.indexOf("--format") + 1] : "openai";

async function petri(method, path, body) {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const { tools } = await petri("GET", `/v1/tools?format=${format}`);
const model = scriptedModel(format);
const messages = [{ role: "user", content: "Here are monthly sales: jan 3, feb 5, mar 8, apr 13. What is the total? Show your work in a sandbox, then clean up." }];

for (let turn = 0; turn < 20; turn++) {
  const reply = await model({ messages, tools });
  messages.push(reply.message);
  if (reply.toolCalls.length === 0) {
    console.log(`final answer: ${reply.text}`);
    process.exit(0);
  }
  const results = [];
  for (const call of reply.toolCalls) {
    const out = await petri("POST", "/v1/tools/call", { name: call.name, arguments: call.arguments });
    console.log(`tool ${call.name} → ${out.is_error ? "error" : "ok"}: ${out.content.split("\n")[0]}`);
    results.push({ call, out });
  }
  // Tool results go back in the shape each API wants.
  if (format === "anthropic") {
    messages.push({
      role: "user",
      content: results.map(({ call, out }) => ({
        type: "tool_result", tool_use_id: call.id, is_error: out.is_error,
        content: [{ type: "text", text: out.content }, ...out.images.map((i) => ({ type: "image", source: { type: "base64", media_type: i.mime_type, data: i.data } }))],
      })),
    });
  } else {
    for (const { call, out } of results) messages.push({ role: "tool", tool_call_id: call.id, content: out.content });
  }
}
console.error("the model did not finish within 20 turns");
process.exit(1);
