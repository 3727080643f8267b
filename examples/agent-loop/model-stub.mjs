// A scripted stand-in for a model: it "decides" the next tool call from the conversation so far,
// reading the ids and outputs earlier tool results put there, exactly as a real model would have
// to. It answers in OpenAI Chat Completions or Anthropic Messages shape.
const CSV = "month,sales\njan,3\nfeb,5\nmar,8\napr,13\n";
const CODE = "import csv\nrows = list(csv.DictReader(open('sales.csv')))\nprint(sum(int(r['sales']) for r in rows))\n";

function lastToolText(messages) {
  const m = messages[messages.length - 1];
  if (m.role === "tool") return m.content;
  if (Array.isArray(m.content)) return m.content.filter((c) => c.type === "tool_result").flatMap((c) => c.content.filter((x) => x.type === "text").map((x) => x.text)).join("\n");
  return "";
}

function toolTexts(messages) {
  return messages.filter((m) => m.role === "tool" || (m.role === "user" && Array.isArray(m.content))).map((m) => lastToolText([m]));
}

export function scriptedModel(format) {
  let n = 0;
  return async ({ messages, tools }) => {
    const names = tools.map((t) => (format === "anthropic" ? t.name : t.function.name));
    const texts = toolTexts(messages);
    const sandbox = texts.map((t) => /sb_[0-9a-z]{20}/.exec(t)?.[0]).find(Boolean);
    let step;
    if (!sandbox) step = { name: "create_sandbox", arguments: { language: "python" } };
    else if (!texts.some((t) => t.startsWith("wrote sales.csv"))) step = { name: "write_file", arguments: { sandbox_id: sandbox, path: "sales.csv", content: CSV } };
    else if (!texts.some((t) => t.includes("--- stdout ---"))) step = { name: "run_code", arguments: { sandbox_id: sandbox, code: CODE } };
    else if (!texts.some((t) => t.startsWith("deleted sandbox"))) step = { name: "delete_sandbox", arguments: { sandbox_id: sandbox } };
    else {
      const total = /--- stdout ---\n(\d+)/.exec(texts.find((t) => t.includes("--- stdout ---")))[1];
      const text = `The total is ${total}.`;
      return { text, toolCalls: [], message: format === "anthropic" ? { role: "assistant", content: [{ type: "text", text }] } : { role: "assistant", content: text } };
    }
    if (!names.includes(step.name)) throw new Error(`the server offers no tool ${step.name}`);
    const id = `call_${++n}`;
    const message = format === "anthropic"
      ? { role: "assistant", content: [{ type: "tool_use", id, name: step.name, input: step.arguments }] }
      : { role: "assistant", content: null, tool_calls: [{ id, type: "function", function: { name: step.name, arguments: JSON.stringify(step.arguments) } }] };
    // OpenAI-style models send arguments as JSON text; POST /v1/tools/call takes either.
    return { text: "", toolCalls: [{ id, name: step.name, arguments: format === "anthropic" ? step.arguments : JSON.stringify(step.arguments) }], message };
  };
}
