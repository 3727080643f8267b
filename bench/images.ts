/**
 * Images benchmark (`npm run bench -- images`): what the toolchains in the images cost.
 *
 * - bare start-up in each image's root filesystem (chroot as the sandbox uid, no isolation, no
 *   HTTP): `node -e 0` with the official build vs Debian's node (kept in the image as
 *   /usr/bin/node.debian) and the previous image's node, `python3 -c print`, a TypeScript
 *   snippet, `import pandas`;
 * - hello world through HTTP per language and runtime (pre-start on, as a server runs), and a
 *   pandas + matplotlib script in `datascience`.
 *
 * Environment: BENCH_IMAGES_N (runs per row, default 30), BENCH_IMAGES_RUNTIMES (default
 * "bwrap,runc"), BENCH_IMAGES_OUT (JSON + markdown, default bench/results/images-latest.json).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { createServer } from "../src/server.js";
import { rootfsDirFor } from "../src/images/build.js";
import { BUILTIN_IMAGES, recipeRef } from "../src/images/catalog.js";
import { closeHttp, fmt, intEnv, loadavg, machine, mdTable, request, round1, run, summarize, type Summary } from "./lib.js";

const N = intEnv("BENCH_IMAGES_N", 30, 1, 10_000);
const RUNTIMES = (process.env.BENCH_IMAGES_RUNTIMES || "bwrap,runc").split(",").map((s) => s.trim()).filter(Boolean);
const OUT = process.env.BENCH_IMAGES_OUT || "bench/results/images-latest.json";
const IMAGE_DIR = process.env.PETRI_IMAGE_DIR || "/var/lib/petri/images";
const log = (m: string) => process.stderr.write(`[bench images] ${m}\n`);

async function bare(rootfs: string, argv: string[]): Promise<{ s: Summary; err?: string }> {
  const xs: number[] = [];
  let err: string | undefined;
  for (let i = 0; i < N + 2; i++) {
    const t0 = performance.now();
    const r = await run("chroot", ["--userspec=1000:1000", rootfs, "/usr/bin/env", "HOME=/tmp", "PATH=/usr/local/bin:/usr/bin:/bin", ...argv], 60_000);
    const ms = performance.now() - t0;
    if (r.code !== 0) { err ??= `${argv.join(" ")}: exit ${r.code} ${r.stderr.slice(0, 300)}`; continue; }
    if (i >= 2) xs.push(ms);
  }
  return { s: summarize(xs), err };
}

const HELLO: Record<string, string> = {
  python: "print('hello world')",
  node: "console.log('hello world')",
  typescript: "const m: string = 'hello world'; console.log(m)",
};
const PANDAS = [
  "import pandas as pd, matplotlib.pyplot as plt",
  "df = pd.DataFrame({'x': range(10), 'y': [v * v for v in range(10)]})",
  "df.plot(x='x', y='y'); plt.savefig('/tmp/c.png'); print(len(df))",
].join("\n");

async function viaHttp(runtime: string): Promise<{ rows: (string | number)[][]; errors: string[] }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-img-"));
  const key = `pk_bench_${Math.random().toString(36).slice(2)}`;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith("PETRI_") && v !== undefined) env[k] = v;
  const config = loadConfig({ ...env, PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: key, PETRI_PORT: "0", PETRI_LOG_LEVEL: "error", PETRI_RUNTIMES: runtime, PETRI_RUNTIME: runtime });
  const server = await createServer(config, { logger: pino({ level: "error" }, pino.destination(2)) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const addr = server.app.server.address();
  const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  const rows: (string | number)[][] = [];
  const errors: string[] = [];
  const call = (method: string, p: string, body?: unknown) => request(url, method, p, { key, json: body });
  try {
    const cases: [string, string, string, string][] = [
      ...Object.entries(HELLO).map(([lang, code]) => [`${lang} hello`, lang, "standard", code] as [string, string, string, string]),
      ["pandas + matplotlib script", "python", "datascience", PANDAS],
    ];
    for (const [label, language, image, code] of cases) {
      const sb = await call("POST", "/v1/sandboxes", { language, image });
      if (sb.status !== 201) { errors.push(`${runtime} ${label}: create ${sb.status} ${sb.body.slice(0, 200)}`); continue; }
      const id = (JSON.parse(sb.body) as { id: string }).id;
      const xs: number[] = [];
      const n = label.startsWith("pandas") ? Math.max(3, Math.ceil(N / 3)) : N;
      for (let i = 0; i < n + 2; i++) {
        const t0 = performance.now();
        const r = await call("POST", `/v1/sandboxes/${id}/exec`, { code, timeout_ms: 120_000 });
        const ms = performance.now() - t0;
        const j = JSON.parse(r.body) as { exit_code?: number; stderr?: string };
        if (r.status !== 200 || j.exit_code !== 0) { errors.push(`${runtime} ${label}: ${r.status} ${r.body.slice(0, 300)}`); continue; }
        if (i >= 2) xs.push(ms);
        // A pre-started sandbox for the next run is made after this one; give it the time a user's pause would.
        await new Promise((res) => setTimeout(res, 150));
      }
      const s = summarize(xs);
      rows.push([runtime, label, image, s.n, s.median, s.p90]);
      await call("DELETE", `/v1/sandboxes/${id}`);
    }
  } finally {
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return { rows, errors };
}

export async function main(): Promise<void> {
  const m = machine();
  const std = rootfsDirFor(IMAGE_DIR, recipeRef(BUILTIN_IMAGES.standard));
  const ds = rootfsDirFor(IMAGE_DIR, recipeRef(BUILTIN_IMAGES.datascience));
  const old = fs.readdirSync(IMAGE_DIR).filter((d) => d.startsWith("petri_runtime_")).map((d) => path.join(IMAGE_DIR, d, "rootfs")).find((d) => fs.existsSync(d));
  log(`start: load ${loadavg().join(" ")}, N=${N}`);
  const bareRows: (string | number)[][] = [];
  const errors: string[] = [];
  const add = async (label: string, rootfs: string | undefined, argv: string[]) => {
    if (!rootfs || !fs.existsSync(rootfs)) return;
    log(label);
    const { s, err } = await bare(rootfs, argv);
    if (err) errors.push(err);
    bareRows.push([label, s.n, s.median, s.p90]);
  };
  await add("node -e 0: official build (standard, /usr/local/bin/node)", std, ["/usr/local/bin/node", "-e", "0"]);
  await add("node -e 0: Debian's node (standard, /usr/bin/node.debian)", std, ["/usr/bin/node.debian", "-e", "0"]);
  await add("node -e 0: previous image (petri/runtime, Debian 12)", old, ["/usr/bin/node", "-e", "0"]);
  await add("typescript snippet (official node, type stripping)", std, ["node", "--experimental-transform-types", "--disable-warning=ExperimentalWarning", "-e", HELLO.typescript]);
  await add("python3 -c print (standard, Python 3.13)", std, ["python3", "-c", HELLO.python]);
  await add("python3 -c print (previous image, Python 3.11)", old, ["python3", "-c", HELLO.python]);
  await add("python3 -c 'import pandas' (datascience)", ds, ["python3", "-c", "import pandas"]);
  const httpRows: (string | number)[][] = [];
  for (const rt of RUNTIMES) {
    log(`through HTTP on ${rt}`);
    const r = await viaHttp(rt);
    httpRows.push(...r.rows);
    errors.push(...r.errors);
  }
  const md = [
    `## Images (${new Date().toISOString().slice(0, 10)}, ${m.cpu}; ${m.git}, ${m.nproc} CPUs, load at end ${loadavg().join(" ")})`,
    "",
    "Bare start-up, chroot into the image's root filesystem as uid 1000 (no isolation, no HTTP), ms:",
    "",
    mdTable(["what", "n", "median", "p90"], bareRows.map((r) => [r[0], r[1], fmt(r[2] as number), fmt(r[3] as number)])),
    "",
    "Through HTTP, a snippet in an existing sandbox (pre-start on), ms:",
    "",
    mdTable(["runtime", "run", "image", "n", "median", "p90"], httpRows.map((r) => [r[0], r[1], r[2], r[3], fmt(r[4] as number), fmt(r[5] as number)])),
    ...(errors.length ? ["", `errors (${errors.length}): ${errors.slice(0, 5).join("; ")}`] : []),
  ].join("\n");
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ machine: m, n: N, bare: bareRows, http: httpRows, errors, markdown: md, at: new Date().toISOString() }, null, 2) + "\n");
  process.stdout.write(md + "\n");
  log(`wrote ${OUT} in ${round1(performance.now() / 1000)} s`);
  closeHttp();
}
