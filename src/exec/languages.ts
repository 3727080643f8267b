import { goRunScript } from "./go-run.js";
import type { InterpreterHint } from "../runtimes/types.js";

/**
 * A language is data, not a code path: adding one is an entry here plus an image that has its
 * toolchain. `{file}` is substituted into argv; `args` are appended.
 */
export interface Language {
  name: string;
  /** Extensions the language's entry files usually have (informational; any file may be run). */
  extensions: string[];
  /** argv to run a workspace file. */
  file: string[];
  /**
   * How to run a snippet. It is always written to a read-only file mounted into the run
   * (`{file}` in argv), never put in argv, which every local user can read in `ps`; argv keeps
   * what `-c` gives (`__main__`, cwd /workspace, `args` after the program).
   */
  snippet: { filename: string; argv: string[] };
  /** Extra environment for this language. */
  env: Record<string, string>;
  /**
   * A pre-started unit may start this interpreter ahead, with these modules of the image imported
   * when the image has them (docs/warm.md). Absent: pre-started units exec the run cold.
   */
  warm?: InterpreterHint;
  /** How dependencies are declared (documented for users; installed by the code itself offline). */
  dependencies: string;
}

export const SNIPPET_DIR = "/petri/snippet";
/** The TypeScript preload (typescript-loader.ts), among the helpers mounted at /petri/agent (agent-files.ts). */
const TS_LOADER_FILE = "/petri/agent/node/typescript.cjs";
export const CACHE_DIR = "/cache";

const GO_RUN = goRunScript({ cacheDir: CACHE_DIR, snippetDir: SNIPPET_DIR });

/**
 * Runs a snippet file the way `node -e` runs its code, with the same module rules as the images'
 * Node 24 gives `-e`: code with `import`/`export`, `import.meta` or top-level `await` runs as an
 * ES module, anything else as CommonJS (`require`). Either way relative imports and node_modules
 * resolve from the working directory (/workspace), and process.argv lacks the file. TypeScript
 * is stripped first (Node's own `stripTypeScriptTypes`, enums and namespaces transformed). The
 * module kind is found as Node finds it: compile as CommonJS, and only the errors that mean
 * "this is module syntax" switch to ESM, so a real syntax error is still reported as one.
 * Fixed text: only this loader, never the user's code, shows in argv (`ps`).
 */
const NODE_SNIPPET_LOADER = [
  "const M=require('module'),p=require('path'),fs=require('fs');",
  "const f=process.argv.splice(1,1)[0],n=p.join(process.cwd(),'[eval]');",
  "let s=fs.readFileSync(f,'utf8');",
  "if(/\\.[cm]?ts$/.test(f))s=(globalThis.__petriTransformTs&&globalThis.__petriTransformTs(s,n))||M.stripTypeScriptTypes(s,{mode:'transform',sourceUrl:n});",
  "let esm=false;",
  "try{require('vm').compileFunction(s,['exports','require','module','__filename','__dirname'],{filename:n})}",
  "catch(e){esm=/Cannot use import statement|Unexpected token 'export'|import\\.meta|await is only valid|Identifier '(module|require|exports|__filename|__dirname)' has already/.test(e.message)}",
  "if(esm){const url=require('url').pathToFileURL(n).href;",
  "M.registerHooks({resolve:(x,c,next)=>x===url?{url,shortCircuit:true}:next(x,c),",
  "load:(x,c,next)=>x===url?{format:'module',source:s,shortCircuit:true}:next(x,c)});",
  // `-e` put CommonJS names on globalThis for the loader; an ES module has none of them.
  "for(const k of ['require','exports','__filename','__dirname'])delete globalThis[k];import(url)}",
  "else{const m=new M(n,null);m.filename=n;m.paths=M._nodeModulePaths(process.cwd());m._compile(s,n)}",
].join("");

