/**
 * A language is data, not a code path: adding one is an entry here plus an image that has its
 * toolchain. `{file}` and `{code}` are substituted into argv; `args` are appended.
 */
export interface Language {
  name: string;
  /** Extensions the language's entry files usually have (informational; any file may be run). */
  extensions: string[];
  /** argv to run a workspace file. */
  file: string[];
  /**
   * How to run a snippet: inline through argv (`{code}`), or written to a read-only file
   * mounted into the run (for toolchains that need a file, like Go).
   */
  snippet: { argv: string[] } | { filename: string; argv: string[] };
  /** Extra environment for this language. */
  env: Record<string, string>;
  /** How dependencies are declared (documented for users; installed by the code itself offline). */
  dependencies: string;
}

export const SNIPPET_DIR = "/petri/snippet";
export const CACHE_DIR = "/cache";

/**
 * `go run`, after linking the image's precompiled standard library (images/build.ts) into the
 * sandbox's build cache on its first Go run: symlinks, so nothing is copied, and Go writes its
 * new entries beside them. An image without that cache compiles as before.
 */
const GO_STD_CACHE = "/usr/lib/petri/go-std-cache";
const GO_RUN = `if [ ! -e "$GOCACHE/.petri-std" ] && [ -d ${GO_STD_CACHE} ]; then mkdir -p "$GOCACHE" && cp -rs ${GO_STD_CACHE}/. "$GOCACHE/" 2>/dev/null; : > "$GOCACHE/.petri-std"; fi; exec go run "$@"`;

export const LANGUAGES: Readonly<Record<string, Language>> = Object.freeze({
  python: {
    name: "python",
    extensions: [".py"],
    file: ["python3", "{file}"],
    snippet: { argv: ["python3", "-c", "{code}"] },
    // Byte-code caches would otherwise show up as workspace changes after every run.
    // matplotlib keeps its font cache in the sandbox's cache (built once per sandbox, not per run).
    // Its backend is Petri's (agent-files.ts: Agg, with plt.show() saving the figure), set with
    // the other helpers; a backend set here would override it and plt.show() would drop figures.
    env: {
      PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1", PYTHONPATH: "/workspace",
      MPLCONFIGDIR: `${CACHE_DIR}/matplotlib`,
    },
    dependencies: "modules in the workspace (import lib.util from lib/util.py); Debian's python3 packages baked into the image",
  },
  node: {
    name: "node",
    extensions: [".js", ".mjs", ".cjs"],
    file: ["node", "{file}"],
    // The images' Node (an official 24.x build) detects module syntax itself: a snippet with
    // `import`/`export` or top-level `await` runs as an ES module, one with `require` as CommonJS.
    snippet: { argv: ["node", "-e", "{code}"] },
    env: { NODE_PATH: "/workspace/node_modules:/usr/share/nodejs" },
    dependencies: "node_modules/ in the workspace (uploaded), or Debian's node-* packages in the image",
  },
  typescript: {
    name: "typescript",
    extensions: [".ts", ".mts", ".cts"],
    // Node's own type stripping (on by default since 22.18), with enums and namespaces
    // transformed too: no compile step and no extra process. Types are not checked (run `tsc
    // --noEmit` for that; it is in the image). Relative imports name the file (`./util.ts`).
    file: ["node", "--experimental-transform-types", "--disable-warning=ExperimentalWarning", "{file}"],
    snippet: { argv: ["node", "--experimental-transform-types", "--disable-warning=ExperimentalWarning", "-e", "{code}"] },
    env: { NODE_PATH: "/workspace/node_modules:/usr/share/nodejs" },
    dependencies: "node_modules/ in the workspace (uploaded), or Debian's node-* packages in the image",
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
    snippet: { argv: ["bash", "-c", "{code}"] },
    env: {},
    dependencies: "the image's tools",
  },
});

export function substitute(argv: string[], vars: { file?: string; code?: string }): string[] {
  return argv.map((a) => (a === "{file}" ? vars.file ?? a : a === "{code}" ? vars.code ?? a : a));
}
