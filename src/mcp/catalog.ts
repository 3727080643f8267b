/**
 * The tools an agent gets, defined once as JSON Schema: served over MCP (tools/list), and by
 * GET /v1/tools in the shapes OpenAI-style and Anthropic-style function calling expect.
 */

export interface ToolDef {
  name: string;
  description: string;
  inputSchema: { type: "object"; properties: Record<string, unknown>; required?: string[]; additionalProperties: false };
}

const sandboxId = { type: "string", description: "id of the sandbox (sb_…), from create_sandbox or list_sandboxes" };
const path = { type: "string", description: "path relative to the workspace root, e.g. data/input.csv" };
const hosts = { type: "array", items: { type: "string" }, maxItems: 256, description: "hosts the code may reach over HTTP(S), e.g. [\"api.github.com\", \"*.example.com\"]; without it there is no network at all" };
const image = { type: "string", maxLength: 256, description: "image the runs use, by name from describe_images, e.g. \"datascience\" (pandas, numpy, matplotlib, scikit-learn …); default: the language's default image" };
const fileToWrite = {
  type: "object",
  properties: {
    path,
    content: { type: "string", description: "file content (text, or base64 when encoding is base64)" },
    encoding: { type: "string", enum: ["utf8", "base64"], default: "utf8" },
  },
  required: ["path", "content"],
  additionalProperties: false,
};

export const TOOLS: readonly ToolDef[] = Object.freeze([
  {
    name: "create_sandbox",
    description: "Create a sandbox: a persistent workspace (files survive between runs) where code runs in fresh, isolated containers. Returns its id.",
    inputSchema: {
      type: "object",
      properties: {
        language: { type: "string", enum: ["python", "node", "typescript", "go", "bash"], description: "language of the runs" },
        image: image,
        allow_hosts: hosts,
        env: { type: "object", additionalProperties: { type: "string" }, description: "environment variables for every run of this sandbox" },
        timeout_ms: { type: "integer", minimum: 1, description: "default time limit of one run, ms" },
        memory_mb: { type: "integer", minimum: 1, description: "memory limit of one run, MiB" },
      },
      required: ["language"],
      additionalProperties: false,
    },
  },
  {
    name: "describe_images",
    description: "Describe the images sandboxes can use: languages and versions, tools, and the Python and Node packages each has without installing. Use it to pick `image` for create_sandbox (e.g. datascience for pandas and matplotlib).",
    inputSchema: {
      type: "object",
      properties: { name: { type: "string", maxLength: 256, description: "one image, with its full package lists; default: all images, summarised" } },
      additionalProperties: false,
    },
  },
  {
    name: "list_sandboxes",
    description: "List your sandboxes (id, language, status, allowed hosts).",
    inputSchema: { type: "object", properties: {}, additionalProperties: false },
  },
  {
    name: "delete_sandbox",
    description: "Delete a sandbox, its workspace files and its run history. Cancels runs in progress.",
    inputSchema: { type: "object", properties: { sandbox_id: sandboxId }, required: ["sandbox_id"], additionalProperties: false },
  },
  {
    name: "run_code",
    description: "Run a code snippet, or a file of the workspace, in a fresh container of the sandbox. Optionally writes files first. Returns exit code, stdout, stderr, a one-line explanation of any abnormal end (timeout, out of memory, no network, error with file:line), and images/data files the run created (matplotlib plt.show() figures come back as images). Without sandbox_id a new sandbox of `language` is created and its id returned for reuse.",
    inputSchema: {
      type: "object",
      properties: {
        sandbox_id: sandboxId,
        language: { type: "string", enum: ["python", "node", "typescript", "go", "bash"], description: "only when creating a sandbox (no sandbox_id); default python" },
        image: { ...image, description: `only when creating a sandbox (no sandbox_id): ${image.description}` },
        code: { type: "string", description: "the snippet to run (give code or path)" },
        path: { type: "string", description: "workspace file to run instead of code, e.g. main.py" },
        files: { type: "array", items: fileToWrite, maxItems: 100, description: "files to write into the workspace before the run" },
        args: { type: "array", items: { type: "string" }, description: "command-line arguments" },
        stdin: { type: "string", description: "standard input" },
        env: { type: "object", additionalProperties: { type: "string" }, description: "extra environment variables for this run" },
        timeout_ms: { type: "integer", minimum: 1, description: "time limit of this run, ms" },
        allow_hosts: hosts,
      },
      additionalProperties: false,
    },
  },
  {
    name: "install_dependencies",
    description: "Install packages for a sandbox from the server's configured registries (PyPI index, npm registry, Go proxy); its later runs can import them. Runs that import a missing package usually get it installed automatically; use this to pin versions or install ahead of time.",
    inputSchema: {
      type: "object",
      properties: {
        sandbox_id: sandboxId,
        python: { type: "array", items: { type: "string" }, maxItems: 256, description: "pip requirement specifiers, e.g. [\"pandas>=2\"]" },
        node: { type: "array", items: { type: "string" }, maxItems: 256, description: "npm package specs, e.g. [\"lodash@4\"]" },
        go: { type: "array", items: { type: "string" }, maxItems: 256, description: "Go module specs, e.g. [\"github.com/google/uuid@v1.6.0\"]" },
      },
      required: ["sandbox_id"],
      additionalProperties: false,
    },
  },
  {
    name: "write_file",
    description: "Write a file into a sandbox's workspace (parent directories are created; an existing file is replaced).",
    inputSchema: { type: "object", properties: { sandbox_id: sandboxId, ...fileToWrite.properties }, required: ["sandbox_id", "path", "content"], additionalProperties: false },
  },
  {
    name: "read_file",
    description: "Read a file of a sandbox's workspace. Text comes back as text, images as images, other binary files as base64.",
    inputSchema: { type: "object", properties: { sandbox_id: sandboxId, path }, required: ["sandbox_id", "path"], additionalProperties: false },
  },
  {
    name: "list_files",
    description: "List the files of a sandbox's workspace (path, type, size).",
    inputSchema: {
      type: "object",
      properties: { sandbox_id: sandboxId, path: { type: "string", description: "directory to list; default the workspace root" }, recursive: { type: "boolean", default: true } },
      required: ["sandbox_id"],
      additionalProperties: false,
    },
  },
  {
    name: "delete_file",
    description: "Delete a file or directory of a sandbox's workspace (a non-empty directory needs recursive: true).",
    inputSchema: { type: "object", properties: { sandbox_id: sandboxId, path, recursive: { type: "boolean", default: false } }, required: ["sandbox_id", "path"], additionalProperties: false },
  },
]);

/** OpenAI-style function calling ("tools": [{type: "function", function: {…}}]). */
export function openAiTools(tools: readonly ToolDef[] = TOOLS): object[] {
  return tools.map((t) => ({ type: "function", function: { name: t.name, description: t.description, parameters: t.inputSchema } }));
}

/** Anthropic-style tool use ("tools": [{name, description, input_schema}]). */
export function anthropicTools(tools: readonly ToolDef[] = TOOLS): object[] {
  return tools.map((t) => ({ name: t.name, description: t.description, input_schema: t.inputSchema }));
}