export const LANGUAGES: Readonly<Record<string, Language>> = Object.freeze({
  python: {
    name: "python",
    extensions: [".py"],
    file: ["python3", "{file}"],
    snippet: { filename: "snippet.py", argv: ["python3", "{file}"] },
    // Byte-code caches would otherwise show up as workspace changes after every run.
    // matplotlib keeps its font cache in the sandbox's cache (built once per sandbox, not per run).
    // Its backend is Petri's (agent-files.ts: Agg, with plt.show() saving the figure), set with
    // the other helpers; a backend set here would override it and plt.show() would drop figures.
    env: {
      PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1", PYTHONPATH: "/workspace",
      MPLCONFIGDIR: `${CACHE_DIR}/matplotlib`,
    },
    dependencies: "modules in the workspace (import lib.util from lib/util.py); Debian's python3 packages baked into the image",
    // The data stack of the datascience image (absent from standard: there only the interpreter is warm).
    warm: {
      kind: "python",
      preload: ["numpy", "pandas", "matplotlib", "matplotlib.pyplot"],
      triggers: ["seaborn", "scipy", "sklearn", "statsmodels", "pylab", "mpl_toolkits"],
      // What DataFrame.plot and savefig import the first time (pandas looks its plotting backend up
      // through importlib.metadata): ~9 ms of a plotting run. Imports without side effects only.
      firstUse: ["importlib.metadata", "pandas.plotting._matplotlib", "matplotlib.backends.backend_agg"],
      // gc.freeze() of what the unit holds: the exit would otherwise walk the stack's ~89,000
      // objects (~200 ms CPU); without the stack, ~1.5 ms a run (docs/warm.md, "The frozen stack").
      freeze: true,
    },
  },
  node: {
    name: "node",
    extensions: [".js", ".mjs", ".cjs"],
    file: ["node", "{file}"],
    // The snippet is a file (never argv); the loader gives it `node -e`'s module detection.
    snippet: { filename: "snippet.js", argv: ["node", "-e", NODE_SNIPPET_LOADER, "{file}"] },
    env: { NODE_PATH: "/workspace/node_modules:/usr/share/nodejs" },
    dependencies: "node_modules/ in the workspace (uploaded), or Debian's node-* packages in the image",
    // node started ahead, held in its last preload until the run (runtimes/warm-node.ts).
    warm: { kind: "node" },
  },
  typescript: {
    name: "typescript",
    extensions: [".ts", ".mts", ".cts"],
    // esbuild (in the image) strips types through a preload of module hooks (typescript-loader.ts):
    // no compile step, no second process per run, the files keep their own URLs, and stack
    // traces point at the TypeScript lines (source maps). Enums and namespaces work. Types are
    // not checked (run `tsc --noEmit` for that; it is in the image). Relative imports name the
    // file (`./util.ts`). An image without esbuild falls back on Node's own type stripping.
    file: ["node", "--require", TS_LOADER_FILE, "--experimental-transform-types", "--disable-warning=ExperimentalWarning", "{file}"],
    // The snippet file is stripped by the same loader as Node's (an ES module or CommonJS alike);
    // the preload serves the workspace .ts files it imports.
    snippet: { filename: "snippet.ts", argv: ["node", "--require", TS_LOADER_FILE, "--experimental-transform-types", "--disable-warning=ExperimentalWarning", "-e", NODE_SNIPPET_LOADER, "{file}"] },
    env: { NODE_PATH: "/workspace/node_modules:/usr/share/nodejs", PETRI_TS_CACHE: `${CACHE_DIR}/typescript` },
    dependencies: "node_modules/ in the workspace (uploaded), or Debian's node-* packages in the image",
    // As Node's, with the TypeScript loader (and esbuild's wrapper) already loaded.
    warm: { kind: "node" },
  },
  go: {
    name: "go",
    extensions: [".go"],
    file: ["sh", "-c", GO_RUN, "go", "{file}"],
    snippet: { filename: "main.go", argv: ["sh", "-c", GO_RUN, "go", "{file}"] },
    // The build cache lives in a per-sandbox cache directory, so a second run of an unchanged
    // program reuses compiled packages. No network: modules must be vendored in the workspace.
    env: {
      GOCACHE: `${CACHE_DIR}/go-build`, GOPATH: `${CACHE_DIR}/gopath`, GOTMPDIR: "/tmp", GOFLAGS: "-buildvcs=false",
      GOPROXY: "off", GOTOOLCHAIN: "local", GO111MODULE: "auto", CGO_ENABLED: "0",
    },
    dependencies: "a go.mod with vendored modules in the workspace (no network during runs)",
  },
  bash: {
    name: "bash",
    extensions: [".sh", ".bash"],
    file: ["bash", "{file}"],
    snippet: { filename: "snippet.sh", argv: ["bash", "{file}"] },
    env: {},
    dependencies: "the image's tools",
  },
});

export function substitute(argv: string[], vars: { file: string }): string[] {
  return argv.map((a) => (a === "{file}" ? vars.file : a));
}
