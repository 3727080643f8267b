/**
 * How a Go file or snippet runs: a POSIX sh script (the images' /bin/sh is dash) given the
 * entry file and the program's arguments.
 *
 * 1. On a sandbox's first Go run, the image's precompiled standard library (images/build.ts) is
 *    linked into its build cache with symlinks (nothing copied; Go writes new entries beside them).
 * 2. The program is built once per content (issue 15 item 5): the binary is kept in the sandbox's
 *    cache (`/cache/go-bin/<key>`, outside the workspace; the cache is per sandbox, so no other
 *    sandbox's code can plant a binary there) and exec'd directly, instead of `go run` linking it
 *    again (~350 ms, ~1.8 s under gVisor). The key hashes everything the build reads that can
 *    change between runs: the toolchain (VERSION, size and mtime of compile and link), the Go
 *    settings in the environment, the entry file, every Go source, assembly, cgo, go.mod, go.sum,
 *    go.work and vendor/modules.txt file of the workspace, and the module hashes (`*.ziphash`) of
 *    a dependency environment's module cache. Files are hashed by content, not by time stamp.
 *    The order `find` lists them in only decides whether the key matches (a reordering is a miss,
 *    a rebuild), never which content it stands for, so nothing is sorted.
 * 3. A hit costs one `find`, two `sha256sum` (three for a snippet) and the exec (a few ms); everything else is on the
 *    miss path: a program that embeds files (`//go:embed`, content the key does not cover) runs
 *    with `go run` as before; otherwise `go build` writes a temporary file, the key is computed
 *    again, and the binary is kept only if the sources did not change during the build (another
 *    run of the sandbox may write them): a kept binary always matches its key.
 * 4. The exit status is the program's own (`go run` reports every failure as 1); a build error is
 *    the build's status with its message on stderr. 16 binaries are kept, the oldest removed
 *    first, but none built in the last 10 minutes unless there are more than 64 (a run that found
 *    one may be about to exec it: removal then fails that run, it never runs another binary).
 */
export const GO_STD_CACHE = "/usr/lib/petri/go-std-cache";
export const GO_BIN_DIR = "go-bin";

const SOURCE_NAMES = [
  "*.go", "*.s", "*.S", "*.c", "*.h", "*.cc", "*.cpp", "*.cxx", "*.hh", "*.hpp", "*.hxx", "*.m", "*.f", "*.F", "*.for",
  "*.f90", "*.syso", "*.swig", "*.swigcxx", "go.mod", "go.sum", "go.work", "go.work.sum", "modules.txt",
];
const GO_SETTINGS = [
  "GOFLAGS", "CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GO386", "GOARM", "GOEXPERIMENT", "GO111MODULE", "GOWORK",
  "GOMODCACHE", "GOPATH", "GOPROXY", "GONOSUMDB", "GOPRIVATE", "GOINSECURE", "GOTOOLCHAIN", "CC", "CXX",
  "CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_FFLAGS", "CGO_LDFLAGS", "PKG_CONFIG",
];

/** `cacheDir`: the sandbox's cache inside the run; `snippetDir`: where snippet files are mounted. */
export function goRunScript(dirs: { cacheDir: string; snippetDir: string }): string {
  const { cacheDir, snippetDir } = dirs;
  const names = SOURCE_NAMES.map((n) => `-name '${n}'`).join(" -o ");
  const settings = GO_SETTINGS.map((v) => `${v}=$${v}`).join("|");
  const tool = "/usr/lib/go/pkg/tool/linux_amd64";
  return [
    `if [ ! -e "$GOCACHE/.petri-std" ] && [ -d ${GO_STD_CACHE} ]; then mkdir -p "$GOCACHE" && cp -rs ${GO_STD_CACHE}/. "$GOCACHE/" 2>/dev/null; : > "$GOCACHE/.petri-std"; fi`,
    // A snippet's file is /petri/snippet/<exec id>/main.go, a new path every run: it is keyed by
    // its name and content, so the same snippet run again is a hit.
    `src=$1; shift; case $src in ${snippetDir}/*) label=snippet/\${src##*/} ;; /*) label=$src ;; *) src=./$src; label=$src ;; esac`,
    `petri_key() {`,
    `  { echo "${settings}|$label"`,
    `    [ "$label" = "$src" ] || sha256sum < "$src"`,
    `    [ -n "$GOMODCACHE" ] && [ -d "$GOMODCACHE/cache/download" ] && find "$GOMODCACHE/cache/download" -name '*.ziphash' -exec cat -- {} + 2>/dev/null`,
    // One find: the toolchain's files by size and time (the image's), the sources by content.
    `    find /usr/lib/go/VERSION ${tool}/compile ${tool}/link . \\( -path '/usr/*' -printf '%p %s %T@\\n' \\) -o` +
      ` \\( -name node_modules -o -name .git \\) -prune -o -type f \\( ${names} \\) -exec sha256sum -- {} +`,
    `  } | sha256sum`,
    `}`,
    `bins=${cacheDir}/${GO_BIN_DIR}; key=$(petri_key); key=\${key%% *}; bin=$bins/$key`,
    `[ -f "$bin" ] && [ -x "$bin" ] && exec "$bin" "$@"`,
    `if grep -rqs --include='*.go' --exclude-dir=node_modules --exclude-dir=.git -e '//go:embed' . "$src"; then exec go run "$src" "$@"; fi`,
    `mkdir -p "$bins" && dir=$(mktemp -d "$bins/.build.XXXXXXXX") || exit 1; tmp=$dir/a.out`,
    `go build -o "$tmp" "$src" || { s=$?; rm -rf "$dir"; exit $s; }`,
    `again=$(petri_key); if [ "\${again%% *}" = "$key" ]; then mv -f "$tmp" "$bin"; rmdir "$dir"; exec_bin=$bin; else exec_bin=$tmp; fi`,
    `(cd "$bins" && ls -t | tail -n +17 | { n=16; while read -r f; do n=$((n+1)); [ $n -gt 64 ] || [ -n "$(find "$f" -maxdepth 0 -mmin +10)" ] && rm -f "$f"; done; }; find . -maxdepth 1 -name '.build.*' -mmin +60 -exec rm -rf {} +) 2>/dev/null`,
    `[ "$exec_bin" = "$tmp" ] && { "$tmp" "$@"; s=$?; rm -rf "$dir"; exit $s; }`,
    `exec "$exec_bin" "$@"`,
  ].join("\n");
}
