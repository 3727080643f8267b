/**
 * TypeScript through esbuild, inside the sandbox (a CommonJS preload, mounted read-only with the
 * other helpers). Node's own type stripping loads its transformer (swc compiled to WebAssembly)
 * on every run, which costs more than starting node; esbuild (a Go binary in the images) strips
 * a file in a few milliseconds. The preload registers in-thread module hooks (module.registerHooks)
 * that hand Node esbuild's output for each .ts/.mts/.cts file under the file's own URL, so
 * relative and bare imports, `import.meta.url`, `__filename`, argv and stdin behave exactly as
 * with Node's stripping; inline source maps keep stack traces on the TypeScript lines.
 *
 * Transforms are cached in the sandbox's own cache directory (PETRI_TS_CACHE), keyed by path and
 * content, so a second run of unchanged code spawns no esbuild at all. The cache is writable by
 * the sandbox's code, which gains nothing from it: it can already change the sources themselves.
 * An image without esbuild keeps Node's own stripping (the flag stays in the argv), and so does
 * code esbuild refuses, so a syntax error reads as Node reports it.
 */
export const TS_LOADER = `'use strict';
// Written by Petri (mounted read-only): TypeScript stripped by esbuild, with source maps.
(function () {
  const fs = require('fs');
  const ESBUILD = '/usr/bin/esbuild';
  if (!fs.existsSync(ESBUILD)) return;
  const M = require('module');
  // In-thread hooks need Node >= 22.15; an image with an older Node keeps Node's own stripping.
  if (typeof M.registerHooks !== 'function') return;
  const path = require('path');
  const { spawnSync } = require('child_process');
  const { fileURLToPath } = require('url');
  const cacheDir = process.env.PETRI_TS_CACHE || '';
  const TS = /\\.[cm]?ts$/;
  const ESM = /Cannot use import statement|Unexpected token 'export'|import\\.meta|await is only valid|Identifier '(module|require|exports|__filename|__dirname)' has already/;

  function transform(source, file) {
    let cached = '';
    if (cacheDir) {
      const key = require('crypto').createHash('sha256').update('v1\\0' + file + '\\0' + source).digest('hex');
      cached = path.join(cacheDir, key.slice(0, 2), key + '.js');
      try { return fs.readFileSync(cached, 'utf8'); } catch (e) { /* not transformed yet */ }
    }
    const r = spawnSync(ESBUILD, ['--loader=ts', '--sourcemap=inline', '--sourcefile=' + file, '--log-level=error', '--color=false'],
      { input: source, encoding: 'utf8', maxBuffer: 1 << 30 });
    // Code esbuild refuses (or an esbuild that cannot start, e.g. at the pids limit) goes to Node's
    // own stripping, whose SyntaxError names the file and line the way every other Node error does.
    if (r.error || r.status !== 0) return null;
    if (cached) {
      try {
        fs.mkdirSync(path.dirname(cached), { recursive: true });
        const tmp = cached + '.' + process.pid + '.tmp';
        fs.writeFileSync(tmp, r.stdout);
        fs.renameSync(tmp, cached);
      } catch (e) { /* a full or read-only cache only costs the next run a transform */ }
    }
    return r.stdout;
  }

  // As Node decides for a .ts file: the extension, else the nearest package.json's "type",
  // else the syntax (module syntax that CommonJS cannot compile means an ES module).
  function formatOf(file, js) {
    if (file.endsWith('.mts')) return 'module';
    if (file.endsWith('.cts')) return 'commonjs';
    for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
      let pkg = null;
      try { pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')); } catch (e) { /* none here, or not JSON */ }
      if (pkg) {
        if (pkg.type === 'module' || pkg.type === 'commonjs') return pkg.type;
        break;
      }
      if (dir === path.dirname(dir)) break;
    }
    try {
      require('vm').compileFunction(js, ['exports', 'require', 'module', '__filename', '__dirname'], { filename: file });
      return 'commonjs';
    } catch (e) {
      return ESM.test(e.message) ? 'module' : 'commonjs';
    }
  }

  globalThis.__petriTransformTs = transform;
  process.setSourceMapsEnabled(true);
  M.registerHooks({
    load(url, context, next) {
      if (!url.startsWith('file:') || !TS.test(url)) return next(url, context);
      const file = fileURLToPath(url);
      const js = transform(fs.readFileSync(file, 'utf8'), file);
      if (js === null) return next(url, context);
      return { format: formatOf(file, js), source: js, shortCircuit: true };
    },
  });
})();
`;
